"""From database records to what the rules engine and the report templates read.

A visit's photos carry the result rows `scalpscan score` would have written; a visit's
intake fields make an `Intake`; earlier visits of the same patient become the engine's
``prior`` (their date, loss fraction per zone and stage), so that loss measured to grow
between visits raises the "progressing loss" caution, with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scalpscan.app.db import Visit
from scalpscan.data.vocab import VIEWS, ZONES
from scalpscan.inference.intake import Intake
from scalpscan.inference.rules import Assessment, PriorVisit, Rules, assess, zone_changes

__all__ = [
    "visit_intake",
    "visit_rows",
    "visit_progress",
    "prior_visits",
    "assess_visit",
    "compare_visits",
    "newest_first",
]

def visit_intake(visit: Visit) -> Intake:
    """The visit's intake answers, as the rules read them."""
    return Intake(sex=visit.sex, keloid_history=visit.keloid_history, eczema_active=visit.eczema_active,
                  psoriasis_active=visit.psoriasis_active, notes=visit.notes or "", subject=visit.patient.key)


def visit_rows(visit: Visit) -> list[dict[str, Any]]:
    """The result rows of the visit's scored photos (pending photos are not in them yet)."""
    return [dict(p.result) for p in visit.photos if p.status != "pending" and isinstance(p.result, dict)]


def visit_progress(visit: Visit) -> tuple[int, int]:
    """(photos scored, photos in the visit)."""
    return sum(p.status != "pending" for p in visit.photos), len(visit.photos)


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
    the stage at each, the newer visit's progression reasons, and the photos of each view.

    Returns:
        ``{"older", "newer", "a", "b", "days", "zones": [...], "stage": {...}, "views": [...],
        "progression": [reasons]}``; a zone's ``change`` (a fraction) and ``per_year`` (the change
        scaled to a year) come from the rules engine's ``zone_changes``: None where either visit
        has no measure.
    """
    if (older.date, older.id) > (newer.date, newer.id):
        older, newer = newer, older
    a = assess_visit(older, rules)
    b = assess_visit(newer, rules)
    days = (newer.date - older.date).days
    before, after = _zone_losses(a), _zone_losses(b)
    measured = zone_changes(after, PriorVisit(date=older.date, zones=before, stage=a.stage), visit_date=newer.date)
    zones = []
    for zone in ZONES:
        info = measured.get(zone, {})
        x, y = before[zone], after[zone]
        zones.append({"zone": zone, "a": x, "b": y, "change": info.get("change"), "per_year": info.get("per_year")})
    views_a, views_b = _photo_by_view(older), _photo_by_view(newer)
    views = [{"view": v, "a": views_a.get(v), "b": views_b.get(v)} for v in VIEWS if v in views_a or v in views_b]
    progression = [r for r in b.reasons if "progress" in r.rule]
    return {
        "older": older, "newer": newer, "a": a, "b": b, "days": days, "zones": zones,
        "stage": {"a": a.stage, "b": b.stage,
                  "change": (b.stage - a.stage) if a.stage is not None and b.stage is not None else None},
        "views": views, "progression": progression,
    }


def newest_first(visits: Sequence[Visit]) -> list[Visit]:
    """Visits newest first (date, then order of creation)."""
    return sorted(visits, key=lambda v: (v.date, v.id), reverse=True)

