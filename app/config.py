"""The web app's settings: one dataclass of plain values, filled in by `scalpscan serve`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppConfig", "sqlite_url"]


def sqlite_url(data_dir: str | Path) -> str:
    """The default database: ``scalpscan.db`` in the data folder."""
    return f"sqlite:///{(Path(data_dir) / 'scalpscan.db').resolve()}"


@dataclass
class AppConfig:
    """What one running app needs.

    Attributes:
        data_dir: the clinic's folder: photo store, display copies, SQLite database (default).
        db_url: SQLAlchemy URL (``postgresql+psycopg://user@host/db``); None: SQLite in ``data_dir``.
        model: run folder or model file to score with; None: the model shipped in the package.
        rules: a clinic's rules file; None: the defaults.
        max_photo_bytes: largest accepted photo file.
        max_photos: most photos in one upload.
        session_hours: how long a login lasts without logging out.
        batch_size: photos per forward pass in the background scorer.
        score: run the background scorer (off only for tests that check the queue itself).
        allowed_hosts: Host header values accepted (guards against DNS rebinding); None: any.
        chromium: the Chromium executable for PDF export; None: found as the reports find it
            (``$SCALPSCAN_CHROMIUM``, else chromium on the PATH).
    """

    data_dir: Path
    db_url: str | None = None
    model: str | Path | None = None
    rules: str | Path | None = None
    max_photo_bytes: int = 25 * 1024 * 1024
    max_photos: int = 12
    session_hours: float = 12.0
    batch_size: int = 16
    score: bool = True
    allowed_hosts: tuple[str, ...] | None = ("127.0.0.1", "localhost", "testserver")
    chromium: str | None = None

    @property
    def url(self) -> str:
        """The database URL in use."""
        return self.db_url or sqlite_url(self.data_dir)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body: a full upload plus room for the form's text fields."""
        return self.max_photos * self.max_photo_bytes + 1024 * 1024
