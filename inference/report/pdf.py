"""A patient page as a PDF that prints on A4 and US Letter, through headless Chromium.

The page's own print styles do the layout: ``@page`` sets a 210 x 279 mm sheet with 12 mm
margins, the area A4 and Letter have in common, so the PDF prints unscaled and uncropped
on either paper. Chromium (Debian/Ubuntu package ``chromium``; Google Chrome works too) is
run headless, offline and with a throwaway profile; it loads only the page file, which
itself loads nothing from outside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from scalpscan.data.files import atomic_write

__all__ = ["PdfError", "ENGINE_ENV", "find_engine", "write_pdf"]

#: Environment variable naming the Chromium (or Chrome) executable to use.
ENGINE_ENV = "SCALPSCAN_CHROMIUM"

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class PdfError(RuntimeError):
    """No PDF engine, or a page it could not print; the message says what to install or check."""


def find_engine() -> str:
    """The Chromium executable: ``$SCALPSCAN_CHROMIUM``, else the first of chromium,
    chromium-browser, google-chrome on the PATH.

    Raises:
        PdfError: if none is found, saying how to install one.
    """
    named = os.environ.get(ENGINE_ENV)
    if named:
        if Path(named).is_file() and os.access(named, os.X_OK):
            return named
        raise PdfError(f"{ENGINE_ENV}={named!r} is not an executable file; point it at chromium or google-chrome")
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError(
        "--pdf needs headless Chromium to print the pages, and none was found (looked for "
        f"{', '.join(_CANDIDATES)} on the PATH and ${ENGINE_ENV}). Install it (Debian/Ubuntu: "
        "sudo apt-get install chromium) or set "
        f"{ENGINE_ENV}=/path/to/chrome; the HTML pages are written either way"
    )


def write_pdf(page: str | Path, out: str | Path, *, engine: str | None = None, timeout: float = 120.0) -> Path:
    """Print one HTML page to a PDF file (written atomically).

    Args:
        page: the self-contained HTML page.
        out: the PDF to write.
        engine: the Chromium executable (default: :func:`find_engine`).
        timeout: seconds Chromium may take.

    Raises:
        PdfError: if no engine is found, or Chromium fails or writes no PDF.
    """
    engine = engine or find_engine()
    page = Path(page).resolve()

    def render(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="scalpscan-pdf-") as profile:
            try:
                result = subprocess.run(
                    [engine, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-extensions", "--disable-quic", "--no-pdf-header-footer",
                     "--print-to-pdf-no-header", f"--user-data-dir={profile}", f"--print-to-pdf={tmp}",
                     page.as_uri()],
                    capture_output=True, text=True, timeout=timeout, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise PdfError(f"{page}: Chromium took longer than {timeout:.0f} s to print it") from exc
            if not tmp.is_file() or tmp.stat().st_size == 0 or not tmp.read_bytes()[:5] == b"%PDF-":
                raise PdfError(
                    f"{page}: Chromium ({engine}) wrote no PDF (exit code {result.returncode}): "
                    f"{result.stderr.strip()[-600:]}"
                )

    return atomic_write(out, render)
