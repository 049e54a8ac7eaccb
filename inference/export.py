"""ONNX export, and the ONNX Runtime backend that lets ``--model model.onnx`` stand in for a run.

    >>> export_onnx("runs/demo", "model.onnx")        # dynamic batch axis
    >>> Predictor.load("model.onnx").predict("photo.jpg")

The exported file carries everything a predictor needs: the run's ``model.json`` is stored
in the ONNX model's ``metadata_props`` under :data:`META_KEY`, and the model id (which
rows write as ``model.id``) under :data:`ID_KEY`, so rows from the ONNX model name the
same model as rows from its run folder. Outputs are named like the network's dict
(``conditions``, ``stage``, ``view``, ``zones``, ``loss``); the input is ``image``
``[batch, 3, S, S]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scalpscan.data.files import atomic_write

__all__ = ["META_KEY", "ID_KEY", "OUTPUT_NAMES", "ExportError", "export_onnx", "load_onnx"]

#: metadata_props key holding the run's model.json text.
META_KEY = "scalpscan.model_json"
#: metadata_props key holding the model id.
ID_KEY = "scalpscan.model_id"
#: Output names, in the order the graph returns them.
OUTPUT_NAMES: tuple[str, ...] = ("conditions", "stage", "view", "zones", "hairloss")


class ExportError(ValueError):
    """The model cannot be exported, or a file is not a scalpscan ONNX model."""


def _tuple_outputs(model: Any) -> Any:
    """The network wrapped so the graph returns a tuple in OUTPUT_NAMES order."""
    import torch

    class _TupleOutputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = self.inner(image)
            return tuple(outputs[name] for name in OUTPUT_NAMES)

    return _TupleOutputs(model).eval()


def export_onnx(
    model_path: str | Path, out: str | Path, *, opset: int = 18, exporter: str = "dynamo", check: bool = True
) -> Path:
    """Export a run's model to ONNX with a dynamic batch axis and its metadata.

    Args:
        model_path: run folder or ``model.safetensors``.
        out: the ``.onnx`` file to write (atomically).
        opset: ONNX opset version.
        exporter: "dynamo" (``torch.export``-based, PyTorch's default) or "torchscript"
            (the older tracer, for a network the dynamo exporter cannot handle).
        check: compare ONNX Runtime's outputs with PyTorch's on a random batch and fail
            when they differ by more than 1e-3.

    Returns:
        The written path.

    Raises:
        models.checkpoint.CheckpointError: if the run cannot be loaded.
        ExportError: if the exported graph disagrees with the PyTorch model.
    """
    import onnx
    import torch

    from scalpscan.inference.predictor import model_id
    from scalpscan.models.checkpoint import load_checkpoint

    model_path = Path(model_path)
    model, meta = load_checkpoint(model_path, map_location="cpu")
    model.eval()
    weights = model_path / "model.safetensors" if model_path.is_dir() else model_path.with_suffix(".safetensors")
    side = int(meta["input_size"])
    wrapped = _tuple_outputs(model)
    example = torch.randn(2, 3, side, side)
    def write(tmp: Path) -> None:
        _export_graph(wrapped, example, tmp, opset=opset, exporter=exporter)
        proto = onnx.load(str(tmp))
        for key, value in ((META_KEY, json.dumps(meta, sort_keys=True)), (ID_KEY, model_id(weights))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        if check:
            _check_parity(wrapped, tmp, side)

    return atomic_write(out, write)


def _export_graph(wrapped: Any, example: Any, path: Path, *, opset: int, exporter: str) -> None:
    import torch

    names = {"input_names": ["image"], "output_names": list(OUTPUT_NAMES), "opset_version": opset}
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.onnx.export(wrapped, (example,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False, **names)
        program.save(str(path))
    elif exporter == "torchscript":
        axes = {"image": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
        torch.onnx.export(wrapped, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
    else:
        raise ExportError(f"exporter {exporter!r}: expected 'dynamo' or 'torchscript'")


def _check_parity(wrapped: Any, path: Path, side: int) -> None:
    import torch

    batch = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapped(batch)]
    _, _, backend, _ = load_onnx(path)
    got = backend(batch.numpy())
    for name, want in zip(OUTPUT_NAMES, expected):
        diff = float(np.abs(got[name] - want).max())
        if diff > 1e-3:
            raise ExportError(f"exported {name} differs from PyTorch by {diff:.2e} (> 1e-3); export failed")


def load_onnx(path: str | Path, *, device: str = "cpu", threads: int | None = None) -> tuple[Any, dict[str, Any], Any, str]:
    """Open an exported model with ONNX Runtime.

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        device: "cuda" uses the CUDA provider when ONNX Runtime has it, else the CPU.
        threads: intra-op threads; torch's thread count when None (same as eager).

    Returns:
        ``(session, meta, backend, model_id)``; ``backend(batch)`` maps a float32
        ``[B,3,S,S]`` array to the raw outputs by name.

    Raises:
        ExportError: if the file is not an ONNX model or lacks scalpscan metadata.
    """
    import onnxruntime as ort
    import torch

    path = Path(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"{path} is not an ONNX model ONNX Runtime can open: {exc}") from None
    custom = session.get_modelmeta().custom_metadata_map
    if META_KEY not in custom:
        raise ExportError(
            f"{path} has no {META_KEY!r} metadata; export it with `scalpscan export --model RUN --out {path.name}`"
        )
    meta = json.loads(custom[META_KEY])
    name = custom.get(ID_KEY, path.stem)
    input_name = session.get_inputs()[0].name

    def backend(batch: Any) -> dict[str, np.ndarray]:
        array = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        values = session.run(list(OUTPUT_NAMES), {input_name: array})
        return dict(zip(OUTPUT_NAMES, values))

    return session, meta, backend, name
