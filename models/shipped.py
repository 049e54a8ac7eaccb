"""The models that ship inside the package, so that scoring works the minute it is installed.

Each shipped model is a folder ``models/shipped/NAME/`` holding ``model.safetensors``
(float16 weights, loaded as float32) and ``model.json`` (the run's own metadata plus a
``shipped`` record: name, one-line description, the SHA-256 of the weights, the model
card's path and the license of its training data). ``Predictor.load()`` with no argument,
and ``score``, ``evaluate`` and ``export`` without ``--model``, use :data:`DEFAULT_MODEL`.

Example:
    >>> [m.name for m in list_shipped()] == sorted(m.name for m in list_shipped())
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalpscan.data.files import file_sha256

__all__ = ["DEFAULT_MODEL", "SHIPPED_DIR", "ShippedModel", "list_shipped", "resolve_model", "shipped_model_path",
           "file_sha256", "package_run"]

#: Where the shipped models live inside the installed package.
SHIPPED_DIR = Path(__file__).with_name("shipped")
#: The model used when none is named.
DEFAULT_MODEL = "scalpscan-joint-v1"


@dataclass(frozen=True)
class ShippedModel:
    """One model in the package.

    Attributes:
        name: its folder name (what ``--model NAME`` takes).
        path: the folder.
        description: one line.
        sha256: SHA-256 of ``model.safetensors`` as recorded when it was packaged.
        size_bytes: size of ``model.safetensors``.
        card: the model card's path in the repository's docs.
        license: the license of the model and its training data's attribution.
        default: whether it is :data:`DEFAULT_MODEL`.
    """

    name: str
    path: Path
    description: str
    sha256: str
    size_bytes: int
    card: str
    license: str
    default: bool


def list_shipped() -> list[ShippedModel]:
    """The models in the package, by name."""
    found = []
    if SHIPPED_DIR.is_dir():
        for folder in sorted(SHIPPED_DIR.iterdir()):
            meta_path, weights = folder / "model.json", folder / "model.safetensors"
            if not (meta_path.is_file() and weights.is_file()):
                continue
            record: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8")).get("shipped") or {}
            found.append(ShippedModel(
                name=folder.name, path=folder, description=str(record.get("description", "")),
                sha256=str(record.get("sha256", "")), size_bytes=weights.stat().st_size,
                card=str(record.get("card", "")), license=str(record.get("license", "")),
                default=folder.name == DEFAULT_MODEL))
    return found


def shipped_model_path(name: str | None = None) -> Path:
    """The folder of a shipped model (the default one when ``name`` is None).

    Raises:
        FileNotFoundError: naming the models that do ship.
    """
    name = name or DEFAULT_MODEL
    folder = SHIPPED_DIR / name
    if (folder / "model.safetensors").is_file() and (folder / "model.json").is_file():
        return folder
    known = ", ".join(m.name for m in list_shipped()) or "none"
    raise FileNotFoundError(f"no shipped model named {name!r} (shipped: {known}); pass a run folder "
                            f"or model file with --model")


def package_run(run_dir: str | os.PathLike[str], name: str, *, description: str, card: str,
                license: str, out_root: str | os.PathLike[str] | None = None) -> Path:
    """Copy a trained run into ``models/shipped/NAME`` with float16 weights.

    The weights are stored as float16 (half the size; the loader turns them back into
    float32, and the outputs move by about 1e-3 in logits); ``model.json`` is the run's,
    plus the ``shipped`` record.

    Args:
        run_dir: a run folder written by ``scalpscan train``.
        name: the shipped model's name (a folder name).
        description: one line for ``scalpscan models``.
        card: the model card's path in the repository (e.g. ``docs/model-card.md``).
        license: license and attribution line.
        out_root: where to write (default: :data:`SHIPPED_DIR`).

    Returns:
        The new folder.
    """
    from safetensors.torch import load_file

    from scalpscan.data.files import write_text_atomic
    from scalpscan.models.checkpoint import write_safetensors

    run = Path(run_dir)
    target = Path(out_root or SHIPPED_DIR) / name
    target.mkdir(parents=True, exist_ok=True)
    state = load_file(str(run / "model.safetensors"), device="cpu")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    write_safetensors(target / "model.safetensors", half, {"format": "pt"})
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    meta["shipped"] = {"name": name, "description": description, "card": card, "license": license,
                       "sha256": file_sha256(target / "model.safetensors"), "weights_dtype": "float16"}
    write_text_atomic(target / "model.json", json.dumps(meta, indent=2) + "\n")
    return target


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """Where a ``--model`` value points: None is the shipped default, a shipped model's name
    is its folder, anything else is a path (returned as given, checked by the loader).

    Raises:
        FileNotFoundError: None or a bare name when no such model ships.
    """
    if model is None or str(model) == "":
        return shipped_model_path(None)
    path = Path(model)
    if not path.exists() and os.sep not in str(model) and "/" not in str(model) and path.suffix == "":
        if (SHIPPED_DIR / str(model)).is_dir():
            return shipped_model_path(str(model))
    return path
