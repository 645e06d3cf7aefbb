"""Readers apart from writers (issue 23, item 3): admin reads on read-only connections,
exports streamed in pieces, progress cached; participants keep their latency while a
100k-row export runs."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from reliability_helpers import answer, start
from server_bundle_factory import ADMIN, make_study
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from causalvis.responses.export import build_frame, frame_to_csv
from causalvis.server.reads import csv_chunks

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_streamed_csv_equals_the_whole_frame(client, answers):
    """Pieces of one participant each, concatenated, are the one-frame CSV."""
    for i in range(3):
        token = start(client, f"P{i}")["participant_token"]
        for tid in list(answers)[:2]:
            answer(client, token, tid, answers[tid])  # practice answers, whatever the kind
    exp = client.app.state.experiment
    streamed = b"".join(csv_chunks(exp, chunk=1)).decode()
    with exp.sessions() as db:
        whole = frame_to_csv(build_frame(db, exp.bundle.table, exp.bundle.sessions.values()))
    assert streamed == whole and streamed.count("\n") >= 3  # header + two participants
    r = client.get("/api/v1/admin/responses.csv", headers=AUTH)
    assert r.status_code == 200 and r.text == whole


def test_reader_sessions_cannot_write(client):
    exp = client.app.state.experiment
    assert exp.readers is not exp.sessions
    with exp.readers() as db, pytest.raises(SQLAlchemyError, match="read.?only"):
        db.execute(text("INSERT INTO screenings (platform, reason, created_at) "
                        "VALUES ('local', 'mobile', CURRENT_TIMESTAMP)"))  # fmt: skip


def _fill(engine, sessions: list, n_participants: int, per: int) -> None:
    """Bulk rows straight into the database (sqlite3's executemany, ~1 s for 100k):
    ``n_participants`` finished participants with ``per`` main answers each."""
    now = "2026-11-01 12:00:00.000000"
    people, rows = [], []
    for i in range(1, n_participants + 1):
        sess = sessions[i % len(sessions)]
        people.append((i, f"bulk{i:08d}", "local", f"B{i}", sess.session_id, sess.condition,
                       "finished", 1, 20.0, now, now, now, now))  # fmt: skip
        trials = list(sess.trials)
        rows += [(i, sess.session_id, trials[k % len(trials)], "main", 1 + k // len(trials),
                  "a", 2, 900, "a", int(k % 2 == 0), now, now, now) for k in range(per)]  # fmt: skip
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.executemany("INSERT INTO participants (id, token, platform, external_id, "
                        "session_id, condition, status, consent, instruction_time_s, "
                        "created_at, last_seen_at, finished_at, consented_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", people)  # fmt: skip
        cur.executemany("INSERT INTO responses (participant_id, session_id, trial_id, kind, "
                        "attempt, choice, confidence, rt_ms, left_option, correct, shown_at, "
                        "answered_at, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)  # fmt: skip
        raw.commit()
    finally:
        raw.close()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    """A real uvicorn server (in this process, as `causalvis serve` runs) on a SQLite
    database of 20,000 participants x 5 = 100,000 responses."""
    from causalvis.server.app import create_app
    from causalvis.server.guards import Rate
    from causalvis.server.run import serve_in_thread

    study = make_study(tmp_path_factory.mktemp("big") / "study", planned=5)
    app = create_app(study, None, admin_token=ADMIN, create_rate=Rate(0, 1.0))
    _fill(app.state.engine, list(app.state.experiment.bundle.sessions.values()), 20_000, 5)
    with serve_in_thread(app) as base:
        yield app, base


def _participant_latencies(base: str, until: threading.Event, seconds: float) -> list[float]:
    """One participant after another: create, consent, instructions, two state reads;
    latency of each request in ms."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
    with httpx.Client(base_url=base, timeout=30) as c:
        while not until.is_set() and time.monotonic() < deadline:
            i += 1
            t0 = time.perf_counter()
            r = c.post("/api/v1/participants", json={"platform": "local",
                                                     "external_id": f"L{i}-{id(until)}"})
            out.append((time.perf_counter() - t0) * 1e3)
            if r.status_code != 201:
                continue
            tok = r.json()["participant_token"]
            for path, body in (("consent", {"consent": True}),
                               ("instructions", {"instruction_time_s": 12.0})):  # fmt: skip
                t0 = time.perf_counter()
                c.post(f"/api/v1/participants/{tok}/{path}", json=body)
                out.append((time.perf_counter() - t0) * 1e3)
            for _ in range(2):
                t0 = time.perf_counter()
                c.get(f"/api/v1/participants/{tok}")
                out.append((time.perf_counter() - t0) * 1e3)
    return out


def _latency_during_export(base: str) -> tuple[float, float, int, int]:
    """p99 of participants alone (before and after: the larger), p99 during the first
    seconds of a streamed 100k-row CSV export, requests during it, lines exported."""
    before = _participant_latencies(base, threading.Event(), 1.0)
    started, stop, result = threading.Event(), threading.Event(), {"lines": 0}

    def export() -> None:
        with httpx.Client(base_url=base, timeout=120) as c, c.stream(
            "GET", "/api/v1/admin/responses.csv", headers=AUTH
        ) as r:
            result["status"] = r.status_code
            for chunk in r.iter_bytes():
                result["lines"] += chunk.count(b"\n")
                started.set()
                if stop.is_set():
                    break
        started.set()

    thread = threading.Thread(target=export)
    thread.start()
    assert started.wait(60)
    during = _participant_latencies(base, threading.Event(), 4.0)
    stop.set()
    thread.join()
    after = _participant_latencies(base, threading.Event(), 1.0)
    assert result["status"] == 200 and result["lines"] > 1000, result
    assert len(during) >= 20
    alone = max(np.percentile(before, 99), np.percentile(after, 99))
    return float(alone), float(np.percentile(during, 99)), len(during), result["lines"]


def test_participants_keep_their_latency_during_a_100k_row_export(big_server):
    """Participants' p99 during the first seconds of a streamed 100k-row CSV export (the
    stream is then dropped: a complete export is checked at small size above)."""
    _app, base = big_server
    # 100 ms is the goal (issue 23); a machine so loaded that participants alone are
    # slower than ~35 ms cannot show it, and then no more than 3x their own p99 is asked.
    # Two attempts: a test worker next door can stall a 4 s window once; the regression
    # this guards against (readers queued behind the export: p99 0.67 s) shows every time.
    seen = []
    for _ in range(2):
        p99_base, p99, n, lines = _latency_during_export(base)
        print(f"participant p99 {p99_base:.1f} ms alone, {p99:.1f} ms during the export "
              f"({n} requests, {lines} lines exported meanwhile)")
        seen.append((p99_base, p99))
        if p99 <= max(100.0, 3 * p99_base):
            return
    raise AssertionError(f"p99 (alone, during export) in ms, both attempts: {seen}")


def test_progress_is_cached_at_100k_rows(big_server):
    """After the first computation the server answers progress in <= 50 ms (its own work:
    the HTTP transfer of ~5 MB for 20,000 participants comes on top)."""
    app, base = big_server
    with httpx.Client(base_url=base, timeout=120, headers=AUTH) as c:
        first = c.get("/api/v1/admin/progress")  # computes (seconds at this size)
        assert first.status_code == 200
        assert first.json()["participants"]["finished"] == 20_000
        assert c.get("/api/v1/admin/progress").content == first.content  # the cached copy
    cache = app.state.progress_cache
    took = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert cache.get() == first.content
        took.append((time.perf_counter() - t0) * 1e3)
    assert max(took) <= 50.0, took


def test_checkpoint_does_not_wait_for_a_reader(client_sqlite):
    """A reader holding its snapshot (a streamed export) does not make the checkpoint,
    which runs under the writers' lock, wait in the busy handler (10 s)."""
    storage = client_sqlite.app.state.storage
    start(client_sqlite, "W1")
    with client_sqlite.app.state.experiment.readers() as db:
        db.execute(text("SELECT count(*) FROM responses")).all()  # snapshot held
        start(client_sqlite, "W2")  # the WAL grows past the reader's snapshot
        t0 = time.perf_counter()
        result = storage.checkpoint()
        assert time.perf_counter() - t0 < 1.0
        assert result is not None and result.get("error") is None and result["busy"]
