"""The candidacy rules engine: a patient's photo-level result rows to one assessment.

Pure functions, no torch and no I/O beyond loading the default rules. `assess` reads the
patient's photos in steps, each a small function readable on its own:

1. `usable_photos`: which photos count, and why the others do not;
2. `merge_findings`, `combine_stage`, `merge_zones`: the patient's findings, Norwood stage
   and zones over all of their photos;
3. `unknown_outputs`: what the model did not assess (or no usable photo gave) for this
   patient: unknown is unknown, never absent or present, and no recommendation or caution
   rests on it; `unvalidated_outputs`: what was trained on renders only;
4. `cautions`: from the intake sheet, the intake notes and loss measured between visits;
5. `contradictions`: photos that disagree too much to decide without a person;
6. `decide`: the decision, from all of the above;
7. `recommend` and `focus`: what SMP and where, for a candidate.

Every step returns the `Reason` of each rule that fired, with its evidence.

    >>> assessment = assess(rows, Intake(sex="male"))
    >>> assessment.decision, assessment.recommendations
    ('candidate', ['density_smp'])
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalpscan.data.vocab import CONDITIONS, OUTPUTS, SEXES, STAGES, VIEWS, ZONES
from scalpscan.inference.intake import Intake
from scalpscan.models.ordinal import combine_distributions

from .assessment import Assessment, Reason
from .progression import PriorVisit, measured_progression, notes_progression
from .rules_file import Rules, load_rules

__all__ = [
    "Extent",
    "Findings",
    "StageEstimate",
    "assess",
    "cautions",
    "combine_stage",
    "contradictions",
    "decide",
    "focus",
    "merge_findings",
    "merge_zones",
    "recommend",
    "unknown_outputs",
    "unvalidated_outputs",
    "usable_photos",
]

Row = Mapping[str, Any]

# What each output is, and what the assessment does without it (for the "not_assessed" reasons).
_UNKNOWN_TEXT: dict[str, tuple[str, str]] = {
    "thinning": ("thinning", "no density SMP is proposed from thinning"),
    "alopecia_patch": ("alopecia patches", "no patch camouflage is proposed"),
    "transplant_scar": ("transplant or surgical scars", "no scar camouflage is proposed"),
    "stage": ("the Norwood stage", "no recommendation rests on the stage"),
    "view": ("the view of each photo", "every photo counts as an unknown view towards the stage"),
    "zones": ("the scalp zones", "no focus zone or full coverage rests on them"),
    "hairloss": ("the loss within each zone", "no focus zone or full coverage rests on measured loss"),
}


# --------------------------------------------------------------------------- one row


def _prob(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _not_assessed(row: Row) -> set[str]:
    """The outputs the row says its model cannot assess (old rows: none)."""
    listed = row.get("not_assessed")
    return {name for name in listed if name in OUTPUTS} if isinstance(listed, list) else set()


def _probability(row: Row, name: str) -> float | None:
    """The row's probability of a condition; None when not assessed."""
    conditions = row.get("conditions")
    if name in _not_assessed(row) or not isinstance(conditions, Mapping):
        return None
    return _prob(conditions.get(name))


def _listed_findings(row: Row) -> list[str] | None:
    listed = row.get("findings")
    return [f for f in listed if f in CONDITIONS] if isinstance(listed, list) else None


def _row_assesses(row: Row, name: str) -> bool:
    """Whether the row says anything about a condition (a probability, or a findings list)."""
    if name in _not_assessed(row):
        return False
    return _probability(row, name) is not None or _listed_findings(row) is not None


def _row_findings(row: Row, rules: Rules) -> set[str]:
    """The row's findings: its own list (the model's calibrated thresholds), else the rules'."""
    skip = _not_assessed(row)
    listed = _listed_findings(row)
    if listed is not None:
        return {f for f in listed if f not in skip}
    return {name for name in CONDITIONS
            if (p := _probability(row, name)) is not None and p >= rules.finding_thresholds[name]}


def _row_stage_distribution(row: Row) -> list[float] | None:
    """The row's distribution over stages 1-7: its probabilities, else one-hot on its stage."""
    if "stage" in _not_assessed(row):
        return None
    probs = row.get("stage_probabilities")
    if isinstance(probs, list) and len(probs) == len(STAGES):
        values = [_prob(p) for p in probs]
        if all(v is not None and v >= 0 for v in values) and sum(values) > 0:  # type: ignore[operator,arg-type]
            total = sum(values)  # type: ignore[arg-type]
            return [v / total for v in values]  # type: ignore[operator]
    stage = row.get("stage")
    if isinstance(stage, int) and not isinstance(stage, bool) and stage in STAGES:
        return [1.0 if s == stage else 0.0 for s in STAGES]
    return None


def _row_zones(row: Row) -> Mapping[str, Any] | None:
    """The row's zones (None: not assessed), loss fractions nulled where the map is not assessed."""
    zones = row.get("zones")
    if "zones" in _not_assessed(row) or not isinstance(zones, Mapping):
        return None
    if "hairloss" in _not_assessed(row):
        return {z: {**info, "loss_fraction": None} for z, info in zones.items() if isinstance(info, Mapping)}
    return zones


def _visible_zones(row: Row) -> set[str]:
    zones = _row_zones(row) or {}
    return {z for z, info in zones.items() if z in ZONES and isinstance(info, Mapping) and info.get("visible")}


def _as_row(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, Mapping):
        return dict(prediction)
    to_row = getattr(prediction, "to_row", None)
    if callable(to_row):
        return dict(to_row())
    raise TypeError(f"assess() takes result-row dicts or objects with .to_row(), got {type(prediction).__name__}")


def _image(row: Row) -> str:
    return str(row.get("image", ""))


def _name(code: str) -> str:
    return code.replace("_", " ")


# --------------------------------------------------------------------------- 1. photos


def usable_photos(rows: Sequence[Row]) -> tuple[list[Row], list[dict[str, str]], list[Reason]]:
    """The photos that count (status "ok"), the others with why, and the reason that says so."""
    usable = [row for row in rows if row.get("status", "ok") == "ok"]
    excluded = []
    for row in rows:
        status = row.get("status", "ok")
        if status != "ok":
            why = row.get("error") or ("photo too dark, blurred or small to judge" if status == "recapture" else "")
            excluded.append({"image": _image(row), "status": str(status), "reason": str(why or status)})
    if not excluded:
        return usable, excluded, []
    retake = sum(e["status"] == "recapture" for e in excluded)
    unreadable = len(excluded) - retake
    parts = ([f"{retake} to retake (too dark, blurred or small)"] if retake else []) + \
        ([f"{unreadable} unreadable"] if unreadable else [])
    return usable, excluded, [Reason(
        "photos.excluded",
        f"{len(excluded)} photo(s) left out of the assessment: " + ", ".join(parts) + ".",
        {"excluded": excluded},
    )]


# --------------------------------------------------------------------------- 2. the patient's findings


@dataclass(frozen=True)
class Findings:
    """Conditions over all usable photos.

    Attributes:
        found: conditions found in at least one photo, in `CONDITIONS` order.
        probabilities: per condition, the highest probability of any photo (None: no photo says).
        photos: per found condition, the photos that show it.
        assessed: conditions that at least one photo assessed.
    """

    found: list[str]
    probabilities: dict[str, float | None]
    photos: dict[str, list[dict[str, Any]]]
    assessed: list[str]


def merge_findings(usable: Sequence[Row], rules: Rules) -> tuple[Findings, list[Reason]]:
    """A condition is found when any usable photo that assesses it finds it."""
    probabilities: dict[str, float | None] = {}
    photos: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
    for name in CONDITIONS:
        probs = [p for row in usable if (p := _probability(row, name)) is not None]
        probabilities[name] = max(probs) if probs else None
    for row in usable:
        for name in sorted(_row_findings(row, rules)):
            photos[name].append({"image": _image(row), "view": row.get("view"),
                                 "probability": _probability(row, name)})
    found = [c for c in CONDITIONS if photos[c]]
    assessed = [c for c in CONDITIONS if any(_row_assesses(row, c) for row in usable)]
    reasons = [Reason(
        f"finding.{name}",
        f"{_name(name).capitalize()} found in {len(photos[name])} of {len(usable)} usable photo(s).",
        {"photos": photos[name], "threshold": rules.finding_thresholds[name],
         "max_probability": probabilities[name]},
    ) for name in found]
    return Findings(found, probabilities, {c: photos[c] for c in found}, assessed), reasons


@dataclass(frozen=True)
class StageEstimate:
    """The patient's Norwood stage from the photos, views weighted.

    Attributes:
        stage: the weighted median stage (None: no usable photo gives one).
        probabilities: the weighted distribution over stages 1-7 (None with ``stage``).
        photos: ``{"image", "view", "stage", "weight"}`` of each photo that counted.
    """

    stage: int | None
    probabilities: list[float] | None
    photos: list[dict[str, Any]]


def combine_stage(usable: Sequence[Row], rules: Rules) -> tuple[StageEstimate, list[Reason]]:
    """One stage per patient: the weighted median of the photos' stages, each photo weighted
    by its predicted view (`scalpscan.models.ordinal.combine_distributions`, the computation
    evaluation's per-person figures use too)."""
    dists, weights, photos = [], [], []
    for row in usable:
        dist = _row_stage_distribution(row)
        view = row.get("view")
        weight = rules.view_weights[view] if view in VIEWS else rules.unknown_view_weight
        if dist is None or weight <= 0:
            continue
        dists.append(dist)
        weights.append(weight)
        photos.append({"image": _image(row), "view": view,
                       "stage": STAGES[max(range(len(STAGES)), key=lambda i: dist[i])], "weight": weight})
    if not photos:
        return StageEstimate(None, None, []), []
    index, mean = combine_distributions(dists, weights)
    stage = STAGES[index]
    probabilities = [round(float(p), 6) for p in mean]
    return StageEstimate(stage, probabilities, photos), [Reason(
        "stage.combined",
        f"Norwood stage {stage} from {len(photos)} photo(s), front and top views weighing more.",
        {"stage": stage, "photos": photos, "stage_probabilities": probabilities},
    )]


def merge_zones(usable: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Zones visible in any usable photo, each with the largest loss fraction measured."""
    zones: dict[str, dict[str, Any]] = {}
    for row in usable:
        for name, info in (_row_zones(row) or {}).items():
            if name not in ZONES or not isinstance(info, Mapping) or not info.get("visible"):
                continue
            entry = zones.setdefault(name, {"visible": True, "loss_fraction": None, "image": None})
            loss = _prob(info.get("loss_fraction"))
            if loss is not None and (entry["loss_fraction"] is None or loss > entry["loss_fraction"]):
                entry["loss_fraction"], entry["image"] = loss, _image(row)
    return {z: zones[z] for z in ZONES if z in zones}


# --------------------------------------------------------------------------- 3. what is unknown


def unknown_outputs(usable: Sequence[Row], findings: Findings, stage: StageEstimate,
                    rules: Rules) -> tuple[list[str], list[Reason]]:
    """What is unknown for this patient, in `OUTPUTS` order, with a reason for each.

    An output is unknown when the model does not assess it (every row lists it under
    ``not_assessed``) or when no usable photo gives it (say every photo's view weighs 0
    towards the stage).
    """
    zones_known = any(_row_zones(row) is not None for row in usable)
    known = {
        **{c: c in findings.assessed for c in CONDITIONS},
        "stage": stage.stage is not None,
        "view": any(row.get("view") in VIEWS for row in usable),
        "zones": zones_known,
        "hairloss": zones_known and any("hairloss" not in _not_assessed(row) for row in usable
                                        if _row_zones(row) is not None),
    }
    unknown = [name for name in OUTPUTS if not known[name]]
    if not usable:
        return unknown, []  # nothing to read at all: the too-few-photos reason says it
    reasons = []
    for name in unknown:
        if name == "view" and "stage" in unknown:
            continue  # the view only weighs the stage
        if name == "hairloss" and "zones" in unknown:
            continue  # said once, for the zones
        noun, consequence = _UNKNOWN_TEXT[name]
        by_model = all(name in _not_assessed(row) for row in usable)
        text = (f"This model does not assess {noun}" if by_model else f"No usable photo gives {noun}") \
            + f", so {consequence}; a practitioner checks the photos."
        reasons.append(Reason("not_assessed", text,
                              {"output": name, "cause": "model" if by_model else "photos",
                               "photos": len(usable)}))
    return unknown, reasons


def unvalidated_outputs(usable: Sequence[Row], unknown: Sequence[str]) -> tuple[list[str], list[Reason]]:
    """Outputs this assessment used that the rows say were trained on renders only."""
    listed = {name for row in usable if isinstance(row.get("unvalidated"), list)
              for name in row["unvalidated"] if name in OUTPUTS}
    used = [name for name in OUTPUTS if name in listed and name not in unknown]
    if not used:
        return [], []
    return used, [Reason(
        "unvalidated",
        "Trained on rendered photos only, not yet validated on real photos: "
        + ", ".join(_name(n) for n in used) + ". Read these findings with care.",
        {"outputs": used},
    )]


# --------------------------------------------------------------------------- 4. cautions


_INTAKE_CAUTIONS: tuple[tuple[str, str], ...] = (
    ("keloid_history", "Keloid history on the intake sheet (even from small scars such as acne): SMP needles can raise keloids."),
    ("eczema_active", "Active eczema on the intake sheet: it can flare in areas of trauma."),
    ("psoriasis_active", "Active psoriasis on the intake sheet: it can flare in areas of trauma."),
)


def cautions(intake: Intake, zones: Mapping[str, Mapping[str, Any]], rules: Rules, *,
             prior: Sequence[PriorVisit] = (), visit_date: datetime.date | None = None
             ) -> tuple[list[str], list[Reason]]:
    """Cautions (consult a dermatologist first), listed whatever the decision: from the intake
    sheet, from progressing loss in the notes, and from loss measured to grow between visits."""
    codes: list[str] = []
    reasons: list[Reason] = []
    for flag, text in _INTAKE_CAUTIONS:
        if getattr(intake, flag):
            codes.append(flag)
            reasons.append(Reason(f"caution.{flag}", text + " Consult a dermatologist first.", {"intake": {flag: True}}))
    keywords = notes_progression(intake.notes or "", rules)
    if keywords:
        reasons.append(Reason(
            "caution.progressing_loss",
            "The intake notes describe very active, progressing loss; consult a dermatologist first and "
            "treat once the loss is stable.",
            {"notes_keywords": keywords, "notes": intake.notes},
        ))
    grown = measured_progression(zones, prior, visit_date, rules)
    for change in grown:
        reasons.append(Reason(
            "caution.progressing_loss",
            f"Loss in the {_name(change['zone'])} grew from {change['before']:.0%} on {change['from_date']} to "
            f"{change['after']:.0%} on {change['to_date']}, {change['points_per_year']:.1f} points a year "
            f"(at least {rules.progression_min_points_per_year:g} counts as progressing): very active, "
            "progressing loss; consult a dermatologist first and treat once the loss is stable.",
            {**{k: change[k] for k in ("zone", "from_date", "to_date", "days", "before", "after",
                                         "points_per_year")},
             "min_points_per_year": rules.progression_min_points_per_year,
             "min_days": rules.progression_min_days},
        ))
    if keywords or grown:
        codes.append("progressing_loss")
    return codes, reasons


# --------------------------------------------------------------------------- 5. contradictions


def _contradicting_pair(rows: Sequence[Row], name: str, rules: Rules
                        ) -> tuple[tuple[str, float], tuple[str, float], list[str]] | None:
    """Two photos of the same area, one sure of ``name`` and one ruling it out (None if none).

    Photos show the same area when they have the same view or share a visible zone.
    """
    scored = [(row, p) for row in rows if (p := _probability(row, name)) is not None]
    for high_row, p_high in scored:
        if p_high < rules.finding_high:
            continue
        for low_row, p_low in scored:
            if low_row is high_row or p_low > rules.finding_low:
                continue
            shared = sorted(_visible_zones(high_row) & _visible_zones(low_row))
            same_view = high_row.get("view") is not None and high_row.get("view") == low_row.get("view")
            if shared or same_view:
                area = shared or [f"view {high_row.get('view')}"]
                return (_image(high_row), p_high), (_image(low_row), p_low), area
    return None


def contradictions(usable: Sequence[Row], stage: StageEstimate, rules: Rules) -> list[Reason]:
    """Photos that disagree on the stage by ``review.stage_spread`` or more, and photos of the
    same area where one is sure of a condition and the other rules it out."""
    reasons = []
    if len(stage.photos) >= 2:
        lo = min(stage.photos, key=lambda r: r["stage"])
        hi = max(stage.photos, key=lambda r: r["stage"])
        if hi["stage"] - lo["stage"] >= rules.stage_spread:
            reasons.append(Reason(
                "review.stage_disagreement",
                f"Photos disagree on the Norwood stage ({lo['stage']} in {lo['view'] or 'an unknown view'}, "
                f"{hi['stage']} in {hi['view'] or 'an unknown view'}), {hi['stage'] - lo['stage']} stages apart "
                f"(limit {rules.stage_spread}).",
                {"low": lo, "high": hi, "stage_spread": rules.stage_spread},
            ))
    for name in CONDITIONS:
        pair = _contradicting_pair(usable, name, rules)
        if pair:
            high, low, shared = pair
            reasons.append(Reason(
                "review.finding_contradiction",
                f"{_name(name).capitalize()} is clear in one photo (p={high[1]:.2f}) and ruled out in another "
                f"(p={low[1]:.2f}) that shows the same area.",
                {"condition": name, "high": {"image": high[0], "probability": high[1]},
                 "low": {"image": low[0], "probability": low[1]}, "shared": shared,
                 "finding_high": rules.finding_high, "finding_low": rules.finding_low},
            ))
    return reasons


# --------------------------------------------------------------------------- 6. recommendations and focus


@dataclass(frozen=True)
class Extent:
    """How advanced the loss is, from the stage and from the measured loss."""

    pattern_loss: bool
    by_stage: bool
    by_loss: bool
    mean_loss: float | None

    @property
    def extensive(self) -> bool:
        return self.by_stage or self.by_loss


def _extent(stage: int | None, zones: Mapping[str, Mapping[str, Any]], rules: Rules) -> Extent:
    measured = [zones[z]["loss_fraction"] for z in rules.full_coverage_zones
                if z in zones and zones[z]["loss_fraction"] is not None]
    mean_loss = sum(measured) / len(measured) if measured else None
    return Extent(
        pattern_loss=stage is not None and stage >= rules.pattern_loss_stage_min,
        by_stage=stage is not None and stage >= rules.full_coverage_stage_min,
        by_loss=mean_loss is not None and mean_loss >= rules.full_coverage_loss_min,
        mean_loss=mean_loss,
    )


def recommend(findings: Findings, stage: int | None, extent: Extent, caution_codes: Sequence[str],
              rules: Rules) -> tuple[list[str], list[Reason]]:
    """What SMP: full coverage or density SMP from the extent, camouflage from the findings.
    Only known findings and a known stage recommend anything."""
    codes: list[str] = []
    reasons: list[Reason] = []
    if extent.extensive:
        codes.append("full_coverage")
        reasons.append(Reason(
            "recommend.full_coverage",
            "Extensive loss, little hair left: full coverage SMP"
            + (f" (Norwood {stage}, at or above {rules.full_coverage_stage_min})" if extent.by_stage else "")
            + (f" (mean loss {extent.mean_loss:.0%} over {', '.join(rules.full_coverage_zones)}, at or above "
               f"{rules.full_coverage_loss_min:.0%})" if extent.by_loss else "")
            + ".",
            {"stage": stage, "full_coverage_stage_min": rules.full_coverage_stage_min,
             "mean_loss_fraction": extent.mean_loss, "full_coverage_loss_min": rules.full_coverage_loss_min,
             "zones": list(rules.full_coverage_zones)},
        ))
    elif "thinning" in findings.found or extent.pattern_loss:
        codes.append("density_smp")
        why = (["thinning found"] if "thinning" in findings.found else []) + \
            ([f"Norwood {stage}, at or above {rules.pattern_loss_stage_min}"] if extent.pattern_loss else [])
        reasons.append(Reason(
            "recommend.density_smp",
            "Hair still present with thinning (" + "; ".join(why) + "): density SMP, pigment between existing hairs.",
            {"thinning": "thinning" in findings.found, "stage": stage,
             "pattern_loss_min": rules.pattern_loss_stage_min,
             "full_coverage_stage_min": rules.full_coverage_stage_min, "mean_loss_fraction": extent.mean_loss},
        ))
    if "transplant_scar" in findings.found:
        codes.append("scar_camouflage")
        reasons.append(Reason("recommend.scar_camouflage", "Transplant or surgical scarring found: scar camouflage.",
                              {"photos": findings.photos["transplant_scar"]}))
    if "alopecia_patch" in findings.found:
        codes.append("patch_camouflage")
        stable = "progressing_loss" not in caution_codes
        reasons.append(Reason(
            "recommend.patch_camouflage",
            "Alopecia patches found: patch camouflage"
            + (" (no active spreading in the intake notes or measured between visits)." if stable
               else " once the patches are stable."),
            {"photos": findings.photos["alopecia_patch"], "stable": stable},
        ))
    return codes, reasons


def _whom(sex_key: str) -> str:
    return {"male": "men", "female": "women"}.get(sex_key, "an unknown sex")


def focus(zones: Mapping[str, Mapping[str, Any]], sex_key: str, unknown: Sequence[str],
          rules: Rules) -> tuple[list[str], Reason]:
    """Focus zones: the zones with measured loss, in the priority order for the patient's sex.

    A zone whose loss is unknown is never a focus zone on the strength of that loss. When no
    zone shows measured loss: the main areas of concern if every visible zone's loss was
    measured (none reaches ``loss.zone_min``); else the loss is unknown and
    ``focus.when_loss_unknown`` says what to do (by default: no focus zone, a practitioner
    chooses them).
    """
    order = rules.focus_order[sex_key]
    loss_zones = [z for z in order if z in zones and zones[z]["loss_fraction"] is not None
                  and zones[z]["loss_fraction"] >= rules.zone_loss_min]
    # Visible zones without a loss fraction: loss there may or may not be.
    unmeasured = [z for z in order if z in zones and zones[z]["loss_fraction"] is None]
    sex = None if sex_key == "unknown" else sex_key
    if loss_zones:
        return loss_zones, Reason(
            "focus.loss_zones",
            f"Focus zones are the zones with loss (at least {rules.zone_loss_min:.0%}), in the priority order "
            f"for {_whom(sex_key)}: " + ", ".join(_name(z) for z in loss_zones) + "."
            + (" Loss is not measured in the " + ", ".join(_name(z) for z in unmeasured) + "."
               if unmeasured else ""),
            {"zones": {z: zones[z]["loss_fraction"] for z in loss_zones}, "zone_min": rules.zone_loss_min,
             "order": list(order), "loss_unknown": unmeasured, "sex": sex},
        )
    primary = list(rules.primary_zones[sex_key])
    measured = "zones" not in unknown and "hairloss" not in unknown and not unmeasured
    evidence = {"zones_measured": {z: zones[z]["loss_fraction"] for z in zones}, "loss_assessed": measured,
                "loss_unknown": unmeasured, "sex": sex}
    if measured:
        return primary, Reason(
            "focus.primary_zones",
            f"No zone shows measurable loss at or above {rules.zone_loss_min:.0%}: focus on the main areas of "
            f"concern for {_whom(sex_key)}: " + ", ".join(_name(z) for z in primary) + ".",
            evidence,
        )
    what = ("Loss per zone is not assessed" if "zones" in unknown or "hairloss" in unknown
            else "Loss is not measured in the " + ", ".join(_name(z) for z in unmeasured))
    evidence["when_loss_unknown"] = rules.focus_when_loss_unknown
    if rules.focus_when_loss_unknown == "primary":
        return primary, Reason(
            "focus.primary_zones",
            f"{what}: focus on the main areas of concern for {_whom(sex_key)}: "
            + ", ".join(_name(z) for z in primary) + " (the rules' choice when loss is unknown).",
            evidence,
        )
    visible = [z for z in order if z in zones]
    if rules.focus_when_loss_unknown == "visible" and visible:
        return visible, Reason(
            "focus.visible_zones",
            f"{what}: focus on the visible zones in the priority order for {_whom(sex_key)}: "
            + ", ".join(_name(z) for z in visible) + " (the rules' choice when loss is unknown).",
            {**evidence, "order": list(order)},
        )
    return [], Reason(
        "focus.loss_unknown",
        f"{what}, so it is not known where the loss is: no focus zone is proposed; a practitioner "
        f"chooses them from the photos (the main areas of concern for {_whom(sex_key)} are "
        + ", ".join(_name(z) for z in primary) + ").",
        evidence,
    )


# --------------------------------------------------------------------------- 7. decision


def decide(*, usable: int, indicated: bool, contradiction: Sequence[Reason], unknown: Sequence[str],
           caution_codes: Sequence[str], findings: Findings, stage: int | None, rules: Rules
           ) -> tuple[str, list[Reason]]:
    """The decision and the reasons that make it (before the closing ``decision.*`` reason).

    Review comes first: too few usable photos, photos that contradict each other, nothing
    the model assesses, or nothing that indicates SMP while an indication is unknown (a
    condition or the stage not assessed: "not indicated" would rest on it).
    """
    if usable < rules.min_usable_photos:
        return "review", [Reason(
            "review.too_few_photos",
            f"{usable} usable photo(s), at least {rules.min_usable_photos} needed: retake the photos.",
            {"usable": usable, "min_usable": rules.min_usable_photos},
        )]
    if contradiction:
        return "review", list(contradiction)
    if all(name in unknown for name in (*CONDITIONS, "stage", "zones")):
        return "review", [Reason(
            "review.nothing_assessed",
            "This model assesses none of the conditions, the stage or the zones: a practitioner decides.",
            {"not_assessed": list(unknown)},
        )]
    if indicated:
        return ("caution" if caution_codes else "candidate"), []
    open_questions = [name for name in (*CONDITIONS, "stage") if name in unknown]
    if open_questions:
        return "review", [Reason(
            "review.not_assessed",
            "Nothing this model assesses indicates SMP, but it does not assess "
            + ", ".join(_UNKNOWN_TEXT[n][0] for n in open_questions) + ": a practitioner decides.",
            {"not_assessed": open_questions, "conditions": dict(findings.probabilities), "stage": stage},
        )]
    return "not_indicated", [Reason(
        "not_indicated.no_loss",
        "No thinning, alopecia patch or scarring found, and no pattern loss at or above Norwood "
        f"{rules.pattern_loss_stage_min}.",
        {"conditions": dict(findings.probabilities), "stage": stage, "pattern_loss_min": rules.pattern_loss_stage_min},
    )]


# --------------------------------------------------------------------------- assess


def assess(predictions: Iterable[Any], intake: Intake | None = None, *, rules: Rules | None = None,
           prior: Sequence[PriorVisit] = (), visit_date: datetime.date | None = None) -> Assessment:
    """Assess one patient from all of their photos.

    Args:
        predictions: the patient's result rows (dicts, see docs/formats.md "Result rows"), or objects
            with ``.to_row()``. Rows with status other than "ok" are left out, and said so. A
            row's ``not_assessed`` outputs (and any null condition, stage or zones) are
            unknown: never taken as absent or present.
        intake: the patient's intake answers (None: nothing known, sex unknown).
        rules: the rules to apply (None: the defaults).
        prior: the patient's earlier visits; a zone whose loss grew by at least the rules'
            ``progression.min_points_per_year`` raises the "progressing loss" caution.
        visit_date: the day of this visit (needed with ``prior``).

    Returns:
        The assessment; ``to_dict()`` gives a result row's "assessment" object (docs/formats.md)
        plus the extra fields. docs/rules.md says how each decision is reached.

    Raises:
        ValueError: ``prior`` without ``visit_date``.
        TypeError: a prediction that is neither a row nor has ``.to_row()``.
    """
    prior = tuple(prior)
    if prior and visit_date is None:
        raise ValueError("assess(prior=...) needs visit_date, the day of this visit, to measure progression")
    rules = rules or load_rules()
    intake = intake or Intake()
    sex_key = intake.sex if intake.sex in SEXES else "unknown"
    rows = [_as_row(p) for p in predictions]

    usable, excluded, reasons = usable_photos(rows)
    findings, found_reasons = merge_findings(usable, rules)
    stage, stage_reasons = combine_stage(usable, rules)
    zones = merge_zones(usable)
    unknown, unknown_reasons = unknown_outputs(usable, findings, stage, rules)
    unvalidated, unvalidated_reasons = unvalidated_outputs(usable, unknown)
    caution_codes, caution_reasons = cautions(intake, zones, rules, prior=prior, visit_date=visit_date)
    reasons += found_reasons + stage_reasons + unknown_reasons + unvalidated_reasons + caution_reasons

    extent = _extent(stage.stage, zones, rules)
    indicated = bool(findings.found) or extent.pattern_loss or extent.extensive
    decision, decision_reasons = decide(
        usable=len(usable), indicated=indicated, contradiction=contradictions(usable, stage, rules),
        unknown=unknown, caution_codes=caution_codes, findings=findings, stage=stage.stage, rules=rules)
    reasons += decision_reasons
    recommendations: list[str] = []
    focus_zones: list[str] = []
    if decision in ("candidate", "caution"):
        recommendations, recommend_reasons = recommend(findings, stage.stage, extent, caution_codes, rules)
        focus_zones, focus_reason = focus(zones, sex_key, unknown, rules)
        reasons += recommend_reasons + [focus_reason]
    reasons.append(Reason(
        f"decision.{decision}",
        rules.label("decisions", decision) + ".",
        {"decision": decision, "recommendations": list(recommendations), "cautions": list(caution_codes)},
    ))
    return Assessment(
        decision=decision,
        recommendations=recommendations,
        focus_zones=focus_zones,
        cautions=caution_codes,
        reasons=reasons,
        not_assessed=unknown,
        unvalidated=unvalidated,
        stage=stage.stage,
        stage_probabilities=stage.probabilities,
        findings=findings.found,
        conditions=findings.probabilities,
        zones=zones,
        subject=next((str(r["subject"]) for r in rows if r.get("subject") not in (None, "")), intake.subject),
        sex=intake.sex,
        photos_used=[_image(r) for r in usable],
        photos_excluded=excluded,
        rules_version=rules.version,
        rules_name=rules.name,
        disclaimers=list(rules.disclaimers),
        models=sorted({str(m["id"]) for r in usable if isinstance(m := r.get("model"), Mapping) and m.get("id")}),
    )
