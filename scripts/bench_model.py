"""Real-photo checks of a model: everything that can be measured on labelled real photos,
and the checks that stand in for labels the real photos do not have.

On real photos of persons the model never trained on (a manifest written by
``scalpscan import``), it scores every photo through the Predictor (as ``score`` does) and
measures:

- **stage**, per photo (accuracy, MAE, QWK, ECE and its floor) and per person, where a
  person's stage is the reports' own (``assess`` over the person's photos), with
  person-bootstrap intervals; and per view;
- **view** accuracy;
- **zones**: the loss fraction of the hairline on front views and of the crown on top views
  should rise with the Norwood stage: Spearman's rho per zone and view, with a person-bootstrap
  interval;
- **conditions**: the share of photos with each finding, by stage (a pattern-loss data set
  has no alopecia patches and no transplant scars, so those shares should be near zero);
- the same **painted** check: the share of photos where a painted patch or scar is found
  (``--composite``: patches and scars painted onto these photos, `data.synth.composite`).

Results go to ``local/bench/model/<name>.json`` and the ``bench_model`` section of
BENCHMARKS.md.

Examples::

    python -m scalpscan.scripts.bench_model --data local/norwood/valid/manifest.csv
    python -m scalpscan.scripts.bench_model --model local/runs/joint_v1 --name joint_v1 \\
        --data local/norwood/valid/manifest.csv --composite
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from scalpscan.data.vocab import CONDITIONS, STAGES, VIEWS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "local" / "bench" / "model"
MARKER = "bench_model"
#: (zone, view) pairs whose loss should rise with the Norwood stage.
ZONE_CHECKS: tuple[tuple[str, str], ...] = (
    ("hairline", "front"), ("crown", "top"), ("temple_left", "front"), ("temple_right", "front"),
    ("crown", "back"), ("hairline", "top"))


def _score(predictor: Any, manifest: Path, *, batch_size: int = 16) -> tuple[list[Any], list[dict]]:
    from scalpscan.data.manifest import read_manifest

    rows = read_manifest(manifest)
    scored = list(predictor.score([str(r.image) for r in rows], batch_size=batch_size))
    return rows, scored


def _qwk(true: Sequence[int], pred: Sequence[int]) -> float | None:
    if len(set(true) | set(pred)) < 2:
        return None
    return float(cohen_kappa_score(true, pred, weights="quadratic", labels=list(STAGES)))


def _stage_figures(true: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    t, p = np.asarray(true), np.asarray(pred)
    if not len(t):
        return {"n": 0}
    return {"n": int(len(t)), "accuracy": float((t == p).mean()), "mae": float(np.abs(t - p).mean()),
            "qwk": _qwk(list(t), list(p))}


def _interval(values: list[float]) -> list[float] | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def _bootstrap(persons: list[str], stat, draws: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
    """Percentile intervals of ``stat(sample)`` over persons drawn with replacement."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(draws):
        drawn = [persons[i] for i in rng.integers(0, len(persons), len(persons))]
        for key, value in stat(drawn).items():
            samples[key].append(value)
    return {key: _interval(values) for key, values in samples.items()}


def measure(manifest_rows: Sequence[Any], scored: Sequence[Mapping[str, Any]], *, draws: int = 1000) -> dict[str, Any]:
    """Every real-photo figure of one model on one manifest (see the module docstring)."""
    from scalpscan.inference.rules import assess

    ok = [(m, r) for m, r in zip(manifest_rows, scored) if r.get("status") == "ok"]
    result: dict[str, Any] = {"photos": len(scored), "ok": len(ok),
                              "not_assessed": sorted(set().union(*(r.get("not_assessed") or [] for r in scored))),
                              "unvalidated": sorted(set().union(*(r.get("unvalidated") or [] for r in scored)))}
    by_person: dict[str, list[tuple[Any, Mapping[str, Any]]]] = defaultdict(list)
    for m, r in ok:
        by_person[m.subject].append((m, r))
    persons = sorted(by_person)

    # Stage, per photo and per person (the reports' patient stage: assess over the photos).
    staged = [(m, r) for m, r in ok if m.stage is not None and r.get("stage") is not None]
    result["stage"] = _stage_figures([m.stage for m, _ in staged], [r["stage"] for _, r in staged])
    result["stage_by_view"] = {v: _stage_figures([m.stage for m, r in staged if m.view == v],
                                                 [r["stage"] for m, r in staged if m.view == v]) for v in VIEWS}
    person_stage = {}
    for subject in persons:
        rows = [r for _, r in by_person[subject]]
        known = [m.stage for m, _ in by_person[subject] if m.stage is not None]
        stage = assess(rows).stage
        if known and stage is not None:
            person_stage[subject] = (max(set(known), key=known.count), stage)
    result["stage_person"] = _stage_figures([t for t, _ in person_stage.values()], [p for _, p in person_stage.values()])

    def stage_stat(drawn: list[str]) -> dict[str, float]:
        photos = [(m.stage, r["stage"]) for s in drawn for m, r in by_person[s]
                  if m.stage is not None and r.get("stage") is not None]
        people = [person_stage[s] for s in drawn if s in person_stage]
        out = {}
        for prefix, pairs in (("photo", photos), ("person", people)):
            fig = _stage_figures([t for t, _ in pairs], [p for _, p in pairs])
            out.update({f"{prefix}_{k}": fig.get(k) for k in ("accuracy", "mae", "qwk")})
        return out

    result["stage_intervals"] = _bootstrap(persons, stage_stat, draws) if person_stage else {}

    # View.
    viewed = [(m.view, r.get("view")) for m, r in ok if m.view is not None and r.get("view") is not None]
    result["view_accuracy"] = float(np.mean([a == b for a, b in viewed])) if viewed else None

    # Zones: does the loss fraction rise with the stage?
    zones: dict[str, Any] = {}
    for zone, view in ZONE_CHECKS:
        def pairs_of(drawn: Sequence[str], zone: str = zone, view: str = view) -> list[tuple[int, float]]:
            out = []
            for s in drawn:
                for m, r in by_person[s]:
                    z = (r.get("zones") or {}).get(zone) or {}
                    if m.view == view and m.stage is not None and z.get("visible") and z.get("loss_fraction") is not None:
                        out.append((m.stage, float(z["loss_fraction"])))
            return out

        pairs = pairs_of(persons)
        rho = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic) if len(pairs) > 2 else None

        def rho_stat(drawn: list[str], pairs_of=pairs_of) -> dict[str, float]:
            p = pairs_of(drawn)
            if len(p) < 3 or len({a for a, _ in p}) < 2:
                return {"rho": float("nan")}
            return {"rho": float(spearmanr([a for a, _ in p], [b for _, b in p]).statistic)}

        zones[f"{zone}@{view}"] = {"n": len(pairs), "rho": rho,
                                   "interval": _bootstrap(persons, rho_stat, draws).get("rho") if pairs else None,
                                   "mean_loss_by_stage": {str(s): float(np.mean([b for a, b in pairs if a == s]))
                                                          for s in STAGES if any(a == s for a, _ in pairs)}}
    result["zones"] = zones

    # Conditions: share of photos with each finding, overall, by stage and by view.
    def shares(items: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        return {c: (float(np.mean([c in (r.get("findings") or []) for r in items])) if items else None)
                for c in CONDITIONS}

    result["findings"] = shares([r for _, r in ok])
    result["findings_by_stage"] = {str(s): shares([r for m, r in ok if m.stage == s]) for s in STAGES
                                   if any(m.stage == s for m, _ in ok)}
    result["findings_by_view"] = {v: shares([r for m, r in ok if m.view == v]) for v in VIEWS}
    result["findings_by_source"] = {}
    for source in sorted({str(m.extra.get("source", "")) for m, _ in ok}):
        result["findings_by_source"][source] = shares([r for m, r in ok if str(m.extra.get("source", "")) == source])
    return result


def measure_painted(manifest_rows: Sequence[Any], scored: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Recall and false-alarm share of painted patches and scars (labels from the painting)."""
    out = {}
    for condition in ("alopecia_patch", "transplant_scar"):
        labelled = [(m.conditions.get(condition), r) for m, r in zip(manifest_rows, scored)
                    if r.get("status") == "ok" and m.conditions.get(condition) is not None]
        pos = [condition in (r.get("findings") or []) for y, r in labelled if y == 1]
        neg = [condition in (r.get("findings") or []) for y, r in labelled if y == 0]
        out[condition] = {"positives": len(pos), "recall": float(np.mean(pos)) if pos else None,
                          "negatives": len(neg), "false_alarms": float(np.mean(neg)) if neg else None}
    return out


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _iv(interval: Any) -> str:
    return "" if not interval else f" ({interval[0]:.2f}–{interval[1]:.2f})"


def render_section(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The BENCHMARKS.md section for every stored result."""
    lines = ["## Real-photo checks of a model (`bench_model`)", "",
             "Each model scored through the Predictor on real photos of persons it never trained on; "
             "per-person figures are the reports' patient stage (`assess`). Intervals: 95 % person "
             "bootstrap.", ""]
    for name, r in sorted(results.items()):
        m = r["measures"]
        iv = m.get("stage_intervals", {})
        lines += [f"### {name}", "", f"Command: `{r['command']}`", "",
                  f"Data: `{r['data']}` ({m['ok']} of {m['photos']} photos scored). "
                  f"Not assessed: {', '.join(m['not_assessed']) or 'nothing'}. "
                  f"Unvalidated (no real labels): {', '.join(m['unvalidated']) or 'nothing'}.", "",
                  "| stage | n | accuracy | MAE | QWK |", "|---|---|---|---|---|"]
        for label, key, prefix in (("per photo", "stage", "photo"), ("per person", "stage_person", "person")):
            s = m[key]
            lines.append(f"| {label} | {s.get('n', 0)} | {_f(s.get('accuracy'))}{_iv(iv.get(prefix + '_accuracy'))} "
                         f"| {_f(s.get('mae'))}{_iv(iv.get(prefix + '_mae'))} | {_f(s.get('qwk'))}{_iv(iv.get(prefix + '_qwk'))} |")
        for view, s in m["stage_by_view"].items():
            lines.append(f"| {view} photos | {s.get('n', 0)} | {_f(s.get('accuracy'))} | {_f(s.get('mae'))} | {_f(s.get('qwk'))} |")
        lines += ["", f"View accuracy: {_f(m.get('view_accuracy'))}.", "",
                  "| zone @ view | photos | Spearman ρ (loss fraction vs stage) | mean loss by stage |", "|---|---|---|---|"]
        for key, z in m["zones"].items():
            by_stage = ", ".join(f"{s}: {v:.2f}" for s, v in z["mean_loss_by_stage"].items())
            lines.append(f"| {key} | {z['n']} | {_f(z['rho'], 2)}{_iv(z['interval'])} | {by_stage} |")
        lines += ["", "| photos with a finding | " + " | ".join(CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
        lines.append("| all | " + " | ".join(_f(m["findings"][c], 2) for c in CONDITIONS) + " |")
        for stage, shares in m["findings_by_stage"].items():
            lines.append(f"| Norwood {stage} | " + " | ".join(_f(shares[c], 2) for c in CONDITIONS) + " |")
        for view, shares in m["findings_by_view"].items():
            lines.append(f"| {view} | " + " | ".join(_f(shares[c], 2) for c in CONDITIONS) + " |")
        painted = r.get("painted")
        if painted:
            lines += ["", "Painted onto the same photos (`--composite`): "
                      + "; ".join(f"{c}: found on {_f(p['recall'], 2)} of {p['positives']} painted photos, "
                                  f"on {_f(p['false_alarms'], 2)} of {p['negatives']} unpainted ones"
                                  for c, p in painted.items()) + "."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure one model, store its figures, rewrite the BENCHMARKS.md section."""
    import shlex

    parser = argparse.ArgumentParser(prog="python -m scalpscan.scripts.bench_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or shipped model name (default: the shipped model)")
    parser.add_argument("--name", default=None, help="name of the result (default: the model's folder name)")
    parser.add_argument("--data", type=Path, default=REPO / "local/norwood/valid/manifest.csv",
                        help="manifest of real photos of persons the model never trained on")
    parser.add_argument("--composite", action="store_true",
                        help="also paint patches and scars onto these photos and measure how many are found")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap draws")
    args = parser.parse_args(argv)
    from scalpscan.models.shipped import resolve_model

    name = args.name or resolve_model(args.model).name
    from scalpscan.inference.predictor import Predictor

    predictor = Predictor.load(args.model)  # once, for the real and the painted photos
    rows, scored = _score(predictor, args.data)
    record: dict[str, Any] = {"command": "python -m scalpscan.scripts.bench_model " + shlex.join(argv or sys.argv[1:]),
                              "data": str(args.data.relative_to(REPO) if args.data.is_relative_to(REPO) else args.data),
                              "measures": measure(rows, scored, draws=args.draws)}
    if args.composite:
        from scalpscan.data.synth.composite import composite_manifest

        painted = composite_manifest(args.data, RESULTS / f"{name}_painted", seed=1234)
        p_rows, p_scored = _score(predictor, painted)
        record["painted"] = measure_painted(p_rows, p_scored)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from scalpscan.data.files import write_text_atomic

    write_text_atomic(RESULTS / f"{name}.json", json.dumps(record, indent=2) + "\n")
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    text = render_section(results)
    print(text)
    from scalpscan.scripts.benchmarks import write_section

    write_section(REPO / "BENCHMARKS.md", MARKER, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
