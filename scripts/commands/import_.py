"""`scalpscan import`: labelled photos (ImageFolder, Roboflow, COCO) to a manifest.

Photos stay where they are: the manifest points at them with paths relative to its own
folder. With ``--split`` it writes one manifest per part, grouped by subject, and the
leakage report lists near-duplicate photos that ended up on two sides.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

__all__ = ["HELP", "EPILOG", "add_arguments", "run"]

HELP = "import labelled photos (imagefolder, roboflow, coco) into a manifest, optionally split by subject"

EPILOG = """\
examples:
  # Roboflow classification export (one split folder with _classes.csv)
  scalpscan import roboflow PATH_TO_EXPORT/train --out local/norwood/train

  # ... split by person into train.csv / val.csv / test.csv, with the leakage report
  scalpscan import roboflow PATH_TO_EXPORT/train --out local/norwood/split \\
      --split 0.7,0.15,0.15 --seed 0

  # ImageFolder tree, class per folder; map folder names the defaults do not know
  scalpscan import imagefolder photos/ --out data/clinic --map bald_spots=alopecia_patch \\
      --map 'nw3=stage:3,thinning' --subject '^(P\\d+)_'

  # COCO JSON with zone and loss polygons (rasterised into mask PNGs under OUT/masks)
  scalpscan import coco annotations/instances.json --out data/coco --exhaustive
  scalpscan import coco cvat_export/ --out data/cvat --map 'Bald spot=alopecia_patch'   # CVAT: annotations/ + images/

  # check a new import against an existing manifest for near-duplicate photos
  scalpscan import roboflow export/valid --out data/valid --check-against data/train/manifest.csv

Default names: thinning, alopecia_patch (alopecia, patch), transplant_scar (scar,
transplant), none (no condition), norwood_N / level_N / stage_N (stage N), view names,
skip. --map NAME=LABEL[,LABEL] or --map mapping.yaml ({NAME: [labels]}) overrides them.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan import`."""
    from scalpscan.data.dedup import DEFAULT_THRESHOLD

    parser.add_argument("format", choices=("imagefolder", "roboflow", "coco"), help="layout of SRC")
    parser.add_argument("src", type=Path, help="folder (imagefolder, roboflow) or COCO JSON file / folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the manifest(s)")
    parser.add_argument(
        "--split",
        metavar="RATIOS",
        help="split by subject, e.g. 0.7,0.15,0.15: writes train.csv, val.csv[, test.csv] instead of manifest.csv",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument(
        "--map",
        action="append",
        metavar="NAME=LABELS|FILE",
        help="folder/class/category name to labels (repeatable), or a YAML/JSON mapping file",
    )
    parser.add_argument(
        "--subject",
        metavar="REGEX",
        help="regex whose first group in the file name is the person id "
        "(default: the leading number, '^(\\d+)'; else the whole file name; subject = CLASS:ID for imagefolder/roboflow)",
    )
    parser.add_argument("--images", type=Path,
                        help="coco: folder the file_name entries are relative to (default: beside the JSON, or "
                             "images/ beside its annotations/ folder, as CVAT exports)")
    parser.add_argument("--strict", action="store_true",
                        help="coco: refuse the whole import when a photo is missing or unreadable (default: "
                             "report it and leave it out)")
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="coco: every loss area is annotated, so a condition without a polygon is absent (0), not unknown",
    )
    parser.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        help=f"near-duplicate distance in bits of 256 (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--check-against",
        action="append",
        type=Path,
        metavar="MANIFEST",
        default=[],
        help="also report near-duplicates between this import and an existing manifest (repeatable)",
    )
    parser.add_argument("--no-dedup", action="store_true", help="skip the near-duplicate (leakage) check")


def _summary(rows) -> str:
    from scalpscan.data.vocab import CONDITIONS, VIEWS

    stages = Counter(r.stage for r in rows)
    views = Counter(r.view for r in rows)
    subjects = {r.subject for r in rows}
    stage_text = ", ".join(f"{s}: {stages[s]}" for s in sorted(k for k in stages if k is not None))
    if stages.get(None):
        stage_text += f", unknown: {stages[None]}"
    view_text = ", ".join(f"{v}: {views[v]}" for v in VIEWS if views[v])
    if views.get(None):
        view_text += f", unknown: {views[None]}"
    cond_text = ", ".join(
        f"{c}: {sum(r.conditions[c] == 1 for r in rows)}/{sum(r.conditions[c] is not None for r in rows)} known"
        for c in CONDITIONS
    )
    return (
        f"{len(rows)} photos, {len(subjects)} subjects\n"
        f"  stage: {stage_text or '-'}\n  view: {view_text or '-'}\n  conditions (positive/known): {cond_text}"
    )


def run(args: argparse.Namespace) -> int:
    """Import, optionally split, write the manifest(s) and print the leakage report."""
    from scalpscan.data.dedup import find_cross_subject_duplicates, find_near_duplicates, leakage_report
    from scalpscan.data.importers import ImportFormatError, get_importer, parse_mapping
    from scalpscan.data.importers._common import DEFAULT_SUBJECT_PATTERN
    from scalpscan.data.manifest import ManifestError, read_manifest, write_manifest
    from scalpscan.data.splits import parse_ratios, shared_subjects, split_rows

    out: Path = args.out
    try:
        ratios = parse_ratios(args.split) if args.split else None
        mapping = parse_mapping(args.map)
        importer = get_importer(args.format)
        kwargs: dict = {"mapping": mapping}
        kwargs["subject_pattern"] = args.subject or DEFAULT_SUBJECT_PATTERN
        if args.format == "coco":
            kwargs.update(out_dir=out, images=args.images, exhaustive=args.exhaustive, strict=args.strict)
        # Everything that can fail is read before the import writes its masks.
        against = {str(p): read_manifest(p) for p in args.check_against}
        result = importer(args.src, **kwargs)
    except (ImportFormatError, ManifestError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = result.rows
    if not rows:
        result.discard()
        print(f"error: no photos imported from {args.src}", file=sys.stderr)
        return 2
    (out / "import_warnings.txt").unlink(missing_ok=True)  # none left from an earlier run
    if result.warnings:
        out.mkdir(parents=True, exist_ok=True)
        (out / "import_warnings.txt").write_text("\n".join(result.warnings) + "\n", encoding="utf-8")
        print(f"{len(result.warnings)} warning(s) (all in {out / 'import_warnings.txt'}):")
        for w in result.warnings[:10]:
            print(f"  - {w}")
        if len(result.warnings) > 10:
            print(f"  ... and {len(result.warnings) - 10} more")

    print(f"imported {_summary(rows)}")
    parts: dict = {}
    if ratios is None:
        write_manifest(rows, out / "manifest.csv")
        print(f"wrote {out / 'manifest.csv'}")
    else:
        try:
            parts = split_rows(rows, ratios, seed=args.seed)
        except ValueError as exc:
            result.discard()  # a failed import leaves no masks behind
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for name, part in parts.items():
            write_manifest(part, out / f"{name}.csv")
            print(f"wrote {out / f'{name}.csv'}: {len(part)} photos, {len({r.subject for r in part})} subjects")
        shared = shared_subjects(parts)
        if shared:  # split_rows guarantees this cannot happen; say so loudly if it ever does
            print(f"error: {len(shared)} subject(s) on two sides: {list(shared)[:10]}", file=sys.stderr)
            return 1
        print("subjects shared between splits: none")

    if args.no_dedup:
        return 0
    check = dict(parts)
    if against:
        check = {**(check or {"import": rows}), **against}
    if check:
        pairs, errors = find_near_duplicates(check, threshold=args.threshold)
        print(leakage_report(pairs, check, threshold=args.threshold, errors=errors))
    # Within one import, the same picture under two subjects would leak once split.
    same, errors = find_cross_subject_duplicates(rows, threshold=args.threshold)
    if same:
        print(f"warning: {len(same)} near-duplicate pair(s) with different subjects (they could land on two sides):")
        for p in same[:20]:
            print(f"  - d={p.distance:2d} {p.image_a} [{p.subject_a}] <-> {p.image_b} [{p.subject_b}]")
    else:
        print(f"near-duplicates across subjects: none ({len(rows)} photos, threshold {args.threshold})")
    return 0
