"""Database schema (SQLAlchemy 2) and engine setup; the schema itself comes from Alembic.

SQLite runs in WAL mode with a busy timeout so that the API's writes never block reads
of the admin dashboard; PostgreSQL is used as is. :func:`open_database` upgrades the
schema to the newest migration before the server accepts a request.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths

MIGRATIONS = Path(__file__).with_name("migrations")
WAL_PAGES = 100  # ~400 KiB of 4 KiB pages


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("platform", "external_id", name="uq_platform_external"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    platform_study_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    platform_session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    mturk_submit_to: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # SHA-256 of the resume secret handed out at creation (migration 0002).
    resume_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The page load (tab) that last created or resumed this participant (migration 0005):
    # answers from an older tab are refused.
    tab_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    condition: Mapped[str] = mapped_column(String(64))
    image_set: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    consent: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    instruction_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    feedback: Mapped[str | None] = mapped_column(Text, nullable=True)
    completion_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("participant_id", "trial_id", "attempt", name="uq_response_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str] = mapped_column(String(64))
    trial_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    choice: Mapped[str] = mapped_column(String(1))
    confidence: Mapped[int] = mapped_column(Integer)
    rt_ms: Mapped[int] = mapped_column(Integer)
    left_option: Mapped[str | None] = mapped_column(String(1), nullable=True)
    correct: Mapped[bool] = mapped_column(Boolean)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Screening(Base):
    """A visitor turned away by the device check (migration 0005): a counter with the
    platform and the reason, nothing that identifies a person."""

    __tablename__ = "screenings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def default_url(study_dir: str | Path) -> str:
    return f"sqlite:///{StudyPaths(Path(study_dir).resolve()).database}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # Keep the WAL small: checkpoint every WAL_PAGES pages (SQLite's default of 1,000 let it
    # grow to ~4 MiB, so a full disk recovered only once that much was free) and give the
    # file back down to 1 MiB after a checkpoint.
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={2**20}")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL + busy timeout, PostgreSQL a pool check."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise CausalvisError(f"--db {url!r}: cannot open this database URL ({exc})") from exc
    return engine


def upgrade_schema(engine: Engine) -> None:
    """Run the Alembic migrations shipped in this package up to ``head``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CausalvisError(f"database {engine.url!r}: cannot open or migrate ({reason})") from exc


class SerialSession(Session):
    """A session that holds a process-wide lock while open (``with factory() as db:``).

    SQLite has one writer at a time; threads that collide on its lock sleep in the busy
    handler (1, 2, 5 … 100 ms steps), which made p99 under load seconds long. Queueing
    them on a Python lock instead costs nothing: the GIL serialises them anyway.
    """

    def __init__(self, *args, serial_lock: threading.Lock | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._serial_lock = serial_lock

    def __enter__(self) -> SerialSession:
        if self._serial_lock is not None:
            self._serial_lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._serial_lock is not None:
                self._serial_lock.release()


def open_database(url: str) -> tuple[Engine, sessionmaker]:
    engine = make_engine(url)
    upgrade_schema(engine)
    lock = threading.Lock() if engine.dialect.name == "sqlite" else None
    factory = sessionmaker(bind=engine, expire_on_commit=False, class_=SerialSession,
                           serial_lock=lock)  # fmt: skip
    return engine, factory


def _sqlite_reader_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # pysqlite sends no BEGIN before a SELECT (each query would be its own snapshot): the
    # reader's "begin" event below sends it, so one session reads one snapshot.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_reader(engine: Engine, writer: sessionmaker) -> sessionmaker:
    """Sessions for admin reads (progress, exports) that never hold the writers' lock.

    SQLite (a file): its own engine of read-only connections; in WAL mode a reader neither
    blocks the writer nor waits for it, and sees one snapshot per transaction. PostgreSQL:
    the same pool, every transaction ``REPEATABLE READ, READ ONLY`` (one snapshot for a
    whole streamed export). An in-memory SQLite database has no second connection: the
    writer's sessions then.
    """
    if engine.dialect.name == "sqlite":
        if not engine.url.database or engine.url.database == ":memory:":
            return writer
        reader = create_engine(engine.url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(reader, "connect", _sqlite_reader_pragmas)
        event.listen(reader, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return sessionmaker(bind=reader, expire_on_commit=False)
    factory = sessionmaker(bind=engine, expire_on_commit=False)

    @event.listens_for(factory, "after_begin")
    def _read_only(_session, _transaction, connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    return factory
