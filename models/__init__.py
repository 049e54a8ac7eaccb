"""Backbones, heads, the multi-task network and self-describing checkpoints.

What other packages use::

    from scalpscan.models import create_model, list_models, list_backbones, ensemble_of
    from scalpscan.models import save_checkpoint, load_checkpoint, inference_meta, CheckpointError
    from scalpscan.models.ordinal import ordinal_probabilities, ordinal_index
    from scalpscan.models.tta import tta_outputs

Names are loaded on first use: the decoding maths (`ordinal`, `tta`) is NumPy, and the
ONNX path of the Predictor imports it without importing torch.
"""

from __future__ import annotations

from scalpscan._lazy import lazy_exports

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "BACKBONES": "scalpscan.models.backbones",
    "create_backbone": "scalpscan.models.backbones",
    "list_backbones": "scalpscan.models.backbones",
    "CheckpointError": "scalpscan.models.checkpoint",
    "inference_meta": "scalpscan.models.checkpoint",
    "load_checkpoint": "scalpscan.models.checkpoint",
    "save_checkpoint": "scalpscan.models.checkpoint",
    "MODELS": "scalpscan.models.network",
    "ScalpEnsemble": "scalpscan.models.network",
    "ScalpNet": "scalpscan.models.network",
    "create_model": "scalpscan.models.network",
    "ensemble_of": "scalpscan.models.network",
    "list_models": "scalpscan.models.network",
    "ordinal_expected_index": "scalpscan.models.ordinal",
    "ordinal_index": "scalpscan.models.ordinal",
    "ordinal_probabilities": "scalpscan.models.ordinal",
    "LoadReport": "scalpscan.models.pretrained",
    "PretrainedError": "scalpscan.models.pretrained",
    "RegistryError": "scalpscan.models.registry",
    "UnknownNameError": "scalpscan.models.registry",
    "tta_outputs": "scalpscan.models.tta",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
