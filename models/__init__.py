"""Backbones, heads, the multi-task network and self-describing checkpoints.

What other packages use::

    from models import create_model, list_models, list_backbones, ensemble_of
    from models import save_checkpoint, load_checkpoint, inference_meta, CheckpointError
    from models.heads import ordinal_probabilities, ordinal_to_stage_index
"""

from models.backbones import BACKBONES, create_backbone, list_backbones
from models.checkpoint import CheckpointError, inference_meta, load_checkpoint, save_checkpoint
from models.heads import ordinal_expected_index, ordinal_probabilities, ordinal_to_stage_index
from models.network import MODELS, ScalpEnsemble, ScalpNet, create_model, ensemble_of, list_models
from models.pretrained import LoadReport, PretrainedError
from models.registry import RegistryError, UnknownNameError

__all__ = [
    "BACKBONES",
    "MODELS",
    "CheckpointError",
    "LoadReport",
    "PretrainedError",
    "RegistryError",
    "ScalpEnsemble",
    "ScalpNet",
    "UnknownNameError",
    "create_backbone",
    "create_model",
    "ensemble_of",
    "inference_meta",
    "list_backbones",
    "list_models",
    "load_checkpoint",
    "ordinal_expected_index",
    "ordinal_probabilities",
    "ordinal_to_stage_index",
    "save_checkpoint",
]
