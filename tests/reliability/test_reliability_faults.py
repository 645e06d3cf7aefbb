"""Faults: load with exact-once accounting, SIGKILL mid-run, full disk, read-only database."""

from __future__ import annotations

import pytest
from reliability_helpers import answer, count_rows, start
from sqlalchemy import event, text

from load_server import Options, run_load


def _assert_exactly_once(report: dict, n: int) -> None:
    assert report["finished"] == n and report["gave_up"] == 0, report
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["unexpected"] == 0 and report["stored_unacked"] == 0, report
    assert report["stored_participants"] == n, report
    assert report["stored_responses"] == report["responses_acked"], report


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_small_load_run_loses_and_duplicates_nothing(db, tmp_path):
    import os

    url = os.environ.get("DATABASE_URL", "") if db == "postgres" else None
    if db == "postgres" and not (url or "").startswith("postgresql"):
        pytest.skip("DATABASE_URL is not PostgreSQL")
    report = run_load(Options(participants=20, think_ms=20, ramp_s=0.3, db_url=url,
                              deadline_s=90), tmp_path)  # fmt: skip
    _assert_exactly_once(report, 20)
    assert report["responses_acked"] == 20 * 5 and report["server_errors"] == 0


def test_sigkill_mid_run_then_restart(tmp_path):
    report = run_load(Options(participants=20, think_ms=150, ramp_s=0.3, kill_at_s=0.8,
                              restart_after_s=0.2, deadline_s=120, seed=3), tmp_path)  # fmt: skip
    assert report["server_starts"] == 2 and report["network_errors"] > 0, report
    _assert_exactly_once(report, 20)
    assert report["resumed"] >= 1 and report["resume_mismatch"] == 0, report


def _on_connect(engine, sql: str):  # type: ignore[no-untyped-def]
    def run(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute(sql)
        cur.close()

    event.listen(engine, "connect", run)
    engine.dispose()  # pooled connections reconnect with the fault
    return run


def _integrity(client) -> str:  # type: ignore[no-untyped-def]
    with client.app.state.engine.connect() as conn:
        return conn.execute(text("PRAGMA integrity_check")).scalar_one()


def test_full_disk_is_a_clear_503_and_nothing_half_written(client_sqlite, answers):
    client = client_sqlite
    engine = client.app.state.engine
    with engine.connect() as conn:
        pages = conn.execute(text("PRAGMA page_count")).scalar_one()
    fault = _on_connect(engine, f"PRAGMA max_page_count={pages}")  # the disk is now full
    acked, failed = 0, None
    for i in range(60):  # bounded: the last free page fills within a few dozen rows
        create = {"platform": "local", "external_id": f"F{i}"}
        r = client.post("/api/v1/participants", json=create)
        if r.status_code == 503:
            failed = ("create", r, lambda c=create: client.post("/api/v1/participants", json=c))
            break
        assert r.status_code == 201, r.text
        body = r.json()
        token = body["participant_token"]
        base = f"/api/v1/participants/{token}"
        assert client.post(f"{base}/consent", json={"consent": True}).status_code == 200
        assert (
            client.post(f"{base}/instructions", json={"instruction_time_s": 1}).status_code == 200
        )
        for tid in [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]:
            r = answer(client, token, tid, answers[tid])
            if r.status_code == 503:
                failed = ("response", r, lambda t=token, x=tid: answer(client, t, x, answers[x]))
                break
            assert r.status_code == 200
            acked += 1
        if failed:
            break
    assert failed is not None, "max_page_count never filled up"
    kind, r, retry = failed
    assert (
        "database or disk is full" in r.json()["detail"]
        and "nothing was stored" in r.json()["detail"]
    )
    assert r.headers["retry-after"] == "5"
    n_p, n_r = count_rows(client)
    assert n_r == acked and n_p == i + (kind == "response")  # the failed write left no row
    assert _integrity(client) == "ok"
    # space comes back: the client's retries of the very same request land exactly once
    event.remove(engine, "connect", fault)
    engine.dispose()
    first, second = retry(), retry()
    if kind == "create":
        assert (first.status_code, second.status_code) == (201, 200)
        assert first.json()["participant_token"] == second.json()["participant_token"]
        assert count_rows(client) == (n_p + 1, acked)
    else:
        assert first.status_code == second.status_code == 200
        assert count_rows(client) == (n_p, acked + 1)


def test_read_only_database_is_a_clear_503(client_sqlite, answers):
    client = client_sqlite
    body = start(client)
    token = body["participant_token"]
    tid = next(t["trial_id"] for t in body["trials"] if t["kind"] == "practice")
    _on_connect(client.app.state.engine, "PRAGMA query_only=ON")
    r = answer(client, token, tid, answers[tid])
    assert r.status_code == 503 and "readonly" in r.json()["detail"].replace(
        "read-only", "readonly"
    )
    r = client.post("/api/v1/participants", json={"platform": "local", "external_id": "RO"})
    assert r.status_code == 503
    assert client.get(f"/api/v1/participants/{token}").status_code in (200, 503)
    assert count_rows(client) == (1, 0)
