"""Predictor: a trained model, its preprocessing and its decoding, for one photo or many.

    >>> from scalpscan import Predictor, Intake, assess
    >>> predictor = Predictor.load("runs/demo")          # run folder, model.safetensors or model.onnx
    >>> prediction = predictor.predict("photo.jpg")      # path, PIL image or array
    >>> prediction.findings, prediction.stage
    (['thinning'], 3)
    >>> for row in predictor.score(paths, batch_size=32):  # streaming result rows
    ...     print(row["image"], row["status"])

Everything needed to use the model travels with it (``model.json``): input size,
normalisation, label vocabulary, decision thresholds and temperatures. The photo goes
through the same evaluation transform the model was validated with
(``data.transforms.build_transforms(train=False)``); nothing here re-types those values.

Each result row carries a *photo-level* assessment (``assess([row], intake)``); a
patient's photos are assessed together by ``scalpscan score --intake`` /
``write_reports``, or by calling ``assess`` on all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from scalpscan.data.files import file_sha256
from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES, tta_mode
from scalpscan.inference.decoding import Geometry, decode_outputs
from scalpscan.inference.quality import WORK_SIDE, QualityThresholds, check_quality
from scalpscan.models.provenance import assessed_outputs
from scalpscan.models.shipped import resolve_model
from scalpscan.models.tta import tta_outputs

__all__ = ["Predictor", "Prediction", "model_id", "ROW_FIELDS"]

#: Keys of a result row, in the order they are written.
ROW_FIELDS: tuple[str, ...] = (
    "image",
    "subject",
    "status",
    "error",
    "view",
    "conditions",
    "thresholds",
    "findings",
    "stage",
    "zones",
    "assessment",
    "model",
    "width",
    "height",
    "stage_probabilities",
    "view_probabilities",
    "quality",
    "not_assessed",
    "unvalidated",
    "masks",
    "warnings",
)

# A backend maps a float32 batch [B,3,S,S] (NumPy array or CPU tensor) to the network's
# raw outputs as NumPy arrays.
Backend = Callable[[Any], dict[str, np.ndarray]]


@dataclass
class Prediction:
    """What the model says about one photo (one result row).

    Attributes:
        image: the photo's path as given, or None for an in-memory picture.
        subject: patient id, when known.
        status: "ok", "error" (unreadable file) or "recapture" (quality gate).
        error: what is wrong with the file or photo; None when ``status`` is "ok".
        view: predicted camera view.
        conditions: probability per condition (temperature applied).
        thresholds: the model's (calibrated) decision threshold per condition.
        findings: conditions at or above their decision threshold.
        stage: predicted Norwood stage (1-7).
        zones: per zone ``{"visible", "box" [x0,y0,x1,y1] in photo pixels, "loss_fraction"}``.
        assessment: photo-level candidacy assessment (``Assessment.to_dict()``).
        model: ``{"id", "rules_version"}``.
        width: photo width in pixels (after EXIF orientation).
        height: photo height in pixels.
        stage_probabilities: P(Norwood = 1..7).
        view_probabilities: probability per view.
        quality: quality-gate measures and reasons.
        not_assessed: outputs this model cannot assess (no label trained them, or a
            condition has no calibrated threshold); their values are None, never guessed.
        unvalidated: outputs trained on renders or painted photos only: not validated on
            real labels.
        masks: paths of the saved zone/loss mask PNGs, relative to the results file.
        warnings: what the decoding libraries warned about the file (corrupt EXIF, an
            unknown TIFF tag, ...), caught instead of printed.
    """

    image: str | None = None
    subject: str | None = None
    status: str = "ok"
    error: str | None = None
    view: str | None = None
    conditions: dict[str, float] | None = None
    thresholds: dict[str, float] | None = None
    findings: list[str] = field(default_factory=list)
    stage: int | None = None
    zones: dict[str, dict[str, Any]] | None = None
    assessment: dict[str, Any] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None
    stage_probabilities: list[float] | None = None
    view_probabilities: dict[str, float] | None = None
    quality: dict[str, Any] | None = None
    not_assessed: list[str] = field(default_factory=list)
    unvalidated: list[str] = field(default_factory=list)
    masks: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        """The result row, as ``score`` writes it (see docs/formats.md "Result rows")."""
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        if row["masks"] is None:
            del row["masks"]
        return row


def model_id(weights_path: str | Path) -> str:
    """Stable id of a model: its folder name and the first 12 hex digits of the weights' SHA-256."""
    path = Path(weights_path)
    return f"{path.parent.name or path.stem}@{file_sha256(path)[:12]}"


class _EvalTransform:
    """The model's evaluation preprocessing; picklable so decoding workers can use it.

    Built from ``input_size``, ``mean`` and ``std`` in ``model.json`` through
    ``data.transforms.build_transforms(train=False)``, i.e. exactly the validation
    pipeline the model was evaluated with. Where the photo lands in the network input
    (the letterbox) is read off the same pipeline, by passing an all-ones mask through
    it once per photo size, so zone boxes map back to photo pixels whatever it does.
    """

    def __init__(self, input_size: int, mean: Iterable[float], std: Iterable[float]) -> None:
        self.input_size = int(input_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._transform: Any = None
        self._geometries: dict[tuple[int, int], Geometry] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_transform": None, "_geometries": {}}

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        if self._transform is None:
            from scalpscan.data.transforms import build_transforms

            self._transform = build_transforms(self.input_size, self.mean, self.std, train=False)
        height, width = image.shape[:2]
        geometry = self._geometries.get((height, width))
        if geometry is None:
            out = self._transform(image=image, zone_mask=np.ones((height, width), dtype=np.uint8))
            geometry = self._geometry(out["zone_mask"], width, height)
            if len(self._geometries) < 64:
                self._geometries[(height, width)] = geometry
        else:
            out = self._transform(image=image)
        tensor = out["image"]
        array = tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor).transpose(2, 0, 1)
        return np.ascontiguousarray(array, dtype=np.float32), geometry

    @staticmethod
    def _geometry(placed: np.ndarray, width: int, height: int) -> Geometry:
        rows = np.flatnonzero(placed.any(axis=1))
        cols = np.flatnonzero(placed.any(axis=0))
        if rows.size == 0:  # cannot happen with a deterministic resize/pad; be safe anyway
            side = placed.shape[0]
            return Geometry(width=width, height=height, scale_x=side / width, scale_y=side / height)
        return Geometry(
            width=width,
            height=height,
            scale_x=(cols[-1] + 1 - cols[0]) / width,
            scale_y=(rows[-1] + 1 - rows[0]) / height,
            pad_x=float(cols[0]),
            pad_y=float(rows[0]),
        )


class _PhotoPreparer:
    """Decode a photo, check its quality and preprocess it; picklable for decoding workers.

    A photo file is decoded reduced (JPEG DCT scaling) to about :attr:`decode_side`
    pixels on its longer side, enough for the network input and the quality measures;
    its size as taken is read from the file header, and the geometry maps the network
    input back to those pixels, so boxes are always in the photo's own coordinates.
    """

    def __init__(self, transform: _EvalTransform, quality: QualityThresholds) -> None:
        self.transform = transform
        self.quality = quality
        self.decode_side = max(2 * transform.input_size, 2 * WORK_SIDE)

    def __call__(self, source: Any) -> dict[str, Any]:
        """``{"status", "error", "width", "height", "quality", "array", "geometry"}`` for one photo."""
        from scalpscan.data.decode import ImageDecodeError, image_size, load_image

        item: dict[str, Any] = {"status": "ok", "error": None, "width": None, "height": None, "quality": None,
                                "array": None, "geometry": None}
        try:
            if isinstance(source, (str, Path)):
                image = load_image(source, max_side=self.decode_side)
                width, height = image_size(source)
            else:
                image = load_image(source)
                height, width = image.shape[:2]
        except ImageDecodeError as exc:
            return {**item, "status": "error", "error": str(exc)}
        except Exception as exc:  # a decoder crashing on a hostile file must not stop a batch
            return {**item, "status": "error", "error": f"{source}: cannot decode the picture ({type(exc).__name__}: {exc})"}
        item.update(width=width, height=height)
        report = check_quality(image, self.quality, size=(width, height))
        item["quality"] = report.to_dict()
        if not report.ok:
            return {**item, "status": "recapture", "error": "; ".join(report.reasons)}
        array, placed = self.transform(image)
        # The transform saw the decoded copy; scale its geometry to the photo as taken.
        decoded_height, decoded_width = image.shape[:2]
        geometry = replace(
            placed,
            width=width,
            height=height,
            scale_x=placed.scale_x * decoded_width / width,
            scale_y=placed.scale_y * decoded_height / height,
        )
        return {**item, "array": array, "geometry": geometry}


def _torch_backend(model: Any, device: str) -> Backend:
    import torch

    def run(batch: Any) -> dict[str, np.ndarray]:
        tensor = torch.as_tensor(batch)
        with torch.inference_mode():
            outputs = model(tensor.to(device, non_blocking=True))
        return {key: value.float().cpu().numpy() for key, value in outputs.items()}

    return run


class Predictor:
    """A loaded model with its preprocessing, decoding, quality gate and rules.

    Build one with :meth:`Predictor.load`. ``predictor.model`` is the ``torch.nn.Module``
    (the ``onnxruntime.InferenceSession`` for an ONNX model); ``predictor.input_size`` is
    the side of its square input.
    """

    def __init__(
        self,
        model: Any,
        meta: Mapping[str, Any],
        backend: Backend,
        *,
        model_name: str,
        tta: bool | str | None = None,
        quality: QualityThresholds | None = None,
        rules: Any = None,
        device: str = "cpu",
    ) -> None:
        """Wrap a backend; prefer :meth:`load`.

        Args:
            model: the network (``nn.Module``) or ONNX Runtime session.
            meta: the model's ``model.json`` contents.
            backend: float32 batch [B,3,S,S] -> raw outputs as NumPy arrays.
            model_name: the id written into every row's ``model.id``.
            tta: test-time augmentation: None/False (off), "flip" (the photo and its mirror),
                "rot" (the photo turned by 0, 90, 180 and 270 degrees) or "d4" (the four
                turns with and without the mirror); True means "flip". The outputs of the
                passes are mapped back to the photo and their logits averaged.
            quality: quality-gate thresholds; module defaults when None.
            rules: candidacy rules (``inference.rules.load_rules()``); the defaults when None.
            device: where the torch model runs ("cpu", "cuda", "cuda:1").
        """
        missing = [key for key in ("input_size", "mean", "std") if key not in meta]
        if missing:
            raise ValueError(
                f"model metadata lacks {', '.join(missing)}; a model.json written by `scalpscan train` has them"
            )
        self.model = model
        self.meta = dict(meta)
        self.input_size = int(self.meta["input_size"])
        self.tta = tta_mode(tta)  # None or a key of data.vocab.TTA_MODES
        self.quality = quality or QualityThresholds()
        self.device = device
        self.model_name = model_name
        self._backend = backend
        self._rules = rules
        self.transform = _EvalTransform(self.input_size, self.meta["mean"], self.meta["std"])
        self.prepare = _PhotoPreparer(self.transform, self.quality)
        self._check_vocab()
        # What the model learned (model.json "heads"): the rest is never reported.
        self.not_assessed, self.unvalidated = assessed_outputs(self.meta)

    def _check_vocab(self) -> None:
        vocab = self.meta.get("vocab") or {}
        expected = {"conditions": list(CONDITIONS), "views": list(VIEWS), "zones": list(ZONES)}
        for key, names in expected.items():
            if key in vocab and list(vocab[key]) != names:
                raise ValueError(
                    f"model vocabulary {key}={list(vocab[key])} differs from this scalpscan's {names}; "
                    "score with the scalpscan version the model was trained with"
                )

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "cpu",
        tta: bool | str | None = None,
        quality: QualityThresholds | None = None,
        rules: Any = None,
    ) -> Predictor:
        """Load a model for inference.

        Args:
            path: a run folder (``model.safetensors`` + ``model.json``), a
                ``model.safetensors`` / ``model.json`` file, an exported ``model.onnx``
                (a folder holding only ``model.onnx`` works too), or the name of a model
                that ships in the package (``scalpscan models`` lists them). None loads
                the shipped default model.
            device: "cpu" or "cuda" (torch models); ONNX models run on ONNX Runtime's CPU
                provider unless CUDA is asked for and available.
            tta: test-time augmentation mode, as for :class:`Predictor` (None/False, True
                or "flip", "rot", "d4").
            quality: quality-gate thresholds.
            rules: candidacy rules; ``load_rules()`` defaults when None.

        Raises:
            ValueError: if ``tta`` is not a mode.
            FileNotFoundError: if ``path`` does not exist.
            models.checkpoint.CheckpointError: if the weights cannot be loaded safely (a
                pickle in place of safetensors is refused, never executed).
        """
        tta = tta_mode(tta)  # refuse a bad mode before loading anything
        path = resolve_model(path)
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path} (give a run folder, model.safetensors or model.onnx)")
        onnx_file = path if path.suffix == ".onnx" else None
        if path.is_dir() and not (path / "model.safetensors").exists() and (path / "model.onnx").exists():
            onnx_file = path / "model.onnx"
        if onnx_file is not None:
            from scalpscan.inference.export import load_onnx

            session, meta, backend, name = load_onnx(onnx_file, device=device)
            return cls(session, meta, backend, model_name=name, tta=tta, quality=quality, rules=rules, device=device)

        from scalpscan.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(path, map_location="cpu")
        model.eval().to(device)
        if path.is_dir():
            weights = path / "model.safetensors"
        else:
            weights = path.with_suffix(".safetensors")  # model.json -> model.safetensors
        backend = _torch_backend(model, device)
        return cls(model, meta, backend, model_name=model_id(weights), tta=tta, quality=quality, rules=rules, device=device)

    # -- pieces the batch scorer shares -------------------------------------------------

    @property
    def rules(self) -> Any:
        """The candidacy rules rows are assessed with (loaded on first use)."""
        if self._rules is None:
            from scalpscan.inference.rules import load_rules

            self._rules = load_rules()
        return self._rules

    @property
    def model_info(self) -> dict[str, str]:
        """The ``model`` field of every row."""
        return {"id": self.model_name, "rules_version": str(self.rules.version)}

    def forward(self, batch: Any) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed batch [B,3,S,S], averaged over the TTA passes when on."""
        if self.tta is None:
            return self._backend(batch)
        return tta_outputs(self._backend, batch, self.tta)

    def decode(self, outputs: Mapping[str, np.ndarray], geometries: Sequence[Geometry]) -> list[dict[str, Any]]:
        """Row fields of a batch's raw outputs; what the model cannot assess is None."""
        return decode_outputs(outputs, self.meta, geometries, not_assessed=self.not_assessed)

    def finish(
        self,
        decoded: Mapping[str, Any],
        *,
        image: str | None,
        subject: str | None,
        width: int,
        height: int,
        quality: Mapping[str, Any] | None,
        intake: Any = None,
    ) -> Prediction:
        """Build the Prediction of an ``ok`` photo from its decoded outputs, assessment included."""
        prediction = Prediction(
            image=image,
            subject=subject,
            status="ok",
            width=width,
            height=height,
            quality=dict(quality) if quality is not None else None,
            model=self.model_info,
            not_assessed=list(self.not_assessed),
            unvalidated=list(self.unvalidated),
            **decoded,
        )
        prediction.assessment = self.assess_photo(prediction, intake)
        return prediction

    def failed(
        self,
        *,
        image: str | None,
        subject: str | None,
        status: str,
        error: str,
        width: int | None = None,
        height: int | None = None,
        quality: Mapping[str, Any] | None = None,
        intake: Any = None,
    ) -> Prediction:
        """The Prediction of a photo that could not be judged ("error" or "recapture")."""
        prediction = Prediction(
            image=image,
            subject=subject,
            status=status,
            error=error,
            width=width,
            height=height,
            quality=dict(quality) if quality is not None else None,
            model=self.model_info,
            not_assessed=list(self.not_assessed),
            unvalidated=list(self.unvalidated),
        )
        prediction.assessment = self.assess_photo(prediction, intake)
        return prediction

    def assess_photo(self, prediction: Prediction, intake: Any = None) -> dict[str, Any]:
        """Photo-level assessment: ``assess([row], intake)`` with this predictor's rules."""
        from scalpscan.inference.rules import assess

        return assess([prediction.to_row()], intake, rules=self.rules).to_dict()

    # -- public API ---------------------------------------------------------------------

    def predict(self, source: Any, *, subject: str | None = None, intake: Any = None) -> Prediction:
        """Score one photo.

        Args:
            source: a file path, PIL image or array (HxW, HxWx3, HxWx4).
            subject: patient id to record in the row.
            intake: the patient's ``Intake``, for the photo-level assessment.

        Returns:
            The prediction; an unreadable file gives ``status="error"`` and a photo the
            quality gate rejects ``status="recapture"``, each with the reason in ``error``.
        """
        from scalpscan.data.decode import capture_warnings

        name = str(source) if isinstance(source, (str, Path)) else None
        with capture_warnings() as caught:  # the libraries' warnings go into the row, not the terminal
            item = self.prepare(source)
        if item["status"] != "ok":
            prediction = self.failed(
                image=name,
                subject=subject,
                status=item["status"],
                error=item["error"],
                width=item["width"],
                height=item["height"],
                quality=item["quality"],
                intake=intake,
            )
        else:
            outputs = self.forward(item["array"][None])
            decoded = self.decode(outputs, [item["geometry"]])[0]
            prediction = self.finish(
                decoded,
                image=name,
                subject=subject,
                width=item["width"],
                height=item["height"],
                quality=item["quality"],
                intake=intake,
            )
        prediction.warnings = list(caught)
        return prediction

    def score(
        self,
        paths: Iterable[str | Path],
        batch_size: int = 32,
        *,
        workers: int = 0,
        intakes: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Score many photos, yielding one result row per path, in order, as they are made.

        Args:
            paths: photo files; the subject of each is the patient id in its file name
                (``P001_top.jpg`` -> ``P001``; None for camera names such as ``IMG_4411``,
                see ``inference.inputs``).
            batch_size: photos per forward pass.
            workers: decoding worker processes (0 decodes in this process).
            intakes: ``Intake`` per subject, for the photo-level assessments.
        """
        from scalpscan.inference.inputs import jobs_from_paths
        from scalpscan.inference.score import score_jobs

        yield from score_jobs(self, jobs_from_paths(paths), batch_size=batch_size, workers=workers, intakes=intakes)
