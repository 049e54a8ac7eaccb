"""Benchmark photo decoding: peak memory and time per photo for 12, 50 and 200 MP phone photos.

    python -m scalpscan.scripts.bench_decode                # JPEG and HEIC, 12 / 50 / 200 MP
    python -m scalpscan.scripts.bench_decode --sizes 12,50  # skip the 200 MP photos

Each photo is decoded the way ``scalpscan score`` decodes it in a worker (``load_image``
reduced to the side the predictor asks for, plus ``image_size`` from the header), in a
fresh Python process, and the process's peak resident memory (``VmHWM`` from
``/proc/self/status``, else ``ru_maxrss``) is read after it. A process that only imports the decoder gives the baseline, so "decode" is what
one photo adds to a decoding worker; a decoding worker's peak is the baseline plus the
largest photo it meets. A second row per photo decodes it at full size (what the photo
would cost without reduced decoding), for comparison.

The photos are generated once (seeded, smooth like a real photo so that they compress
like one; HEIC as a grid of 512 px tiles with a 320 px thumbnail, as phones write it) and
cached under ``local/bench_decode/`` (git-ignored): encoding a 200 MP HEIC takes minutes.
Figures are printed and written to BENCHMARKS.md between ``<!-- bench_decode -->`` markers.

HEIC has no reduced decoding: unless the file embeds a thumbnail at least as large as
scoring needs (phones embed 320 px ones), every pixel is decoded, then reduced at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: This script's section of BENCHMARKS.md (`scripts.benchmarks`).
SECTION = "bench_decode"
#: Photo sizes (4:3) of phone cameras, by megapixels.
SIZES: dict[int, tuple[int, int]] = {12: (4000, 3000), 50: (8160, 6120), 200: (16320, 12240)}

__all__ = ["SECTION", "SIZES", "make_photo", "measure", "main"]

# Runs in a fresh interpreter: import the decoder, decode once, report time and peak memory.
_CHILD = r"""
import json, resource, sys, time
from scalpscan.data.decode import image_size, load_image, set_max_pixels
path, side = sys.argv[1], sys.argv[2]
set_max_pixels(300_000_000)
start = time.perf_counter()
if path != "-":
    array = load_image(path, max_side=None if side == "full" else int(side))
    size = image_size(path)
    shape = list(array.shape)
else:
    shape = None
seconds = time.perf_counter() - start
try:  # this process image's own high-water mark (ru_maxrss can carry the parent's across fork)
    with open("/proc/self/status") as handle:
        peak = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kib": peak, "shape": shape}))
"""


def make_photo(path: Path, megapixels: int, fmt: str, seed: int = 0) -> Path:
    """Generate (once) a photo-like picture of that size: smooth colour fields plus grain."""
    if path.is_file():
        return path
    import numpy as np
    from PIL import Image

    width, height = SIZES[megapixels]
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(30, 225, (height // 32, width // 32, 3), dtype=np.uint8))
    picture = coarse.resize((width, height), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "JPEG":
        picture.save(tmp, format="JPEG", quality=90)
    else:
        import pillow_heif

        # A grid of 512 px tiles, as phones write HEIC (HEVC itself stops at 142 MP), with
        # x265's fastest preset: the 200 MP encode takes minutes instead of tens of minutes;
        # decoding costs the same whatever preset encoded the file.
        pillow_heif.from_pillow(picture).save(tmp, format="HEIF", quality=80, thumbnails=[320], tile_size=512,
                                              enc_params={"preset": "ultrafast"})
    os.replace(tmp, path)
    return path


def measure(path: Path | None, side: str) -> dict:
    """Decode ``path`` (None: nothing, the baseline) in a fresh process; its time and peak."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path) if path else "-", side],
                            capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"decoding {path} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Generate the photos (cached), measure, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="12,50,200", help="megapixels to measure (of 12, 50, 200)")
    parser.add_argument("--formats", default="JPEG,HEIC", help="JPEG, HEIC or both")
    parser.add_argument("--repeats", type=int, default=3, help="decodes per photo (the median time is kept)")
    parser.add_argument("--cache", type=Path, default=ROOT / "local" / "bench_decode", help="generated photos")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = [f.strip().upper() for f in args.formats.split(",")]
    unknown = [s for s in sizes if s not in SIZES] + [f for f in formats if f not in ("JPEG", "HEIC")]
    if unknown:
        parser.error(f"unknown size or format {unknown}; sizes are {sorted(SIZES)}, formats JPEG and HEIC")

    from scalpscan.inference.quality import WORK_SIDE

    # What a Predictor at 224 px asks for (inference.predictor._PhotoPreparer.decode_side).
    side = max(2 * 224, 2 * WORK_SIDE)
    machine = f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})"
    baseline = min(measure(None, "full")["peak_kib"] for _ in range(2)) / 1024
    print(f"machine: {machine}; baseline (interpreter + decoder imported): {baseline:.0f} MiB")
    rows = []
    for fmt in formats:
        for megapixels in sizes:
            suffix = "jpg" if fmt == "JPEG" else "heic"
            start = time.perf_counter()
            path = make_photo(args.cache / f"photo_{megapixels}mp.{suffix}", megapixels, "JPEG" if fmt == "JPEG" else "HEIF")
            made = time.perf_counter() - start
            if made > 1:
                print(f"generated {path} in {made:.0f} s")
            for mode in (str(side), "full"):
                runs = [measure(path, mode) for _ in range(args.repeats)]
                seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
                peak = max(r["peak_kib"] for r in runs) / 1024
                rows.append((fmt, megapixels, path.stat().st_size / 2**20, mode, runs[0]["shape"], seconds, peak))
                print(f"{fmt} {megapixels} MP, {'reduced to ' + mode + ' px' if mode != 'full' else 'full size'}: "
                      f"{seconds:.2f} s, peak {peak:.0f} MiB ({peak - baseline:+.0f} MiB over the baseline)")

    command = "python -m scalpscan.scripts.bench_decode"
    if args.sizes != "12,50,200" or args.formats.upper() != "JPEG,HEIC":
        command += f" --sizes {args.sizes} --formats {args.formats}"
    lines = [
        "## Decoding big phone photos (`scalpscan score` workers)\n",
        f"Machine: {machine}, shared with other jobs. Command: `{command}`. Each decode runs in a fresh "
        "process and reports its peak resident memory (`VmHWM`); \"over baseline\" subtracts a process "
        f"that only imports the decoder ({baseline:.0f} MiB), i.e. what the photo adds to a decoding worker. "
        f"\"as score decodes\" is `load_image(path, max_side={side})` plus `image_size(path)`, what a worker "
        "does for a model at 224 px; \"full size\" decodes every pixel, for comparison. Photos are generated "
        "(4:3, smooth colour fields, JPEG quality 90; HEIC quality 80, a grid of 512 px tiles with a 320 px "
        "thumbnail, as phones write it) "
        f"and cached in `local/bench_decode/`. Time is the median of {args.repeats} decodes.\n",
        "| format | photo | file (MiB) | decode | result | time per photo (s) | peak (MiB) | over baseline (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fmt, megapixels, mib, mode, shape, seconds, peak in rows:
        w, h = SIZES[megapixels]
        what = "as score decodes" if mode != "full" else "full size"
        result = f"{shape[1]}x{shape[0]}" if shape else "-"
        lines.append(f"| {fmt} | {megapixels} MP ({w}x{h}) | {mib:.1f} | {what} | {result} | {seconds:.2f} | "
                     f"{peak:.0f} | {peak - baseline:+.0f} |")
    worst = max((r for r in rows if r[3] != "full"), key=lambda r: r[6], default=None)
    if worst is not None:
        lines.append(
            f"\nPeak memory per decoding worker: at most {worst[6]:.0f} MiB "
            f"(the {worst[0]} {worst[1]} MP photo); `scalpscan score` runs up to four such workers "
            "(`--workers`), each holding one photo at a time."
        )
    from scalpscan.scripts.benchmarks import write_section

    write_section(args.out, SECTION, "\n".join(lines).rstrip() + "\n")
    print(f"\nwrote the figures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
