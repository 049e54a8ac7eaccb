"""Choices around a model's Norwood stage, checked on real persons it never trained on.

Three choices of the shipped model's build, each checked on the real photos (with a stage)
of the persons the model never trained on: the build's own 16 held-out persons (rebuilt
from ``build_model``'s working folder with its split seed) and the ``valid`` persons.

1. **Calibration source.** The stage temperature and offsets are fitted on the validation
   photos: real and rendered ones together, or real ones alone? Random person splits of
   the pooled persons: fit on half (with the build's validation renders, or without), and
   measure the stage ECE on the other half's photos.
2. **One stage per person.** The reports' weighted mixture median of a person's photos
   (`models.ordinal.combine_distributions`, views weighted as the rules do) against a
   product of the photos' distributions, the rounded mean stage, and the mixture's most
   probable stage, over all the pooled persons.
3. **Input side when scoring.** The side the model was trained at against larger ones.

Results go to ``local/bench/stage/<name>.json`` and the ``bench_stage`` section of
BENCHMARKS.md.

Example::

    python -m scalpscan.scripts.bench_stage --build local/build --data local/norwood/valid/manifest.csv
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import cohen_kappa_score

from scalpscan.data.vocab import VIEWS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "local" / "bench" / "stage"
MARKER = "bench_stage"
AGGREGATIONS = ("mixture median (the reports')", "product of the photos", "rounded mean",
                "most probable of the mixture")


def _classes(dists: np.ndarray) -> np.ndarray:
    """The stage each distribution gives: thresholds whose ``P(stage > k)`` passes 0.5."""
    above = np.cumsum(dists[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return (above > 0.5).sum(axis=1)


def _person_stages(dists: np.ndarray, weights: np.ndarray, true: np.ndarray,
                   subjects: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per aggregation: (predicted, true) stage index of every person."""
    from scalpscan.models.ordinal import combine_distributions

    groups: dict[str, list[int]] = defaultdict(list)
    for i, subject in enumerate(subjects):
        groups[subject].append(i)
    found: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name in AGGREGATIONS}
    for rows in groups.values():
        person_true = Counter(int(true[i]) for i in rows).most_common(1)[0][0]
        p, w = dists[rows], weights[rows]
        median, mixture = combine_distributions(p, w)
        product = np.exp((np.log(p + 1e-6) * w[:, None]).sum(axis=0))
        product /= product.sum()
        mean = int(np.clip(np.round((mixture * np.arange(len(mixture))).sum()), 0, len(mixture) - 1))
        for name, value in zip(AGGREGATIONS, (median, int(_classes(product[None])[0]), mean,
                                              int(mixture.argmax())), strict=True):
            found[name][0].append(value)
            found[name][1].append(person_true)
    return {name: (np.array(pred), np.array(tru)) for name, (pred, tru) in found.items()}


def measure(model: str, groups: dict[str, list[Any]], renders: list[Any], *, splits: int,
            sizes: list[int], seed: int = 0) -> dict[str, Any]:
    """The three checks (see the module docstring) for ``model`` on ``groups`` of real rows."""
    from scalpscan.models.ordinal import PERSON_VIEW_WEIGHTS, ordinal_probabilities
    from scalpscan.training.calibrate import fit_stage_calibration
    from scalpscan.training.evaluation import run_outputs
    from scalpscan.training.metrics import stage_metrics

    outputs = {name: run_outputs(model, rows) for name, rows in groups.items()}
    meta = next(iter(outputs.values()))[2]
    temperature, offsets = meta["temperature"]["stage"], meta["stage_offsets"]
    logits = np.concatenate([outputs[n][0].stage_logits for n in groups])
    true = np.concatenate([outputs[n][0].stage for n in groups])
    subjects = [f"{n}:{r.subject}" for n, rows in groups.items() for r in rows]
    view_logits = np.concatenate([outputs[n][0].view_logits for n in groups])
    views = softmax(view_logits / meta["temperature"]["view"], axis=-1).argmax(axis=1)
    weights = np.array([PERSON_VIEW_WEIGHTS[VIEWS[v]] for v in views])
    result: dict[str, Any] = {"persons": len(set(subjects)), "photos": int(len(true))}

    # 1. Calibration source, by random halves of the persons.
    render_logits = run_outputs(model, renders)[0].stage_logits
    render_true = np.array([r.stage - 1 for r in renders])
    persons = np.array(sorted(set(subjects)))
    rng = np.random.default_rng(seed)
    ece: dict[str, list[float]] = {"real and rendered": [], "real only": []}
    for _ in range(splits):
        half = set(rng.choice(persons, len(persons) // 2, replace=False))
        fit = np.array([s in half for s in subjects])
        fitted = {"real and rendered": fit_stage_calibration(np.concatenate([logits[fit], render_logits]),
                                                             np.concatenate([true[fit], render_true])),
                  "real only": fit_stage_calibration(logits[fit], true[fit])}
        for name, (t, o) in fitted.items():
            dists = ordinal_probabilities(logits[~fit], t, o)
            ece[name].append(stage_metrics(_classes(dists), true[~fit], dists)["ece"])
    a, b = np.array(ece["real and rendered"]), np.array(ece["real only"])
    result["calibration"] = {"splits": splits, "renders": len(renders),
                             "ece": {k: float(np.mean(v)) for k, v in ece.items()},
                             "real_only_better_share": float((b < a).mean())}

    # 2. One stage per person.
    dists = ordinal_probabilities(logits, temperature, offsets)
    result["aggregation"] = {}
    for name, (pred, tru) in _person_stages(dists, weights, true, subjects).items():
        result["aggregation"][name] = {"accuracy": float((pred == tru).mean()),
                                       "mae": float(np.abs(pred - tru).mean()),
                                       "qwk": float(cohen_kappa_score(tru, pred, weights="quadratic"))}

    # 3. Input side.
    result["input_size"] = {}
    for size in [int(meta["input_size"]), *sizes]:
        by_group = {}
        for name, rows in groups.items():
            preds = outputs[name][0] if size == int(meta["input_size"]) else run_outputs(model, rows, input_size=size)[0]
            d = ordinal_probabilities(preds.stage_logits, temperature, offsets)
            scores = stage_metrics(_classes(d), preds.stage, d)
            by_group[name] = {k: scores[k] for k in ("accuracy", "mae", "qwk", "ece")}
        result["input_size"][str(size)] = by_group
    return result


def render_section(record: dict[str, Any]) -> str:
    """The ``bench_stage`` section of BENCHMARKS.md."""
    r = record["measures"]
    cal = r["calibration"]
    lines = ["## Stage choices of a model (`bench_stage`)", "",
             f"Command: `{record['command']}`", "",
             f"Model `{record['model']}`; {r['persons']} persons never trained on "
             f"({', '.join(record['groups'])}), {r['photos']} real photos with a stage.", "",
             f"**Calibration source** ({cal['splits']} random halves of the persons: fit on one "
             f"half, stage ECE on the other): real and rendered (+{cal['renders']} renders) "
             f"{cal['ece']['real and rendered']:.3f}, real only {cal['ece']['real only']:.3f}; "
             f"real only better in {cal['real_only_better_share']:.0%} of the splits.", "",
             "| one stage per person | accuracy | MAE | QWK |", "|---|---|---|---|"]
    lines += [f"| {name} | {v['accuracy']:.3f} | {v['mae']:.3f} | {v['qwk']:.3f} |"
              for name, v in r["aggregation"].items()]
    lines += ["", "| input side | " + " | ".join(f"{g} acc / MAE / QWK / ECE" for g in record["groups"]) + " |",
              "|---|" + "---|" * len(record["groups"])]
    for size, by_group in r["input_size"].items():
        lines.append(f"| {size} | " + " | ".join(
            f"{v['accuracy']:.3f} / {v['mae']:.3f} / {v['qwk']:.3f} / {v['ece']:.3f}"
            for v in by_group.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scalpscan.scripts.bench_stage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="scalpscan-joint-v1", help="a shipped model's name or a run folder")
    parser.add_argument("--name", help="results name (default: the model's folder name)")
    parser.add_argument("--build", type=Path, default=REPO / "local" / "build",
                        help="build_model's working folder (its painted photos, split seed 0, and validation renders)")
    parser.add_argument("--data", type=Path, default=REPO / "local" / "norwood" / "valid" / "manifest.csv",
                        help="more real photos of persons never trained on")
    parser.add_argument("--splits", type=int, default=40, help="random person halves for the calibration check")
    parser.add_argument("--sizes", type=int, nargs="*", default=[224, 256], help="larger input sides to try")
    args = parser.parse_args(argv)
    from scalpscan.data.files import write_text_atomic
    from scalpscan.data.manifest import read_manifest
    from scalpscan.data.splits import split_rows
    from scalpscan.models.provenance import untouched_real
    from scalpscan.models.shipped import resolve_model
    from scalpscan.scripts.benchmarks import write_section

    for path in (args.build / "painted" / "manifest.csv", args.build / "renders_val" / "manifest.csv", args.data):
        if not path.is_file():
            parser.error(f"{path}: not found (run build_model and scalpscan import first)")
    held_out = split_rows(read_manifest(args.build / "painted" / "manifest.csv"), (0.8, 0.2), seed=0)["val"]
    groups = {"build's held-out persons": [r for r in held_out if r.stage is not None],
              "valid": [r for r in read_manifest(args.data) if r.stage is not None and untouched_real(r)]}
    renders = [r for r in read_manifest(args.build / "renders_val" / "manifest.csv")[:300] if r.stage is not None]
    model = str(resolve_model(args.model))
    record = {"command": "python -m scalpscan.scripts.bench_stage " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "groups": list(groups),
              "measures": measure(model, groups, renders, splits=args.splits, sizes=args.sizes)}
    name = args.name or Path(args.model).name
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(record, indent=2) + "\n")
    text = render_section(record)
    print(text)
    write_section(REPO / "BENCHMARKS.md", MARKER, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
