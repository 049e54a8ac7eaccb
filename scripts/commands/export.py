"""`scalpscan export`: write a run's model as ONNX, metadata included."""

from __future__ import annotations

import argparse
import sys

HELP = "export a trained model to ONNX (dynamic batch axis, model.json in the metadata)"

EPILOG = """\
examples:
  scalpscan export --out scalpscan.onnx                # the model that ships in the package
  scalpscan export --model runs/demo --out model.onnx
  scalpscan score photos/ --model model.onnx --out results.jsonl    # ONNX Runtime, same rows

The export is checked: ONNX Runtime's outputs are compared with PyTorch's on a random
batch and the command fails when they differ by more than 1e-3.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan export`."""
    parser.add_argument("--model", default=None,
                        help="run folder, model.safetensors or a shipped model's name (default: the shipped model)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.export-based exporter (default) or the older TorchScript tracer",
    )


def run(args: argparse.Namespace) -> int:
    """Export, check parity, print where the file is."""
    from scalpscan.inference.export import ExportError, export_onnx
    from scalpscan.models.checkpoint import CheckpointError
    from scalpscan.models.shipped import resolve_model

    if not str(args.out).endswith(".onnx"):
        print(f"scalpscan export: error: --out {args.out}: give a file name ending in .onnx", file=sys.stderr)
        return 2
    try:
        path = export_onnx(resolve_model(args.model), args.out, opset=args.opset, exporter=args.exporter)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"scalpscan export: error: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"scalpscan export: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the exporters raise many types; say which one to try instead
        other = "torchscript" if args.exporter == "dynamo" else "dynamo"
        print(
            f"scalpscan export: error: the {args.exporter} exporter failed ({type(exc).__name__}: {exc}); "
            f"try --exporter {other}",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); use it as --model {path}")
    return 0
