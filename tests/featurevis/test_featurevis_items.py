"""The ``references`` stage as work items: local and Ray executors write the same bytes,
and a rerun recomputes nothing."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from causalvis.config import StudyConfig
from causalvis.pipeline.build import build
from causalvis.store.layout import StudyPaths, read_json

pytest.importorskip("ray")


def _compute_helpers():
    """tests/compute/test_compute_stages.py (tiny study, Ray runtime, file helpers)."""
    name = "test_compute_stages"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).parents[1] / "compute" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


helpers = _compute_helpers()
ray_runtime = helpers.ray_runtime  # module-scoped fixture: real local Ray, 2 CPUs
RUN = helpers.RUN  # threads=1 on every executor


def _featurevis_study(root: Path) -> Path:
    helpers.tiny_study(root)
    paths = StudyPaths(root)
    cfg = StudyConfig.load(paths.config)
    cfg.conditions.n_references = 2
    cfg.conditions.mixed_natural = 1
    cfg.conditions.mixed_synthetic = 1
    fv = cfg.featurevis
    fv.size, fv.steps, fv.n_images, fv.batch_units = 64, 4, 2, 2
    fv.maco_steps, fv.maco_canvas = 2, 64
    fv.also_render = ["synthetic-maco"]
    cfg.save(paths.config)
    return root


@pytest.fixture(scope="module")
def local_refs(tmp_path_factory):
    root = _featurevis_study(tmp_path_factory.mktemp("refs-local") / "study")
    build(root, ["scan", "units", "references"], progress=False, executor_options=RUN)
    return root


def test_references_chunks_are_stamped_items(local_refs):
    units = read_json(local_refs / "units.json")["units"]
    per_layer: dict[str, int] = {}
    for u in units:
        per_layer[u["layer"]] = per_layer.get(u["layer"], 0) + 1
    want = sorted(f"{layer}/{i:04d}" for layer, n in per_layer.items()
                  for i in range((n + 1) // 2))  # chunks of batch_units=2 per layer
    outputs = []
    for method in ("synthetic", "synthetic-maco"):
        folder = local_refs / ".stamps" / "references" / method
        stamps = sorted(folder.rglob("*.json"))
        assert sorted(p.relative_to(folder).with_suffix("").as_posix() for p in stamps) == want
        outputs += [o for p in stamps for o in read_json(p)["outputs"]]
    written = sorted(p.relative_to(local_refs).as_posix()
                     for p in (local_refs / "references").rglob("*") if p.is_file())
    assert sorted(outputs) == written  # every file went through the item context
    assert sum(w.endswith(".png") for w in written) == 2 * len(units) * 2  # methods x n


def test_ray_references_match_local_and_rerun_is_a_no_op(local_refs, ray_runtime, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(local_refs, root)
    helpers.drop(root, "references", ".stamps/references")
    build(root, ["references"], progress=False, executor="ray", executor_options=RUN)
    got = helpers.files(root, "references")
    want = helpers.files(local_refs, "references")
    assert sorted(got) == sorted(want) and any(k.endswith("meta.json") for k in want)
    assert got == want

    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    build(root, ["references"], progress=False, executor_options=RUN)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert [str(p) for p in before if after.get(p) != before[p]] == []
    assert set(after) == set(before)
