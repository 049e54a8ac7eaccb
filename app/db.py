"""The database: tables (SQLAlchemy 2 declarative models), the engine, and migrations on start.

The schema is created and upgraded only by the Alembic migrations in ``app/migrations``;
`open_database` runs them to the newest version before the app takes a request, on SQLite
and on PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    true,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

__all__ = [
    "Base",
    "User",
    "LoginSession",
    "Patient",
    "Visit",
    "Photo",
    "AuditEntry",
    "PHOTO_STATUSES",
    "utcnow",
    "open_database",
    "migrate",
]

_MIGRATIONS = Path(__file__).with_name("migrations")

#: A photo's scoring state: waiting, or the status of its result row.
PHOTO_STATUSES: tuple[str, ...] = ("pending", "ok", "error", "recapture")


def utcnow() -> dt.datetime:
    """Now, in UTC, without tzinfo (both databases store it the same way)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the app's tables."""


class User(Base):
    """A staff account (``scalpscan users add NAME``)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LoginSession(Base):
    """A login: the cookie holds a random token, the table only its SHA-256 (logout deletes the row)."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    user: Mapped[User] = relationship()


class Patient(Base):
    """A patient: ``key`` is the clinic's patient id (the ``subject`` of result rows).

    ``known`` is False for a patient of unknown identity: one imported photo that nothing
    named (no manifest subject, intake sheet entry, per-patient folder or patient id in its
    name). It is a patient of its own, flagged on every page, never pooled with another photo.
    """

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    known: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    visits: Mapped[list[Visit]] = relationship(
        back_populates="patient", cascade="all, delete-orphan", passive_deletes=True,
        order_by="(Visit.date.desc(), Visit.id.desc())",
    )


class Visit(Base):
    """One visit: its date, the intake answers given that day, and its photos."""

    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    date: Mapped[dt.date] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(10), nullable=True)
    keloid_history: Mapped[bool] = mapped_column(Boolean, default=False)
    eczema_active: Mapped[bool] = mapped_column(Boolean, default=False)
    psoriasis_active: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80), default="")
    patient: Mapped[Patient] = relationship(back_populates="visits")
    photos: Mapped[list[Photo]] = relationship(
        back_populates="visit", cascade="all, delete-orphan", passive_deletes=True, order_by="Photo.id"
    )


class Photo(Base):
    """One photo of a visit: its content hash (the stored file's name) and, once scored, its result row."""

    __tablename__ = "photos"
    __table_args__ = (UniqueConstraint("visit_id", "sha256", name="uq_photo_visit_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    ext: Mapped[str] = mapped_column(String(8))
    original_name: Mapped[str] = mapped_column(String(255), default="")
    # How an import found the photo's patient (a key of inference.inputs.SUBJECT_SOURCES);
    # None for an upload, whose visit's patient record names the patient.
    subject_source: Mapped[str | None] = mapped_column(String(12), nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    visit: Mapped[Visit] = relationship(back_populates="photos")


class AuditEntry(Base):
    """Who saw or changed what, and when. Kept when the patient is deleted (names the id only)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


def migrate(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest migration (creates it when empty)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets pages read while the scorer writes; foreign keys make deletes cascade;
    # the busy timeout makes concurrent uploads wait for the write lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def open_database(url: str) -> tuple[Engine, sessionmaker]:
    """Connect, migrate to the newest schema, and return the engine and a session factory.

    Args:
        url: SQLAlchemy URL; ``sqlite:///path`` or ``postgresql+psycopg://...`` (a bare
            ``postgresql://`` URL is read with psycopg 3).

    Raises:
        ValueError: the URL names a database kind other than SQLite or PostgreSQL.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql+"):
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    else:
        raise ValueError(f"database URL {url!r}: expected sqlite:///FILE or postgresql://USER@HOST/DB")
    migrate(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
