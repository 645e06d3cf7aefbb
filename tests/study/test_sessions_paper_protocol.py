"""Issue 18, items 2, 5 and 6 on the file-free core of the sessions stage: `none` sessions
have no practice (unless ``sessions.practice_in_none``), references are shown in an order
shuffled per session and recorded in the plan (and the server applies it), and catch
trials come from catch units, never from one of the session's own main units."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_practice_example import _base  # noqa: E402

from causalvis.config import preset  # noqa: E402
from causalvis.errors import CausalvisError  # noqa: E402
from causalvis.pipeline.sessions import SESSION_RULES_VERSION, assemble_source  # noqa: E402
from causalvis.stimuli.catch import catch_pool  # noqa: E402
from causalvis.stimuli.units import sample_units  # noqa: E402
from causalvis.store.sessions import SessionEntry  # noqa: E402

MAIN = {f"blocks.{2 + i % 6}.0:{i}": 99 for i in range(12)}
PRACTICE = {f"p.{i}:0": 99 for i in range(4)}
CATCH = {f"c.{i}:0": 99 for i in range(3)}


def _refs(condition: str, unit: str, image_set: int) -> tuple[list[str], list[str]]:
    if condition == "none":
        return [], []
    return [f"assets/r-{condition}-{unit}-{image_set}-{i}.png" for i in range(9)], []


def _plan(cfg, *, catch_units=CATCH, max_units=18):
    cfg.sessions.max_units_per_session = max_units
    base = _base({**MAIN, **PRACTICE, **catch_units}, 4, seed=5)
    rows: dict[str, dict] = {}
    plan = assemble_source(
        "m", False, base, list(MAIN), set(PRACTICE), cfg,
        refs_of=_refs, measure=lambda layer, channel, asset: 0.0, pad=lambda row: row,
        add=lambda row: rows.setdefault(row["trial_id"], row)["trial_id"],
        catch_units=set(catch_units),
    )  # fmt: skip
    return plan, pd.DataFrame(list(rows.values())).set_index("trial_id")


def test_rules_version_bumped():
    assert SESSION_RULES_VERSION >= 4


def test_none_sessions_have_no_practice_the_others_do():
    plan, _ = _plan(preset("paper2021"))
    by = {}
    for s in plan.sessions:
        by.setdefault(s.condition, []).append(s)
    assert by["none"] and all(s.practice == [] and s.practice_obvious == [] for s in by["none"])
    for cond, sessions in by.items():
        if cond != "none":
            assert all(len(s.practice) > 0 for s in sessions), cond


def test_practice_in_none_gives_none_practice():
    cfg = preset("paper2021")
    cfg.sessions.practice_in_none = True
    plan, trials = _plan(cfg)
    none = [s for s in plan.sessions if s.condition == "none"]
    assert none and all(len(s.practice) > 0 for s in none)
    assert set(trials.loc[none[0].practice, "condition"]) == {"none"}


def test_reference_orders_are_recorded_and_differ_between_sessions():
    plan, trials = _plan(preset("paper2021"), max_units=4)
    natural = [s for s in plan.sessions if s.condition == "natural"]
    orders = []
    for s in plan.sessions:
        assert s.reference_seed is not None
        for tid in [*s.trials, *s.practice]:
            n = len(trials.loc[tid, "reference_assets"].split())
            if n > 1:
                assert sorted(s.reference_order[tid]) == list(range(n)), tid
            else:
                assert tid not in s.reference_order
    for s in natural:
        orders += [tuple(s.reference_order[t]) for t in s.trials]
    assert len(set(orders)) > len(orders) // 2  # shuffled, not one fixed order
    assert any(o != tuple(range(9)) for o in orders)
    # a trial shown in two sessions (the catch trials, the practice pool) gets each
    # session's own order
    shared = set(natural[0].trials) & set(natural[1].trials) or (
        set(natural[0].practice) & set(natural[1].practice))
    assert shared
    assert any(natural[0].reference_order[t] != natural[1].reference_order[t] for t in shared)
    assert len({s.reference_seed for s in plan.sessions}) == len(plan.sessions)
    # the same config gives the same orders (seeded)
    again, _ = _plan(preset("paper2021"), max_units=4)
    assert [s.reference_order for s in again.sessions] == [
        s.reference_order for s in plan.sessions]


def test_reference_order_round_trips_and_is_checked():
    entry = SessionEntry("s1", "natural", 0, ("t1", "t2"), reference_seed=7,
                         reference_order={"t1": (2, 0, 1)})
    back = SessionEntry.from_dict(entry.to_dict(), "here")
    assert back == entry and back.shown_order("t1", 3) == [2, 0, 1]
    assert back.shown_order("t2", 3) == [0, 1, 2]  # no entry: the table's order
    with pytest.raises(CausalvisError, match="not an order"):
        SessionEntry.from_dict({**entry.to_dict(), "reference_order": {"t1": [0, 0, 1]}}, "x")
    with pytest.raises(CausalvisError, match="not in the session"):
        SessionEntry.from_dict({**entry.to_dict(), "reference_order": {"t9": [0]}}, "x")


@pytest.mark.parametrize("max_units", [18, 4])
def test_catch_trials_come_from_catch_units_never_the_sessions_own(max_units):
    plan, trials = _plan(preset("paper2021"), max_units=max_units)
    for s in plan.sessions:
        catch = trials.loc[[t for t in s.trials if trials.loc[t, "kind"] == "catch"]]
        assert len(catch) == 3
        assert set(catch["unit"]) <= set(CATCH)
        assert not set(catch["unit"]) & set(s.units)
        main = trials.loc[[t for t in s.trials if trials.loc[t, "kind"] == "main"]]
        assert not set(main["unit"]) & set(CATCH)
    assert not set(trials[trials["kind"] == "practice"]["unit"]) & set(CATCH)


def test_without_catch_units_catch_trials_avoid_the_sessions_units(caplog):
    plan, trials = _plan(preset("paper2021"), catch_units={}, max_units=4)
    assert "no catch units" in caplog.text
    for s in plan.sessions:
        catch = trials.loc[[t for t in s.trials if trials.loc[t, "kind"] == "catch"]]
        assert len(catch) > 0 and not set(catch["unit"]) & set(s.units)


def test_catch_pool_is_empty_rather_than_the_sessions_own_units():
    base = _base({"m:0": 2, "m:1": 2}, 2)
    pool = catch_pool(base, main_units={"m:0", "m:1"}, practice_units=set(),
                      used_practice=set(), image_set=0)
    assert pool.empty  # formerly: the session's own trials of other image sets


def test_catch_units_are_sampled_apart_from_main_and_practice():
    alive = {"a": list(range(6)), "b": list(range(6))}
    units = sample_units(alive, mode="per_layer", layers=["a", "b"], per_layer=2,
                         n_practice=3, n_catch=3, seed=1)
    roles = {r: {u.unit for u in units if u.role == r} for r in ("main", "practice", "catch")}
    assert [len(roles[r]) for r in roles] == [4, 3, 3]
    assert not roles["catch"] & (roles["main"] | roles["practice"])
    # drawn last: the main and practice draws are those of a study without catch units
    before = sample_units(alive, mode="per_layer", layers=["a", "b"], per_layer=2,
                          n_practice=3, seed=1)
    assert [u for u in units if u.role != "catch"] == before
    with pytest.raises(CausalvisError, match="units.n_catch_units"):
        sample_units(alive, mode="per_layer", layers=["a", "b"], per_layer=2,
                     n_practice=3, n_catch=10, seed=1)


def test_server_shows_and_export_records_the_sessions_order(tmp_path):
    """The server applies the plan's order in the trial payload; the export states it."""
    import json

    from fastapi.testclient import TestClient

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
    from server_bundle_factory import make_study

    from causalvis.responses.export import responses_frame
    from causalvis.server.app import create_app
    from causalvis.store.trials import read_trials

    root = make_study(tmp_path / "study", planned=1)
    table = read_trials(root / "trials.csv").set_index("trial_id")
    plan_path = root / "bundle" / "sessions.json"
    plan = json.loads(plan_path.read_text())
    orders = {}
    for sess in plan["sessions"]:
        order = {}
        for tid in sess["trials"] + sess["practice"]:
            n = len(table.loc[tid, "reference_assets"].split())
            if n > 1:
                order[tid] = list(range(n))[::-1]
        sess["reference_seed"], sess["reference_order"] = 1, order
        orders[sess["session_id"]] = order
    plan_path.write_text(json.dumps(plan))
    app = create_app(root, None, admin_token="x" * 32)
    with TestClient(app) as client:
        body = None
        for i in range(len(plan["sessions"])):  # until a session with references
            body = client.post("/api/v1/participants",
                               json={"platform": "local", "external_id": f"w{i}"}).json()
            if any(t["references"] for t in body["trials"]):
                break
        exp = client.app.state.experiment
        with exp.sessions() as db:
            from causalvis.responses.db import Participant

            sid = db.query(Participant).filter_by(external_id=f"w{i}").one().session_id
        token = body["participant_token"]
        url = f"/api/v1/participants/{token}"
        assert client.post(f"{url}/consent", json={"consent": True}).is_success
        assert client.post(f"{url}/instructions", json={"instruction_time_s": 30}).is_success
        shown = 0
        for t in body["trials"]:
            refs = table.loc[t["trial_id"], "reference_assets"].split()
            if len(refs) > 1:
                assert [r.rsplit("/", 1)[-1] for r in t["references"]] == [
                    r.rsplit("/", 1)[-1] for r in refs[::-1]]
                shown += 1
        assert shown
        first = body["trials"][0]
        oid = exp.option_ids(sid, first["trial_id"])[table.loc[first["trial_id"], "correct"]]
        r = client.post(f"{url}/responses", json={"trial_id": first["trial_id"], "choice": oid,
                                                  "confidence": 2, "rt_ms": 900,
                                                  "left_option": oid, "attempt": 1})
        assert r.is_success, r.text
    app.state.engine.dispose()
    frame = responses_frame(None, root)
    row = frame[frame.trial_id == first["trial_id"]].iloc[0]
    n = len(table.loc[first["trial_id"], "reference_assets"].split())
    assert row["reference_order"] == " ".join(map(str, range(n)[::-1]))
