"""From database records to what the rules engine and the report templates read.

A visit's photos carry the result rows `scalpscan score` would have written; a visit's
intake fields make an `Intake`; earlier visits of the same patient become the engine's
``prior`` (their date, loss fraction per zone and stage), so that loss measured to grow
between visits raises the "progressing loss" caution, with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import object_session

from scalpscan.app.db import Patient, Visit
from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.inference.intake import Intake
from scalpscan.inference.rules import Assessment, PriorVisit, Rules, assess, zone_changes

__all__ = [
    "visit_intake",
    "visit_rows",
    "visit_progress",
    "visit_limits",
    "patient_label",
    "prior_visits",
    "assess_visit",
    "compare_visits",
    "newest_first",
    "assign_unknown",
]


def patient_label(patient: Patient) -> str:
    """The patient's name on the pages: their id, or for a patient of unknown identity the
    name the import gave them (``Unknown patient · photo name``)."""
    return patient.key if patient.known else (patient.name or "Unknown patient")


def visit_intake(visit: Visit) -> Intake:
    """The visit's intake answers, as the rules read them."""
    patient = visit.patient
    return Intake(sex=visit.sex, keloid_history=visit.keloid_history, eczema_active=visit.eczema_active,
                  psoriasis_active=visit.psoriasis_active, notes=visit.notes or "",
                  subject=patient.key if patient.known else None)


def visit_rows(visit: Visit) -> list[dict[str, Any]]:
    """The result rows of the visit's scored photos (pending photos are not in them yet)."""
    return [dict(p.result) for p in visit.photos if p.status != "pending" and isinstance(p.result, dict)]


def visit_progress(visit: Visit) -> tuple[int, int]:
    """(photos scored, photos in the visit)."""
    return sum(p.status != "pending" for p in visit.photos), len(visit.photos)


def visit_limits(visit: Visit, assessment: Assessment) -> tuple[list[str], list[str]]:
    """``(not_assessed, unvalidated)`` output names, as the visit's report page says them.

    Not assessed: what the model does not assess (the rows' ``not_assessed``) or what no
    usable photo gave (the assessment's); shown as "not assessed", never as 0 % or absent.
    Unvalidated: what the model learned from rendered photos only (the rows' ``unvalidated``),
    marked "not validated on real photos".
    """
    listed: dict[str, None] = {}
    unvalidated: dict[str, None] = {}
    for row in visit_rows(visit):
        for key, names in (("not_assessed", listed), ("unvalidated", unvalidated)):
            if isinstance(row.get(key), list):
                names.update((str(n), None) for n in row[key])
    not_assessed = list(dict.fromkeys([*listed, *assessment.not_assessed]))
    return not_assessed, [n for n in unvalidated if n not in not_assessed]


def _earlier(visit: Visit) -> list[Visit]:
    """The patient's visits before this one (by date; same-day visits by order of creation)."""
    return [v for v in visit.patient.visits
            if v.id != visit.id and (v.date, v.id) < (visit.date, visit.id) and visit_progress(v)[0] > 0]


def prior_visits(visit: Visit, rules: Rules) -> tuple[Any, ...]:
    """Earlier visits as the engine's ``PriorVisit``s (date, loss fraction per zone, stage), oldest first."""
    priors = []
    for earlier in sorted(_earlier(visit), key=lambda v: (v.date, v.id)):
        past = assess(visit_rows(earlier), visit_intake(earlier), rules=rules)
        zones = {z: past.zones[z].get("loss_fraction") for z in ZONES if z in past.zones}
        priors.append(PriorVisit(date=earlier.date, zones=zones, stage=past.stage))
    return tuple(priors)


def assess_visit(visit: Visit, rules: Rules) -> Assessment:
    """The visit's assessment: its photos and intake, and the patient's earlier visits as ``prior``."""
    rows, intake = visit_rows(visit), visit_intake(visit)
    return assess(rows, intake, rules=rules, prior=prior_visits(visit, rules), visit_date=visit.date)


def _zone_losses(assessment: Assessment) -> dict[str, float | None]:
    return {z: assessment.zones[z].get("loss_fraction") if z in assessment.zones else None for z in ZONES}


def _photo_by_view(visit: Visit) -> dict[str, Any]:
    """The first usable photo of each view (the view the model read from the photo)."""
    chosen: dict[str, Any] = {}
    for photo in visit.photos:
        view = (photo.result or {}).get("view") if photo.status == "ok" else None
        if view in VIEWS and view not in chosen:
            chosen[view] = photo
    return chosen


def compare_visits(older: Visit, newer: Visit, rules: Rules) -> dict[str, Any]:
    """Two visits of one patient side by side: per zone the loss fraction at each and its change,
    the stage and the findings at each, the newer visit's progression reasons, and the photos of
    each view.

    Returns:
        ``{"older", "newer", "a", "b", "days", "zones": [...], "stage": {...}, "findings": [...],
        "limits": {...}, "views": [...], "progression": [reasons]}``; a zone's ``change`` (a
        fraction) and ``per_year`` (the change scaled to a year) come from the rules engine's
        ``zone_changes``: None where either visit has no measure. ``*_assessed`` flags say
        whether the model assessed an output at that visit (False: shown as "not assessed",
        never as 0 % or absent); ``unvalidated`` marks a finding learned from rendered photos only.
    """
    if (older.date, older.id) > (newer.date, newer.id):
        older, newer = newer, older
    a = assess_visit(older, rules)
    b = assess_visit(newer, rules)
    limits = {"a": visit_limits(older, a), "b": visit_limits(newer, b)}
    missing = {side: set(limits[side][0]) for side in ("a", "b")}
    unvalidated = set(limits["a"][1]) | set(limits["b"][1])
    days = (newer.date - older.date).days
    before, after = _zone_losses(a), _zone_losses(b)
    measured = zone_changes(after, PriorVisit(date=older.date, zones=before, stage=a.stage), visit_date=newer.date)
    loss_assessed = {side: not {"zones", "hairloss"} & missing[side] for side in ("a", "b")}
    zones = []
    for zone in ZONES:
        info = measured.get(zone, {})
        x, y = before[zone], after[zone]
        zones.append({"zone": zone, "a": x, "b": y, "change": info.get("change"), "per_year": info.get("per_year"),
                      "a_assessed": loss_assessed["a"], "b_assessed": loss_assessed["b"]})
    findings = []
    for condition in CONDITIONS:
        entry: dict[str, Any] = {"name": condition, "unvalidated": condition in unvalidated}
        for side, assessment in (("a", a), ("b", b)):
            assessed = condition not in missing[side] and assessment.conditions.get(condition) is not None
            entry[side] = assessment.conditions.get(condition) if assessed else None
            entry[f"{side}_found"] = (condition in assessment.findings) if assessed else None
            entry[f"{side}_assessed"] = assessed
        findings.append(entry)
    views_a, views_b = _photo_by_view(older), _photo_by_view(newer)
    views = [{"view": v, "a": views_a.get(v), "b": views_b.get(v)} for v in VIEWS if v in views_a or v in views_b]
    progression = [r for r in b.reasons if "progress" in r.rule]
    return {
        "older": older, "newer": newer, "a": a, "b": b, "days": days, "zones": zones,
        "stage": {"a": a.stage, "b": b.stage,
                  "a_assessed": "stage" not in missing["a"], "b_assessed": "stage" not in missing["b"],
                  "change": (b.stage - a.stage) if a.stage is not None and b.stage is not None else None},
        "findings": findings, "limits": limits,
        "views": views, "progression": progression,
    }


def newest_first(visits: Sequence[Visit]) -> list[Visit]:
    """Visits newest first (date, then order of creation)."""
    return sorted(visits, key=lambda v: (v.date, v.id), reverse=True)


def assign_unknown(unknown: Patient, target: Patient) -> int:
    """Give a patient of unknown identity's photos to a known patient; returns how many.

    Each visit of ``unknown`` joins ``target``'s visit of the same date (its photos move,
    the target visit's intake answers stay), or becomes a visit of ``target`` when there is
    none. The photos are marked as assigned by staff (``subject_source`` ``"staff"``) and
    their stored result rows name ``target``; nothing is scored again. ``unknown`` is left
    without visits, for the caller to delete.

    Raises:
        ValueError: if ``unknown`` is a known patient or ``target`` is not.
    """
    if unknown.known:
        raise ValueError(f"patient {unknown.key!r} is known; only a patient of unknown identity can be assigned")
    if not target.known:
        raise ValueError(f"patient {target.key!r} is not a known patient to assign these photos to")
    by_date = {visit.date: visit for visit in target.visits}
    moved = 0
    # One flush at the end: a photo between two visits must not be flushed as an orphan.
    with object_session(unknown).no_autoflush:
        for visit in list(unknown.visits):
            joined = by_date.setdefault(visit.date, visit)
            for photo in list(visit.photos):
                photo.subject_source = "staff"
                if isinstance(photo.result, dict):
                    photo.result = {**photo.result, "subject": target.key, "subject_source": "staff"}
                if joined is not visit:
                    photo.visit = joined
                moved += 1
            if joined is visit:
                visit.patient = target
            else:
                unknown.visits.remove(visit)
    return moved
