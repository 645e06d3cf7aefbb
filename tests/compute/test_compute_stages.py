"""The heavy stages (scan, blur, occlusion) as work items: same bytes on every executor,
and a SIGKILLed ``causalvis build`` resumes without recomputing finished items."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from causalvis.pipeline.build import build, init_study
from causalvis.store.layout import StudyPaths, read_json

ray = pytest.importorskip("ray")

RUN = {"threads": 1, "retries": 0}  # one torch thread per item everywhere: same floats
HEAVY = ("scan", "blur", "occlusion")


def tiny_study(root: Path) -> Path:
    """A quick-preset study small enough for 2 cores: 96 images in 3 shards, 3 units."""
    cfg = init_study(root, "quick")
    cfg.images.max_images = 96
    cfg.scan.shard_size = 32
    cfg.scan.workers = 1
    cfg.units.layers = ["blocks.2.1", "blocks.4.2"]
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 40
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_image_sets = 2
    cfg.occlusion.stride = 24
    cfg.blur.stride = 45
    cfg.save(StudyPaths(root).config)
    return root


def files(root: Path, *folders: str) -> dict[str, bytes]:
    """Every output file under ``folders`` (no stamps, no temp files) by relative path."""
    out = {}
    for folder in folders:
        base = root / folder
        if base.is_file():
            out[folder] = base.read_bytes()
            continue
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def stamps(root: Path, stage: str) -> dict[str, dict]:
    folder = root / ".stamps" / stage
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def drop(root: Path, *names: str) -> None:
    """Remove a stage's outputs and stamps from a copied study."""
    for name in names:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    root = tiny_study(tmp_path_factory.mktemp("local") / "study")
    build(root, ["scan", "units", "exemplars", "blur", "occlusion", "trials"],
          progress=False, executor_options=RUN)
    return root


def test_stages_are_split_into_stamped_items(local_study):
    assert sorted(stamps(local_study, "scan")) == ["shard-00000", "shard-00001", "shard-00002"]
    units = read_json(local_study / "units.json")["units"]
    assert len(stamps(local_study, "blur")) == len(units)  # one item per unit
    occ = stamps(local_study, "occlusion")
    outputs = sorted(o for s in occ.values() for o in s["outputs"])
    # one item per query image (every unit x 2 image sets here), each writing its set<b>.npz
    assert outputs == sorted(f"occlusion/{u['key']}/set{b}.npz" for u in units for b in (0, 1))
    index = read_json(local_study / "activations" / "index.json")
    assert index["n_images"] == 96 and [s["n_images"] for s in index["shards"]] == [32] * 3


@pytest.fixture(scope="module")
def ray_runtime():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_build_gives_the_same_bytes_as_local(local_study, ray_runtime, tmp_path):
    root = tiny_study(tmp_path / "study")
    build(root, ["scan"], progress=False, executor="ray", executor_options=RUN)
    assert files(root, "activations") == files(local_study, "activations")
    # units / exemplars run in the driver whichever executor runs the items: reuse them
    shutil.copy(local_study / "units.json", root / "units.json")
    shutil.copytree(local_study / "exemplars", root / "exemplars")
    shutil.copytree(local_study / "references" / "natural", root / "references" / "natural")
    build(root, ["blur", "occlusion", "trials"], progress=False, executor="ray",
          executor_options=RUN)
    got = files(root, "references/blur", "occlusion", "trials.csv")
    want = files(local_study, "references/blur", "occlusion", "trials.csv")
    assert sorted(got) == sorted(want) and len(want) > 20
    assert got == want
    # the npz arrays themselves (bytes equal already; this reads what trials reads)
    for rel in (r for r in want if r.endswith(".npz")):
        with np.load(root / rel) as a, np.load(local_study / rel) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def test_killed_build_resumes_without_recomputing(local_study, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(local_study, root)
    drop(root, "occlusion", ".stamps/occlusion", "stimuli", ".stamps/trials", "trials.csv")
    cmd = [sys.executable, "-m", "causalvis", "build", str(root), "--stage", "occlusion",
           "--threads", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not stamps(root, "occlusion"):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the build made no progress"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    finished = stamps(root, "occlusion")
    total = len(stamps(local_study, "occlusion"))
    assert 1 <= len(finished) < total, "the kill must land midway through the stage"
    stamp_dir = root / ".stamps" / "occlusion"
    mtimes = {f: (root / f).stat().st_mtime_ns for s in finished.values() for f in s["outputs"]}
    mtimes |= {n: (stamp_dir / f"{n}.json").stat().st_mtime_ns for n in finished}

    build(root, ["occlusion"], progress=False, executor_options=RUN)
    after = stamps(root, "occlusion")
    rerun = [n for n in after
             if n not in finished or (stamp_dir / f"{n}.json").stat().st_mtime_ns != mtimes[n]]
    assert sorted(rerun) == sorted(set(after) - set(finished))  # only unfinished items ran
    assert len(after) == total and len(rerun) == total - len(finished)
    for f, ns in mtimes.items():  # finished items' files were not rewritten
        assert (root / f if "/" in f else stamp_dir / f"{f}.json").stat().st_mtime_ns == ns
    want = {k: v for k, v in files(local_study, "occlusion").items() if k.endswith(".npz")}
    assert files(root, "occlusion") == want  # as uninterrupted, from another process too


def test_submitit_local_executor_runs_the_blur_stage(local_study, tmp_path):
    pytest.importorskip("submitit")
    root = tmp_path / "study"
    shutil.copytree(local_study, root)
    drop(root, "references/blur", ".stamps/blur")
    options = {**RUN, "cluster": "local", "items_per_job": 2, "cpus_per_task": 1,
               "poll_s": 0.2, "folder": str(tmp_path / "slurm-logs")}
    build(root, ["blur"], progress=False, executor="slurm", executor_options=options)
    assert len(stamps(root, "blur")) == len(read_json(root / "units.json")["units"])
    assert files(root, "references/blur") == files(local_study, "references/blur")
    assert any((tmp_path / "slurm-logs").rglob("*.out"))  # really ran as submitit jobs


def test_rerun_of_the_item_stages_rewrites_nothing(local_study):
    before = {p: p.stat().st_mtime_ns for p in local_study.rglob("*") if p.is_file()}
    build(local_study, list(HEAVY), progress=False, executor_options=RUN)
    after = {p: p.stat().st_mtime_ns for p in local_study.rglob("*") if p.is_file()}
    assert [str(p) for p in before if after.get(p) != before[p]] == []
    assert set(after) == set(before)
