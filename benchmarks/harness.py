"""Side-by-side comparisons that survive a noisy machine: fresh processes, interleaved.

Every *side* of a comparison (ours, the reference code, Lucent, ...) is one command that
runs the measured work once in a fresh Python process and prints, as its last line, a JSON
object with at least ``seconds`` (the timed section, warm-up excluded). The harness runs
the sides counterbalanced (A B, B A, A B, ...) for ``pairs`` rounds, so a change of
background load hits every side alike, and records per run the process's wall time, CPU
time (``os.wait4``: this child only) and peak RSS (its VmHWM), plus the load average around it.

A comparison reports, per side, the median / min / max of ``seconds``, and per pair the
ratio baseline / candidate; the headline is the median ratio with its min-max spread.
Nothing here imports torch: a side's own figures (CUDA peak memory, activations, checks)
travel in its JSON and are kept as they are.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a command run in a fresh process."""

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


def run_side(side: Side, timeout_s: float = 1800.0) -> dict:
    """Run ``side`` once; its JSON plus ``wall_s``, ``cpu_s``, ``peak_rss_mib`` (of this
    child alone: ``os.wait4``) and the 1-minute load average before and after. A failing
    side raises with the tail of its stderr."""
    env = {**os.environ, **side.env}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(side.argv), stdout=out, stderr=err, env=env, text=True)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        hwm = _HighWater(proc.pid)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            hwm.stop()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{side.name}: exit {proc.returncode}\n{tail}")
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"{side.name}: the last line of output is not JSON") from exc
    if not isinstance(result, dict) or "seconds" not in result:
        raise RuntimeError(f"{side.name}: its JSON has no 'seconds'")
    return {
        **result,
        "wall_s": round(wall, 4),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
        "peak_rss_mib": round(hwm.peak_kib / 1024, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


class _HighWater:
    """The child's peak RSS: ``VmHWM`` of /proc/PID/status, sampled every 20 ms. (rusage's
    ``ru_maxrss`` would include the RSS of the forked parent before ``exec``; VmHWM belongs
    to the exec'd image alone and only grows, so a sample after the peak catches it.)"""

    def __init__(self, pid: int) -> None:
        self.peak_kib = 0
        self._path = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            for line in self._path.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass  # exited (zombie status has no VmHWM) or no /proc

    def _run(self) -> None:
        while not self._done.wait(0.02):
            self._sample()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}  # fmt: skip


def compare(name: str, baseline: Side, candidate: Side, pairs: int = 5,
            log=print) -> dict:  # fmt: skip
    """Interleave ``pairs`` runs of each side (counterbalanced order) and summarise.

    ``ratio`` = baseline seconds / candidate seconds of the same pair (> 1: the candidate
    is faster); ``spread`` = (max - min) / median of the ratios."""
    if pairs < 1:
        raise ValueError("pairs must be >= 1")
    runs: dict[str, list[dict]] = {baseline.name: [], candidate.name: []}
    order: list[str] = []
    for i in range(pairs):
        for side in (baseline, candidate) if i % 2 == 0 else (candidate, baseline):
            result = run_side(side)
            runs[side.name].append(result)
            order.append(side.name)
            log(f"  {name}: {side.name} #{len(runs[side.name])}: {result['seconds']:.3f} s "
                f"(cpu {result['cpu_s']} s, load {result['load_before']})")
    ratios = [b["seconds"] / c["seconds"]
              for b, c in zip(runs[baseline.name], runs[candidate.name], strict=True)]
    # CPU time of the timed section when the sides report it, else of the whole process.
    cpu_key = ("cpu_timed_s" if all("cpu_timed_s" in r for rs in runs.values() for r in rs)
               else "cpu_s")
    cpu_ratios = [b[cpu_key] / c[cpu_key] for b, c in
                  zip(runs[baseline.name], runs[candidate.name], strict=True)
                  if b[cpu_key] and c[cpu_key]]  # fmt: skip
    med = statistics.median(ratios)
    loads = [r["load_before"] for rs in runs.values() for r in rs]
    return {
        "benchmark": name,
        "baseline": baseline.name,
        "candidate": candidate.name,
        "pairs": pairs,
        "order": order,
        "ratio": _summary(ratios),
        "pair_ratios": [round(r, 4) for r in ratios],
        "ratio_spread": round((max(ratios) - min(ratios)) / med, 3) if med else None,
        "cpu_ratio": _summary(cpu_ratios) if cpu_ratios else None,
        "cpu_ratio_of": "timed section" if cpu_key == "cpu_timed_s" else "whole process",
        "sides": {
            side: {
                "seconds": _summary([r["seconds"] for r in rs]),
                "wall_s": _summary([r["wall_s"] for r in rs]),
                "cpu_s": _summary([r["cpu_s"] for r in rs]),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                # each process: is an outlier one slow call (runs_s) or a slow process?
                "per_run": [{k: r[k] for k in ("seconds", "runs_s", "wall_s", "cpu_s",
                                               "load_before") if k in r} for r in rs],
                "last": {k: v for k, v in rs[-1].items()
                         if k not in ("wall_s", "cpu_s", "load_before", "load_after")},
            }
            for side, rs in runs.items()
        },
        "load_average": _summary(loads),
        "machine": machine(),
    }


def machine() -> dict:
    """What the figure was measured on (versions come from the sides' own JSON)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "executable": sys.executable,
    }


def markdown_table(results: list[dict]) -> str:
    """One row per comparison: the headline ratio with its spread, and the load."""
    head = ("| benchmark | candidate vs baseline | ratio median (min–max) | spread | "
            "CPU-time ratio | candidate s (median) | baseline s (median) | load |\n"
            "|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    rows = []
    for r in results:
        ratio, cpu = r["ratio"], r.get("cpu_ratio")
        cand = r["sides"][r["candidate"]]["seconds"]["median"]
        base = r["sides"][r["baseline"]]["seconds"]["median"]
        cpu_txt = f"{cpu['median']:.2f}×" if cpu else "–"
        rows.append(
            f"| {r['benchmark']} | {r['candidate']} vs {r['baseline']} | "
            f"{ratio['median']:.2f}× ({ratio['min']:.2f}–{ratio['max']:.2f}) | "
            f"{r['ratio_spread']:.0%} | {cpu_txt} | {cand:.3f} | {base:.3f} | "
            f"{r['load_average']['median']:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def write_results(results: list[dict], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        (out_dir / f"{r['benchmark']}.json").write_text(json.dumps(r, indent=2) + "\n")
    table = out_dir / "results.md"
    table.write_text(markdown_table(results))
    return table
