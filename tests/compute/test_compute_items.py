"""WorkItem validation, digests, stamps and the deterministic output helpers."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from compute_helpers import array_items

from causalvis.compute import (
    ItemContext,
    WorkItem,
    check_options,
    input_digest,
    item_done,
    make_executor,
    npz_bytes,
    run_items,
)
from causalvis.compute.worker import execute_item
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../b", "sp ace", "x/"])
def test_bad_item_names_are_rejected(name):
    with pytest.raises(CausalvisError, match="invalid work item name"):
        WorkItem(name, "compute_helpers:flaky")


def test_func_and_kwargs_are_validated():
    with pytest.raises(CausalvisError, match="module:function"):
        WorkItem("a", "no_colon")
    with pytest.raises(CausalvisError, match="JSON-serialisable"):
        WorkItem("a", "m:f", {"x": object()})


def test_default_digest_follows_func_and_kwargs():
    a = WorkItem("scan/shard-00001", "m:f", {"x": 1, "y": [1, 2]})
    same = WorkItem("scan/shard-00001", "m:f", {"y": [1, 2], "x": 1})
    other = WorkItem("scan/shard-00001", "m:f", {"x": 2, "y": [1, 2]})
    assert a.digest == same.digest != other.digest
    assert WorkItem("a", "m:f", digest="abc").digest == "abc"
    assert input_digest("cfg", 1) != input_digest("cfg", 2)


def test_stamp_marks_done_and_a_missing_output_invalidates_it(tmp_path):
    item = array_items(1)[0]
    paths = StudyPaths(tmp_path)
    assert not item_done(paths, item)
    result = execute_item(tmp_path, item)
    assert result.ok, result.error
    assert item_done(paths, item)
    changed = WorkItem(item.name, item.func, {"n": 17, "sleep": 0.0})
    assert not item_done(paths, changed)  # new inputs -> new digest -> redo
    (tmp_path / "out" / "arrays__shard-00000.npz").unlink()
    assert not item_done(paths, item)


def test_failed_item_writes_no_stamp_and_reports_exception(tmp_path):
    item = WorkItem("broken/one", "compute_helpers:always_fails")
    result = execute_item(tmp_path, item)
    assert not result.ok
    assert result.first_error_line == "ValueError: corrupt input for broken/one"
    assert not (tmp_path / ".stamps" / "broken" / "one.json").exists()


def test_unimportable_function_fails_the_item_not_the_run(tmp_path):
    result = execute_item(tmp_path, WorkItem("x", "no_such_module_zz:f"))
    assert not result.ok and "cannot import no_such_module_zz:f" in result.first_error_line


def test_outputs_must_stay_inside_the_study(tmp_path):
    ctx = ItemContext(tmp_path / "study", WorkItem("a", "m:f"))
    with pytest.raises(CausalvisError, match="outside the study folder"):
        ctx.write_text("../escape.txt", "x")


def test_npz_bytes_are_deterministic_and_loadable():
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1, 2], np.int16)}
    first = npz_bytes(**arrays)
    time.sleep(2.1)  # zip timestamps have 2 s resolution: np.savez would differ now
    assert npz_bytes(**arrays) == first
    with np.load(io.BytesIO(first)) as z:
        assert sorted(z.files) == ["a", "b"]
        np.testing.assert_array_equal(z["b"], arrays["b"])
        assert z["a"].dtype == np.int16


def test_executor_names_and_options_are_checked(tmp_path):
    with pytest.raises(CausalvisError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(CausalvisError, match="ray_address do not apply to the local executor"):
        check_options("local", {"ray_address": "auto"})
    check_options("local", {"ray_address": None, "workers": 2})  # None means unset
    with pytest.raises(CausalvisError, match="partition do not apply to the ray executor"):
        run_items(tmp_path, array_items(1), "ray", partition="gpu", progress=False)
    with pytest.raises(CausalvisError, match="duplicate work item names"):
        run_items(tmp_path, array_items(1) * 2, progress=False)


def test_per_process_cache_builds_once():
    from causalvis.compute import cached

    calls = []
    key = ("test-source", 224)
    first = cached(key, lambda: calls.append(1) or {"built": len(calls)})
    assert cached(key, lambda: calls.append(1) or {"built": len(calls)}) is first
    assert calls == [1]
