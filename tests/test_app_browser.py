"""The clinic web app in a real browser: Playwright drives Debian's headless Chromium against a
live server on 127.0.0.1. The whole flow (log in, create a patient, upload five photos, wait for
the assessment, open it, add a second visit, compare) and the security cases.

Skipped, saying why, without /usr/bin/chromium (`make browser` installs it) or Playwright.
Set ``SCALPSCAN_APP_SCREENSHOT=path.png`` to keep a screenshot of the assessment page.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_app import FIVE, PASSWORD, make_app, photo_bytes

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found at /usr/bin/chromium (`make browser` installs it)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, run_dir: Path) -> Iterator[str]:
    """A live app (background scoring on) on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    folder = tmp_path_factory.mktemp("browser")
    app = make_app(folder, run_dir)
    app.state.config.score = True
    app.state.config.max_photo_bytes = 200_000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.state.config.allowed_hosts = ("127.0.0.1",)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: at most 20 s to come up
        if server.started:
            break
        time.sleep(0.1)
    assert server.started, "the app did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


def _photos(folder: Path, seed: int) -> list[str]:
    paths = []
    for i, (name, _) in enumerate(FIVE):
        path = folder / f"{seed}_{name}"
        path.write_bytes(photo_bytes(i + seed))
        paths.append(str(path))
    return paths


def _log_in(page, base: str) -> None:
    page.goto(f"{base}/patients")
    assert "/login" in page.url  # no session: the login page, not the patients
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/patients")


def test_whole_flow_in_a_browser(server: str, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    offsite: list[str] = []
    page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith((server, "data:")) else None)
    _log_in(page, server)
    page.fill("input[name=key]", "P100")
    page.fill("input[name=name]", "Ann Example")
    page.click("text=Add patient")
    page.wait_for_selector("#patient-key")
    page.click("text=New visit")
    page.fill("input[name=date]", "2026-01-10")
    page.select_option("select[name=sex]", "male")
    page.set_input_files("#photos", _photos(tmp_path, 0))
    assert page.locator("#chosen li").count() == 5
    page.click("text=Save the visit and assess")
    page.wait_for_selector("#decision", timeout=60_000)  # progress page, then the assessment by itself
    assert page.locator("#photos figure").count() == 5
    first_visit = page.url
    if os.environ.get("SCALPSCAN_APP_SCREENSHOT"):
        page.set_viewport_size({"width": 1100, "height": 900})
        page.screenshot(path=os.environ["SCALPSCAN_APP_SCREENSHOT"])
    page.click("text=← P100")
    page.click("text=New visit")
    page.fill("input[name=date]", "2026-07-10")
    page.fill("textarea[name=notes]", "follow-up")
    page.set_input_files("#photos", _photos(tmp_path, 20))
    page.click("text=Save the visit and assess")
    page.wait_for_selector("#decision", timeout=60_000)
    page.click("text=Compare with 2026-01-10")
    page.wait_for_selector("#compare-zones")
    assert "2026-01-10" in page.inner_text("main") and "2026-07-10" in page.inner_text("main")
    page.goto(first_visit)
    page.wait_for_selector("#decision")
    assert not offsite, f"requests left the app: {offsite[:3]}"
    page.close()


def test_security_cases_in_a_browser(server: str, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    # No session: every page leads to the login; a photo answers 401.
    assert page.goto(f"{server}/photos/1").status == 401
    _log_in(page, server)
    # An HTML payload in a name is shown as text, never run.
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    payload = "<img src=x onerror=alert(1)>"
    page.fill("input[name=key]", payload)
    page.click("text=Add patient")
    page.wait_for_selector("#patient-key")
    assert page.inner_text("#patient-key") == payload and page.locator("main img[src=x]").count() == 0
    patient_url = page.url
    # Path traversal in file names: stored by hash; the name is only text.
    page.click("text=New visit")
    page.set_input_files("#photos", [{"name": "../../../etc/passwd.jpg", "mimeType": "image/jpeg",
                                      "buffer": photo_bytes(3)}])
    page.click("text=Save the visit and assess")
    page.wait_for_selector("#decision", timeout=60_000)
    assert "passwd.jpg" in page.inner_text("#photos")
    # Not an image, and too large: refused with the file named.
    page.goto(patient_url + "/visits/new")
    page.set_input_files("#photos", [{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just text"}])
    page.click("text=Save the visit and assess")
    assert "notes.jpg: not a picture" in page.inner_text("#errors")
    page.set_input_files("#photos", [{"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(1, side=900)}])
    page.click("text=Save the visit and assess")
    assert "huge.jpg" in page.inner_text("#errors") and "larger than" in page.inner_text("#errors")
    # A bad CSRF token: refused.
    page.evaluate("document.querySelector('#visit-form input[name=csrf]').value = 'forged'")
    page.set_input_files("#photos", [{"name": "ok.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes(4)}])
    page.click("text=Save the visit and assess")
    assert "security token" in page.inner_text("main")
    assert not dialogs, f"a script ran: {dialogs}"
    # Logging out ends the session.
    page.goto(f"{server}/patients")
    page.click("text=Log out")
    page.goto(f"{server}/patients")
    assert "/login" in page.url
    page.close()
