"""A SIGKILLed run resumes: finished items are not recomputed, final bytes are identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from compute_helpers import array_items, output_bytes

from causalvis.compute import run_items

HERE = Path(__file__).parent
N_ITEMS, SLEEP = 12, 0.4


def _stamps(root: Path) -> list[Path]:
    folder = root / ".stamps" / "arrays"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_killed_run_resumes_without_recomputing(tmp_path):
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "compute_resume_script.py"),
            str(root),
            str(N_ITEMS),
            str(SLEEP),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while len(_stamps(root)) < 4:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the driver made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    finished = [p.stem for p in _stamps(root)]
    assert 4 <= len(finished) < N_ITEMS, "the kill must land midway"
    out = root / "out"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}

    report = run_items(root, array_items(N_ITEMS, sleep=SLEEP), progress=False)
    assert report.skipped == len(finished)
    assert report.done == N_ITEMS - len(finished)
    assert not {f"arrays/{name}" for name in finished} & set(report.seconds)  # not rerun
    for name in finished:  # the finished items' files were not rewritten
        for suffix in (".npy", ".npz"):
            file = f"arrays__{name}{suffix}"
            assert (out / file).stat().st_mtime_ns == before[file]

    clean = tmp_path / "clean"
    run_items(clean, array_items(N_ITEMS, sleep=0.0), progress=False)
    assert output_bytes(root) == output_bytes(clean)
    assert len(output_bytes(clean)) == 2 * N_ITEMS
