"""Pre-resizing a manifest's photos for fast epochs (`data.resize`, `scalpscan train --cache`):
smaller copies with the same labels, masks whose bits survive, a fingerprint that does not
change, and a copy that is made once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_training import make_photos

from scalpscan.data.manifest import read_manifest
from scalpscan.data.resize import cached_manifest, resize_manifest
from scalpscan.training.datasets import data_fingerprint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return make_photos(tmp_path / "photos", subjects=2, views=3, size=96, seed=4)


def test_copies_are_smaller_and_keep_labels_masks_and_fingerprint(manifest: Path,
                                                                  tmp_path: Path) -> None:
    out = resize_manifest(manifest, tmp_path / "small", 32)
    before, after = read_manifest(manifest), read_manifest(out)
    assert len(after) == len(before)
    assert data_fingerprint(after) == data_fingerprint(before)  # same names and labels
    for old, new in zip(before, after):
        assert new.image.is_relative_to(tmp_path / "small")
        assert (new.subject, new.view, new.stage, new.conditions, new.extra) == \
            (old.subject, old.view, old.stage, old.conditions, old.extra)
        assert Image.open(new.image).size == (32, 32)
        for key in ("zone_mask", "loss_mask"):
            if getattr(old, key) is None:
                assert getattr(new, key) is None
                continue
            small = np.asarray(Image.open(getattr(new, key)))
            assert small.shape == (32, 32)
            # Nearest neighbour: every value is one of the original bit patterns.
            assert set(np.unique(small)) <= set(np.unique(np.asarray(Image.open(getattr(old, key)))))


def test_a_copy_is_made_once_and_remade_when_the_manifest_changes(manifest: Path,
                                                                  tmp_path: Path) -> None:
    out = resize_manifest(manifest, tmp_path / "small", 64)
    photo = read_manifest(out)[0].image
    os.utime(photo, (1, 1))
    assert resize_manifest(manifest, tmp_path / "small", 64) == out
    assert photo.stat().st_mtime == 1  # reused, not rewritten
    resize_manifest(manifest, tmp_path / "small", 32)  # another side: made again
    assert Image.open(photo).size == (32, 32)
    manifest.write_text(manifest.read_text().replace(",P0,", ",P9,"))
    assert {r.subject for r in read_manifest(resize_manifest(manifest, tmp_path / "small", 32))} \
        == {"P9", "P1"}


def test_cached_manifests_of_different_sources_do_not_collide(manifest: Path,
                                                              tmp_path: Path) -> None:
    other = make_photos(tmp_path / "other", subjects=1, views=2, size=64, seed=5)
    one = cached_manifest(manifest, tmp_path / "cache", 32)
    two = cached_manifest(other, tmp_path / "cache", 32)
    three = cached_manifest(manifest, tmp_path / "cache", 64)
    assert len({one.parent, two.parent, three.parent}) == 3
    assert len(read_manifest(two)) == 2


def test_bad_input_is_refused_with_the_file(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="side=16"):
        resize_manifest(manifest, tmp_path / "tiny", 16)
    broken = read_manifest(manifest)[1].image
    broken.write_bytes(b"not a photo")
    with pytest.raises(ValueError, match=broken.name):  # the manifest's own check names it
        resize_manifest(manifest, tmp_path / "small", 32)


def test_train_cache_trains_on_the_copies_and_says_what_the_defaults_train(
        manifest: Path, tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--data", str(manifest),
         "--out", str(run), "--backbone", "tiny", "--image-size", "64", "--epochs", "1",
         "--batch-size", "4", "--cache", str(cache), "--no-progress", "--set", "threads=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # No recipe: it says what it trains and which recipe to start from.
    assert "no --recipe: training scalpnet, backbone tiny (random weights), 64 px" in result.stderr
    assert "--recipe real" in result.stderr
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"])
    assert data.is_relative_to(cache) and data.is_file()
    assert all(Image.open(r.image).size == (64, 64) for r in read_manifest(data))
