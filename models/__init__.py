"""Backbones, heads, the multi-task network and self-describing checkpoints.

What other packages use::

    from scalpscan.models import create_model, list_models, list_backbones, ensemble_of
    from scalpscan.models import save_checkpoint, load_checkpoint, inference_meta, CheckpointError
    from scalpscan.models.heads import ordinal_probabilities, ordinal_to_stage_index
"""

from scalpscan.models.backbones import BACKBONES, create_backbone, list_backbones
from scalpscan.models.checkpoint import CheckpointError, inference_meta, load_checkpoint, save_checkpoint
from scalpscan.models.heads import ordinal_expected_index, ordinal_probabilities, ordinal_to_stage_index
from scalpscan.models.network import MODELS, ScalpEnsemble, ScalpNet, create_model, ensemble_of, list_models
from scalpscan.models.pretrained import LoadReport, PretrainedError
from scalpscan.models.registry import RegistryError, UnknownNameError

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
