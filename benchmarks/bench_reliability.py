"""Reliability benchmark of `causalvis serve` that anyone can rerun (issue 23, item 8).

Scenarios, each a fresh real server process and its own simulated participants (the
clients of ``load_server.py``: the front end's retry rule, an audit against the database
afterwards):

- ``ramp``: participants arrive spread over ``--ramp-s`` (realistic);
- ``burst``: all arrive within 1 s;
- ``kill9``: SIGKILL of the server a third into the ramp, restarted 0.5 s later;
- ``sigterm``: SIGTERM (graceful stop) at the same point, restarted;
- ``fulldisk``: SQLite on a 256 KiB tmpfs, grown to 16 MiB after a third of the ramp
  (root only: skipped with the reason otherwise, and on PostgreSQL);
- ``export``: the ramp while an experimenter downloads the CSV and the progress every 2 s.

Prints, per database (SQLite; PostgreSQL when $DATABASE_URL is one) and scenario, the
audit (finished, lost, duplicated, unexpected) and p50/p95/p99 per endpoint; the last
line is JSON.

    python benchmarks/bench_reliability.py --participants 50 --ramp-s 20
    python benchmarks/bench_reliability.py --scenarios ramp,export --db sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load_server import Options, run_load  # noqa: E402

SCENARIOS = ("ramp", "burst", "kill9", "sigterm", "fulldisk", "export")
ENDPOINTS = ("create", "consent", "instructions", "responses", "finish", "export.csv",
             "progress")  # fmt: skip


def _options(name: str, args: argparse.Namespace, db_url: str | None) -> Options:
    base = {"participants": args.participants, "db_url": db_url, "think_ms": args.think_ms,
            "ramp_s": args.ramp_s, "deadline_s": args.deadline, "seed": args.seed}  # fmt: skip
    third = args.ramp_s / 3
    extra = {"burst": {"ramp_s": 1.0},
             "kill9": {"kill_at_s": third},
             "sigterm": {"kill_at_s": third, "kill_signal": "term"},
             "export": {"export_every_s": 2.0}}.get(name, {})  # fmt: skip
    return Options(**(base | extra))


def _full_disk(args: argparse.Namespace, work: Path) -> dict:
    """SQLite on a tiny tmpfs, enlarged a third into the ramp."""
    from server_bundle_factory import make_study

    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a tmpfs"}
    mount = work / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return {"skipped": f"cannot mount a tmpfs ({done.stderr.strip()[:120]})"}
    try:
        study = make_study(work / "study", planned=-(-args.participants // 4))
        opts = _options("ramp", args, f"sqlite:///{mount / 'responses.sqlite'}")
        opts.fault_at_s = args.ramp_s / 3
        opts.fault = lambda: subprocess.run(
            ["mount", "-o", "remount,size=16m", str(mount)], check=True)
        return run_load(opts, work, study=study)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def _own_schema(db_url: str | None, name: str) -> Iterator[str | None]:
    """PostgreSQL: a fresh schema per scenario (the plan's places are counted per
    database, and nothing of the user's own tables is touched), dropped afterwards."""
    if not db_url:
        yield None
        return
    from sqlalchemy import create_engine, text

    schema = f"cv_bench_{name}_{os.getpid()}"
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in db_url else "?"
    try:
        yield f"{db_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def run_scenario(name: str, args: argparse.Namespace, db_url: str | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"cv-rel-{name}-"))
    try:
        if name != "fulldisk" or not db_url:
            with _own_schema(db_url, name) as url:
                return _run(name, args, url, work)
        return {"skipped": "full disk is a SQLite file scenario"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(name: str, args: argparse.Namespace, db_url: str | None, work: Path) -> dict:
    try:
        if name == "fulldisk":
            return _full_disk(args, work)
        return run_load(_options(name, args, db_url), work)
    except Exception as exc:  # a scenario that breaks is reported, the others still run
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def table(results: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown: one row per database x scenario; per endpoint ``p50 / p95 / p99`` ms."""
    head = ["database", "scenario", "finished", "lost", "dup", "unexp", "5xx", "net err",
            *ENDPOINTS]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for db, per in results.items():
        for name, r in per.items():
            if "skipped" in r or "error" in r:
                reason = r.get("skipped") or r.get("error")
                lines.append(f"| {db} | {name} | {'skipped' if 'skipped' in r else 'error'}: "
                             f"{reason} |" + " |" * (len(head) - 3))  # fmt: skip
                continue
            cells = [db, name, f"{r['finished']}/{r['participants']}", str(r["lost"]),
                     str(r["duplicated"]), str(r["unexpected"]), str(r["server_errors"]),
                     str(r["network_errors"])]  # fmt: skip
            for ep in ENDPOINTS:
                e = r["endpoints"].get(ep)
                cells.append("" if e is None else
                             f"{e['p50_ms']:.0f} / {e['p95_ms']:.0f} / {e['p99_ms']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--ramp-s", type=float, default=20.0)
    ap.add_argument("--think-ms", type=float, default=1000.0)
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both",
                    help="both: PostgreSQL too when $DATABASE_URL is one")
    args = ap.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    pg = os.environ.get("DATABASE_URL", "")
    dbs: dict[str, str | None] = {}
    if args.db in ("sqlite", "both"):
        dbs["SQLite"] = None
    if args.db in ("postgresql", "both"):
        if pg.startswith("postgresql"):
            dbs["PostgreSQL"] = pg
        else:
            print("PostgreSQL skipped: DATABASE_URL is not a PostgreSQL URL "
                  "(source .ci/testdb.sh to get one)")  # fmt: skip
    results: dict[str, dict[str, dict]] = {}
    for db, url in dbs.items():
        for name in names:
            r = run_scenario(name, args, url)
            results.setdefault(db, {})[name] = r
            brief = r.get("skipped") or r.get("error") or (
                f"finished {r['finished']}/{r['participants']}, lost {r['lost']}, "
                f"duplicated {r['duplicated']}, unexpected {r['unexpected']}")
            print(f"{db:10s} {name:8s} {brief}", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.participants} participants, ramp {args.ramp_s:g} s, think "
          f"{args.think_ms:g} ms; 1-min load average at the end {load:.1f}; "
          "per endpoint p50 / p95 / p99 ms\n")  # fmt: skip
    print("\n".join(table(results)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
