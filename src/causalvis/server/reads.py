"""Admin reads that never stall participants: a cached progress report and streamed exports.

Both run on the reader sessions (``responses.db.open_reader``): on SQLite their own
read-only connections (WAL: readers neither block the writer nor wait for it), on
PostgreSQL read-only transactions. Progress of a large study takes seconds to compute, and
the dashboard polls every 10 s: it is served from a cache, recomputed in the background
when older than ``max_age_s`` (the stale copy is answered meanwhile), so a request takes
milliseconds whatever the size. Exports go out in pieces of a few hundred participants.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator

from causalvis.responses.export import frame_to_csv, iter_frames
from causalvis.server.service import Experiment

CHUNK_PARTICIPANTS = 250  # ~1,250 rows: each piece holds the GIL for a few ms only
_YIELD_S = 0.002  # between pieces: let participants' requests take the GIL


def render_json(value: dict) -> bytes:
    """The body FastAPI would send for ``value`` (rendered once per computation: for
    20,000 participants serialising alone takes ~100 ms)."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    return bytes(JSONResponse(jsonable_encoder(value)).body)


class ProgressCache:
    """``compute()``'s result. While a computation takes under ``cheap_s`` (a small study)
    every call computes afresh; once it takes longer, calls answer the last result and,
    when it is older than ``max_age_s``, start a recomputation in a background thread
    (0: always compute). Only the first call of a large study waits."""

    def __init__(self, compute: Callable[[], bytes], max_age_s: float = 5.0,
                 cheap_s: float = 0.05) -> None:  # fmt: skip
        self.compute, self.max_age_s, self.cheap_s = compute, max_age_s, cheap_s
        self._value: bytes | None = None
        self._at = 0.0
        self._took = 0.0
        self._lock = threading.Lock()  # one computation at a time
        self._refreshing = False

    def _refresh(self) -> bytes:
        with self._lock:
            start = time.monotonic()
            value = self.compute()
            self._value, self._at = value, time.monotonic()
            self._took = self._at - start
            return value

    def _background(self) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing = False

    def get(self) -> bytes:
        value = self._value
        if value is None or self.max_age_s <= 0 or self._took < self.cheap_s:
            return self._refresh()
        if time.monotonic() - self._at > self.max_age_s and not self._refreshing:
            self._refreshing = True
            threading.Thread(target=self._background, name="progress", daemon=True).start()
        return value


def csv_chunks(exp: Experiment, chunk: int = CHUNK_PARTICIPANTS) -> Iterator[bytes]:
    """The CSV export, a header and then one piece per ``chunk`` participants, from one
    read transaction (one snapshot)."""
    assert exp.readers is not None
    with exp.readers() as db:
        header = True
        for frame in iter_frames(db, exp.bundle.table, exp.bundle.sessions.values(),
                                 chunk=chunk):  # fmt: skip
            yield frame_to_csv(frame, header=header).encode()
            header = False
            time.sleep(_YIELD_S)


def parquet_chunks(exp: Experiment, chunk: int = CHUNK_PARTICIPANTS,
                   piece: int = 1 << 20) -> Iterator[bytes]:  # fmt: skip
    """The Parquet export: read in pieces on a reader session (no lock held), written as
    one file (one schema for all row groups), sent in ``piece``-byte parts."""
    import pandas as pd

    assert exp.readers is not None
    with exp.readers() as db:
        frames = []
        for frame in iter_frames(db, exp.bundle.table, exp.bundle.sessions.values(),
                                 chunk=chunk):  # fmt: skip
            frames.append(frame)
            time.sleep(_YIELD_S)
    buf = io.BytesIO()
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame.to_parquet(buf, index=False)
    data = buf.getbuffer()
    for start in range(0, max(len(data), 1), piece):
        yield bytes(data[start:start + piece])
