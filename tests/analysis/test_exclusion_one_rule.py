"""One exclusion rule set: the dashboard's per-participant flags (the server's admin
progress) equal the report's exclusions, criterion by criterion, for every ``[exclusion]``
setting, on a study with ``min_choices_per_side`` set. Participants answer through the real
server API; the same database is then read by the dashboard and by ``analyze``."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402

from causalvis.analysis.report import AnalysisOptions, analyze_study  # noqa: E402
from causalvis.config import ExclusionConfig, StudyConfig  # noqa: E402
from causalvis.responses.db import Participant, default_url, open_database  # noqa: E402
from causalvis.responses.exclusion import CRITERIA  # noqa: E402

MAIN_UNITS = [(f"blocks.{i}.1", 3 + i) for i in range(6)]  # 6 main + 1 catch per session
FAST = AnalysisOptions(n_boot=200, n_perm=200, mixed_model=False)
# Lets everyone through but the side-variability check the study sets.
PERMISSIVE = {"min_catch_accuracy": 0.0, "min_total_time_s": 0.0, "max_total_time_s": 1e6,
              "min_instruction_time_s": 0.0, "max_practice_attempts": 100,
              "max_same_side_fraction": 1.0, "min_choices_per_side": 2,
              "min_rt_ms": 200.0, "max_fast_fraction": 0.5}  # fmt: skip
# Every [exclusion] field, with a value that excludes some participants but not all.
BITES = {
    "min_catch_accuracy": (0.5, "catch_accuracy"),
    "min_total_time_s": (100.0, "total_time"),
    "max_total_time_s": (900.0, "total_time"),
    "min_instruction_time_s": (20.0, "instruction_time"),
    "max_practice_attempts": (1, "practice_attempts"),
    "max_same_side_fraction": (0.8, "one_sided"),
    "min_sided_trials": (7, "one_sided"),  # the one-sided participants answered 7 trials
    "min_choices_per_side": (3, "side_variability"),
    "min_rt_ms": (800.0, "fast_answers"),  # w0: 5 of 7 answers under 800 ms > 0.5
    "max_fast_fraction": (0.1, "fast_answers"),  # w0: 2 of 7 answers under 200 ms > 0.1
}


@dataclass(frozen=True)
class Profile:
    n_left: int  # answers (in order) where the chosen image was the one shown on the left
    catch_wrong: bool = False
    instruction_s: float = 42.5
    practice_fails: int = 0  # failed practice attempts before the passing one
    total_s: float = 300.0  # consent to finish, set on the server clock afterwards
    n_answered: int | None = None  # None: every trial, then finish
    rts: tuple[int, ...] = ()  # rt_ms of the first scored answers (the rest: 900)


PROFILES = [
    Profile(4, rts=(150, 150, 300, 300, 300)),
    Profile(3, catch_wrong=True),
    Profile(4, instruction_s=5.0),
    Profile(4, practice_fails=1),
    Profile(7),
    Profile(6),
    Profile(5, total_s=50.0),
    Profile(4, total_s=1000.0),
    Profile(0, practice_fails=2),
    Profile(2, n_answered=3),
    Profile(0, n_answered=0),
    Profile(1, catch_wrong=True, instruction_s=5.0),
]


def _take_part(client, rows: dict, external_id: str, prof: Profile) -> None:
    body = client.post("/api/v1/participants",
                       json={"platform": "local", "external_id": external_id}).json()
    token = body["participant_token"]
    url = f"/api/v1/participants/{token}"
    assert client.post(f"{url}/consent", json={"consent": True}).is_success
    assert client.post(f"{url}/instructions",
                       json={"instruction_time_s": prof.instruction_s}).is_success
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    scored = [t["trial_id"] for t in body["trials"] if t["kind"] != "practice"]

    exp = client.app.state.experiment
    session = None
    if hasattr(exp, "option_ids"):  # the browser sends opaque option ids, not labels
        with exp.sessions() as db:
            session = db.query(Participant).filter_by(external_id=external_id).one().session_id

    def oid(tid: str, label: str) -> str:
        return label if session is None else exp.option_ids(session, tid)[label]

    def answer(tid: str, choice: str, left: str, attempt: int = 1, rt: int = 900) -> None:
        r = client.post(f"{url}/responses", json={"trial_id": tid, "choice": oid(tid, choice),
                                                  "confidence": 2, "rt_ms": rt,
                                                  "left_option": oid(tid, left),
                                                  "attempt": attempt})
        assert r.is_success, r.text

    for attempt in range(1, prof.practice_fails + 2):
        for k, tid in enumerate(practice):
            right = rows[tid]["correct"]
            fail = attempt <= prof.practice_fails and k == 0
            answer(tid, ("b" if right == "a" else "a") if fail else right, "a", attempt)
    for i, tid in enumerate(scored[: prof.n_answered]):
        right = rows[tid]["correct"]
        wrong = "b" if right == "a" else "a"
        choice = wrong if prof.catch_wrong and rows[tid]["kind"] == "catch" else right
        answer(tid, choice, choice if i < prof.n_left else ("b" if choice == "a" else "a"),
               rt=prof.rts[i] if i < len(prof.rts) else 900)
    if prof.n_answered is None:
        assert client.post(f"{url}/finish").is_success


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from fastapi.testclient import TestClient

    from causalvis.server.app import create_app

    root = make_study(tmp_path_factory.mktemp("one_rule") / "study", planned=3,
                      units=MAIN_UNITS)
    rows = truth(root)
    app = create_app(root, None, admin_token=ADMIN)
    with TestClient(app) as client:
        for i, prof in enumerate(PROFILES):
            _take_part(client, rows, f"w{i}", prof)
    app.state.engine.dispose()
    engine, factory = open_database(default_url(root))
    with factory() as db:
        for p in db.query(Participant).order_by(Participant.id):
            prof = PROFILES[int(p.external_id[1:])]
            if p.finished_at is not None:
                p.consented_at = p.finished_at - timedelta(seconds=prof.total_s)
        db.commit()
    engine.dispose()
    return root


def _set_exclusion(root: Path, **values) -> None:
    cfg = StudyConfig.load(root / "study.toml")
    values.setdefault("conditions", {})  # the values set hold for every condition
    cfg.model_copy(update={"exclusion": ExclusionConfig(**values)}).save(root / "study.toml")


def _dashboard_flags(root: Path) -> dict[str, set[str]]:
    from fastapi.testclient import TestClient

    from causalvis.server.app import create_app

    app = create_app(root, None, admin_token=ADMIN)
    with TestClient(app) as client:
        prog = client.get("/api/v1/admin/progress",
                          headers={"Authorization": f"Bearer {ADMIN}"}).json()
    app.state.engine.dispose()
    return {p["participant_id"]: set(p["flags"]) for p in prog["participant_details"]}


def _assert_same_rules(root: Path, out: Path) -> dict:
    flags = _dashboard_flags(root)
    summary, _ = analyze_study(root, out=out, options=FAST)
    ex = summary["exclusions"]
    assert ex["n_participants"] == len(PROFILES) == len(flags)
    crit = ex["criteria"]
    for name, c in crit.items():
        assert c["available"], name
        assert {pid for pid, f in flags.items() if name in f} == set(c["participants"]), name
    assert set().union(*flags.values()) <= set(crit) <= set(CRITERIA)
    assert {pid for pid, f in flags.items() if f} == set(ex["excluded_participants"])
    return crit


def test_every_exclusion_field_is_exercised():
    # every threshold; ``conditions`` (per-condition overrides of them) is
    # tests/analysis/test_exclusion_per_condition.py's
    assert set(BITES) == set(ExclusionConfig.model_fields) - {"conditions"}


@pytest.mark.parametrize("field", sorted(BITES))
def test_dashboard_flags_equal_report_exclusions(study, tmp_path, field):
    value, criterion = BITES[field]
    _set_exclusion(study, **{**PERMISSIVE, field: value})
    crit = _assert_same_rules(study, tmp_path / "report")
    assert 0 < crit[criterion]["n_excluded"] < len(PROFILES), crit[criterion]


def test_dashboard_flags_equal_report_exclusions_with_defaults(study, tmp_path):
    _set_exclusion(study, min_choices_per_side=2)
    crit = _assert_same_rules(study, tmp_path / "report")
    assert crit["side_variability"]["n_excluded"] > 0
    assert crit["unfinished"]["participants"] == ["p00010", "p00011"]


def test_fast_answers_flag_without_excluding_by_default(study, tmp_path):
    """Default max_fast_fraction (1.0): w0's fast answers are a warning, not an exclusion,
    in the report's counts and in the dashboard's flags alike."""
    _set_exclusion(study)
    crit = _assert_same_rules(study, tmp_path / "report")
    fast = crit["fast_answers"]
    assert fast["n_excluded"] == 0 and fast["participants"] == []
    assert fast["flagged_participants"] == ["p00001"] and fast["n_fast_answers"] == 5
    assert "flagged, never excluded" in fast["rule"]
    summary, _ = analyze_study(study, out=tmp_path / "r2", options=FAST)
    assert summary["exclusions"]["n_flagged_only"] == 1
    assert summary["fast_answers"]["by_condition"]


def test_archived_study_without_assets_analyses(study, tmp_path):
    """Analysis never opens an image: a finished study archived without its assets runs."""
    from causalvis.cli import main

    copy = tmp_path / "archived"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report"))
    shutil.rmtree(copy / "bundle" / "assets")
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(copy), "--n-boot", "200", "--n-perm", "200", "--no-mixed-model"])
    assert exit_.value.code == 0
    assert (copy / "report" / "summary.json").is_file()


def test_analyze_parses_config_and_trials_once(study, tmp_path, monkeypatch):
    from causalvis.cli import main

    loads: list[str] = []
    real_load, real_read_csv = StudyConfig.load.__func__, pd.read_csv

    def counting_load(cls, path):
        loads.append(str(path))
        return real_load(cls, path)

    def counting_read_csv(path, *args, **kw):
        loads.append(str(path))
        return real_read_csv(path, *args, **kw)

    monkeypatch.setattr(StudyConfig, "load", classmethod(counting_load))
    monkeypatch.setattr(pd, "read_csv", counting_read_csv)
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(study), "--out", str(tmp_path / "r"), "--n-boot", "200",
              "--n-perm", "200", "--no-mixed-model"])
    assert exit_.value.code == 0
    names = [Path(p).name for p in loads]
    assert names.count("study.toml") == 1 and names.count("trials.csv") == 1, loads
