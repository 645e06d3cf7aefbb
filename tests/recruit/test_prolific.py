"""The Prolific client against the local fake, and the full cycle through the CLI."""

from __future__ import annotations

import json

import pytest
import typer
from people import add
from typer.testing import CliRunner

from causalvis.cli.recruit import recruit_app
from causalvis.errors import CausalvisError
from causalvis.recruit.prolific import ProlificClient
from conftest import TOKEN

URL = "https://study.example.org"


def _client(base, token=TOKEN, sleeps=None):
    return ProlificClient(token, base_url=base, sleep=(sleeps if sleeps is not None else []).append)


def test_401_is_one_clear_error(fake_prolific):
    _, base = fake_prolific
    with pytest.raises(CausalvisError, match="refused the API token .HTTP 401.: check PROLIFIC_TOKEN"):
        _client(base, token="wrong").get_study("x")


def test_429_waits_retry_after_and_5xx_backs_off(fake_prolific):
    fake, base = fake_prolific
    fake.fail_next = [(429, {"Retry-After": "7"}), (503, {}), (502, {})]
    sleeps: list[float] = []
    out = _client(base, sleeps=sleeps).create_study({"name": "x"})
    assert out["id"] == "study1" and sleeps == [7.0, 2.0, 4.0]
    assert len(fake.calls_to("POST", "/api/v1/studies/")) == 1


def test_persistent_5xx_and_failing_publish_are_errors(fake_prolific):
    fake, base = fake_prolific
    fake.fail_next = [(500, {})] * 5
    with pytest.raises(CausalvisError, match="HTTP 500 after 5 tries"):
        _client(base).get_study("x")
    sid = _client(base).create_study({"name": "x"})["id"]
    fake.fail_publish = True
    with pytest.raises(CausalvisError, match="HTTP 400 .Insufficient funds"):
        _client(base).publish(sid)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(recruit_app, name="recruit")
    return app


def _run(*args, env=None):
    result = CliRunner().invoke(_app(), ["recruit", *map(str, args)], env=env)
    return result


def test_dry_run_prints_the_exact_request_and_sends_nothing(study):
    r = _run("prolific", study, "--public-url", URL, "--dry-run", env={"PROLIFIC_TOKEN": ""})
    assert r.exit_code == 0, r.output
    assert "POST https://api.prolific.com/api/v1/studies/ {" in r.output
    body = json.loads(r.output.split("/api/v1/studies/ ", 1)[1].split("\ncreated")[0])
    assert body["external_study_url"] == (URL + "/?PROLIFIC_PID={{%PROLIFIC_PID%}}"
                                          "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    assert body["prolific_id_option"] == "url_parameters"
    assert {c["code_type"]: c["code"] for c in body["completion_codes"]} == {
        "COMPLETED": "C0MPLETE", "FAILED_ATTENTION_CHECK": "FA1LED", "NO_CONSENT": "N0CONSENT"}
    assert body["total_available_places"] == 4 and body["device_compatibility"] == ["desktop"]
    assert body["reward"] == 60 and body["estimated_completion_time"] == 4  # 9.00/h x 4 min
    assert not (study / "responses.sqlite").exists()  # a dry run writes nothing


def test_user_mistakes_are_one_error(study):
    r = _run("prolific", study, "--public-url", "http://x", "--dry-run")
    assert isinstance(r.exception, CausalvisError) and "https://" in str(r.exception)
    r = _run("prolific", study, "--public-url", URL, "--pay-per-hour", "4", "--dry-run")
    assert "below Prolific's minimum" in str(r.exception)


def test_full_cycle_approves_exactly_who_passed_and_never_pays_twice(study, fake_prolific):
    fake, base = fake_prolific
    env = {"PROLIFIC_TOKEN": TOKEN, "PROLIFIC_API_URL": base}
    r = _run("prolific", study, "--public-url", URL, "--publish", env=env)
    assert r.exit_code == 0, r.output
    assert fake.studies["study1"]["status"] == "ACTIVE"
    assert TOKEN not in r.output
    # a re-run finds the study: no second study is created
    assert _run("prolific", study, "--public-url", URL, "--publish", env=env).exit_code == 0
    assert len(fake.calls_to("POST", "/api/v1/studies/")) == 1
    people = [("good1", True, "finished", True), ("bad1", False, "finished", True),
              ("noconsent", True, "finished", False), ("running", True, "active", True)]
    for n, (pid, passes, status, consent) in enumerate(people):
        fake.submissions[f"sub{n}"] = {"participant_id": pid, "status": "AWAITING REVIEW",
                                       "study_id": "study1"}
        add(study, n, platform="prolific", external=pid, study_id="study1",
            submission=f"sub{n}", passes=passes, status=status, consent=consent)
    r = _run("status", study, env=env)
    assert r.exit_code == 0, r.output and "4 submissions" in r.output
    r = _run("review", study, env=env)
    assert r.exit_code == 0, r.output
    assert fake.submissions["sub0"]["status"] == "APPROVED"
    assert fake.submissions["sub1"]["status"] == "REJECTED"
    assert fake.submissions["sub2"]["status"] == "RETURN_REQUESTED"
    assert fake.submissions["sub3"]["status"] == "AWAITING REVIEW"
    (reject,) = [c for c in fake.calls if c[1] == "/api/v1/submissions/sub1/transition/"]
    assert reject[2]["rejection_category"] == "FAILED_CHECK"
    assert "catch accuracy < 0.667" in reject[2]["message"]
    n_calls = len(fake.calls)
    r = _run("review", study, env=env)
    assert "nothing new; 3 done before" in r.output and len(fake.calls) == n_calls
    r = _run("bonus", study, "--amount", "0.50", env=env)
    assert r.exit_code == 0, r.output
    assert fake.paid == ["bonus1"] and fake.bonuses["bonus1"]["csv_bonuses"] == "good1,0.50\n"
    r = _run("bonus", study, "--amount", "0.50", env=env)
    assert r.exit_code == 0 and fake.paid == ["bonus1"]  # no second pay call
    assert "1 done before" in r.output


def test_crash_between_setup_and_pay_confirmation_is_not_paid_again(study, fake_prolific):
    fake, base = fake_prolific
    env = {"PROLIFIC_TOKEN": TOKEN, "PROLIFIC_API_URL": base}
    assert _run("prolific", study, "--public-url", URL, env=env).exit_code == 0
    fake.submissions["sub0"] = {"participant_id": "good1", "status": "AWAITING REVIEW",
                                "study_id": "study1"}
    add(study, 0, platform="prolific", external="good1", study_id="study1", submission="sub0")
    assert _run("review", study, env=env).exit_code == 0
    fake_route = fake.handle

    def pay_then_fail(method, path, auth, body):
        if path.endswith("/pay/"):  # paid, but the answer is a 500
            fake.paid.append(path)
            return 500, {}, {}
        return fake_route(method, path, auth, body)

    fake.handle = pay_then_fail  # type: ignore[method-assign]
    r = _run("bonus", study, "--amount", "1", env=env)
    assert r.exit_code != 0 and len(fake.paid) == 1  # a 5xx on the pay call is not retried
    assert "HTTP 500" in str(r.exception)
    fake.paid.clear()
    r = _run("bonus", study, "--amount", "1", env=env)
    assert r.exit_code == 0 and fake.paid == [] and "not paid again" in r.output
