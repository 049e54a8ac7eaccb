"""The clinic web app (`scalpscan serve`): login, CSRF, uploads, background scoring, visits, comparison,
export, deletion and import, on SQLite and on a real PostgreSQL server (skipped, saying why, without one)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from scalpscan.app import AppConfig, create_app
from scalpscan.app.auth import add_user
from scalpscan.app.db import AuditEntry, Patient, Photo, Visit
from scalpscan.app.importer import import_results
from scalpscan.app.store import PhotoStore

PASSWORD = "correct horse battery staple"
GPS_TAG = 0x8825


def photo_bytes(seed: int = 0, *, side: int = 128, gps: bool = False) -> bytes:
    """A seeded JPEG big and sharp enough to pass the quality gate; optionally with GPS EXIF."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(70, 190, (side, side, 3), dtype=np.uint8)
    pixels[: side // 3] = (90 + seed * 7 % 80, 70, 60)
    image = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    if gps:
        exif[0x010F] = "PhoneMaker"
        exif.get_ifd(GPS_TAG).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes() if gps else b"")
    return out.getvalue()


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def log_in(client, name: str = "alice", password: str = PASSWORD) -> str:
    """Log a test client in; returns the login's CSRF token."""
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "name": name, "password": password,
                                         "next": "/patients"})
    assert answer.status_code == 200 and answer.url.path == "/patients", answer.text[:500]
    return csrf_of(answer.text)


def _pg_bin() -> Path | None:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for root in roots:
        if (root / "initdb").exists() and (root / "pg_ctl").exists():
            return root
    return None


def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (yields its URL), or raises RuntimeError saying why not.

    ``SCALPSCAN_TEST_POSTGRES_URL`` names an existing server instead.
    """
    url = os.environ.get("SCALPSCAN_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    binaries = _pg_bin()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server programs (Debian package postgresql; `make test` installs it as root)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root without runuser to start PostgreSQL as user postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="scalpscan-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    try:
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "scalpscan", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l",
                        str(folder / "log"), "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL could not be started: {exc} {detail.decode(errors='replace')[-300:]}") from None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run([*as_user, str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                   "scalpscan", "scalpscan"], capture_output=True, timeout=30)
            if done.returncode == 0:
                break
            time.sleep(0.5)
        yield f"postgresql+psycopg://scalpscan@127.0.0.1:{port}/scalpscan"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for this module's tests (skipped with the reason when none starts)."""
    server = postgres_server()
    try:
        url = next(server)
    except RuntimeError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield url
    server.close()


def make_app(tmp_path: Path, run_dir: Path, db_url: str | None = None, **options: object):
    """An app on a fresh data folder (scoring run by the test, not a thread) with user alice."""
    config = AppConfig(data_dir=tmp_path / "clinic", db_url=db_url, model=str(run_dir), score=False, **options)
    app = create_app(config)
    with app.state.sessions() as db:
        add_user(db, "alice", PASSWORD)
        db.commit()
    return app


@pytest.fixture()
def app(tmp_path: Path, run_dir: Path):
    return make_app(tmp_path, run_dir)


@pytest.fixture()
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def new_patient(client: TestClient, csrf: str, key: str = "P001", name: str = "") -> int:
    answer = client.post("/patients", data={"csrf": csrf, "key": key, "name": name})
    assert answer.status_code == 200, answer.text[:500]
    return int(answer.url.path.rsplit("/", 1)[1])


def upload(client: TestClient, csrf: str, pid: int, photos: list[tuple[str, bytes]], **fields: str):
    data = {"csrf": csrf, "date": "2026-01-10", "sex": "male", **fields}
    return client.post(f"/patients/{pid}/visits", data=data,
                       files=[("photos", (name, content, "image/jpeg")) for name, content in photos],
                       follow_redirects=False)


def score_all(app) -> None:
    while app.state.scorer.score_pending():
        pass


FIVE = [(f"{view}.jpg", photo_bytes(i)) for i, view in enumerate(("front", "top", "back", "left", "right"))]


# --------------------------------------------------------------------------- login and CSRF


def test_every_page_and_photo_needs_a_login(client: TestClient, app) -> None:
    csrf = log_in(client)
    pid = new_patient(client, csrf)
    assert upload(client, csrf, pid, FIVE[:1]).status_code == 303
    with TestClient(app) as stranger:
        for path in ("/patients", f"/patients/{pid}", f"/patients/{pid}/visits/new", "/visits/1", "/audit",
                     f"/patients/{pid}/compare?a=1&b=1", "/visits/1/report.pdf"):
            answer = stranger.get(path, follow_redirects=False)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next="), path
        for path in ("/photos/1", "/visits/1/status", f"/patients/{pid}/export.json"):
            assert stranger.get(path).status_code == 401, path
        answer = stranger.post("/patients", data={"key": "X"}, follow_redirects=False)
        assert answer.status_code == 303
        answer = upload(stranger, "anything", pid, FIVE[:1])
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    with app.state.sessions() as db:
        assert db.query(Patient).count() == 1 and db.query(Photo).count() == 1


def test_wrong_password_then_logout_ends_the_session(client: TestClient, app) -> None:
    page = client.get("/login")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "name": "alice", "password": "wrong password"})
    assert answer.status_code == 401 and "wrong password" in answer.text
    csrf = log_in(client)
    cookie = client.cookies.get("scalpscan_session")
    assert client.get("/patients").status_code == 200
    client.post("/logout", data={"csrf": csrf})
    with TestClient(app) as replay:  # the old cookie no longer works anywhere
        replay.cookies.set("scalpscan_session", cookie)
        assert replay.get("/patients", follow_redirects=False).status_code == 303
    with app.state.sessions() as db:
        actions = [e.action for e in db.query(AuditEntry).order_by(AuditEntry.id)]
    assert actions == ["login failed", "login", "logout"]


def test_forms_without_the_right_csrf_token_are_refused(client: TestClient, app) -> None:
    page = client.get("/login")
    assert client.post("/login", data={"csrf": "forged", "name": "alice", "password": PASSWORD}).status_code == 403
    assert csrf_of(page.text)
    csrf = log_in(client)
    for token in ("", "forged", csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
        assert client.post("/patients", data={"csrf": token, "key": "P9"}).status_code == 403
        assert upload(client, token, 1, FIVE[:1]).status_code in (403, 404)
    pid = new_patient(client, csrf)
    assert upload(client, "forged", pid, FIVE[:1]).status_code == 403
    assert client.post(f"/patients/{pid}/delete", data={"csrf": "forged", "confirm": "P001"}).status_code == 403
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    with app.state.sessions() as db:
        assert db.query(Patient).count() == 1 and db.query(Photo).count() == 0
    assert client.get("/patients").status_code == 200  # still logged in


def test_login_redirect_stays_on_this_site(client: TestClient) -> None:
    page = client.get("/login?next=//evil.example/x")
    answer = client.post("/login", data={"csrf": csrf_of(page.text), "name": "alice", "password": PASSWORD,
                                         "next": "//evil.example/x"}, follow_redirects=False)
    assert answer.headers["location"] == "/patients"


# --------------------------------------------------------------------------- uploads


def test_uploads_are_checked_by_content_and_limited(tmp_path: Path, run_dir: Path) -> None:
    app = make_app(tmp_path, run_dir, max_photo_bytes=40_000, max_photos=3)
    with TestClient(app) as client:
        csrf = log_in(client)
        pid = new_patient(client, csrf)
        answer = upload(client, csrf, pid, [("scalp.jpg", b"#!/bin/sh\necho not a photo\n")])
        assert answer.status_code == 400 and "scalp.jpg: not a picture" in answer.text
        answer = upload(client, csrf, pid, [("page.png", b"<html><script>alert(1)</script></html>")])
        assert answer.status_code == 400 and "<script>alert" not in answer.text
        big = photo_bytes(1, side=400)
        assert len(big) > 40_000
        answer = upload(client, csrf, pid, [("big.jpg", big)])
        assert answer.status_code == 400 and "larger than" in answer.text
        answer = upload(client, csrf, pid, [(f"{i}.jpg", photo_bytes(i)) for i in range(4)])
        assert answer.status_code == 400 and "at most 3 photos" in answer.text
        huge = client.post(f"/patients/{pid}/visits", content=b"x" * (app.state.config.max_request_bytes + 10),
                           headers={"content-type": "multipart/form-data; boundary=zz"})
        assert huge.status_code == 413
    with app.state.sessions() as db:
        assert db.query(Photo).count() == 0
    assert not (tmp_path / "clinic" / "photos").exists()


def test_file_names_never_become_paths_and_text_is_escaped(client: TestClient, app, tmp_path: Path) -> None:
    csrf = log_in(client)
    evil = "<img src=x onerror=alert(1)>"
    pid = new_patient(client, csrf, key=evil, name="<script>alert('n')</script>")
    names = ["../../../../etc/passwd.jpg", "..\\..\\win.ini.jpg", "/tmp/abs.jpg", f"{evil}.jpg"]
    answer = upload(client, csrf, pid, [(n, photo_bytes(i)) for i, n in enumerate(names)], notes=evil)
    assert answer.status_code == 303
    stored = sorted(p.relative_to(tmp_path / "clinic").as_posix() for p in (tmp_path / "clinic" / "photos").rglob("*")
                    if p.is_file())
    assert len(stored) == 4 and all(re.fullmatch(r"photos/[0-9a-f]{2}/[0-9a-f]{64}\.jpg", s) for s in stored)
    assert not Path("/tmp/abs.jpg").exists() or Path("/tmp/abs.jpg").read_bytes() != photo_bytes(2)
    score_all(app)
    for path in ("/patients", f"/patients/{pid}", "/visits/1", "/audit"):
        html = client.get(path).text
        assert evil not in html and "<script>alert" not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path
    with app.state.sessions() as db:
        assert sorted(p.original_name for p in db.query(Photo)) == sorted(
            ["passwd.jpg", "win.ini.jpg", "abs.jpg", f"{evil}.jpg"])


# --------------------------------------------------------------------------- the whole flow, both databases


def _flow(app, client: TestClient, tmp_path: Path) -> None:
    csrf = log_in(client)
    pid = new_patient(client, csrf, key="P001", name="Ann Example")
    photos = [(name, photo_bytes(i, gps=(i == 0))) for i, (name, _) in enumerate(FIVE)]
    answer = upload(client, csrf, pid, photos)
    assert answer.status_code == 303
    visit = answer.headers["location"]
    # The upload returned before scoring: the page shows progress.
    assert client.get(f"{visit}/status").json() == {"scored": 0, "total": 5, "done": False}
    page = client.get(visit)
    assert 'id="progress"' in page.text and "0</span> of <span id=\"total\">5" in page.text
    score_all(app)
    assert client.get(f"{visit}/status").json()["done"] is True
    report = client.get(visit).text
    assert 'id="decision"' in report and "front.jpg" in report and "Ann Example" not in report.split("<main>")[0]
    # Photos shown are re-encoded: no EXIF or GPS reaches the page.
    with app.state.sessions() as db:
        first = db.query(Photo).order_by(Photo.id).first()
    shown = client.get(f"/photos/{first.id}")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    assert b"PhoneMaker" not in shown.content and not Image.open(io.BytesIO(shown.content)).getexif()
    # A second visit half a year later, and the comparison.
    answer = upload(client, csrf, pid, [(n, photo_bytes(i + 10)) for i, (n, _) in enumerate(FIVE)], date="2026-07-10")
    score_all(app)
    second = answer.headers["location"].rsplit("/", 1)[1]
    patient_page = client.get(f"/patients/{pid}").text
    assert patient_page.index("2026-07-10") < patient_page.index("2026-01-10")  # newest first
    compared = client.get(f"/patients/{pid}/compare?a=1&b={second}")
    assert compared.status_code == 200
    assert "2026-01-10</a> → <a" in compared.text and 'id="compare-zones"' in compared.text
    assert compared.text.count('<img src="/photos/') >= 2
    exported = client.get(f"/patients/{pid}/export.json").json()
    assert [v["date"] for v in exported["visits"]] == ["2026-07-10", "2026-01-10"]
    assert all(len(v["photos"]) == 5 and v["assessment"]["decision"] for v in exported["visits"])
    # Deleting the patient deletes their photos (files and display copies) and their records.
    files = [p for p in (tmp_path / "clinic").rglob("*.jpg")]
    assert len(files) >= 10
    assert client.post(f"/patients/{pid}/delete", data={"csrf": csrf, "confirm": "wrong"}).status_code == 400
    assert client.post(f"/patients/{pid}/delete", data={"csrf": csrf, "confirm": "P001"}).status_code == 200
    assert not any(p.exists() for p in files)
    assert client.get(f"/patients/{pid}").status_code == 404
    with app.state.sessions() as db:
        assert db.query(Photo).count() == 0
        actions = {e.action for e in db.query(AuditEntry)}
    assert {"create patient", "add visit", "view visit", "compare visits", "export json", "delete patient"} <= actions


def test_whole_flow_on_sqlite(client: TestClient, app, tmp_path: Path) -> None:
    _flow(app, client, tmp_path)


def test_whole_flow_on_postgresql(postgres_url: str, tmp_path: Path, run_dir: Path) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as conn:  # a clean schema for this test
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    app = make_app(tmp_path, run_dir, db_url=postgres_url)
    with TestClient(app) as client:
        _flow(app, client, tmp_path)


def test_search_finds_patients_by_id_or_name(client: TestClient) -> None:
    csrf = log_in(client)
    new_patient(client, csrf, key="P001", name="Ann Example")
    new_patient(client, csrf, key="Q777", name="Bob 100%_sure")
    assert "Q777" in client.get("/patients?q=bob").text and "P001" not in client.get("/patients?q=bob").text
    assert "P001" in client.get("/patients?q=p00").text
    assert "Q777" in client.get("/patients?q=100%25_").text and "P001" not in client.get("/patients?q=%25").text
    assert client.post("/patients", data={"csrf": csrf, "key": "P001"}).status_code == 400


def test_bad_intake_is_refused_as_the_cli_refuses_it(client: TestClient, app) -> None:
    csrf = log_in(client)
    pid = new_patient(client, csrf)
    answer = upload(client, csrf, pid, FIVE[:1], sex="robot", date="2026-13-01")
    assert answer.status_code == 400
    assert "Sex &#39;robot&#39;: unknown sex" in answer.text and "not a date" in answer.text
    with app.state.sessions() as db:
        assert db.query(Photo).count() == 0


# --------------------------------------------------------------------------- import and progression


def _row(image: Path, subject: str, crown: float, stage: int = 3) -> dict:
    return {"image": str(image), "subject": subject, "status": "ok", "error": None, "view": "top",
            "conditions": {"thinning": 0.9, "alopecia_patch": 0.02, "transplant_scar": 0.01},
            "findings": ["thinning"], "stage": stage, "width": 128, "height": 128,
            "zones": {"crown": {"visible": True, "box": [20, 20, 90, 90], "loss_fraction": crown},
                      "hairline": {"visible": True, "box": [10, 5, 110, 30], "loss_fraction": 0.2}},
            "model": {"id": "tiny-test", "rules_version": "1"}}


def test_import_results_then_measured_progression(app, client: TestClient, tmp_path: Path) -> None:
    store = PhotoStore(tmp_path / "clinic")
    for n, (date, crown) in enumerate(((dt.date(2026, 1, 10), 0.30), (dt.date(2026, 7, 10), 0.45))):
        folder = tmp_path / f"score{n}"
        folder.mkdir()
        (folder / "P7_top.jpg").write_bytes(photo_bytes(n))
        (folder / "results.jsonl").write_text(json.dumps(_row(Path("P7_top.jpg"), "P7", crown)) + "\n")
        (folder / "intake.csv").write_text("subject,sex,keloid_history,eczema_active,psoriasis_active,notes\n"
                                           "P7,male,no,no,no,\n")
        with app.state.sessions() as db:
            summary = import_results(db, store, [folder / "results.jsonl"], intake=folder / "intake.csv", date=date)
        assert summary.photos == 1 and summary.visits == 1
    csrf = log_in(client)
    assert csrf
    with app.state.sessions() as db:
        patient = db.query(Patient).one()
        assert [p.status for v in patient.visits for p in v.photos] == ["ok", "ok"]  # not scored again
        pid = patient.id
        newer, older = (v.id for v in patient.visits)
    compared = client.get(f"/patients/{pid}/compare?a={older}&b={newer}").text
    assert "+15 pts" in compared  # crown 30 % -> 45 %
    # 15 points in half a year (about 30 a year): past the rules' threshold, from the photos alone.
    assert "progressing" in client.get(f"/visits/{newer}").text.lower()
    assert "⚠" in compared.split('id="compare-progression"')[1].split("</section>")[0]
    assert "progressing" not in client.get(f"/visits/{older}").text.lower().split('id="cautions"')[1].split("</section>")[0]


def test_users_command_adds_and_lists_staff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.scripts.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", "bob", "--data", str(tmp_path), "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "eve", "--data", str(tmp_path), "--password-stdin"]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert main(["users", "list", "--data", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "bob" in listed and "eve" not in listed


def test_import_a_folder_per_patient_then_score_in_the_background(app, tmp_path: Path) -> None:
    from scalpscan.app.importer import import_folder

    for n, patient in enumerate(("P1", "P2", "P2")):
        folder = tmp_path / "day" / patient
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"IMG_44{n}.jpg").write_bytes(photo_bytes(n))
    (tmp_path / "day" / "P1" / "notes.txt").write_text("not a photo")
    with app.state.sessions() as db:
        summary = import_folder(db, PhotoStore(tmp_path / "clinic"), [tmp_path / "day"], date=dt.date(2026, 2, 1))
    assert (summary.photos, summary.visits, summary.patients_created) == (3, 2, 2)
    assert any("notes.txt" in s for s in summary.skipped)
    with app.state.sessions() as db:
        assert sorted(p.key for p in db.query(Patient)) == ["P1", "P2"]
        assert {p.status for p in db.query(Photo)} == {"pending"}
    score_all(app)
    with app.state.sessions() as db:
        assert all(p.status != "pending" and p.result["subject"] == p.visit.patient.key for p in db.query(Photo))


def test_serve_imports_score_results_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.scripts.cli import main

    (tmp_path / "P9_top.jpg").write_bytes(photo_bytes(5))
    (tmp_path / "results.jsonl").write_text(json.dumps(_row(Path("P9_top.jpg"), "P9", 0.4)) + "\n")
    (tmp_path / "intake.csv").write_text("subject,sex,keloid_history,eczema_active,psoriasis_active,notes\n"
                                         "P9,female,yes,no,no,keloid after acne\n")
    clinic = tmp_path / "clinic"
    assert main(["serve", "--data", str(clinic), "--import", str(tmp_path / "results.jsonl"), "--intake",
                 str(tmp_path / "intake.csv"), "--visit-date", "2026-03-01", "--import-only"]) == 0
    assert "imported 1 photo(s) in 1 visit(s)" in capsys.readouterr().out
    from scalpscan.app.db import open_database

    _, sessions = open_database(f"sqlite:///{clinic / 'scalpscan.db'}")
    with sessions() as db:
        visit = db.query(Patient).one().visits[0]
        assert (visit.date, visit.sex, visit.keloid_history) == (dt.date(2026, 3, 1), "female", True)
    assert main(["serve", "--data", str(clinic), "--import", str(tmp_path / "missing.jsonl"), "--import-only"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


# --------------------------------------------------------------------------- who is who on import


def test_imported_photos_with_no_known_patient_are_each_a_flagged_patient_of_their_own(
        app, client: TestClient, tmp_path: Path) -> None:
    from scalpscan.app.importer import import_folder

    day = tmp_path / "day"
    (day / "P2").mkdir(parents=True)
    (day / "P2" / "IMG_0001.jpg").write_bytes(photo_bytes(1))  # a per-patient folder
    (day / "P001_top.jpg").write_bytes(photo_bytes(2))  # a patient id in the name
    (day / "P001_front.jpg").write_bytes(photo_bytes(3))
    # Camera names and a phone's date-time name say nothing about who: never one pooled patient.
    for n, name in enumerate(("IMG_4411.jpg", "IMG_4412.jpg", "20240115_103045.jpg")):
        (day / name).write_bytes(photo_bytes(10 + n))
    with app.state.sessions() as db:
        summary = import_folder(db, PhotoStore(tmp_path / "clinic"), [day], date=dt.date(2026, 2, 1))
    assert (summary.photos, summary.visits, summary.patients_created) == (6, 5, 5)
    assert sorted(summary.unknown_patients) == ["20240115_103045.jpg", "IMG_4411.jpg", "IMG_4412.jpg"]
    assert "patient unknown for 3 photo(s), each a patient of its own" in summary.describe()
    with app.state.sessions() as db:
        patients = {p.key: p for p in db.query(Patient)}
        unknown = [p for p in patients.values() if not p.known]
        assert sorted(k for k, p in patients.items() if p.known) == ["P001", "P2"]
        assert len(unknown) == 3 and all(len(p.visits) == 1 and len(p.visits[0].photos) == 1 for p in unknown)
        assert sorted(p.name for p in unknown) == ["Unknown patient · 20240115_103045.jpg",
                                                   "Unknown patient · IMG_4411.jpg", "Unknown patient · IMG_4412.jpg"]
        sources = {p.original_name: p.subject_source for p in db.query(Photo)}
        assert sources["IMG_0001.jpg"] == "folder" and sources["P001_top.jpg"] == "pattern"
        assert sources["IMG_4411.jpg"] == "unknown"
        lone = next(p for p in unknown if p.name.endswith("IMG_4411.jpg"))
        lone_id, lone_visit = lone.id, lone.visits[0].id
    score_all(app)
    with app.state.sessions() as db:
        rows = {p.original_name: p.result for p in db.query(Photo)}
    assert rows["IMG_4411.jpg"]["subject"] is None and rows["IMG_4411.jpg"]["subject_source"] == "unknown"
    assert rows["P001_top.jpg"]["subject"] == "P001" and rows["P001_top.jpg"]["subject_source"] == "pattern"
    log_in(client)
    listing = client.get("/patients").text
    assert listing.count('class="flag unknown-patient"') == 3
    assert 'id="unknown-patient"' in client.get(f"/patients/{lone_id}").text
    report = client.get(f"/visits/{lone_visit}").text
    assert 'id="unknown-patient"' in report and "it is a patient of its own" in report
    assert "Unknown patient · IMG_4411.jpg" in report
    assert client.get(f"/patients/{lone_id}/export.json").json()["patient"]["known"] is False


def test_staff_assign_an_unknown_patients_photos_to_a_known_patient(app, client: TestClient, tmp_path: Path) -> None:
    from scalpscan.app.importer import import_folder

    day = tmp_path / "day"
    day.mkdir()
    (day / "P001_top.jpg").write_bytes(photo_bytes(2))
    (day / "IMG_4411.jpg").write_bytes(photo_bytes(10))  # the camera name says nothing about who
    (day / "IMG_4412.jpg").write_bytes(photo_bytes(11))
    with app.state.sessions() as db:
        import_folder(db, PhotoStore(tmp_path / "clinic"), [day], date=dt.date(2026, 2, 1))
        patients = {p.name or p.key: p.id for p in db.query(Patient)}
    score_all(app)
    p001, lone = patients["P001"], patients["Unknown patient · IMG_4411.jpg"]
    other = patients["Unknown patient · IMG_4412.jpg"]
    csrf = log_in(client)
    page = client.get(f"/patients/{lone}").text
    assert 'id="assign"' in page and 'id="assign"' not in client.get(f"/patients/{p001}").text
    # Refused: a forged form, an id no known patient has, another unknown patient, a known patient.
    assert client.post(f"/patients/{lone}/assign", data={"csrf": "forged", "to": "P001"}).status_code == 403
    answer = client.post(f"/patients/{lone}/assign", data={"csrf": csrf, "to": "P404"})
    assert answer.status_code == 400 and "no known patient with the id &#39;P404&#39;" in answer.text
    with app.state.sessions() as db:
        other_key = db.get(Patient, other).key
    assert client.post(f"/patients/{lone}/assign", data={"csrf": csrf, "to": other_key}).status_code == 400
    assert client.post(f"/patients/{p001}/assign", data={"csrf": csrf, "to": "P001"}).status_code == 400
    # Assigned: the photo joins P001's visit of the same day, scored as it was, and the record goes.
    answer = client.post(f"/patients/{lone}/assign", data={"csrf": csrf, "to": "P001"})
    assert answer.status_code == 200 and answer.url.path == f"/patients/{p001}"
    assert client.get(f"/patients/{lone}").status_code == 404
    with app.state.sessions() as db:
        (visit,) = db.get(Patient, p001).visits
        photos = {p.original_name: p for p in visit.photos}
        assert sorted(photos) == ["IMG_4411.jpg", "P001_top.jpg"]
        moved = photos["IMG_4411.jpg"]
        assert moved.subject_source == "staff" and moved.status == "ok"
        assert moved.result["subject"] == "P001" and moved.result["subject_source"] == "staff"
        assert db.query(Photo).count() == 3 and db.query(Visit).count() == 2
        audit_entry = db.query(AuditEntry).filter(AuditEntry.action == "assign photos").one()
        assert "1 photo(s)" in audit_entry.detail and "P001" in audit_entry.detail
        vid = visit.id
    report = client.get(f"/visits/{vid}").text
    assert "IMG_4411.jpg" in report and "assigned to the patient by a member of staff" in report
    # A visit on a day the patient has none becomes a visit of theirs.
    with app.state.sessions() as db:
        db.get(Patient, other).visits[0].date = dt.date(2026, 3, 1)
        db.commit()
    client.post(f"/patients/{other}/assign", data={"csrf": csrf, "to": "P001"})
    with app.state.sessions() as db:
        assert sorted(v.date for v in db.get(Patient, p001).visits) == [dt.date(2026, 2, 1), dt.date(2026, 3, 1)]
        assert db.query(Patient).count() == 1


def test_import_reads_the_intake_sheet_and_the_clinics_subject_pattern(app, tmp_path: Path) -> None:
    from scalpscan.app.importer import import_folder

    day = tmp_path / "day"
    day.mkdir()
    (day / "case12-top.jpg").write_bytes(photo_bytes(1))
    (day / "case12-front.jpg").write_bytes(photo_bytes(2))
    (day / "Smith crown.jpg").write_bytes(photo_bytes(3))
    (tmp_path / "intake.csv").write_text("subject,sex,keloid_history,eczema_active,psoriasis_active,notes\n"
                                         "Smith,female,yes,no,no,\n")
    with app.state.sessions() as db:
        summary = import_folder(db, PhotoStore(tmp_path / "clinic"), [day], intake=tmp_path / "intake.csv",
                                subject_pattern=r"^case(\d+)")
        assert summary.unknown_patients == []
        patients = {p.key: p for p in db.query(Patient)}
        assert sorted(patients) == ["12", "Smith"] and len(patients["12"].visits[0].photos) == 2
        assert patients["Smith"].visits[0].keloid_history is True
        assert {p.subject_source for p in patients["Smith"].visits[0].photos} == {"intake"}


def test_imported_results_without_a_subject_are_never_pooled(app, tmp_path: Path) -> None:
    folder = tmp_path / "score"
    folder.mkdir()
    rows = []
    for n, name in enumerate(("IMG_4411.jpg", "IMG_4412.jpg")):
        (folder / name).write_bytes(photo_bytes(n))
        rows.append(dict(_row(Path(name), "", 0.3), subject=None, subject_source="unknown"))
    (folder / "P5_top.jpg").write_bytes(photo_bytes(7))
    rows.append(dict(_row(Path("P5_top.jpg"), "P5", 0.3), subject_source="pattern"))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with app.state.sessions() as db:
        summary = import_results(db, PhotoStore(tmp_path / "clinic"), [folder / "results.jsonl"])
        assert (summary.photos, summary.visits, len(summary.unknown_patients)) == (3, 3, 2)
        unknown = [p for p in db.query(Patient) if not p.known]
        assert len(unknown) == 2 and all(p.visits[0].photos[0].result["subject"] is None for p in unknown)
        known = db.query(Patient).filter(Patient.key == "P5").one()
        assert known.visits[0].photos[0].subject_source == "pattern"


def test_a_database_of_the_first_schema_is_migrated_and_its_patients_stay_known(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from scalpscan.app.db import _MIGRATIONS, open_database

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("INSERT INTO patients (key, name, created_at) VALUES ('P1', '', '2026-01-01')"))
    engine.dispose()
    _, sessions = open_database(url)
    with sessions() as db:
        assert [(p.key, p.known) for p in db.query(Patient)] == [("P1", True)]


# --------------------------------------------------------------------------- what a model cannot assess


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose record says: thinning and zones learned from renders only (not validated on real
    photos), view from real photos, and alopecia patches, scars, stage and the loss map never trained."""
    import torch

    from scalpscan.data.vocab import OUTPUTS
    from scalpscan.models import create_model, inference_meta, save_checkpoint

    torch.manual_seed(0)
    model = create_model("scalpnet", backbone="tiny", image_size=64)
    heads = {o: {"trained": {}, "validated": {}} for o in OUTPUTS}
    heads["view"] = {"trained": {"real": 4}, "validated": {"real": 2}}
    heads["thinning"] = {"trained": {"rendered": 40}, "validated": {"rendered": 10}}
    heads["zones"] = {"trained": {"rendered": 40}, "validated": {"rendered": 10}}
    folder = tmp_path_factory.mktemp("partial")
    # Threshold 0: thinning is found on every photo, so the finding's flag is always on show.
    save_checkpoint(folder, model, {**inference_meta(model, input_size=64, thresholds={"thinning": 0.0}),
                                    "heads": heads})
    return folder


def _cell(html: str, marker: str, end: str = "</tr>") -> str:
    start = html.index(marker)
    return html[start:html.index(end, start)]


def test_pages_say_not_assessed_and_not_validated_never_0_or_absent(tmp_path: Path, partial_run: Path) -> None:
    app = make_app(tmp_path, partial_run)
    with TestClient(app) as client:
        csrf = log_in(client)
        pid = new_patient(client, csrf)
        first = upload(client, csrf, pid, FIVE[:3]).headers["location"]
        second = upload(client, csrf, pid, [(n, photo_bytes(i + 20)) for i, (n, _) in enumerate(FIVE[:3])],
                        date="2026-07-10").headers["location"]
        score_all(app)
        with app.state.sessions() as db:
            row = db.query(Photo).first().result
        assert row["conditions"]["alopecia_patch"] is None and row["stage"] is None
        assert {"alopecia_patch", "transplant_scar", "stage", "hairloss"} <= set(row["not_assessed"])
        assert set(row["unvalidated"]) >= {"thinning", "zones"}

        # The visit's report page (the report's own template in the app's frame).
        report = client.get(second).text
        assert 'id="not-assessed"' in report and 'id="unvalidated"' in report
        patch = _cell(report, 'sw-alopecia_patch"')
        assert "not assessed" in patch and "0.00" not in patch and ">no<" not in patch
        assert "not validated on real photos" in _cell(report, 'sw-thinning"')

        # The visit list on the patient page.
        listing = client.get(f"/patients/{pid}").text
        visit_row = _cell(listing, f'<a href="{second}">')
        stage_cell = visit_row.split('class="num">')[1].split("</td>")[0]
        assert "not assessed" in stage_cell and "–" not in stage_cell
        assert "thinning" in visit_row and "not validated on real photos" in visit_row
        assert "not assessed: alopecia patches, transplant scars, Norwood stage" in visit_row

        # The comparison of the two visits.
        a, b = first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]
        compared = client.get(f"/patients/{pid}/compare?a={a}&b={b}").text
        stage = compared.split('id="compare-stage"')[1].split("</p>")[0]
        assert stage.count("not assessed") == 2
        findings = compared.split('id="compare-findings"')[1].split("</section>")[0]
        patch = _cell(findings, 'sw-alopecia_patch"')
        assert patch.count("not assessed") == 2 and "0.00" not in patch and "not found" not in patch
        thinning = _cell(findings, 'sw-thinning"')
        assert "not validated on real photos" in thinning and thinning.count("<strong>found</strong>") == 2
        zones = compared.split('id="compare-zones"')[1].split("</table>")[0]
        assert "0%" not in zones and "not assessed" in zones
        assert 'id="limits"' in compared and "Not validated on real photos at 2026-07-10" in compared


def test_serve_imports_photos_with_the_subject_pattern_and_names_unknown_patients(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.scripts.cli import main

    day = tmp_path / "day"
    day.mkdir()
    (day / "case7-top.jpg").write_bytes(photo_bytes(1))
    (day / "IMG_4411.jpg").write_bytes(photo_bytes(2))
    clinic = tmp_path / "clinic"
    assert main(["serve", "--data", str(clinic), "--import", str(day), "--subject", r"^case(\d+)",
                 "--import-only"]) == 0
    out = capsys.readouterr().out
    assert "2 new patient(s); patient unknown for 1 photo(s)" in out
    assert "patient unknown (a patient of its own): IMG_4411.jpg" in out
    assert main(["serve", "--data", str(clinic), "--import", str(day), "--subject", "(", "--import-only"]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err


def test_bench_app_scores_with_the_shipped_model_and_records_no_private_path(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.inference.predictor import Predictor
    from scalpscan.scripts import bench_app

    asked = []

    def load(cls, path=None, **_: object):
        asked.append(path)
        raise FileNotFoundError("no shipped model named 'scalpscan-joint-v1'")

    monkeypatch.setattr(Predictor, "load", classmethod(load))
    assert bench_app.main(["--no-write"]) == 2
    assert asked == [None]  # Predictor.load() with no argument: the model in the package
    assert "no shipped model" in capsys.readouterr().err
    command = bench_app.recorded_command(["--model", "local/runs/joint_v1", "--repeat", "10", "--no-write"])
    assert command == "python -m scalpscan.scripts.bench_app --model RUN --repeat 10"
    assert bench_app.recorded_command(["--repeat", "10"]) == "python -m scalpscan.scripts.bench_app --repeat 10"
