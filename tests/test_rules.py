"""The candidacy rules engine: each rule at, below and above its threshold, patient aggregation
across views, and rules files (defaults, a clinic's own, malformed ones)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalpscan.inference.intake import Intake
from scalpscan.inference.rules import (
    DEFAULT_RULES_PATH,
    Assessment,
    PriorVisit,
    RulesError,
    assess,
    load_rules,
    rules_from_dict,
    zone_changes,
)

GOLDEN = Path(__file__).parent / "golden"
RULES = load_rules()
EPS = 0.01


def row(image: str = "a.jpg", *, view: str | None = "top", status: str = "ok", stage: int | None = 1,
        thinning: float = 0.2, alopecia_patch: float = 0.2, transplant_scar: float = 0.2,
        zones: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A result row as `score` writes it (without "findings": the rules' thresholds decide).

    Norwood 1 by default: a stage of None is a stage the model did not assess (unknown).
    """
    data = {
        "image": image, "subject": "P1", "status": status, "error": None, "view": view,
        "conditions": {"thinning": thinning, "alopecia_patch": alopecia_patch, "transplant_scar": transplant_scar},
        "stage": stage, "zones": zones or {}, "model": {"id": "test-model", "rules_version": RULES.version},
    }
    data.update(extra)
    return data


def zone(loss: float | None, box: list[float] | None = None) -> dict[str, Any]:
    return {"visible": True, "box": box or [0, 0, 10, 10], "loss_fraction": loss}


def custom(**sections: dict[str, Any]) -> Any:
    """The default rules with some keys changed (as a clinic's file would)."""
    data = yaml.safe_load(DEFAULT_RULES_PATH.read_text())
    return rules_from_dict({"version": "test", **sections}, source="test", defaults=data)


def fired(assessment: Assessment) -> list[str]:
    return [r.rule for r in assessment.reasons]


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("condition", ["thinning", "alopecia_patch", "transplant_scar"])
@pytest.mark.parametrize("offset,found", [(-EPS, False), (0.0, True), (EPS, True)])
def test_finding_threshold(condition: str, offset: float, found: bool) -> None:
    p = RULES.finding_thresholds[condition] + offset
    a = assess([row(**{condition: p})], rules=RULES)
    assert (condition in a.findings) is found
    assert (f"finding.{condition}" in fired(a)) is found
    expected = {"thinning": "density_smp", "alopecia_patch": "patch_camouflage", "transplant_scar": "scar_camouflage"}
    assert (expected[condition] in a.recommendations) is found
    assert a.decision == ("candidate" if found else "not_indicated")


def test_findings_list_in_row_wins_over_probability_thresholds() -> None:
    # score writes "findings" with the model's calibrated thresholds; the rules respect them.
    a = assess([row(thinning=0.3, findings=["thinning"])], rules=RULES)
    assert a.findings == ["thinning"]
    b = assess([row(thinning=0.99, findings=[])], rules=RULES)
    assert b.findings == [] and b.conditions["thinning"] == 0.99


@pytest.mark.parametrize("delta,decision", [(-1, "not_indicated"), (0, "candidate"), (1, "candidate")])
def test_pattern_loss_stage(delta: int, decision: str) -> None:
    stage = RULES.pattern_loss_stage_min + delta
    a = assess([row(stage=stage)], rules=RULES)
    assert a.stage == stage
    assert a.decision == decision
    assert ("density_smp" in a.recommendations) is (decision == "candidate")
    if decision == "not_indicated":
        assert "not_indicated.no_loss" in fired(a)


@pytest.mark.parametrize("delta,full", [(-1, False), (0, True), (1, True)])
def test_full_coverage_stage(delta: int, full: bool) -> None:
    stage = min(RULES.full_coverage_stage_min + delta, 7)
    a = assess([row(stage=stage, thinning=0.9)], rules=RULES)
    assert ("full_coverage" in a.recommendations) is full
    # Little hair left: full coverage replaces density SMP.
    assert ("density_smp" in a.recommendations) is (not full)
    reason = next(r for r in a.reasons if r.rule.startswith("recommend."))
    assert reason.evidence["stage"] == stage and reason.evidence["full_coverage_stage_min"] == RULES.full_coverage_stage_min


@pytest.mark.parametrize("offset,full", [(-EPS, False), (0.0, True), (EPS, True)])
def test_full_coverage_loss_fraction(offset: float, full: bool) -> None:
    loss = RULES.full_coverage_loss_min + offset
    zones = {z: zone(loss) for z in RULES.full_coverage_zones}
    a = assess([row(stage=4, thinning=0.9, zones=zones)], rules=RULES)
    assert ("full_coverage" in a.recommendations) is full
    assert ("density_smp" in a.recommendations) is (not full)


@pytest.mark.parametrize("offset,focus", [(-EPS, False), (0.0, True), (EPS, True)])
def test_zone_loss_threshold(offset: float, focus: bool) -> None:
    zones = {"crown": zone(0.5), "part": zone(RULES.zone_loss_min + offset)}
    a = assess([row(thinning=0.9, zones=zones)], Intake(sex="male"), rules=RULES)
    assert ("part" in a.focus_zones) is focus
    assert "crown" in a.focus_zones
    assert "focus.loss_zones" in fired(a)


@pytest.mark.parametrize("usable,decision", [(1, "review"), (2, "candidate"), (3, "candidate")])
def test_min_usable_photos(usable: int, decision: str) -> None:
    rules = custom(photos={"min_usable": 2})
    rows = [row(f"{i}.jpg", thinning=0.9) for i in range(usable)] + [row("bad.jpg", status="error", error="truncated")]
    a = assess(rows, rules=rules)
    assert a.decision == decision
    assert ("review.too_few_photos" in fired(a)) is (decision == "review")
    assert a.recommendations == ([] if decision == "review" else ["density_smp"])


@pytest.mark.parametrize("delta,review", [(-1, False), (0, True), (1, True)])
def test_stage_disagreement(delta: int, review: bool) -> None:
    spread = RULES.stage_spread + delta
    rows = [row("front.jpg", view="front", stage=1), row("top.jpg", view="top", stage=1 + spread)]
    a = assess(rows, rules=RULES)
    assert (a.decision == "review") is review
    assert ("review.stage_disagreement" in fired(a)) is review


@pytest.mark.parametrize(
    "high,low,review",
    [
        (RULES.finding_high, RULES.finding_low, True),  # at both thresholds
        (RULES.finding_high - EPS, RULES.finding_low, False),  # high below
        (RULES.finding_high + EPS / 2, RULES.finding_low, True),  # high above
        (RULES.finding_high, RULES.finding_low + EPS, False),  # low above
        (RULES.finding_high, RULES.finding_low - EPS, True),  # low below
    ],
)
def test_finding_contradiction(high: float, low: float, review: bool) -> None:
    rows = [row("t1.jpg", view="top", alopecia_patch=high), row("t2.jpg", view="top", alopecia_patch=low)]
    a = assess(rows, rules=RULES)
    assert (a.decision == "review") is review
    assert ("review.finding_contradiction" in fired(a)) is review


def test_contradiction_needs_the_same_area() -> None:
    # A scar seen on the back (donor area) and not on the front is no contradiction...
    back = row("back.jpg", view="back", transplant_scar=0.97, zones={"donor": zone(0.3)})
    front = row("front.jpg", view="front", transplant_scar=0.01, zones={"hairline": zone(0.1)})
    assert assess([back, front], rules=RULES).decision == "candidate"
    # ...but two views showing the same zone that disagree so strongly are.
    top = row("top.jpg", view="top", transplant_scar=0.01, zones={"donor": zone(0.0)})
    a = assess([back, top], rules=RULES)
    assert a.decision == "review"
    reason = next(r for r in a.reasons if r.rule == "review.finding_contradiction")
    assert reason.evidence["shared"] == ["donor"]


@pytest.mark.parametrize(
    "notes,progressing",
    [
        ("", False),
        ("noticed thinning two years ago", False),
        ("rapid shedding since spring", True),
        ("new patches every month", True),
        ("Progressing fast!", True),
        ("no shedding", False),
        ("not progressing for a year, stable", False),
        ("stable, not progressing; but shedding again", True),
    ],
)
def test_progressing_loss_from_notes(notes: str, progressing: bool) -> None:
    a = assess([row(alopecia_patch=0.9)], Intake(notes=notes), rules=RULES)
    assert ("progressing_loss" in a.cautions) is progressing
    assert a.decision == ("caution" if progressing else "candidate")
    patch = next(r for r in a.reasons if r.rule == "recommend.patch_camouflage")
    assert patch.evidence["stable"] is (not progressing)


@pytest.mark.parametrize("window,progressing", [(1, True), (2, False), (3, False)])
def test_negation_window(window: int, progressing: bool) -> None:
    rules = custom(progression={"negation_window": window})
    a = assess([row(thinning=0.9)], Intake(notes="no more shedding"), rules=rules)
    assert ("progressing_loss" in a.cautions) is progressing


@pytest.mark.parametrize("flag", ["keloid_history", "eczema_active", "psoriasis_active"])
def test_intake_cautions(flag: str) -> None:
    a = assess([row(thinning=0.9)], Intake(**{flag: True}), rules=RULES)
    assert a.decision == "caution" and a.cautions == [flag]
    assert a.recommendations == ["density_smp"]
    reason = next(r for r in a.reasons if r.rule == f"caution.{flag}")
    assert reason.evidence == {"intake": {flag: True}} and "dermatologist" in reason.text
    # Cautions are listed even when SMP is not indicated.
    b = assess([row()], Intake(**{flag: True}), rules=RULES)
    assert b.decision == "not_indicated" and b.cautions == [flag]


# --------------------------------------------------------------------------- aggregation


def test_views_weigh_the_stage() -> None:
    rows = [row("top.jpg", view="top", stage=4), row("back.jpg", view="back", stage=2)]
    assert assess(rows, rules=RULES).stage == 4  # top weighs 1.0, back 0.5
    equal = custom(photos={"view_weights": {"front": 1, "top": 1, "back": 1, "left": 1, "right": 1}})
    assert assess(rows, rules=equal).stage == 2  # weighted median of a tie: the lower stage
    ignore_back = custom(photos={"view_weights": {"front": 1, "top": 1, "back": 0, "left": 0, "right": 0}})
    a = assess(rows, rules=ignore_back)
    assert a.stage == 4 and a.stage_probabilities == [0, 0, 0, 1.0, 0, 0, 0]


def test_default_view_weights_are_the_ones_evaluation_uses() -> None:
    # Evaluation's per-person stage and the reports' patient stage are one computation with
    # the same weights; a clinic's own rules file may still change them for its reports.
    from scalpscan.models.ordinal import PERSON_UNKNOWN_VIEW_WEIGHT, PERSON_VIEW_WEIGHTS

    assert RULES.view_weights == PERSON_VIEW_WEIGHTS
    assert RULES.unknown_view_weight == PERSON_UNKNOWN_VIEW_WEIGHT


def test_stage_probabilities_are_combined() -> None:
    top = row("top.jpg", view="top", stage=3, stage_probabilities=[0, 0.1, 0.45, 0.45, 0, 0, 0])
    front = row("front.jpg", view="front", stage=4, stage_probabilities=[0, 0, 0.2, 0.8, 0, 0, 0])
    a = assess([top, front], rules=RULES)
    assert a.stage_probabilities == pytest.approx([0, 0.05, 0.325, 0.625, 0, 0, 0])
    assert a.stage == 4
    assert sum(a.stage_probabilities) == pytest.approx(1.0)


def test_findings_and_zones_merge_across_views() -> None:
    top = row("top.jpg", view="top", thinning=0.9, stage=4, zones={"crown": zone(0.4), "part": zone(0.2)})
    back = row("back.jpg", view="back", stage=None, transplant_scar=0.8, zones={"crown": zone(0.6), "donor": zone(0.3)})
    front = row("front.jpg", view="front", stage=None, zones={"hairline": zone(None), "temple_left": zone(0.05)})
    a = assess([top, back, front], Intake(sex="male"), rules=RULES)
    assert a.findings == ["thinning", "transplant_scar"]
    assert a.conditions == {"thinning": 0.9, "alopecia_patch": 0.2, "transplant_scar": 0.8}
    assert a.zones["crown"] == {"visible": True, "loss_fraction": 0.6, "image": "back.jpg"}
    assert a.zones["hairline"]["loss_fraction"] is None
    assert a.recommendations == ["density_smp", "scar_camouflage"]
    assert a.focus_zones == ["crown", "part", "donor"]
    assert a.photos_used == ["top.jpg", "back.jpg", "front.jpg"]


@pytest.mark.parametrize(
    "sex,expected",
    [
        ("male", ["hairline", "crown", "temple_left", "part"]),
        ("female", ["temple_left", "part", "hairline", "crown"]),
        (None, ["hairline", "crown", "temple_left", "part"]),
    ],
)
def test_focus_zones_follow_sex_priority(sex: str | None, expected: list[str]) -> None:
    zones = {z: zone(0.5) for z in ("part", "crown", "temple_left", "hairline")}
    a = assess([row(thinning=0.9, zones=zones)], Intake(sex=sex), rules=RULES)
    assert a.focus_zones == expected


@pytest.mark.parametrize("sex", ["male", "female", None])
def test_focus_falls_back_to_primary_zones(sex: str | None) -> None:
    a = assess([row(thinning=0.9)], Intake(sex=sex), rules=RULES)
    assert a.focus_zones == list(RULES.primary_zones[sex or "unknown"])
    assert "focus.primary_zones" in fired(a)


def test_excluded_photos_are_left_out_and_said_so() -> None:
    rows = [
        row("ok.jpg", thinning=0.9),
        row("dark.jpg", status="recapture", thinning=0.99, stage=7, error="too dark"),
        row("broken.jpg", status="error", error="truncated JPEG"),
    ]
    a = assess(rows, rules=RULES)
    assert a.photos_used == ["ok.jpg"]
    assert [e["image"] for e in a.photos_excluded] == ["dark.jpg", "broken.jpg"]
    assert a.stage == 1 and a.conditions["thinning"] == 0.9  # the recapture row's values are not used
    reason = next(r for r in a.reasons if r.rule == "photos.excluded")
    assert "1 to retake" in reason.text and "1 unreadable" in reason.text
    assert reason.evidence["excluded"][1]["reason"] == "truncated JPEG"


def test_no_usable_photo_is_review() -> None:
    a = assess([row(status="recapture")], Intake(keloid_history=True), rules=RULES)
    assert a.decision == "review" and a.recommendations == [] and a.cautions == ["keloid_history"]
    assert assess([], rules=RULES).decision == "review"


def test_every_decision_lists_rules_with_evidence() -> None:
    cases = [
        [row(thinning=0.9)],
        [row(thinning=0.9)],
        [row()],
        [row(status="error")],
    ]
    intakes = [None, Intake(eczema_active=True), None, None]
    decisions = []
    for rows, intake in zip(cases, intakes):
        a = assess(rows, intake, rules=RULES)
        decisions.append(a.decision)
        assert a.reasons[-1].rule == f"decision.{a.decision}"
        for reason in a.reasons:
            assert reason.rule and reason.text and isinstance(reason.evidence, dict) and reason.evidence
        json.dumps(a.to_dict())  # JSON-ready
        assert a.disclaimers and a.rules_version == RULES.version
    assert decisions == ["candidate", "caution", "not_indicated", "review"]


def test_to_dict_has_the_design_fields_first() -> None:
    d = assess([row(thinning=0.9)], rules=RULES).to_dict()
    assert list(d)[:5] == ["decision", "recommendations", "focus_zones", "cautions", "reasons"]
    assert set(d["reasons"][0]) == {"rule", "text", "evidence"}
    for key in ("stage", "findings", "photos_used", "photos_excluded", "rules_version", "disclaimers"):
        assert key in d


def test_objects_with_to_row_are_accepted() -> None:
    class Prediction:
        def to_row(self) -> dict[str, Any]:
            return row(thinning=0.95)

    assert assess([Prediction()], rules=RULES).findings == ["thinning"]
    with pytest.raises(TypeError, match="to_row"):
        assess([42], rules=RULES)


def test_default_disclaimers_say_what_smp_is_and_is_not() -> None:
    text = " ".join(RULES.disclaimers).lower()
    for phrase in ("cosmetic", "does not regrow hair", "does not damage", "not microblading", "not a diagnosis"):
        assert phrase in text


def test_engine_imports_no_torch() -> None:
    code = ("import sys, scalpscan.inference.rules, scalpscan.inference.intake; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_golden_assessment() -> None:
    """A multi-view patient's full assessment; regenerate with UPDATE_GOLDEN=1 (then review the diff)."""
    rows = [
        row("top.jpg", view="top", thinning=0.91, stage=5, stage_probabilities=[0, 0, 0.05, 0.3, 0.5, 0.15, 0],
            zones={"crown": zone(0.62), "part": zone(0.3)}),
        row("front.jpg", view="front", thinning=0.8, stage=4, zones={"hairline": zone(0.45), "temple_left": zone(0.2)}),
        row("back.jpg", view="back", stage=None, transplant_scar=0.85, zones={"donor": zone(0.25)}),
        row("blurry.jpg", view="left", status="recapture", error="too blurred"),
    ]
    got = assess(rows, Intake(sex="female", keloid_history=True, notes="slow thinning"), rules=RULES).to_dict()
    path = GOLDEN / "assessment_multiview.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=False) + "\n")
    assert path.exists(), "golden file missing: run UPDATE_GOLDEN=1 pytest tests/test_rules.py once"
    assert got == json.loads(path.read_text())


# --------------------------------------------------------------------------- rules files


def test_default_rules_load_with_version() -> None:
    assert RULES.version and RULES.source == "built-in default.yaml"
    assert load_rules(DEFAULT_RULES_PATH) == RULES.__class__(**{**RULES.__dict__, "source": str(DEFAULT_RULES_PATH)})


def test_clinic_file_overrides_some_keys(tmp_path: Path) -> None:
    path = tmp_path / "clinic.yaml"
    path.write_text('version: "clinic-7"\nstage:\n  full_coverage_min: 5\n')
    rules = load_rules(path)
    assert rules.version == "clinic-7" and rules.full_coverage_stage_min == 5
    assert rules.pattern_loss_stage_min == RULES.pattern_loss_stage_min  # kept from the defaults
    assert "full_coverage" in assess([row(stage=5)], rules=rules).recommendations
    assert assess([row(stage=5)], rules=rules).rules_version == "clinic-7"


@pytest.mark.parametrize(
    "text,key,problem",
    [
        ("stage:\n  full_coverage_min: 6\n", "version", "missing"),
        ('version: "1"\nstages: {}\n', "stages", "unknown key"),
        ('version: "1"\nstage:\n  full_coverage: 6\n', "stage.full_coverage", "unknown key"),
        ('version: "1"\nstage:\n  full_coverage_min: "six"\n', "stage.full_coverage_min", "expected a Norwood stage"),
        ('version: "1"\nstage:\n  full_coverage_min: 9\n', "stage.full_coverage_min", "expected a Norwood stage"),
        ('version: "1"\nfindings:\n  thresholds: {thinning: 1.5}\n', "findings.thresholds.thinning", "out of range"),
        ('version: "1"\nfindings:\n  thresholds: {baldness: 0.5}\n', "findings.thresholds.baldness", "unknown key"),
        ('version: "1"\nphotos:\n  min_usable: 0\n', "photos.min_usable", "out of range"),
        ('version: "1"\nphotos:\n  min_usable: 1.5\n', "photos.min_usable", "whole number"),
        ('version: "1"\nphotos:\n  view_weights: {top: -1}\n', "photos.view_weights.top", "out of range"),
        ('version: "1"\nloss:\n  zone_min: true\n', "loss.zone_min", "expected a number"),
        ('version: "1"\nloss:\n  full_coverage_zones: [scalp]\n', "loss.full_coverage_zones", "unknown zone"),
        ('version: "1"\nfocus:\n  order: {male: [crown]}\n', "focus.order.male", "must list each zone once"),
        ('version: "1"\nprogression:\n  keywords: shedding\n', "progression.keywords", "list of non-empty texts"),
        ('version: "1"\nprogression:\n  min_points_per_year: -5\n', "progression.min_points_per_year", "out of range"),
        ('version: "1"\nprogression:\n  min_days: 30.5\n', "progression.min_days", "whole number"),
        ('version: "1"\nreview:\n  finding_low: 0.95\n', "review.finding_low", "must be below"),
        ('version: "1"\nstage:\n  pattern_loss_min: 7\n', "stage.pattern_loss_min", "must not be above"),
        ('version: "1"\ndisclaimers: []\n', "disclaimers", "must not be empty"),
        ("- just\n- a list\n", "top", "expected a mapping"),
        ('version: "1"\nstage: [1, 2\n', "", "not valid YAML"),
    ],
)
def test_malformed_rules_are_refused(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message and key in message and problem in message


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('version: "1"\nstage:\n  full_coverage_min: 0\nloss:\n  zone_min: 2\ncolour: red\n')
    message = str(pytest.raises(RulesError, load_rules, path).value)
    for key in ("stage.full_coverage_min", "loss.zone_min", "colour"):
        assert key in message


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- unknown is unknown

NO_CONDITIONS = ["thinning", "alopecia_patch", "transplant_scar"]


def unassessed(*names: str, **kwargs: Any) -> dict[str, Any]:
    """A row from a model that does not assess ``names``: null values, listed under not_assessed."""
    data = row(**kwargs)
    data["not_assessed"] = list(names)
    for name in names:
        if name in NO_CONDITIONS:
            data["conditions"][name] = None
        elif name == "stage":
            data["stage"] = None
        elif name == "zones":
            data["zones"] = None
    return data


def unknown_reasons(a: Assessment) -> dict[str, str]:
    return {r.evidence["output"]: r.text for r in a.reasons if r.rule == "not_assessed"}


def test_a_condition_not_assessed_is_unknown_never_absent() -> None:
    # Norwood 2, no thinning: with patches and scars unknown, "not indicated" would rest on them.
    a = assess([unassessed("alopecia_patch", "transplant_scar", stage=2)], rules=RULES)
    assert a.decision == "review" and a.recommendations == []
    assert a.not_assessed == ["alopecia_patch", "transplant_scar"]
    assert a.conditions == {"thinning": 0.2, "alopecia_patch": None, "transplant_scar": None}
    review = next(r for r in a.reasons if r.rule == "review.not_assessed")
    assert review.evidence["not_assessed"] == ["alopecia_patch", "transplant_scar"]
    texts = unknown_reasons(a)
    assert texts["alopecia_patch"].startswith("This model does not assess alopecia patches")
    assert "no scar camouflage" in texts["transplant_scar"]
    # Everything assessed and nothing found: not indicated, as before.
    assert assess([row(stage=2)], rules=RULES).decision == "not_indicated"


def test_known_findings_still_decide_beside_unknown_ones() -> None:
    a = assess([unassessed("alopecia_patch", "transplant_scar", thinning=0.9)], rules=RULES)
    assert a.decision == "candidate" and a.recommendations == ["density_smp"]
    assert a.findings == ["thinning"] and set(unknown_reasons(a)) == {"alopecia_patch", "transplant_scar"}


def test_values_of_an_output_listed_as_not_assessed_are_never_read() -> None:
    # A row that carries numbers for an output it lists as not assessed: the numbers are noise.
    stale = unassessed("alopecia_patch", thinning=0.9, findings=["thinning", "alopecia_patch"])
    stale["conditions"]["alopecia_patch"] = 0.99
    clear = unassessed("alopecia_patch", image="a2.jpg", thinning=0.9)
    clear["conditions"]["alopecia_patch"] = 0.01  # would contradict the 0.99 of the same view
    a = assess([stale, clear], rules=RULES)
    assert a.findings == ["thinning"] and "patch_camouflage" not in a.recommendations
    assert a.conditions["alopecia_patch"] is None and a.decision == "candidate"


def test_a_stage_not_assessed_recommends_nothing_from_the_stage() -> None:
    quiet = assess([unassessed("stage", thinning=0.2)], rules=RULES)
    assert quiet.stage is None and quiet.stage_probabilities is None and quiet.decision == "review"
    assert quiet.not_assessed == ["stage"] and "the Norwood stage" in unknown_reasons(quiet)["stage"]
    thin = assess([unassessed("stage", thinning=0.9)], rules=RULES)
    assert thin.decision == "candidate" and thin.recommendations == ["density_smp"]
    density = next(r for r in thin.reasons if r.rule == "recommend.density_smp")
    assert density.evidence["stage"] is None and "Norwood" not in density.text
    # A stage from another photo of the same model still counts.
    staged = assess([unassessed("stage", image="a.jpg"), row("b.jpg", stage=6)], rules=RULES)
    assert staged.stage == 6 and "full_coverage" in staged.recommendations


def test_zones_not_assessed_give_no_focus_zone_and_no_full_coverage_from_loss() -> None:
    a = assess([unassessed("zones", "hairloss", thinning=0.9)], Intake(sex="male"), rules=RULES)
    assert a.not_assessed == ["zones", "hairloss"] and a.zones == {}
    assert a.decision == "candidate" and a.focus_zones == []  # where the loss is, is unknown
    focus = next(r for r in a.reasons if r.rule == "focus.loss_unknown")
    assert focus.text.startswith("Loss per zone is not assessed") and focus.evidence["loss_assessed"] is False
    assert "practitioner" in focus.text and "hairline, crown" in focus.text  # named, not proposed
    assert set(unknown_reasons(a)) == {"zones"}  # the loss map is said once, with the zones
    # A clinic whose rules say so gets the main areas of concern instead.
    primary = assess([unassessed("zones", "hairloss", thinning=0.9)], Intake(sex="male"),
                     rules=custom(focus={"when_loss_unknown": "primary"}))
    assert primary.focus_zones == ["hairline", "crown"] and "focus.primary_zones" in fired(primary)


@pytest.mark.parametrize("when,expected", [("none", []), ("primary", ["temple_left", "temple_right", "part"]),
                                           ("visible", ["part", "hairline", "crown"])])
def test_a_zone_with_unknown_loss_is_never_a_focus_zone_on_that_loss(when: str, expected: list[str]) -> None:
    # Visible zones, but the loss map is not assessed: whatever the (unread) fractions say,
    # the focus is the rules' choice for unknown loss, never "the zones with loss".
    zones = {z: zone(0.9) for z in ("crown", "hairline", "part")}
    rules = custom(focus={"when_loss_unknown": when})
    a = assess([unassessed("hairloss", thinning=0.9, zones=zones)], Intake(sex="female"), rules=rules)
    assert a.decision == "candidate" and a.focus_zones == expected
    assert "focus.loss_zones" not in fired(a)
    focus = next(r for r in a.reasons if r.rule.startswith("focus."))
    assert focus.evidence["loss_assessed"] is False and focus.evidence["when_loss_unknown"] == when


def test_focus_names_zones_whose_loss_is_not_measured() -> None:
    # Crown measured with loss, hairline visible without a fraction: focus on the crown only,
    # and say the hairline was not measured.
    zones = {"crown": zone(0.4), "hairline": zone(None)}
    a = assess([row(thinning=0.9, zones=zones)], Intake(sex="male"), rules=RULES)
    assert a.focus_zones == ["crown"]
    focus = next(r for r in a.reasons if r.rule == "focus.loss_zones")
    assert focus.evidence["loss_unknown"] == ["hairline"] and "not measured in the hairline" in focus.text
    # No measured loss anywhere while the hairline is unmeasured: "no zone shows loss" would
    # rest on the unknown hairline, so no focus zone (by default).
    low = assess([row(thinning=0.9, zones={"crown": zone(0.05), "hairline": zone(None)})], Intake(sex="male"),
                 rules=RULES)
    assert low.focus_zones == [] and "focus.loss_unknown" in fired(low)
    reason = next(r for r in low.reasons if r.rule == "focus.loss_unknown")
    assert reason.text.startswith("Loss is not measured in the hairline")


def test_rules_file_refuses_an_unknown_focus_choice() -> None:
    with pytest.raises(RulesError, match="when_loss_unknown.*expected one of"):
        custom(focus={"when_loss_unknown": "everywhere"})


def test_a_loss_map_not_assessed_leaves_loss_unknown_in_visible_zones() -> None:
    full = {z: zone(0.9) for z in ("hairline", "crown")}
    a = assess([unassessed("hairloss", stage=4, thinning=0.9, zones=full)], rules=RULES)
    assert a.not_assessed == ["hairloss"]
    assert a.zones["crown"] == {"visible": True, "loss_fraction": None, "image": None}
    assert a.recommendations == ["density_smp"]  # 90 % loss read from an unassessed map would say full coverage
    assert a.focus_zones == [] and "focus.loss_unknown" in fired(a)


def test_nothing_assessable_is_review_and_intake_cautions_still_apply() -> None:
    everything = ("thinning", "alopecia_patch", "transplant_scar", "stage", "zones", "hairloss")
    a = assess([unassessed(*everything), unassessed(*everything, image="b.jpg")], Intake(keloid_history=True), rules=RULES)
    assert a.decision == "review" and a.recommendations == [] and a.focus_zones == []
    assert "review.nothing_assessed" in fired(a) and a.cautions == ["keloid_history"]
    assert a.not_assessed == [*everything[:4], "zones", "hairloss"]


def test_old_rows_without_not_assessed_mean_everything_assessed() -> None:
    a = assess([row(thinning=0.9, zones={"crown": zone(0.3)})], rules=RULES)
    assert a.not_assessed == [] and "not_assessed" not in fired(a)
    assert list(a.to_dict())[:6] == ["decision", "recommendations", "focus_zones", "cautions", "reasons", "not_assessed"]


def test_unvalidated_outputs_are_said() -> None:
    rows = [unassessed("alopecia_patch", thinning=0.9, unvalidated=["thinning", "alopecia_patch", "zones"])]
    a = assess(rows, rules=RULES)
    assert a.unvalidated == ["thinning", "zones"]  # an unknown output is not used, so not listed
    reason = next(r for r in a.reasons if r.rule == "unvalidated")
    assert reason.evidence == {"outputs": ["thinning", "zones"]} and "not yet validated on real photos" in reason.text


def test_golden_assessment_of_a_stage_only_model() -> None:
    """The real-photo recipe's model (stage and view only) on a Norwood 5 patient; regenerate
    with UPDATE_GOLDEN=1 (then review the diff)."""
    only_stage = ("thinning", "alopecia_patch", "transplant_scar", "zones", "hairloss")
    rows = [unassessed(*only_stage, image="front.jpg", view="front", stage=5,
                       stage_probabilities=[0, 0, 0, 0.2, 0.6, 0.2, 0]),
            unassessed(*only_stage, image="top.jpg", view="top", stage=5)]
    got = assess(rows, Intake(sex="male"), rules=RULES).to_dict()
    path = GOLDEN / "assessment_stage_only.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2, sort_keys=False) + "\n")
    assert path.exists(), "golden file missing: run UPDATE_GOLDEN=1 pytest tests/test_rules.py once"
    assert got == json.loads(path.read_text())


# --------------------------------------------------------------------------- measured progression

DAY = datetime.date(2026, 7, 1)


def ago(days: int) -> datetime.date:
    return DAY - datetime.timedelta(days=days)


def test_zone_changes_compares_each_zone_with_the_latest_visit_far_enough_back() -> None:
    prior = [PriorVisit(ago(400), {"crown": 0.10, "hairline": 0.20}, stage=3),
             PriorVisit(ago(200), {"crown": 0.30, "hairline": None}, stage=4),
             PriorVisit(ago(10), {"crown": 0.50}),  # too recent for min_days=60
             PriorVisit(DAY + datetime.timedelta(days=30), {"crown": 0.0})]  # after this visit
    changes = zone_changes({"crown": 0.40, "hairline": {"visible": True, "loss_fraction": 0.25}, "part": 0.3},
                           prior, visit_date=DAY, min_days=60)
    assert list(changes) == ["hairline", "crown"]  # part was never measured before
    crown = changes["crown"]
    assert (crown["from_date"], crown["to_date"], crown["days"]) == (ago(200).isoformat(), DAY.isoformat(), 200)
    assert (crown["before"], crown["after"]) == (0.30, 0.40)
    assert crown["change"] == pytest.approx(0.10)
    assert crown["per_year"] == pytest.approx(0.10 * 365.25 / 200, abs=1e-6)
    assert crown["points_per_year"] == pytest.approx(18.3)
    assert changes["hairline"]["from_date"] == ago(400).isoformat()  # the later visit did not measure it
    # One visit and no date: the change, without days or rate.
    bare = zone_changes({"crown": 0.4}, PriorVisit(ago(200), {"crown": 0.3}))["crown"]
    assert bare["days"] is None and bare["per_year"] is None and bare["change"] == pytest.approx(0.1)


@pytest.mark.parametrize("threshold,progressing", [(9.9, True), (10.0, True), (10.1, False)])
def test_measured_progression_threshold(threshold: float, progressing: bool) -> None:
    rules = custom(progression={"min_points_per_year": threshold})
    prior = [PriorVisit(ago(365), {"crown": 0.30}, stage=4)]  # 10 points in 365 days: 10.0 a year
    a = assess([row(thinning=0.9, zones={"crown": zone(0.40)})], rules=rules, prior=prior, visit_date=DAY)
    assert ("progressing_loss" in a.cautions) is progressing
    assert a.decision == ("caution" if progressing else "candidate")
    if progressing:
        reason = next(r for r in a.reasons if r.rule == "caution.progressing_loss")
        assert reason.evidence["zone"] == "crown"
        assert (reason.evidence["from_date"], reason.evidence["to_date"]) == (ago(365).isoformat(), DAY.isoformat())
        assert (reason.evidence["before"], reason.evidence["after"]) == (0.30, 0.40)
        assert reason.evidence["points_per_year"] == 10.0 and reason.evidence["min_points_per_year"] == threshold
        assert "crown" in reason.text and "30%" in reason.text and "40%" in reason.text and "10.0 points a year" in reason.text


def test_measured_progression_needs_enough_days_and_a_measured_loss() -> None:
    prior = [PriorVisit(ago(30), {"crown": 0.10})]
    zones = {"crown": zone(0.40)}  # 30 points in a month
    assert assess([row(thinning=0.9, zones=zones)], rules=RULES, prior=prior, visit_date=DAY).cautions == []
    short = custom(progression={"min_days": 20})
    assert assess([row(thinning=0.9, zones=zones)], rules=short, prior=prior, visit_date=DAY).cautions == ["progressing_loss"]
    # The loss map not assessed now: no rate can be measured, so no caution rests on it.
    unknown = unassessed("hairloss", thinning=0.9, zones=zones)
    assert assess([unknown], rules=short, prior=prior, visit_date=DAY).cautions == []


def test_measured_progression_makes_patches_unstable_and_says_both_sources() -> None:
    prior = [PriorVisit(ago(180), {"crown": 0.10})]
    a = assess([row(alopecia_patch=0.9, zones={"crown": zone(0.30)})], Intake(notes="shedding a lot"),
               rules=RULES, prior=prior, visit_date=DAY)
    assert a.cautions == ["progressing_loss"]
    progressing = [r for r in a.reasons if r.rule == "caution.progressing_loss"]
    assert [sorted(r.evidence)[0] for r in progressing] == ["notes", "after"]
    patch = next(r for r in a.reasons if r.rule == "recommend.patch_camouflage")
    assert patch.evidence["stable"] is False


def test_prior_visits_are_checked() -> None:
    with pytest.raises(ValueError, match="visit_date"):
        assess([row()], rules=RULES, prior=[PriorVisit(ago(100), {"crown": 0.1})])
    with pytest.raises(ValueError, match="scalp"):
        PriorVisit(DAY, {"scalp": 0.1})
    with pytest.raises(ValueError, match="from 0 to 1"):
        PriorVisit(DAY, {"crown": 40})
    with pytest.raises(ValueError, match="Norwood"):
        PriorVisit(DAY, {}, stage=9)
    with pytest.raises(TypeError, match="datetime.date"):
        PriorVisit("2026-01-01", {})  # type: ignore[arg-type]
