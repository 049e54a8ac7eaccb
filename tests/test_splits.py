"""Subject-grouped stratified splits, and the near-duplicate (leakage) check."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from scalpscan.data.dedup import find_cross_subject_duplicates, find_near_duplicates, hash_image, leakage_report
from scalpscan.data.manifest import ManifestRow
from scalpscan.data.splits import parse_ratios, shared_subjects, split_rows
from scalpscan.data.vocab import CONDITIONS


def _rows(n_subjects=40, per_subject=5):
    rows = []
    for s in range(n_subjects):
        for k in range(per_subject):
            rows.append(ManifestRow(Path(f"/x/{s}_{k}.jpg"), f"LEVEL_{2 + s % 6}:{s}", None,
                                    dict.fromkeys(CONDITIONS), 2 + s % 6))
    return rows


def test_split_shares_no_subject_and_covers_every_row():
    rows = _rows()
    parts = split_rows(rows, (0.7, 0.15, 0.15), seed=0)
    assert list(parts) == ["train", "val", "test"]
    assert shared_subjects(parts) == {}
    assert sorted(r.image for p in parts.values() for r in p) == sorted(r.image for r in rows)
    subjects = {name: len({r.subject for r in p}) for name, p in parts.items()}
    assert subjects == {"train": 28, "val": 6, "test": 6}
    # Stratified: every stage reaches the training side.
    assert set(Counter(r.stage for r in parts["train"])) == set(range(2, 8))


def test_split_is_reproducible_and_seed_dependent():
    rows = _rows()
    a = split_rows(rows, (0.8, 0.2), seed=1)
    b = split_rows(rows, (0.8, 0.2), seed=1)
    c = split_rows(rows, (0.8, 0.2), seed=2)
    assert list(a) == ["train", "val"]
    assert [r.image for r in a["val"]] == [r.image for r in b["val"]]
    assert {r.subject for r in a["val"]} != {r.subject for r in c["val"]}


def test_tiny_and_unlabelled_sets_still_split():
    rows = [ManifestRow(Path(f"/x/{i}.jpg"), f"p{i}", None, dict.fromkeys(CONDITIONS), None) for i in range(3)]
    parts = split_rows(rows, (0.6, 0.2, 0.2), seed=0)
    assert all(len(p) == 1 for p in parts.values())
    with pytest.raises(ValueError, match="at least 3"):
        split_rows(rows[:2], (0.6, 0.2, 0.2))


@pytest.mark.parametrize("text, message", [("0.7,0.2", "sum to"), ("1", "2 or 3"), ("a,b", "numbers"),
                                           ("0.5,0.6,-0.1", "positive")])
def test_bad_ratios_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_ratios(text)
    assert parse_ratios("0.7,0.15,0.15") == (0.7, 0.15, 0.15)


def _photo(seed: int) -> Image.Image:
    """A smooth random picture (like a photo, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((160, 120), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))


@pytest.fixture()
def photos(tmp_path):
    paths = {}
    for seed in range(6):
        paths[seed] = tmp_path / f"photo{seed}.png"
        _photo(seed).save(paths[seed])
    copy = _photo(0).rotate(90, expand=True).resize((90, 120))  # rotated, resized ...
    paths["copy"] = tmp_path / "copy.jpg"
    copy.save(paths["copy"], quality=60)  # ... and re-encoded
    return paths


def test_dedup_finds_a_rotated_reencoded_copy_across_splits(photos):
    train = [ManifestRow(photos[s], f"s{s}", None, dict.fromkeys(CONDITIONS), None) for s in range(4)]
    val = [ManifestRow(photos["copy"], "other", None, dict.fromkeys(CONDITIONS), None),
           ManifestRow(photos[4], "s4", None, dict.fromkeys(CONDITIONS), None),
           ManifestRow(photos[5], "s5", None, dict.fromkeys(CONDITIONS), None)]
    pairs, errors = find_near_duplicates({"train": train, "val": val})
    assert errors == []
    assert [(p.image_a, p.image_b) for p in pairs] == [(photos[0], photos["copy"])]
    assert pairs[0].subject_a == "s0" and pairs[0].subject_b == "other"
    report = leakage_report(pairs, {"train": train, "val": val})
    assert "1 near-duplicate pair" in report and "copy.jpg" in report
    clean, _ = find_near_duplicates({"train": train[1:], "val": val[1:]})
    assert clean == []
    assert "none found" in leakage_report(clean, {"train": train[1:], "val": val[1:]})


def test_every_rotation_is_hashed(photos):
    hashes = hash_image(photos[1])
    rotated = hash_image(Image.open(photos[1]).rotate(180))
    assert hashes.shape[0] == 4
    distances = [sum(bin(int(x)).count("1") for x in rotated[0] ^ h) for h in hashes]
    assert min(distances) < 10


def test_same_picture_under_two_subjects_is_flagged(photos):
    rows = [ManifestRow(photos[0], "a", None, dict.fromkeys(CONDITIONS), None),
            ManifestRow(photos["copy"], "b", None, dict.fromkeys(CONDITIONS), None),
            ManifestRow(photos[2], "c", None, dict.fromkeys(CONDITIONS), None)]
    pairs, _ = find_cross_subject_duplicates(rows)
    assert len(pairs) == 1 and {pairs[0].subject_a, pairs[0].subject_b} == {"a", "b"}
    same_subject = [rows[0], ManifestRow(photos["copy"], "a", None, dict.fromkeys(CONDITIONS), None)]
    assert find_cross_subject_duplicates(same_subject)[0] == []


def test_undecodable_photo_is_reported_not_matched(tmp_path, photos):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    pairs, errors = find_near_duplicates({"a": [broken], "b": [broken, photos[1]]})
    assert pairs == [] and len(errors) == 2 and "empty" in errors[0]
