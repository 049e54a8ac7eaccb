"""What each output of a model learned from: labelled photos per source, and what follows.

A model reports only what it learned. ``model.json`` records, for every output (each
condition, the stage, the view, the zones and the hair-loss map), how many labelled photos
of each source trained it and how many validated it. From that record:

- an output that no label trained is *not assessed*: its value is never reported and never
  turned into a finding (a randomly initialised head says nothing about a photo); so is a
  condition with no validation labels, since it has no calibrated decision threshold;
- an output whose labels all came from renders or from conditions painted onto real
  photos is *unvalidated*: it has not been checked against real labels, and reports say so.

Sources are read from a manifest row's ``source`` column: ``synth`` (the renderer) is
"rendered"; in a painted manifest (`data.synth.composite`, whose rows carry a
``composited`` column) the patch and scar labels are "composited", painted or not, and the
photo's own labels are "real"; anything else is "real".

Example:
    >>> heads = {"stage": {"trained": {"real": 700}}, "zones": {"trained": {"rendered": 900}}}
    >>> assessed_outputs({"heads": heads})[0][:3]
    ['thinning', 'alopecia_patch', 'transplant_scar']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scalpscan.data.vocab import CONDITIONS

__all__ = ["OUTPUTS", "SOURCES", "untouched_real", "label_counts", "head_provenance", "assessed_outputs", "with_figures"]

#: Every output a model may assess, in row order.
OUTPUTS: tuple[str, ...] = (*CONDITIONS, "stage", "view", "zones", "hairloss")
#: Where a label came from.
SOURCES: tuple[str, ...] = ("real", "composited", "rendered")
# Conditions a composite paints; its other labels are the real photo's own.
_PAINTED = ("alopecia_patch", "transplant_scar")
# The loss weight that trains each output.
_WEIGHT_OF = {**{c: "conditions" for c in CONDITIONS}, "stage": "stage", "view": "view",
              "zones": "zones", "hairloss": "hairloss"}


def _source(row: Any, output: str) -> str:
    extra = getattr(row, "extra", None) or {}
    source = str(extra.get("source", "")).strip().lower()
    if source == "synth":
        return "rendered"
    # A painted manifest's patch and scar labels are the painting's, on the unpainted photos
    # too (their 0 is an assumption about the source, not a real label).
    if output in _PAINTED and (source == "composite" or "composited" in extra):
        return "composited"
    return "real"


def untouched_real(row: Any) -> bool:
    """Whether ``row`` is a real photo as a clinic takes it: not rendered, nothing painted on it.

    In a painted manifest the unpainted photos (empty ``composited`` column) count; the
    painted ones do not.
    """
    extra = getattr(row, "extra", None) or {}
    source = str(extra.get("source", "")).strip().lower()
    return source not in ("synth", "composite") and not str(extra.get("composited", "")).strip()


def _known(row: Any, output: str) -> bool:
    if output in CONDITIONS:
        return row.conditions.get(output) is not None
    if output == "stage":
        return row.stage is not None
    if output == "view":
        return row.view is not None
    if output == "zones":
        return row.zone_mask is not None
    return row.loss_mask is not None


def label_counts(rows: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Labelled photos per output and source (``{output: {source: n}}``, zeros left out)."""
    counts: dict[str, dict[str, int]] = {output: {} for output in OUTPUTS}
    for row in rows:
        for output in OUTPUTS:
            if _known(row, output):
                source = _source(row, output)
                counts[output][source] = counts[output].get(source, 0) + 1
    return counts


def head_provenance(train_rows: Iterable[Any], val_rows: Iterable[Any],
                    loss_weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """The ``heads`` record of ``model.json``.

    Args:
        train_rows: the manifest rows the model trained on (extra training rows included).
        val_rows: the rows it was validated and calibrated on.
        loss_weights: the config's per-head loss weights (a head weighted 0 learned nothing,
            whatever its labels).

    Returns:
        ``{output: {"trained": {source: n}, "validated": {source: n}}}``; ``trained`` is
        empty for an output whose head had loss weight 0.
    """
    trained = label_counts(train_rows)
    validated = label_counts(val_rows)
    record: dict[str, dict[str, Any]] = {}
    for output in OUTPUTS:
        weight = float(loss_weights.get(_WEIGHT_OF[output], 1.0))
        record[output] = {"trained": trained[output] if weight > 0 else {},
                          "validated": validated[output]}
    return record


def assessed_outputs(meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(not_assessed, unvalidated)`` output names for a model's ``model.json``.

    A model.json without a ``heads`` record (written before it existed) is judged by its
    training config: a head with loss weight 0 is not assessed; nothing is marked
    unvalidated, because the sources of its labels were not recorded.
    """
    heads = meta.get("heads")
    if not isinstance(heads, Mapping):
        weights = ((meta.get("config") or {}).get("loss_weights") or {})
        weights = {("hairloss" if k == "loss" else k): v for k, v in weights.items()}
        missing = [o for o in OUTPUTS if float(weights.get(_WEIGHT_OF[o], 1.0)) <= 0]
        return missing, []
    not_assessed, unvalidated = [], []
    for output in OUTPUTS:
        trained = (heads.get(output) or {}).get("trained") or {}
        validated = (heads.get(output) or {}).get("validated") or {}
        # A condition's decision threshold is calibrated on validation labels; without
        # them there is no threshold, hence no finding to report.
        uncalibrated = output in CONDITIONS and sum(int(n) for n in validated.values()) == 0
        if sum(int(n) for n in trained.values()) == 0 or uncalibrated:
            not_assessed.append(output)
        elif not int(trained.get("real", 0)):
            unvalidated.append(output)
    return not_assessed, unvalidated


def with_figures(heads: Mapping[str, Mapping[str, Any]], metrics: Mapping[str, Any],
                 threshold_rule: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``heads`` with each output's validation figures added under ``"figures"``.

    Args:
        heads: the record from `head_provenance`.
        metrics: `training.metrics.compute_metrics` on the validation photos.
        threshold_rule: the calibration's ``threshold_rule`` (`training.calibrate.fit_calibration`):
            how each condition's threshold was set, and the share of untouched real validation
            photos without the condition that get its finding (``real_false_rate``).
    """
    def pick(section: Any, *keys: str) -> dict[str, Any]:
        section = section if isinstance(section, Mapping) else {}
        return {k: section.get(k) for k in keys if k in section}

    per_condition = (metrics.get("conditions") or {}).get("per_condition") or {}
    figures = {
        **{c: pick(per_condition.get(c), "n", "positives", "ap", "auroc", "f1", "threshold") for c in CONDITIONS},
        "stage": pick(metrics.get("stage"), "n", "accuracy", "mae", "qwk", "ece"),
        "view": pick(metrics.get("view"), "n", "accuracy"),
        "zones": pick(metrics.get("zones"), "n", "mean_iou", "mean_dice"),
        "hairloss": pick(metrics.get("hairloss_map"), "n", "mean_iou", "mean_dice"),
    }
    for c, rule in dict(threshold_rule or {}).items():
        if c in figures and figures[c]:
            figures[c].update(threshold_rule=rule.get("rule"), real_negatives=rule.get("real_negatives"),
                              real_false_rate=rule.get("false_rate"))
    return {output: {**dict(heads.get(output) or {}), "figures": figures[output]} for output in OUTPUTS}
