"""``bundle/sessions.json`` and ``bundle/manifest.json``: one typed reader and writer each
(round trip, byte-identical to the plan stage ``sessions`` writes, clear errors)."""

from __future__ import annotations

import json

import pytest
from server_bundle_factory import make_study

from causalvis.errors import CausalvisError
from causalvis.stimuli.plan import PlannedSession
from causalvis.store.layout import StudyPaths, write_json
from causalvis.store.sessions import (
    SessionEntry,
    SessionPlan,
    build_manifest,
    read_manifest,
    read_sessions,
    write_manifest,
    write_sessions,
)


def _planned(model: str | None) -> list[PlannedSession]:
    return [
        PlannedSession("s0001", "natural", 0, ["blocks.2.1:5", "blocks.4.2:17"],
                       ["t1", "t2"], ["p1", "p2"], 3, model, ["p1"]),
        PlannedSession("s0002", "none", 1, ["blocks.2.1:5"], ["t3"], [], 2, model),
    ]


@pytest.mark.parametrize("model", [None, "lite0"])
def test_writer_is_byte_identical_to_the_stage_plan(tmp_path, model):
    sessions = _planned(model)
    stage = {  # what stage ``sessions`` has written since the format exists
        "study": "st", "task": "causal_occlusion", "config_hash": "abc",
        "conditions": ["natural", "none"],
        **({"models": [model]} if model else {}),
        "sessions": [s.to_dict() for s in sessions],
        "instructions_example": {"natural": "x1"},
        "practice_draw": {"n_total": 2, "n_obvious": 1},
        "n_participants_needed": int(sum(s.planned_participants for s in sessions)),
    }  # fmt: skip
    write_json(tmp_path / "stage.json", stage)
    plan = SessionPlan(
        sessions=tuple(SessionEntry.from_dict(s.to_dict(), "test") for s in sessions),
        study="st", task="causal_occlusion", config_hash="abc",
        conditions=("natural", "none"), models=(model,) if model else (),
        instructions_example={"natural": "x1"},
        practice_draw={"n_total": 2, "n_obvious": 1},
    )  # fmt: skip
    write_sessions(tmp_path / "ours.json", plan)
    assert (tmp_path / "ours.json").read_bytes() == (tmp_path / "stage.json").read_bytes()
    assert read_sessions(tmp_path / "ours.json") == plan


def test_plan_without_practice_pools_reads_as_all_non_obvious(tmp_path):
    """A plan written before the practice pools: every practice trial, none obvious."""
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps({"sessions": [
        {"session_id": "s1", "condition": "c", "trials": ["t1"], "practice": ["p1", "p2"]},
        {"session_id": "s2", "condition": "c", "trials": ["t2"], "practice": ["p1", "p2", "p3"]},
    ]}))  # fmt: skip
    plan = read_sessions(path)
    assert plan.practice_draw == {"n_total": 3, "n_obvious": 0}
    assert all(s.practice_obvious == () for s in plan.sessions)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"sessions.json: invalid JSON"),
        ('{"sessions": []}', r"sessions.json: the plan has no sessions"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": ["t"]}, '
         '{"condition": "c", "trials": ["t"]}]}', r"sessions.json: sessions\[1\]: malformed"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": "t1"}]}',
         r"sessions\[0\]: malformed session"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": []}]}',
         r"sessions\[0\]: session has no trials"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": ["t"], '
         '"practice": ["p1"], "practice_obvious": ["p2"]}]}',
         r"sessions\[0\]: practice_obvious trial 'p2' is not in practice"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": ["t"]}], '
         '"practice_draw": {"n_total": 1, "n_obvious": 2}}',
         r"sessions.json: practice_draw needs 0 <= n_obvious <= n_total"),
        ('{"sessions": [{"session_id": "s", "condition": "c", "trials": ["t"]}], '
         '"practice_draw": {"n_total": "x"}}', r"sessions.json: malformed practice_draw"),
    ],
)
def test_corrupt_plan_names_file_and_session(tmp_path, text, message):
    path = tmp_path / "bundle" / "sessions.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(CausalvisError, match=message):
        read_sessions(path)


def test_manifest_round_trip_and_corrupt(tmp_path):
    paths = StudyPaths(make_study(tmp_path / "s"))
    manifest = build_manifest(paths, study="s", config_hash="abc", software_version="1.0")
    assert set(manifest.files) == {"trials.csv", "bundle/sessions.json", "study.toml"}
    assert manifest.n_assets == len(list(paths.assets.glob("*.png")))
    write_manifest(paths.manifest, manifest)
    assert list(json.loads(paths.manifest.read_text())) == [
        "study", "software", "software_version", "config_hash", "created", "files",
        "n_assets", "assets_digest"]  # fmt: skip
    assert read_manifest(paths.manifest) == manifest
    paths.manifest.write_text('{"study": "s"}')
    with pytest.raises(CausalvisError, match="manifest.json: malformed manifest"):
        read_manifest(paths.manifest)
