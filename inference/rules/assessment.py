"""What the rules engine returns: an `Assessment` and the `Reason` for each rule that fired."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Assessment", "Reason"]


@dataclass(frozen=True)
class Reason:
    """One rule that fired: its id, a sentence for the reader, and the evidence it used."""

    rule: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``{"rule", "text", "evidence"}``)."""
        return {"rule": self.rule, "text": self.text, "evidence": copy.deepcopy(self.evidence)}


@dataclass(frozen=True)
class Assessment:
    """A patient-level SMP candidacy assessment over all of the patient's photos.

    Attributes:
        decision: one of `DECISIONS`.
        recommendations: codes from `RECOMMENDATIONS` (empty unless candidate or caution).
        focus_zones: zones to treat first, in the rules' priority order for the patient's sex.
        cautions: codes from `CAUTIONS` that apply (listed whatever the decision).
        reasons: every rule that fired, in the order the engine applied them.
        not_assessed: what is unknown for this patient, in the order of
            `scalpscan.data.vocab.OUTPUTS` (conditions, ``stage``, ``view``,
            ``zones``, ``hairloss``): the model does not assess it, or no usable photo gave
            it. Nothing unknown is taken as absent or present.
        unvalidated: outputs the rows say were trained on renders only (not validated on
            real photos) and that this assessment used.
        stage: the patient's Norwood stage, or None when unknown.
        stage_probabilities: the view-weighted distribution over stages 1-7, or None.
        findings: conditions found in at least one usable photo.
        conditions: per condition, the highest probability over usable photos (None: unknown).
        zones: per zone seen in a usable photo, ``{"visible", "loss_fraction", "image"}``.
        subject: the patient id (None when the rows had none).
        sex: the sex used for the zone priority (None: unknown).
        photos_used: images of the usable photos.
        photos_excluded: ``{"image", "status", "reason"}`` for each photo left out.
        rules_version: the rules file's version.
        rules_name: the rules file's name.
        disclaimers: the sentences every report shows.
        models: model ids of the usable photos' rows.
    """

    decision: str
    recommendations: list[str]
    focus_zones: list[str]
    cautions: list[str]
    reasons: list[Reason]
    not_assessed: list[str]
    unvalidated: list[str]
    stage: int | None
    stage_probabilities: list[float] | None
    findings: list[str]
    conditions: dict[str, float | None]
    zones: dict[str, dict[str, Any]]
    subject: str | None
    sex: str | None
    photos_used: list[str]
    photos_excluded: list[dict[str, Any]]
    rules_version: str
    rules_name: str
    disclaimers: list[str]
    models: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: a result row's "assessment" fields (docs/formats.md) first, then what is
        unknown, then the rest."""
        data = asdict(self)
        data["reasons"] = [r.to_dict() for r in self.reasons]
        first = ("decision", "recommendations", "focus_zones", "cautions", "reasons", "not_assessed")
        ordered = {k: data.pop(k) for k in first}
        ordered.update(data)
        return ordered
