"""The shipped model's data: the stage is taught and judged by real, untouched photos only."""

from __future__ import annotations

from pathlib import Path

from scalpscan.data.manifest import ManifestRow
from scalpscan.scripts.build_model import untouched_and_painted, without_stage


def _row(name: str, *, source: str, stage: int | None, patch: int | None = None, scar: int | None = None,
         composited: str | None = None) -> ManifestRow:
    conditions = {"thinning": None, "alopecia_patch": patch, "transplant_scar": scar}
    extra = {"source": source}
    if composited is not None:
        extra["composited"] = composited
    return ManifestRow(image=Path(f"/photos/{name}.jpg"), subject="P1", view="top", conditions=conditions,
                       stage=stage, extra=extra)


def test_untouched_photos_stay_and_each_painted_one_is_paired_with_its_original() -> None:
    originals = [_row("a", source="roboflow", stage=3), _row("b", source="roboflow", stage=5)]
    painted = [_row("a", source="roboflow", stage=3, patch=0, scar=0, composited=""),
               _row("b_painted", source="composite", stage=5, patch=1, scar=0, composited="patch")]
    rows = untouched_and_painted(painted, originals)
    assert [(r.image.name, r.stage, r.conditions["alopecia_patch"]) for r in rows] == [
        ("a.jpg", 3, 0),
        # the untouched original carries the stage and counts as having no patch or scar ...
        ("b.jpg", 5, 0),
        # ... and the painted copy carries the patch, but no stage
        ("b_painted.jpg", None, 1),
    ]
    assert rows[1].conditions["transplant_scar"] == 0
    # the original stays a member of the painted set, whose negatives are assumed, not labelled
    assert rows[1].extra["source"] == "roboflow" and rows[1].extra["composited"] == ""


def test_renders_lose_their_stage_but_keep_every_other_label() -> None:
    render = _row("r", source="synth", stage=6, patch=1, scar=0)
    (row,) = without_stage([render])
    assert row.stage is None
    assert row.conditions == render.conditions and row.view == render.view and row.image == render.image
