"""`scalpscan models`: the models that ship in the package."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "EPILOG", "add_arguments", "run"]

HELP = "list the models that ship in the package (the default one is used when --model is left out)"
EPILOG = """\
examples:
  scalpscan models
  scalpscan models --json
  scalpscan models --check        # recompute each model's SHA-256 against the recorded one

A shipped model is used by name (`scalpscan score photos/ --model scalpscan-joint-v1`) or by
default (`Predictor.load()`, and `score`, `evaluate`, `export` without --model). Its model
card, with its data, recipe, figures and limits, is named in the listing.
Exit codes: 0 listed, 1 a checksum does not match (--check).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan models`."""
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of a table")
    parser.add_argument("--check", action="store_true", help="verify each model's weights against its recorded SHA-256")


def run(args: argparse.Namespace) -> int:
    """List (and optionally verify) the shipped models; returns the exit code."""
    from scalpscan.models.shipped import file_sha256, list_shipped

    models = list_shipped()
    if not models:
        print("no model ships with this installation; train one (`scalpscan train --recipe joint`)")
        return 0
    status = 0
    for model in models:
        ok = None
        if args.check:
            ok = file_sha256(model.path / "model.safetensors") == model.sha256
            status = status or (0 if ok else 1)
        if args.json:
            print(json.dumps({"name": model.name, "default": model.default, "description": model.description,
                              "size_bytes": model.size_bytes, "sha256": model.sha256, "card": model.card,
                              "license": model.license, "path": str(model.path),
                              **({"checksum_ok": ok} if ok is not None else {})}))
            continue
        mark = " (default)" if model.default else ""
        print(f"{model.name}{mark}: {model.description}")
        print(f"  weights  {model.size_bytes / 1e6:.1f} MB, sha256 {model.sha256[:16]}..."
              + ("" if ok is None else ("  checksum ok" if ok else "  CHECKSUM MISMATCH")))
        print(f"  card     {model.card}")
        print(f"  license  {model.license}")
    return status
