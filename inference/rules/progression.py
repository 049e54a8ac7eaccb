"""Progressing loss: read from the intake notes, and measured between visits.

Two pure readings feed the "progressing loss" caution:

- `notes_progression`: the rules' keywords in the intake notes that no nearby negation
  cancels ("rapid shedding" hits, "no shedding" does not);
- `zone_changes`: how much each zone's loss fraction grew since an earlier visit
  (`PriorVisit`), and at what rate a year. A zone whose loss grew by at least
  ``progression.min_points_per_year`` percentage points a year, against a visit at least
  ``progression.min_days`` earlier, is progressing (`measured_progression`).

    >>> before = PriorVisit(date=datetime.date(2026, 1, 10), zones={"crown": 0.30}, stage=4)
    >>> zone_changes({"crown": 0.40}, [before], visit_date=datetime.date(2026, 7, 10))["crown"]["points_per_year"]
    20.2
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scalpscan.data.vocab import STAGES, ZONES

from .rules_file import Rules

__all__ = ["PriorVisit", "measured_progression", "notes_progression", "zone_changes"]

_DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class PriorVisit:
    """What an earlier visit of the same patient measured.

    Attributes:
        date: the day of the visit.
        zones: loss fraction (0 to 1) per zone name; None or absent where it was not measured.
        stage: the patient's Norwood stage at that visit (None: unknown).
    """

    date: datetime.date
    zones: Mapping[str, float | None] = field(default_factory=dict)
    stage: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.date, datetime.date):
            raise TypeError(f"PriorVisit.date must be a datetime.date, got {self.date!r}")
        unknown = sorted(set(self.zones) - set(ZONES))
        if unknown:
            raise ValueError(f"PriorVisit.zones has unknown zone(s) {unknown}; known: {', '.join(ZONES)}")
        for zone, loss in self.zones.items():
            if loss is not None and not (isinstance(loss, (int, float)) and 0.0 <= loss <= 1.0):
                raise ValueError(f"PriorVisit.zones[{zone!r}] must be a loss fraction from 0 to 1 or None, got {loss!r}")
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"PriorVisit.stage must be a Norwood stage 1 to 7 or None, got {self.stage!r}")


def _loss(value: Any) -> float | None:
    """A zone's loss fraction from a number or a zone entry (``{"loss_fraction": ...}``)."""
    if isinstance(value, Mapping):
        value = value.get("loss_fraction")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def zone_changes(current_zones: Mapping[str, Any], prior: PriorVisit | Sequence[PriorVisit], *,
                 visit_date: datetime.date | None = None, min_days: int = 0) -> dict[str, dict[str, Any]]:
    """How each zone's loss fraction changed since an earlier visit.

    Each zone is compared with the latest earlier visit that measured it and lies at least
    ``min_days`` before ``visit_date`` (any earlier visit when ``visit_date`` is None).

    Args:
        current_zones: this visit's loss fraction per zone, as numbers or as the zone entries
            of an assessment or a result row (``{"loss_fraction": ...}``); None: not measured.
        prior: one earlier visit or several.
        visit_date: the day of this visit; None leaves the days and rates out.
        min_days: the fewest days between the visits for a change to count.

    Returns:
        Per zone measured at both visits, in `ZONES` order: ``zone``, ``from_date`` and
        ``to_date`` (ISO dates; ``to_date`` None without ``visit_date``), ``days``,
        ``before`` and ``after`` (loss fractions), ``change`` (after - before, a fraction),
        ``per_year`` (the change scaled to a year, a fraction) and ``points_per_year``
        (the same in percentage points); rates are None without ``visit_date``.
    """
    visits = [prior] if isinstance(prior, PriorVisit) else list(prior)
    changes: dict[str, dict[str, Any]] = {}
    for zone in ZONES:
        after = _loss(current_zones.get(zone))
        if after is None:
            continue
        measured = [v for v in visits if _loss(v.zones.get(zone)) is not None
                    and (visit_date is None or (visit_date - v.date).days >= max(min_days, 1))]
        if not measured:
            continue
        earlier = max(measured, key=lambda v: v.date)
        before = _loss(earlier.zones[zone])
        days = (visit_date - earlier.date).days if visit_date is not None else None
        change = after - before  # type: ignore[operator]
        per_year = change * _DAYS_PER_YEAR / days if days else None
        changes[zone] = {
            "zone": zone,
            "from_date": earlier.date.isoformat(),
            "to_date": visit_date.isoformat() if visit_date is not None else None,
            "days": days,
            "before": before,
            "after": after,
            "change": round(change, 6),
            "per_year": None if per_year is None else round(per_year, 6),
            "points_per_year": None if per_year is None else round(per_year * 100, 1),
        }
    return changes


def measured_progression(zones: Mapping[str, Mapping[str, Any]], prior: Sequence[PriorVisit],
                         visit_date: datetime.date | None, rules: Rules) -> list[dict[str, Any]]:
    """The zones whose loss grew at least ``progression.min_points_per_year`` points a year
    against a visit at least ``progression.min_days`` earlier (see `zone_changes`)."""
    if not prior or visit_date is None:
        return []
    changes = zone_changes(zones, prior, visit_date=visit_date, min_days=rules.progression_min_days)
    return [c for c in changes.values() if c["points_per_year"] >= rules.progression_min_points_per_year]


def notes_progression(notes: str, rules: Rules) -> list[str]:
    """Progression keywords in the notes that no nearby negation cancels.

    A negation counts only within its own clause: "not progressing, but shedding" still hits.
    """
    clauses = [re.findall(r"[a-z0-9']+", c) for c in re.split(r"[.,;:!?\n]+|\bbut\b", notes.lower())]
    hits = []
    for keyword in rules.progression_keywords:
        words = re.findall(r"[a-z0-9']+", keyword)
        if words and any(_unnegated(clause, words, rules) for clause in clauses):
            hits.append(keyword)
    return hits


def _unnegated(words: list[str], keyword: list[str], rules: Rules) -> bool:
    for i in range(len(words) - len(keyword) + 1):
        if words[i : i + len(keyword)] == keyword:
            before = words[max(0, i - rules.negation_window) : i]
            if not any(w in rules.progression_negations for w in before):
                return True
    return False
