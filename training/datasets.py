"""What a training run reads: the manifest rows of its splits, their datasets, and
DataLoaders whose order and augmentation depend only on the seed and the epoch.

- `load_rows`: the training and validation rows of a config (a subject-grouped split of
  ``data`` when ``val`` is empty), with the ``train_extra`` photos added to training;
- `make_datasets`: the two datasets with the training and evaluation pipelines;
- `make_loader`: a DataLoader a resumed run replays batch for batch;
- `data_fingerprint`: what a run stores to notice that its manifests changed.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from scalpscan.data.vocab import CONDITIONS

from .config import TrainConfig, transform_kwargs
from .errors import TrainingError

__all__ = [
    "load_rows",
    "read_train_extra",
    "make_datasets",
    "make_loader",
    "worker_init_fn",
    "data_fingerprint",
]


def load_rows(config: TrainConfig) -> tuple[list[Any], list[Any]]:
    """The training rows (``train_extra`` included) and the validation rows of ``config``.

    Raises:
        TrainingError: no ``data``, or an empty training or validation split.
    """
    from scalpscan.data.manifest import read_manifest

    if not config.data:
        raise TrainingError("no training manifest: give --data MANIFEST (or data: in the config)")
    train_rows = read_manifest(config.data)
    if config.val:
        val_rows = read_manifest(config.val)
    else:
        from scalpscan.data.splits import split_rows

        parts = split_rows(train_rows, (1 - config.val_fraction, config.val_fraction),
                           seed=config.seed)
        train_rows, val_rows = parts["train"], parts["val"]
    if not train_rows:
        raise TrainingError(f"{config.data}: the training split is empty")
    if not val_rows:
        raise TrainingError(f"{config.val or config.data}: the validation split is empty; "
                            "give --val MANIFEST or more subjects")
    return train_rows + read_train_extra(config, train_rows + val_rows), val_rows


def read_train_extra(config: TrainConfig, rows: Sequence[Any]) -> list[Any]:
    """The rows of ``config.train_extra`` (none when it is empty), photos that only ever
    train: they join the training rows after the validation split (or, with ``folds``,
    every fold's training rows), so no metric and no calibration rests on them.

    Raises:
        TrainingError: when a person of the extra manifest is also in ``rows`` (``data``
            and ``val``): that person would be trained on and validated on at once.
    """
    from scalpscan.data.manifest import read_manifest

    if not config.train_extra:
        return []
    extra = read_manifest(config.train_extra)
    shared = sorted({r.subject for r in extra} & {r.subject for r in rows})
    if shared:
        shown = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise TrainingError(f"{config.train_extra}: {len(shared)} person(s) of train_extra are "
                            f"also in {config.data}{' / ' + config.val if config.val else ''} "
                            f"({shown}); a person there would be validated on while being "
                            "trained on. Give the extra photos their own subject ids, or move "
                            "those persons into --data")
    return extra


def make_datasets(config: TrainConfig, train_rows: list[Any], val_rows: list[Any],
                  mean: Sequence[float], std: Sequence[float]) -> tuple[Dataset, Dataset]:
    """The training dataset (augmented, seeded) and the validation one (resize only)."""
    from scalpscan.data.dataset import ScalpDataset
    from scalpscan.data.transforms import build_transforms

    train_tf = build_transforms(config.image_size, mean, std, train=True,
                                seed=config.seed, **transform_kwargs(config))
    val_tf = build_transforms(config.image_size, mean, std, train=False)
    return (ScalpDataset(train_rows, transform=train_tf),
            ScalpDataset(val_rows, transform=val_tf))


def _seed_transform(dataset: Any, seed: int) -> None:
    """Seed the dataset's albumentations pipeline (it keeps its own generators)."""
    transform = getattr(dataset, "transform", None)
    for method in ("reseed", "set_random_seed"):
        if transform is not None and callable(getattr(transform, method, None)):
            getattr(transform, method)(seed)
            return


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker from its torch seed (itself drawn from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _seed_transform(info.dataset, seed)


def make_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int, epoch: int = 0,
                workers: int = 0, distributed: bool = False, device: torch.device | None = None
                ) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on ``(seed, epoch)``.

    Training loaders shuffle with a generator seeded from ``seed`` and ``epoch`` (or a
    DistributedSampler with the same seed) and re-seed the augmentation pipeline, so a run
    resumed at epoch e sees exactly the batches an uninterrupted run would.
    """
    epoch_seed = (seed * 1_000_003 + epoch) % 2**63
    generator = torch.Generator()
    generator.manual_seed(epoch_seed)
    sampler = None
    shuffle = train
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    if train and workers == 0:
        _seed_transform(dataset, epoch_seed % 2**32)
    # Drop a last batch of one: BatchNorm cannot train on a single photo.
    n = len(sampler) if sampler is not None else len(dataset)
    drop_last = train and n > batch_size and n % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        pin_memory=device is not None and device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
    )


def _row_record(row: Any) -> list[str]:
    return [
        Path(row.image).name,
        row.subject,
        row.view or "",
        *("" if row.conditions.get(c) is None else str(row.conditions[c]) for c in CONDITIONS),
        "" if row.stage is None else str(row.stage),
        "" if row.zone_mask is None else Path(row.zone_mask).name,
        "" if row.loss_mask is None else Path(row.loss_mask).name,
    ]


def data_fingerprint(rows: Sequence[Any]) -> str:
    """SHA-256 of the manifest rows' labels and file names (independent of the folder)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(_row_record(row), ensure_ascii=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()

