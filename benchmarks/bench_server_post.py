"""Time per response POST of `causalvis serve` (in-process ASGI client, real database).

Each request goes through FastAPI validation, the session check, the idempotency lookup,
the insert and the commit (SQLite WAL, synchronous=NORMAL; or PostgreSQL with --db).
Wall time depends on machine load; ``median_cpu_ms`` (CPU time of this process, all
threads, per request; the PostgreSQL server's own CPU is not included) much less so.

    python benchmarks/bench_server_post.py [--participants 100] [--db URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests" / "server"))
from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402

from _common import emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from causalvis.server.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        study = make_study(Path(tmp) / "study", planned=args.participants)
        rows = truth(study)
        app = create_app(study, args.db, admin_token=ADMIN)
        times: list[float] = []
        cpu: list[float] = []
        with TestClient(app) as client:
            for i in range(args.participants):
                body = client.post(
                    "/api/v1/participants", json={"platform": "local", "external_id": f"b{i}"}
                ).json()
                token = body["participant_token"]
                client.post(f"/api/v1/participants/{token}/consent", json={"consent": True})
                for t in body["trials"]:
                    row = rows[t["trial_id"]]  # labels -> the payload's opaque option ids
                    ids = {o["src"]: o["id"] for o in t["options"]}
                    payload = {"trial_id": t["trial_id"],
                               "choice": ids["/" + row[f"option_{row['correct']}_asset"]],
                               "confidence": 3, "rt_ms": 1500,
                               "left_option": t["options"][0]["id"]}  # fmt: skip
                    t0, c0 = time.perf_counter(), time.process_time()
                    r = client.post(f"/api/v1/participants/{token}/responses", json=payload)
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    assert r.status_code == 200, r.text
        app.state.engine.dispose()
    ms = sorted(1000 * t for t in times)
    emit({
        "benchmark": "server_response_post",
        "database": (args.db or "sqlite").split(":")[0],
        "n_posts": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "median_cpu_ms": round(1000 * statistics.median(cpu), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 3),
    })  # fmt: skip


if __name__ == "__main__":
    main()
