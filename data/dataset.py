"""A torch Dataset over manifest rows: photo, masks and labels as tensors.

Unknown labels travel as masks (``conditions_known``, ``zones_known``, ``hairloss_known``,
``stage``/``view`` = -1) so the losses can ignore them; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from scalpscan.data.decode import ImageDecodeError, load_image
from scalpscan.data.manifest import ManifestRow, read_manifest
from scalpscan.data.transforms import ScalpTransform
from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES, stage_to_index

__all__ = ["ScalpDataset", "load_mask", "unpack_bits"]

#: Photos are decoded at most this big before the pipeline resizes them (saves time on
#: 12-48 MP phone photos; the network sees a few hundred pixels anyway).
DEFAULT_MAX_SIDE = 1024


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a bit-mask PNG as ``HxW`` uint8 at ``size`` (width, height).

    A mask bigger than a photo that was reduced while decoding is reduced with
    nearest-neighbour sampling, which keeps every pixel's bits intact.

    Raises:
        ImageDecodeError: if the file cannot be read or is not a single-channel mask.
    """
    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise ImageDecodeError(path, f"mask has mode {im.mode}; expected a single-channel 8-bit PNG (mode L)")
            if im.size != size:
                im = im.resize(size, Image.Resampling.NEAREST)
            return np.asarray(im, dtype=np.uint8).copy()
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(path, f"cannot read the mask: {exc}") from exc


def unpack_bits(mask: np.ndarray | torch.Tensor, n_bits: int) -> torch.Tensor:
    """``HxW`` bit mask to ``[n_bits, H, W]`` float 0/1 (bit i -> channel i)."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.int64)
    shifts = torch.arange(n_bits, dtype=torch.int64).view(-1, 1, 1)
    return ((m.unsqueeze(0) >> shifts) & 1).to(torch.float32)


class ScalpDataset(Dataset):
    """Photos and labels of manifest rows, transformed for a network.

    ``__getitem__`` returns a dict of tensors: ``image`` float32 [3,S,S]; ``conditions``
    float32 [3] (0 where unknown) and ``conditions_known`` bool [3]; ``stage`` int64
    (0..6, -1 unknown); ``view`` int64 (index into VIEWS, -1 unknown); ``zones`` float32
    [6,S,S] and ``zones_known`` bool; ``hairloss`` float32 [3,S,S] and ``hairloss_known`` bool;
    ``index`` int64.

    Args:
        rows: Manifest rows.
        transform: From :func:`data.transforms.build_transforms`.
        max_side: Photos are decoded at most this big (None = full size).

    In DataLoader workers each worker reseeds the transform from its own torch seed, so
    workers do not repeat each other's augmentations.
    """

    def __init__(
        self,
        rows: Sequence[ManifestRow],
        *,
        transform: ScalpTransform,
        max_side: int | None = DEFAULT_MAX_SIDE,
    ) -> None:
        self.rows = list(rows)
        self.transform = transform
        self.max_side = max_side
        self._worker_seed: int | None = None

    @classmethod
    def from_manifest(cls, path: str | Path, *, transform: ScalpTransform, **kwargs: Any) -> ScalpDataset:
        """A dataset over a manifest file (validated on reading)."""
        return cls(read_manifest(path), transform=transform, **kwargs)

    def __len__(self) -> int:
        return len(self.rows)

    def _reseed_in_worker(self) -> None:
        info = get_worker_info()
        if info is not None and self._worker_seed != info.seed:
            self._worker_seed = info.seed
            self.transform.reseed(info.seed % (2**32))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self._reseed_in_worker()
        row = self.rows[index]
        image = load_image(row.image, max_side=self.max_side)
        size = (image.shape[1], image.shape[0])
        zone = load_mask(row.zone_mask, size) if row.zone_mask else None
        loss = load_mask(row.loss_mask, size) if row.loss_mask else None
        out = self.transform(image=image, zone_mask=zone, loss_mask=loss, view=row.view)
        side = out["image"].shape[-2:]

        known = [row.conditions.get(c) is not None for c in CONDITIONS]
        values = [float(row.conditions.get(c) or 0) for c in CONDITIONS]
        view = out["view"]
        return {
            "image": out["image"].to(torch.float32),
            "conditions": torch.tensor(values, dtype=torch.float32),
            "conditions_known": torch.tensor(known, dtype=torch.bool),
            "stage": torch.tensor(stage_to_index(row.stage) if row.stage is not None else -1, dtype=torch.int64),
            "view": torch.tensor(VIEWS.index(view) if view in VIEWS else -1, dtype=torch.int64),
            "zones": unpack_bits(out["zone_mask"], len(ZONES))
            if out["zone_mask"] is not None
            else torch.zeros(len(ZONES), *side),
            "zones_known": torch.tensor(out["zone_mask"] is not None),
            "hairloss": unpack_bits(out["loss_mask"], len(CONDITIONS))
            if out["loss_mask"] is not None
            else torch.zeros(len(CONDITIONS), *side),
            "hairloss_known": torch.tensor(out["loss_mask"] is not None),
            "index": torch.tensor(index, dtype=torch.int64),
        }
