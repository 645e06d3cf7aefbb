"""Storage health: WAL checkpoints (periodic and after a failed write), free space, and the
last write error, for ``/healthz`` and ``/api/v1/admin/health``.

SQLite checkpoints its WAL on its own only at 1,000 pages; after a full disk the WAL
cannot grow and, without a checkpoint, writes failed until ~4 MiB were freed. A
checkpoint (TRUNCATE) copies the WAL into the database and gives the WAL's space back, so
writes resume as soon as a little space returns. It runs under the same process lock as
every request's session, so it never races this process's own readers or writers.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from causalvis.responses.db import utcnow


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


@dataclass
class Storage:
    engine: Engine
    sessions: sessionmaker
    interval_s: float = 30.0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_write_at: datetime | None = None
    last_checkpoint: dict | None = None
    _last_try: datetime | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        event.listen(self.sessions, "after_commit", self._committed)

    @property
    def sqlite_file(self) -> Path | None:
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return None
        return Path(self.engine.url.database)

    def _committed(self, _session: object) -> None:
        self.last_write_at = utcnow()

    def write_failed(self, reason: str) -> None:
        """Called by the app's 503 handler: remember why, then try to free the WAL (at
        most once a second: a burst of failing requests is not a burst of checkpoints)."""
        now = utcnow()
        self.last_error, self.last_error_at = reason, now
        if self._last_try is None or (now - self._last_try).total_seconds() >= 1.0:
            self._last_try = now
            self.checkpoint()

    @property
    def writable(self) -> bool:
        """False from a failed write until the next successful one."""
        if self.last_error_at is None:
            return True
        return self.last_write_at is not None and self.last_write_at > self.last_error_at

    def checkpoint(self) -> dict | None:
        """``PRAGMA wal_checkpoint(TRUNCATE)`` on SQLite (None elsewhere); never raises."""
        if self.sqlite_file is None:
            return None
        try:
            with self.sessions() as db:
                conn = db.connection()
                # Never wait for a reader (a streamed export holds its snapshot for seconds)
                # while holding the writers' lock: a busy checkpoint is retried next time.
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                finally:
                    conn.exec_driver_sql("PRAGMA busy_timeout=10000")
                db.rollback()
            busy, log, done = (int(x) for x in row)
            result = {"at": _iso(utcnow()), "busy": bool(busy), "wal_pages": log,
                      "checkpointed_pages": done, "error": None}  # fmt: skip
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
            result = {"at": _iso(utcnow()), "error": reason}
        self.last_checkpoint = result
        return result

    def free_bytes(self) -> int | None:
        path = self.sqlite_file
        if path is None:
            return None
        try:
            return shutil.disk_usage(path.parent).free
        except OSError:
            return None

    def report(self) -> dict:
        path = self.sqlite_file
        wal = path.with_name(path.name + "-wal") if path else None
        return {
            "database": self.engine.dialect.name,
            "writable": self.writable,
            "free_bytes": self.free_bytes(),
            "wal_bytes": wal.stat().st_size if wal is not None and wal.exists() else None,
            "last_write_at": _iso(self.last_write_at),
            "last_write_error": None if self.last_error is None
            else {"at": _iso(self.last_error_at), "reason": self.last_error},
            "last_checkpoint": self.last_checkpoint,
            "checkpoint_interval_s": self.interval_s if path else None,
        }  # fmt: skip

    # -- the periodic checkpoint ---------------------------------------------------------
    def start(self) -> None:
        if self.sqlite_file is None or self.interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.checkpoint()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
