"""Plain-text tables of evaluation results, for the terminal.

`format_metrics` prints `scalpscan.training.metrics.compute_metrics`' result (with its
breakdowns); `format_comparison` prints two runs compared on the same photos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_comparison", "format_metrics"]


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def format_metrics(metrics: Mapping, *, breakdowns: Mapping[str, Mapping] | None = None) -> str:
    """A readable plain-text table of the headline metrics (for the terminal)."""
    lines = [f"photos: {metrics['n']}", ""]
    cond = metrics["conditions"]
    lines.append(f"{'condition':<18}{'n':>6}{'pos':>6}{'AP':>8}{'AUROC':>8}{'F1':>8}{'thr':>7}")
    for name, m in cond["per_condition"].items():
        lines.append(f"{name:<18}{m['n']:>6}{m['positives']:>6}  {_fmt(m['ap'])}  "
                     f"{_fmt(m['auroc'])}  {_fmt(m['f1'])} {m['threshold']:.2f}")
    lines.append(f"{'macro':<30}  {_fmt(cond['macro_ap'])}  {_fmt(cond['macro_auroc'])}  "
                 f"{_fmt(cond['macro_f1'])}   ECE {_fmt(cond['ece'])}")
    lines.append("")
    lines.append(f"{'stage':<18}{'n':>6}{'acc':>8}{'MAE':>8}{'QWK':>8}{'ECE':>8}"
                 f"{'ECE floor':>11}")
    for label, key in (("per photo", "stage"), ("per person", "stage_person")):
        if key in metrics:
            m = metrics[key]
            lines.append(f"{label:<18}{m['n']:>6}  {_fmt(m['accuracy'])}  {_fmt(m['mae'])}  "
                         f"{_fmt(m['qwk'])}  {_fmt(m['ece'])}     {_fmt(m.get('ece_floor'))}")
            ci = m.get("ci")
            if ci and ci.get("accuracy"):
                cells = "  ".join(f"{name} {ci[key][0]:.3f}-{ci[key][1]:.3f}" for key, name in (
                    ("accuracy", "acc"), ("mae", "MAE"), ("qwk", "QWK")) if ci.get(key))
                lines.append(f"{'':<18}{'':>6}  {ci['level']:.0%} interval, persons "
                             f"resampled: {cells}")
    v = metrics["view"]
    lines.append("")
    lines.append(f"view accuracy {_fmt(v['accuracy'])}  ECE {_fmt(v['ece'])}  (n={v['n']})")
    for title, key in (("zone", "zones"), ("loss map", "hairloss_map")):
        m = metrics[key]
        if m["n"]:
            cells = "  ".join(f"{name} {_fmt(x['iou'])}" for name, x in m["per_class"].items())
            lines.append(f"{title} IoU (n={m['n']}): mean {_fmt(m['mean_iou'])} | {cells}")
            lines.append(f"{title} Dice: mean {_fmt(m['mean_dice'])}")
    for column, groups in (breakdowns or {}).items():
        lines.append("")
        lines.append(f"by {column}: {'value':<14}{'n':>6}{'stage acc':>11}{'QWK':>8}"
                     f"{'view acc':>10}{'cond F1':>9}{'zone IoU':>10}")
        for value, m in groups.items():
            lines.append(f"{'':<{len(column) + 4}}{value:<14}{m['n']:>6}   "
                         f"{_fmt(m['stage']['accuracy'])}  {_fmt(m['stage']['qwk'])}  "
                         f"{_fmt(m['view']['accuracy'])}  {_fmt(m['conditions']['macro_f1'])}  "
                         f"{_fmt(m['zones']['mean_iou'])}")
    return "\n".join(lines)


def format_comparison(result: Mapping[str, Any]) -> str:
    """A plain-text table of `training.evaluation.compare_runs`: both runs' headline figures and
    B - A with its paired interval (for the terminal)."""
    a, b = result["a"], result["b"]
    lines = [f"A = {a['model']}", f"B = {b['model']}",
             f"{result['photos']} photos, {result['persons']} persons"
             + (f", TTA {result['tta']}" if result.get("tta") else ""), ""]
    draws = (result["difference"].get("stage") or {}).get("draws")
    lines.append(f"{'':<20}{'A':>8}{'B':>8}{'B - A':>9}   95 % paired interval   B better in")
    for head, title in (("stage", "stage"), ("stage_person", "person stage")):
        diff = result["difference"].get(head) or {}
        for key, label in (("accuracy", "acc"), ("mae", "MAE"), ("qwk", "QWK")):
            d = diff.get(key)
            if d is None:
                lines.append(f"{title + ' ' + label:<20}{'-':>8}{'-':>8}{'-':>9}")
                continue
            lines.append(f"{title + ' ' + label:<20}{d['a']:8.3f}{d['b']:8.3f}"
                         f"{d['difference']:+9.3f}   [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                         f"{d['b_better'] * 100:15.0f} %")
    for head, figure, label in (("view", "accuracy", "view acc"),
                                ("conditions", "macro_f1", "conditions F1"),
                                ("zones", "mean_iou", "zone IoU")):
        va = (a["metrics"].get(head) or {}).get(figure)
        vb = (b["metrics"].get(head) or {}).get(figure)
        if va is not None and vb is not None:
            lines.append(f"{label:<20}{va:8.3f}{vb:8.3f}{vb - va:+9.3f}   (no interval)")
    lines += ["", f"Intervals: {draws} draws of the persons, both runs scored on each draw; "
              "'B better in' is the share of draws in which B scores better (higher acc and "
              "QWK, lower MAE)."]
    return "\n".join(lines)
