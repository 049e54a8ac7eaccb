"""The synthetic renderer: labels agree with masks, views and subjects are consistent,
output is deterministic whatever the number of workers, and every condition appears."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.synth import SynthOptions, render_index, render_photo, sample_subject, subject_for, synthesize
from scalpscan.data.synth.render import min_loss_pixels
from scalpscan.data.synth.subject import Patch, Subject
from scalpscan.data.vocab import CONDITIONS, HAIR_COLOURS, MANIFEST_COLUMNS, SKIN_TONES, STAGES, VIEWS, ZONES, condition_bit, zone_bit

SIZE = 64


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _plain_subject(**changes) -> Subject:
    """A man with a full head of hair and nothing else, then ``changes``."""
    subject = sample_subject(_rng(3), 0, male_fraction=1.0, condition_rate=0.0)
    base = dict(stage=1, pattern=(0.0, 0.0, 0.0, 0.8), patches=(), strip_scar=None, fue=False, plugs=False)
    return dataclasses.replace(subject, **{**base, **changes})


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    synthesize(out, 40, 7, options=SynthOptions(size=SIZE, condition_rate=2.0), workers=1, contact_sheet=12)
    return out


def _records(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_labels_agree_with_masks_for_every_photo(small_set: Path) -> None:
    seen = dict.fromkeys(CONDITIONS, 0)
    for r in _records(small_set):
        image = Image.open(small_set / r["image"])
        zones = Image.open(small_set / r["zone_mask"])
        loss = Image.open(small_set / r["loss_mask"])
        assert zones.mode == "L" and loss.mode == "L"
        assert zones.size == loss.size == image.size == (SIZE, SIZE)
        zones_a, loss_a = np.asarray(zones), np.asarray(loss)
        assert zones_a.max() < (1 << len(ZONES))
        assert loss_a.max() < (1 << len(CONDITIONS))
        for name in CONDITIONS:
            pixels = int(np.count_nonzero(loss_a & condition_bit(name)))
            label = int(r[name])
            seen[name] += label
            assert label == int(pixels > 0), (r["image"], name, pixels)
            if label:
                assert pixels >= min_loss_pixels(SIZE)
        # Loss is only ever drawn on scalp, which belongs to at least one zone or the
        # hair-bearing area; it never lands on the background corners.
        assert not (loss_a[0, 0] or loss_a[0, -1] or loss_a[-1, 0] or loss_a[-1, -1])
    assert all(seen.values()), f"a condition never appeared in the test set: {seen}"


def test_subjects_are_consistent_across_their_views(small_set: Path) -> None:
    by_subject: dict[str, list[dict[str, str]]] = {}
    for r in _records(small_set):
        by_subject.setdefault(r["subject"], []).append(r)
    assert len(by_subject) == 8
    for subject, rows in by_subject.items():
        assert [r["view"] for r in rows] == list(VIEWS), subject
        for column in ("sex", "skin_tone", "hair_colour", "stage", "female_pattern", "patches", "scar_kinds"):
            assert len({r[column] for r in rows}) == 1, (subject, column)
        sex = rows[0]["sex"]
        assert (rows[0]["stage"] == "") == (sex == "female")


def test_manifest_is_valid(small_set: Path) -> None:
    from scalpscan.data.manifest import read_manifest

    rows = read_manifest(small_set / "manifest.csv", check_files=True)
    assert len(rows) == 40
    header = next(csv.reader(open(small_set / "manifest.csv", encoding="utf-8")))
    assert tuple(header[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert {"sex", "skin_tone", "hair_colour", "source"} <= set(header)
    for row in rows:
        assert row.extra["source"] == "synth"
        assert row.extra["skin_tone"] in SKIN_TONES and row.extra["hair_colour"] in HAIR_COLOURS
        assert row.view in VIEWS
        assert row.stage is None or row.stage in STAGES
    assert (small_set / "contact_sheet.png").stat().st_size > 0


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    options = SynthOptions(size=SIZE)
    synthesize(tmp_path / "a", 12, 5, options=options, workers=1, contact_sheet=12)
    synthesize(tmp_path / "b", 12, 5, options=options, workers=2, contact_sheet=12)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(a) == 12 * 3 + 2
    assert a == b
    synthesize(tmp_path / "c", 12, 6, options=options, workers=1, contact_sheet=0)
    c = _digest(tmp_path / "c")
    assert a["images/000000.jpg"] != c["images/000000.jpg"]


def test_every_condition_stage_tone_and_colour_is_drawn() -> None:
    subjects = [sample_subject(_rng(i), i) for i in range(300)]
    assert {s.stage for s in subjects if s.sex == "male"} == set(STAGES)
    assert {s.female_severity for s in subjects if s.sex == "female"} == {0, 1, 2, 3}
    assert {s.skin_tone for s in subjects} == set(SKIN_TONES)
    assert {s.hair_colour for s in subjects} == set(HAIR_COLOURS)
    assert any(s.patches for s in subjects)
    assert any(s.strip_scar is not None for s in subjects)
    assert any(s.fue for s in subjects) and any(s.plugs for s in subjects)
    assert any(s.stage == 1 and not s.patches and not s.fue and s.strip_scar is None for s in subjects)


def test_person_left_and_right_follow_the_view() -> None:
    left, right = zone_bit("temple_left"), zone_bit("temple_right")
    for seed in range(6):
        subject = _plain_subject(shape=(1.0, 1.0, 1.0))
        left_view = render_photo(subject, "left", _rng(seed), SIZE, rotate_prob=0.0)
        right_view = render_photo(subject, "right", _rng(seed), SIZE, rotate_prob=0.0)
        # Person's left = +x: the camera at their left sees mostly their left temple (a
        # corner of the far temple can show over the top of the head).
        count = lambda photo, bit: int(np.count_nonzero(photo.zones & bit))  # noqa: E731
        assert count(left_view, left) > 3 * count(left_view, right)
        assert count(right_view, right) > 3 * count(right_view, left)
        front = render_photo(subject, "front", _rng(seed), SIZE, rotate_prob=0.0)
        back = render_photo(subject, "back", _rng(seed), SIZE, rotate_prob=0.0)
        hairline, donor = zone_bit("hairline"), zone_bit("donor")
        assert count(front, hairline) > 10 * count(front, donor)  # donor only at the rim
        assert count(back, donor) > 10 * count(back, hairline)


def test_no_condition_means_empty_loss_mask() -> None:
    subject = _plain_subject()
    for k, view in enumerate(VIEWS):
        photo = render_photo(subject, view, _rng(k), SIZE)
        assert not photo.loss.any()
        assert photo.conditions == dict.fromkeys(CONDITIONS, 0)


def test_strip_scar_is_labelled_where_the_photo_shows_it() -> None:
    subject = _plain_subject(strip_scar=-0.2, hair_length=0.04)
    back = render_photo(subject, "back", _rng(1), 128, rotate_prob=0.0)
    front = render_photo(subject, "front", _rng(1), 128, rotate_prob=0.0)
    assert back.conditions["transplant_scar"] == 1
    assert front.conditions["transplant_scar"] == 0 and not np.any(front.loss & condition_bit("transplant_scar"))


def test_patch_on_top_shows_from_above_only_inside_the_patch() -> None:
    top = np.array([0.0, -0.2, 1.0]) / np.hypot(0.2, 1.0)
    a1 = np.array([1.0, 0.0, 0.0])
    a2 = np.cross(top, a1)
    patch = Patch(centre=top, axis1=a1, axis2=a2, radius1=0.3, radius2=0.25)
    subject = _plain_subject(patches=(patch,))
    photo = render_photo(subject, "top", _rng(2), SIZE, rotate_prob=0.0)
    assert photo.conditions["alopecia_patch"] == 1
    assert photo.conditions["thinning"] == 0 and photo.conditions["transplant_scar"] == 0
    assert np.any(photo.zones & zone_bit("crown"))


def test_rotation_turns_masks_with_the_picture() -> None:
    subject = _plain_subject(stage=6, pattern=(1.6, 0.3, 0.7, 0.88))
    for seed in range(20):
        photo = render_photo(subject, "top", _rng(seed), SIZE, rotate_prob=1.0)
        upright = render_photo(subject, "top", _rng(seed), SIZE, rotate_prob=0.0)
        assert photo.rotation in (90, 180, 270)
        turns = photo.rotation // 90
        assert np.array_equal(np.rot90(upright.loss, turns), photo.loss)
        assert np.array_equal(np.rot90(upright.zones, turns), photo.zones)
        assert np.array_equal(np.rot90(upright.image, turns), photo.image)
        assert photo.conditions == upright.conditions


def test_render_index_is_reproducible_and_views_cycle() -> None:
    options = SynthOptions(size=SIZE)
    a, subject_a, qa = render_index(3, 7, options)
    b, subject_b, qb = render_index(3, 7, options)
    assert np.array_equal(a.image, b.image) and qa == qb
    assert a.view == VIEWS[7 % len(VIEWS)]
    assert subject_a.skin_tone == subject_for(3, 1, options).skin_tone


@pytest.mark.parametrize(
    "kwargs, word",
    [({"size": 8}, "size"), ({"male_fraction": 1.5}, "male_fraction"), ({"image_format": "gif"}, "image_format")],
)
def test_bad_options_are_refused_with_the_value(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SynthOptions(**kwargs)


def test_bad_counts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n"):
        synthesize(tmp_path / "x", 0, 0)
    with pytest.raises(ValueError, match="seed"):
        synthesize(tmp_path / "x", 1, -1)


def test_profiles_face_the_way_real_profiles_do() -> None:
    """As in the real photos, an unrotated "left" photo shows the person's left side with
    the face towards the picture's left ("right": towards its right), the head over the
    neck. A mirrored convention would teach every model the opposite label."""
    from scalpscan.data.synth import head as H
    from scalpscan.data.synth.render import sample_camera

    shape = H.head_shape(1.0, 1.0, 1.0)
    for view, sign in (("left", -1), ("right", 1)):
        for seed in range(8):
            part = H.cast(shape, sample_camera(view, _rng(seed), SIZE, shape)).part
            rows, cols = np.indices(part.shape)
            face = np.isin(part, (H.FACE, H.NOSE))
            cranium = part == H.CRANIUM
            assert sign * (cols[face].mean() - cols[cranium].mean()) > 0, (view, seed)
            assert rows[part == H.NECK].mean() > rows[cranium].mean(), (view, seed)


def test_frame_holds_the_head_and_what_real_photos_show_around_it() -> None:
    """Close-ups like clinic and phone photos: the person fills most of the picture and the
    head most of that (from above the scalp alone does); as in real photos, a back view
    shows the neck and collar in its bottom third and a profile shows the face."""
    from scalpscan.data.synth import head as H
    from scalpscan.data.synth.render import sample_camera

    shape = H.head_shape(1.0, 1.0, 1.0)
    for view in VIEWS:
        person, head, scalp, body_low, face = [], [], [], [], []
        for seed in range(10):
            part = H.cast(shape, sample_camera(view, _rng(seed), SIZE, shape)).part
            person.append(np.mean(part != H.BACKGROUND))
            head.append(np.mean((part >= H.CRANIUM) & (part <= H.EAR_RIGHT)))
            scalp.append(np.mean(part == H.CRANIUM))
            low = part[2 * SIZE // 3 :]
            body_low.append(np.mean((low == H.NECK) | (low == H.SHOULDERS)))
            face.append(np.mean((part == H.FACE) | (part == H.NOSE)))
        assert np.mean(person) > 0.6, (view, person)
        assert np.mean(head) > 0.45, (view, head)
        if view == "top":
            assert np.mean(scalp) > 0.55, scalp
        if view == "back":
            assert np.mean(body_low) > 0.25, body_low
        if view in ("left", "right"):
            assert min(face) > 0.04, (view, face)


def test_front_views_show_brows_and_eyes_on_the_forehead() -> None:
    """The brows and eyes lie where the cranium ellipsoid, not the face ellipsoid, is
    outermost; they must be painted there or no front photo would show them."""
    from scalpscan.data.synth import head as H
    from scalpscan.data.synth.render import _face_features, sample_camera

    subject = _plain_subject()
    shape = H.head_shape(*subject.shape)
    for seed in range(3):
        scene = H.cast(shape, sample_camera("front", _rng(seed), 128, shape))
        albedo = np.full((128, 128, 3), 0.8, dtype=np.float32)
        _face_features(albedo, scene, subject, _rng(seed))
        darker = albedo.mean(axis=-1) < 0.7
        # Brows and eyes: dark pixels on the cranium, in the bottom half of the picture.
        assert np.count_nonzero(darker[64:] & (scene.part[64:] == H.CRANIUM)) > 40, seed
        assert not np.any(darker[:32]), seed  # nothing painted on the top of the head
