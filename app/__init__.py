"""The clinic web app (`scalpscan serve`): patients, visits, background scoring and comparisons.

    >>> from scalpscan.app import AppConfig, create_app
    >>> app = create_app(AppConfig(data_dir=Path("clinic"), model="runs/demo"))

The app is an ASGI application (FastAPI); `scalpscan serve` runs it under uvicorn, bound to
127.0.0.1 unless told otherwise. Everything it stores lives in a database (SQLite under the
data folder by default, PostgreSQL by URL) and a content-addressed photo store beside it.
"""

from __future__ import annotations

from scalpscan.app.config import AppConfig
from scalpscan.app.web import create_app

__all__ = ["AppConfig", "create_app"]
