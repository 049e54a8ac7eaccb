"""Benchmark of the clinic web app: concurrent uploads, page latency, photos scored per second.

Starts the app on 127.0.0.1 (a fresh data folder; SQLite unless ``--db``), logs in 20 staff
sessions, and has them upload a visit of 5 photos each at the same moment. It then checks
that every upload was accepted and every photo stored, scored and not lost, times each page
(median and 95th percentile of repeated requests), and writes the ``bench_app`` section of
BENCHMARKS.md.

It scores with the model that ships in the package (``models/shipped/scalpscan-joint-v1``,
what ``Predictor.load()`` loads) unless ``--model`` names another. The command recorded in
BENCHMARKS.md reproduces from a clone: a ``--model`` path (a run folder of one's own, not in
the repository) is written as ``--model RUN``, and the section names the model by its id.

    python -m scalpscan.scripts.bench_app --repeat 10         # the shipped model
    python -m scalpscan.scripts.bench_app --model runs/demo --uploads 20 --photos 5
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["main", "recorded_command", "SECTION"]

#: The BENCHMARKS.md section this script owns.
SECTION = "bench_app"
_PASSWORD = "benchmark password 1"


def _photo(seed: int, side: int) -> bytes:
    """A seeded phone-like JPEG (textured, two tones) of ``side`` x ``3/4 side`` pixels."""
    rng = np.random.default_rng(seed)
    h = side * 3 // 4
    pixels = rng.integers(60, 200, (h, side, 3), dtype=np.uint8)
    pixels[: h // 3] = (80 + seed % 90, 65, 55)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=88)
    return out.getvalue()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    if not match:
        raise RuntimeError("no CSRF field on the page")
    return match.group(1)


def _client(base: str) -> tuple[Any, str]:
    import httpx

    client = httpx.Client(base_url=base, timeout=300.0)
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": _csrf(page.text), "name": "bench", "password": _PASSWORD,
                                         "next": "/patients"}, follow_redirects=True)
    if answer.status_code != 200:
        raise RuntimeError(f"login failed: {answer.status_code}")
    return client, _csrf(answer.text)


def _timed(client: Any, path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code}")
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the figures."""
    import uvicorn

    from scalpscan.app import AppConfig, create_app
    from scalpscan.app.auth import add_user
    from scalpscan.app.db import Patient, Photo
    from scalpscan.inference.predictor import Predictor

    predictor = Predictor.load(args.model) if args.model else Predictor.load()  # None: the shipped model
    data = Path(tempfile.mkdtemp(prefix="scalpscan-bench-app-"))
    config = AppConfig(data_dir=data, db_url=args.db, max_photos=max(12, args.photos))
    app = create_app(config, predictor=predictor)
    with app.state.sessions() as db:
        add_user(db, "bench", _PASSWORD)
        db.commit()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    try:
        clients = [_client(base) for _ in range(args.uploads)]
        pids = []
        for n, (client, csrf) in enumerate(clients):
            answer = client.post("/patients", data={"csrf": csrf, "key": f"B{n:03d}"}, follow_redirects=True)
            pids.append(int(str(answer.url).rsplit("/", 1)[1]))
        photos = [[_photo(n * 100 + i, args.side) for i in range(args.photos)] for n in range(args.uploads)]

        def upload(n: int) -> tuple[int, float, str]:
            client, csrf = clients[n]
            start = time.perf_counter()
            answer = client.post(f"/patients/{pids[n]}/visits",
                                 data={"csrf": csrf, "date": "2026-01-10", "sex": "male"},
                                 files=[("photos", (f"{i}.jpg", photos[n][i], "image/jpeg")) for i in range(args.photos)])
            return answer.status_code, time.perf_counter() - start, answer.headers.get("location", "")

        start = time.perf_counter()
        with ThreadPoolExecutor(args.uploads) as pool:
            uploads = list(pool.map(upload, range(args.uploads)))
        uploaded = time.perf_counter() - start
        errors = [code for code, _, _ in uploads if code != 303]
        visits = [loc for code, _, loc in uploads if code == 303]
        total = args.uploads * args.photos
        client = clients[0][0]
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            with app.state.sessions() as db:
                pending = db.query(Photo).filter(Photo.status == "pending").count()
            if pending == 0:
                break
            time.sleep(0.2)
        scored_in = time.perf_counter() - start
        with app.state.sessions() as db:
            rows = db.query(Photo).all()
            stored = sum(app.state.store.path(p.sha256, p.ext).is_file() for p in rows)
            statuses = {s: sum(p.status == s for p in rows) for s in ("ok", "recapture", "error", "pending")}
        # A second visit of the first patient, for the comparison page.
        client0, csrf0 = clients[0]
        client0.post(f"/patients/{pids[0]}/visits", data={"csrf": csrf0, "date": "2026-07-10", "sex": "male"},
                     files=[("photos", (f"{i}.jpg", _photo(9000 + i, args.side), "image/jpeg"))
                            for i in range(args.photos)])
        while time.monotonic() < deadline:
            with app.state.sessions() as db:
                if db.query(Photo).filter(Photo.status == "pending").count() == 0:
                    break
            time.sleep(0.2)
        with app.state.sessions() as db:
            first_photo = db.query(Photo).order_by(Photo.id).first().id
            visit_ids = sorted(v.id for v in db.get(Patient, pids[0]).visits)
        pages = {
            "patients list": "/patients",
            "patient": f"/patients/{pids[0]}",
            f"visit assessment ({args.photos} photos)": visits[0],
            "visit status (progress poll)": f"{visits[0]}/status",
            "comparison of two visits": f"/patients/{pids[0]}/compare?a={visit_ids[0]}&b={visit_ids[-1]}",
            "photo (display copy)": f"/photos/{first_photo}",
            "export JSON": f"/patients/{pids[0]}/export.json",
        }
        latency = {name: _timed(client, path, args.repeat) for name, path in pages.items()}
    finally:
        server.should_exit = True
        thread.join(30)
    return {
        "uploads": args.uploads, "photos": args.photos, "side": args.side, "errors": errors,
        "upload_seconds": [t for _, t, _ in uploads], "uploaded_in": uploaded, "scored_in": scored_in,
        "total": total, "stored": stored, "statuses": statuses, "latency": latency,
        "db": "PostgreSQL" if args.db else "SQLite", "model": predictor.model_name,
    }


def _ms(values: list[float], q: float) -> str:
    return f"{np.quantile(np.asarray(values), q) * 1000:.0f}"


def section(figures: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md section text."""
    f = figures
    lost = f["total"] - f["stored"]
    lines = [
        "## Clinic web app",
        "",
        f"`{command}` — {os.cpu_count()} CPU core(s), {platform.processor() or platform.machine()}, "
        f"{f['db']}, model `{f['model']}`, photos {f['side']} x {f['side'] * 3 // 4} px JPEG.",
        "",
        f"- {f['uploads']} staff sessions upload a visit of {f['photos']} photos each at the same moment: "
        f"{f['uploads'] - len(f['errors'])}/{f['uploads']} accepted, {f['stored']}/{f['total']} photos stored"
        f" ({lost} lost); statuses {', '.join(f'{k} {v}' for k, v in f['statuses'].items())}.",
        f"- Upload answer time (the page returns before scoring): median {_ms(f['upload_seconds'], 0.5)} ms,"
        f" slowest {max(f['upload_seconds']) * 1000:.0f} ms; all {f['uploads']} in {f['uploaded_in']:.1f} s.",
        f"- Background scoring: {f['total']} photos scored {f['scored_in']:.1f} s after the uploads began:"
        f" **{f['total'] / f['scored_in']:.1f} photos/s**.",
        "",
        "| page | median ms | p95 ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {_ms(t, 0.5)} | {_ms(t, 0.95)} |" for name, t in f["latency"].items()]
    return "\n".join(lines) + "\n"


def recorded_command(argv: list[str]) -> str:
    """The command line written into BENCHMARKS.md: ``argv`` without ``--no-write``, and a
    ``--model`` that is a path rather than a shipped model's name written as ``RUN``."""
    from scalpscan.models.shipped import list_shipped

    shipped = {m.name for m in list_shipped()}
    shown: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--no-write":
            continue
        if arg == "--model" or arg.startswith("--model="):
            value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            shown += ["--model", value if value in shipped else "RUN"]
            continue
        shown.append(arg)
    return "python -m scalpscan.scripts.bench_app" + "".join(f" {a}" for a in shown)


def main(argv: list[str] | None = None) -> int:
    """Command line: run, print the section, write it into BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="a shipped model's name, a run folder or a model file (default: the shipped model, "
                             "models/shipped/scalpscan-joint-v1)")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--uploads", type=int, default=20, help="concurrent uploads (default 20)")
    parser.add_argument("--photos", type=int, default=5, help="photos per upload (default 5)")
    parser.add_argument("--side", type=int, default=1024, help="photo width in pixels (default 1024)")
    parser.add_argument("--repeat", type=int, default=20, help="requests per page timed (default 20)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for scoring (default 900)")
    parser.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to write (default: the repository's)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    try:
        figures = run(args)
    except FileNotFoundError as exc:  # no such run folder, or no shipped model in this checkout yet
        print(f"bench_app: error: {exc}", file=sys.stderr)
        return 2
    text = section(figures, recorded_command(argv if argv is not None else sys.argv[1:]))
    print(text)
    if not args.no_write:
        from scalpscan.scripts.benchmarks import BENCHMARKS, write_section

        write_section(args.out or BENCHMARKS, SECTION, text)
    failed = figures["errors"] or figures["stored"] != figures["total"] or figures["statuses"]["pending"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
