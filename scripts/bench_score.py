"""Benchmark `scalpscan score`: pipeline vs bare forward, ONNX Runtime vs eager, memory.

    python -m scalpscan.scripts.bench_score                 # everything (several minutes on 2 cores)
    python -m scalpscan.scripts.bench_score --quick         # smaller counts, for a smoke run

Measures, in one run on this machine:

1. Throughput of the whole scoring pipeline (decoding in worker processes, quality gate,
   preprocessing, forward, decoding of the outputs, photo-level assessment, rows
   appended to a file) against the bare model forward on ready tensors, at the same
   batch size and torch threads. The target is a ratio of at least 0.9.
2. The same two figures with ONNX Runtime in place of eager PyTorch.
3. Peak memory (proportional set size of the `score` process and its decoding workers,
   polled from /proc) scoring 1,000 and 10,000 small photos in a subprocess.

The photos are generated (seeded, textured JPEGs), so the figures reproduce anywhere. The
model has random weights: speed does not depend on what it learnt. Figures are printed,
and written between the ``<!-- bench_score -->`` and ``<!-- /bench_score -->`` markers in
BENCHMARKS.md (replacing the previous figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: This script's section of BENCHMARKS.md (`scripts.benchmarks`).
SECTION = "bench_score"

__all__ = ["main"]


def _photos(folder: Path, count: int, width: int, height: int) -> None:
    """Seeded textured JPEGs (sharp and well exposed, so they pass the quality gate)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiles = [rng.integers(40, 220, size=(height, width, 3), dtype=np.uint8) for _ in range(8)]
    for i in range(count):
        name = folder / f"P{i % 997:04d}_{i:06d}.jpg"
        if not name.exists():
            Image.fromarray(np.roll(tiles[i % 8], i, axis=1)).save(name, quality=85)


def _make_run(folder: Path, backbone: str, side: int) -> Path:
    import torch

    from scalpscan.models import create_model, inference_meta, save_checkpoint

    torch.manual_seed(0)
    model = create_model("scalpnet", backbone=backbone, image_size=side)
    meta = inference_meta(model, input_size=side)
    save_checkpoint(folder, model, meta)
    return folder


def _bare_forward(predictor, batch_size: int, batches: int) -> float:
    """Photos per second of the backend alone on a ready float32 batch (median batch time)."""
    import torch

    batch = torch.randn(batch_size, 3, predictor.input_size, predictor.input_size)
    predictor.forward(batch)  # warm-up
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        predictor.forward(batch)
        times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times))


def _pipeline(
    predictor, photos: Path, out: Path, batch_size: int, workers: int
) -> tuple[float, float, float, float]:
    """Score a folder; returns photos/s over the whole run, photos/s per batch, the model's
    busy share and photos/s of the forward passes inside the run.

    Photos/s per batch is from the median time between batches: it leaves out the first
    batch's wait for the workers to start and is robust to other processes taking the
    CPU now and then, like the bare-forward median. The model busy share is the time
    spent in the forward pass over the wall time, from the second batch to the last:
    1.0 means the model never waited for photos, whatever else runs on the machine.
    """
    from scalpscan.inference.inputs import discover_inputs
    from scalpscan.inference.results import ResultsFile
    from scalpscan.inference.score import score_jobs

    forward, spent = predictor.forward, []

    def timed_forward(batch):
        start = time.perf_counter()
        outputs = forward(batch)
        spent.append(time.perf_counter() - start)
        return outputs

    predictor.forward = timed_forward
    jobs = discover_inputs([photos]).jobs
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    marks = []
    count = 0
    try:
        with ResultsFile(out) as results:
            for row in score_jobs(predictor, jobs, batch_size=batch_size, workers=workers):
                results.write(row)
                count += 1
                if count % batch_size == 0:
                    results.sync()
                    marks.append(time.perf_counter())
    finally:
        del predictor.forward
    end = time.perf_counter()
    gaps = np.diff(marks)
    steady = batch_size / float(np.median(gaps)) if len(gaps) else float("nan")
    busy = sum(spent[1 : len(marks)]) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")
    inside = batch_size / float(np.median(spent)) if spent else float("nan")
    return count / (end - start), steady, busy, inside


def _memory_kib(pid: int, field: str) -> int:
    """``Rss`` or ``Pss`` of one process in KiB, from /proc (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _tree_pss_kib(pid: int) -> int:
    """Proportional set size of a process and all its descendants, in KiB.

    PSS shares each page among the processes that map it, so forked workers, which
    share most of their memory with the main process, are not counted twice.
    """
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _memory_kib(current, "Pss")
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack += [int(c) for c in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _peak_memory(run: Path, photos: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """(peak PSS of the process tree, peak RSS of the main process, in MiB; seconds) scoring a folder."""
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "scalpscan.scripts.cli", "score", str(photos), "--model", str(run), "--out", str(out),
            "--workers", str(workers), "--batch-size", "32", "--no-progress"]
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree = peak_main = 0
    while process.poll() is None:
        peak_tree = max(peak_tree, _tree_pss_kib(process.pid))
        peak_main = max(peak_main, _memory_kib(process.pid, "Rss"))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"score exited {process.returncode}: {process.stderr.read()[-2000:]}")
    return peak_tree / 1024, peak_main / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0", help="model for the throughput runs")
    parser.add_argument("--image-size", type=int, default=224, help="network input side (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    parser.add_argument("--photos", type=int, default=384, help="photos for the throughput runs")
    parser.add_argument("--memory-counts", default="1000,10000", help="photo counts for the memory runs")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.memory_counts = 96, "200,1000"

    import torch

    from scalpscan.inference.export import export_onnx
    from scalpscan.inference.predictor import Predictor

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU"
    load_before = os.getloadavg()[0]
    print(f"machine: {machine}; torch {torch.__version__}, threads {args.threads}, workers {args.workers}")

    photos = work / "photos_640"
    _photos(photos, args.photos, 640, 480)
    run = _make_run(work / f"run_{args.backbone}_{args.image_size}", args.backbone, args.image_size)
    onnx_path = export_onnx(run, work / "model.onnx")
    batches = max(3, args.photos // args.batch_size)
    lines = []
    results = {}
    for name, model in (("eager PyTorch", run), ("ONNX Runtime", onnx_path)):
        predictor = Predictor.load(model)
        bare = _bare_forward(predictor, args.batch_size, batches)
        total, steady, busy, inside = _pipeline(predictor, photos, work / "bench.jsonl", args.batch_size, args.workers)
        results[name] = (bare, total, steady, busy, inside)
        print(f"{name}: bare forward {bare:.1f} photos/s; score {total:.1f} photos/s over the whole run, "
              f"{steady:.1f} per batch (median); ratio {steady / bare:.2f}; model busy {busy:.0%} of the time, "
              f"its forward passes inside score at {inside:.1f} photos/s")

    memory = []
    small_run = _make_run(work / "run_tiny_64", "tiny", 64)
    for count in (int(c) for c in args.memory_counts.split(",")):
        folder = work / f"photos_small_{count}"
        _photos(folder, count, 128, 128)
        tree, main_rss, seconds = _peak_memory(small_run, folder, work / f"mem_{count}.jsonl", args.workers)
        memory.append((count, tree, main_rss, seconds))
        print(f"memory, {count} photos: peak {tree:.0f} MiB PSS (process + workers), main process {main_rss:.0f} MiB RSS, "
              f"{seconds:.0f} s")

    command = "python -m scalpscan.scripts.bench_score" + (" --quick" if args.quick else "")
    lines.append("## Scoring (`scalpscan score`)\n")
    load_after = os.getloadavg()[0]
    lines.append(f"Machine: {machine}; load average {load_before:.1f} at the start, {load_after:.1f} at the end "
                 f"(other jobs were running when above the core count). Command: `{command}` "
                 f"(torch {torch.__version__}).\n")
    lines.append(f"Throughput: {args.photos} generated 640x480 JPEGs, {args.backbone} at {args.image_size} px "
                 f"(random weights), batch {args.batch_size}, {args.threads} torch/ORT thread(s), "
                 f"{args.workers} decoding worker(s). \"score\" is the whole pipeline (decode, quality gate, "
                 "preprocess, forward, decode outputs, photo-level assessment, rows appended). Both the "
                 "bare forward and \"score, per batch\" use the median time per batch (robust to other "
                 "processes on the shared cores); \"whole run\" includes starting the decoding workers; "
                 "\"model busy\" is the share of the scoring time spent in the forward pass (1.0 = the model "
                 "never waits for photos); \"forward inside score\" is the speed of those same forward passes, "
                 "which share the cores with the decoding worker.\n")
    lines.append("| backend | bare forward (photos/s) | score, whole run | score, per batch | per batch / bare | model busy in score | forward inside score |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, (bare, total, steady, busy, inside) in results.items():
        lines.append(f"| {name} | {bare:.1f} | {total:.1f} | {steady:.1f} | {steady / bare:.2f} | {busy:.0%} "
                     f"| {inside:.1f} |")
    eager, ort_ = results["eager PyTorch"][0], results["ONNX Runtime"][0]
    lines.append(f"\nONNX Runtime / eager PyTorch, bare forward: {ort_ / eager:.2f}x.\n")
    lines.append("Peak memory, `scalpscan score FOLDER --workers "
                 f"{args.workers} --batch-size 32` on generated 128x128 JPEGs with the `tiny` model at 64 px "
                 "(polled from /proc/PID/smaps_rollup every 50 ms; PSS counts pages shared by the forked workers once):\n")
    lines.append("| photos | peak PSS, process + workers (MiB) | peak RSS, main process (MiB) | seconds |")
    lines.append("|---|---|---|---|")
    for count, tree, main_rss, seconds in memory:
        lines.append(f"| {count:,} | {tree:.0f} | {main_rss:.0f} | {seconds:.0f} |")
    if len(memory) >= 2:
        growth = memory[-1][1] / memory[0][1] - 1
        lines.append(f"\n{memory[-1][0]:,} vs {memory[0][0]:,} photos: {growth:+.1%} peak memory.")
    text = "\n".join(lines)
    from scalpscan.scripts.benchmarks import write_section

    write_section(args.out, SECTION, text.rstrip() + "\n")
    print(f"\nwrote the figures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
