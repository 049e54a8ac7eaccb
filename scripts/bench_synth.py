"""Benchmark the synthetic renderer: photos per second per core at 256 px.

Renders a data set with one worker and with two (files, masks and manifest included, the
contact sheet left out), prints the figures and replaces its own section of BENCHMARKS.md,
between ``<!-- bench_synth -->`` and ``<!-- /bench_synth -->`` (`scripts.benchmarks`).

    python -m scalpscan.scripts.bench_synth                 # 300 photos per run, writes BENCHMARKS.md
    python -m scalpscan.scripts.bench_synth --n 100 --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from scalpscan.scripts.benchmarks import BENCHMARKS, write_section

__all__ = ["SECTION", "measure", "markdown_section", "main"]

#: This script's section of BENCHMARKS.md (`scripts.benchmarks`).
SECTION = "bench_synth"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(n: int, size: int, workers: int, seed: int = 0) -> tuple[float, float]:
    """Render and write ``n`` photos of ``size`` px with ``workers`` processes.

    Returns:
        (wall-clock seconds, CPU seconds of this process and its workers). On a shared
        machine the CPU seconds give the per-core rate that other loads do not distort.
    """
    from scalpscan.data.synth.dataset import SynthOptions, synthesize

    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        start, cpu = time.perf_counter(), _cpu_seconds()
        synthesize(Path(tmp) / "set", n, seed, options=SynthOptions(size=size), workers=workers, contact_sheet=0)
        return time.perf_counter() - start, _cpu_seconds() - cpu


def markdown_section(
    results: list[tuple[int, int, float, float]], size: int, machine: str, command: str
) -> str:
    """The BENCHMARKS.md section for ``results`` = [(workers, photos, wall s, CPU s)]."""
    lines = [
        "## Synthetic renderer (`scalpscan synth`)",
        "",
        f"Photos rendered and written (JPEG photo, two PNG masks, manifest) at {size} px.",
        f"Machine: {machine}. Reproduce with `{command}`.",
        "Photos per CPU-second is the per-core rate (CPU time of the process and its workers,",
        "worker start-up included), which other loads on a shared machine do not distort.",
        "",
        "| workers | photos | wall s | photos/s (wall) | CPU s | photos per CPU-second |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, n, wall, cpu in results:
        lines.append(f"| {workers} | {n} | {wall:.2f} | {n / wall:.1f} | {cpu:.2f} | {n / cpu:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="photos per run (default 300)")
    parser.add_argument("--size", type=int, default=256, help="picture side (default 256)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    parser.add_argument("--machine", default=None, help="machine description for the table (default: from the OS)")
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS, help="file to update")
    parser.add_argument("--no-write", action="store_true", help="only print the figures")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 32 or min(args.workers) < 1:
        parser.error("--n and --workers must be positive and --size at least 32")
    machine = args.machine or f"{os.cpu_count()}-core {platform.machine()} CPU ({platform.system()}), no GPU"
    measure(10, args.size, 1)  # warm-up: imports and caches
    results = []
    for workers in args.workers:
        wall, cpu = measure(args.n, args.size, workers)
        results.append((workers, args.n, wall, cpu))
        print(
            f"workers={workers}: {args.n} photos in {wall:.2f} s wall = {args.n / wall:.1f} photos/s; "
            f"{cpu:.2f} CPU s = {args.n / cpu:.1f} photos per CPU-second (per core)"
        )
    command = "python -m scalpscan.scripts.bench_synth " + " ".join(
        [f"--n {args.n}", f"--size {args.size}", "--workers " + " ".join(map(str, args.workers))]
    )
    section = markdown_section(results, args.size, machine, command)
    if not args.no_write:
        write_section(args.benchmarks, SECTION, section)
        print(f"updated {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
