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
        # the browser makes its resume secret before the first POST: a retry resumes
        create = {"platform": "local", "external_id": f"F{i}", "resume_secret": f"secret-{i:012d}"}
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


def test_health_reports_a_failed_write_until_the_next_success(client_sqlite, answers):
    from server_bundle_factory import ADMIN

    client = client_sqlite
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get("/api/v1/admin/health").status_code == 401
    body = start(client)
    health = client.get("/api/v1/admin/health", headers=auth).json()
    assert health["writable"] is True and health["last_write_error"] is None
    assert health["database"] == "sqlite" and health["free_bytes"] > 0
    fault = _on_connect(client.app.state.engine, "PRAGMA query_only=ON")
    tid = next(t["trial_id"] for t in body["trials"] if t["kind"] == "practice")
    assert answer(client, body["participant_token"], tid, answers[tid]).status_code == 503
    health = client.get("/api/v1/admin/health", headers=auth).json()
    assert health["writable"] is False and "readonly" in health["last_write_error"]["reason"]
    assert health["last_checkpoint"] is not None  # tried on the error
    assert client.get("/healthz").json() == {"ok": True, "study": "servertest", "writable": False}
    event.remove(client.app.state.engine, "connect", fault)
    client.app.state.engine.dispose()
    assert answer(client, body["participant_token"], tid, answers[tid]).status_code == 200
    assert client.get("/healthz").json()["writable"] is True


def test_checkpoint_truncates_the_wal(client_sqlite, answers):
    client = client_sqlite
    storage = client.app.state.storage
    for i in range(5):
        start(client, f"W{i}")
    wal = storage.sqlite_file.with_name(storage.sqlite_file.name + "-wal")
    assert wal.stat().st_size > 0
    result = storage.checkpoint()
    assert result["error"] is None and result["busy"] is False
    assert wal.stat().st_size == 0
    assert count_rows(client) == (5, 0)  # nothing lost by the checkpoint


def _mount_tmpfs(path, size: str) -> bool:  # type: ignore[no-untyped-def]
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)  # fmt: skip
    return r.returncode == 0


def test_full_tmpfs_recovers_after_freeing_1_mib(tmp_path):
    """The issue's fault: a full disk; participants finish once 1 MiB is freed."""
    import os
    import subprocess

    from reliability_helpers import make_client
    from server_bundle_factory import make_study, truth

    study = make_study(tmp_path / "study", planned=1000)
    answers = {tid: row["correct"] for tid, row in truth(study).items()}
    mnt = tmp_path / "tmpfs"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "3m"):
        pytest.skip("needs root and tmpfs mounts")
    try:
        filler = mnt / "filler"
        client = make_client(study, f"sqlite:///{mnt / 'responses.sqlite'}")
        with client:
            participants, full = [], False
            for i in range(2000):  # each participant's answers grow the WAL until it is full
                free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
                if not filler.exists() and free < 2 * 2**20:
                    filler.write_bytes(b"\0" * (free - 64 * 1024))  # leave ~64 KiB
                r = client.post("/api/v1/participants",
                                json={"platform": "local", "external_id": f"D{i}"})  # fmt: skip
                if r.status_code == 503:
                    full = True
                    break
                body = r.json()
                token = body["participant_token"]
                steps = [
                    client.post(f"/api/v1/participants/{token}/consent", json={"consent": True}),
                    client.post(f"/api/v1/participants/{token}/instructions",
                                json={"instruction_time_s": 25.0, "user_agent": "x" * 500}),
                ]  # fmt: skip
                if any(x.status_code == 503 for x in steps):
                    full = True
                    break
                participants.append(body)
            assert full and participants, "the tmpfs never filled up"
            assert client.get("/healthz").json()["writable"] is False
            # free 1 MiB: the filler shrinks
            size = filler.stat().st_size
            os.truncate(filler, max(0, size - 2**20))
            finished, failures = 0, 0

            def sent(request):  # type: ignore[no-untyped-def]
                """As the page: a 503 is retried (a few times, quickly here)."""
                nonlocal failures
                for _ in range(3):
                    r = request()
                    if r.status_code != 503:
                        return r
                    failures += 1
                return r

            for body in participants[-20:]:
                token = body["participant_token"]
                trials = [t["trial_id"] for t in body["trials"]]
                codes = [sent(lambda t=t, k=token: answer(client, k, t, answers[t])).status_code
                         for t in trials]  # fmt: skip
                r = sent(lambda k=token: client.post(f"/api/v1/participants/{k}/finish", json={}))
                finished += codes == [200] * len(codes) and r.status_code == 200
            assert finished == 20, (finished, failures, client.app.state.storage.report())
            assert client.get("/healthz").json()["writable"] is True
            assert _integrity(client) == "ok"
    finally:
        if "client" in locals():
            client.app.state.engine.dispose()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
