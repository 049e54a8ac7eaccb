"""The `scalpscan` command: a thin dispatcher over one module per subcommand.

Each module in `scripts/commands/` defines ``HELP`` (one line), ``EPILOG`` (examples),
``add_arguments(parser)`` and ``run(args) -> int``. Modules keep heavy imports (torch)
inside ``run`` so that ``scalpscan --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module under scripts.commands, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "import": "import_",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "score": "score",
    "report": "report",
    "models": "models",
    "demo": "demo",
    "serve": "serve",
    "users": "users",
}

EPILOG = """\
examples:
  scalpscan demo                                   # the whole path on synthetic data
  scalpscan synth out/synth --n 1000 --seed 0
  scalpscan import roboflow PATH_TO_EXPORT/train --out data/norwood
  scalpscan train --data out/synth/manifest.csv --out runs/demo --backbone tiny
  scalpscan score photos/ --model runs/demo --out results.jsonl --intake intake.csv
  scalpscan report results.jsonl --out reports/ --intake intake.csv
  scalpscan users add alice --data clinic/ && scalpscan serve --data clinic/ --model runs/demo

Run `scalpscan COMMAND --help` for each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="scalpscan",
        description="Scalp-photo analysis and SMP candidacy assessment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"scalpscan.scripts.commands.{module_name}")
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scalpscan` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
