"""Background scoring: a thread that scores every photo still ``pending`` in the database.

An upload only stores the photos and commits them as pending, then wakes the scorer and
returns. The scorer takes pending photos in batches, runs the model on them
(`inference.score.score_jobs`, the same path `scalpscan score` takes) and writes each
result row beside its photo. Work lives in the database, not in memory: photos left pending
by a stopped server are scored when it starts again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload, sessionmaker

from scalpscan.app.db import Photo, Visit, utcnow
from scalpscan.app.records import visit_intake
from scalpscan.app.store import PhotoStore

__all__ = ["Scorer"]

_log = logging.getLogger("scalpscan.app")


def _subject(photo: Photo) -> str | None:
    """The subject of the photo's rows: the patient id, or None for a patient of unknown identity."""
    patient = photo.visit.patient
    return patient.key if patient.known else None


class Scorer:
    """Scores pending photos in a background thread.

    Args:
        sessions: the database's session factory.
        store: the photo store.
        load_predictor: returns the `Predictor` (called once, on first use, in the thread).
        batch_size: photos per forward pass.
    """

    def __init__(
        self,
        sessions: sessionmaker,
        store: PhotoStore,
        load_predictor: Callable[[], Any],
        *,
        batch_size: int = 16,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._load_predictor = load_predictor
        self._predictor: Any = None
        self.batch_size = batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.scored = 0  # photos scored since start (for the benchmark)

    def start(self) -> None:
        """Start the thread (scoring whatever was left pending)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="scalpscan-scorer", daemon=True)
            self._thread.start()
            self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop after its batch and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Tell the thread new photos are pending."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=2.0)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    if self.score_pending() == 0:
                        break
                except Exception:  # keep serving: the next upload or the poll retries
                    _log.exception("background scoring failed")
                    self._stop.wait(2.0)
                    break

    def predictor(self) -> Any:
        """The predictor, loaded on first use."""
        if self._predictor is None:
            self._predictor = self._load_predictor()
        return self._predictor

    def score_pending(self) -> int:
        """Score one batch of pending photos (oldest first); returns how many were scored."""
        from scalpscan.inference.score import PhotoJob, score_jobs

        with self._lock, self._sessions() as db:
            photos = db.scalars(
                select(Photo).where(Photo.status == "pending").order_by(Photo.id).limit(self.batch_size)
                .options(selectinload(Photo.visit).selectinload(Visit.patient))
            ).all()
            if not photos:
                return 0
            predictor = self.predictor()
            jobs, intakes = [], {}
            for photo in photos:
                subject = _subject(photo)
                if subject is not None:
                    # For the rows' photo-level assessments; the visit's own assessment reads its
                    # intake again when shown, so a patient's two visits in one batch lose nothing.
                    intakes.setdefault(subject, visit_intake(photo.visit))
                jobs.append(PhotoJob(image=str(self._store.path(photo.sha256, photo.ext)), subject=subject,
                                     shard_key=photo.sha256))
            rows = list(score_jobs(predictor, jobs, batch_size=self.batch_size, intakes=intakes))
            now = utcnow()
            for photo, row in zip(photos, rows):
                row = dict(row)
                row["image"] = self._store.relative(photo.sha256, photo.ext)
                row["subject"] = _subject(photo)
                # How an import found the patient; for an upload, the visit's patient record names them.
                row["subject_source"] = photo.subject_source or "given"
                photo.result = row
                photo.status = row.get("status") or "error"
                photo.scored_at = now
            db.commit()
            self.scored += len(photos)
            return len(photos)
