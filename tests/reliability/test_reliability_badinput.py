"""Bad input to every participant endpoint: a 4xx, and nothing stored that should not be."""

from __future__ import annotations

import pytest
from reliability_helpers import answer, count_rows, start

NOW_MS = 1_767_225_600_000  # 2026-01-01


def _mains(body: dict) -> list[str]:
    return [t["trial_id"] for t in body["trials"] if t["kind"] == "main"]


def _practice(body: dict) -> list[str]:
    return [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]


BAD_RESPONSES = [
    {"choice": "c"},
    {"choice": "A"},
    {"choice": ""},
    {"choice": None},
    {"confidence": 0},
    {"confidence": 4},
    {"confidence": -1},
    {"confidence": "2"},
    {"confidence": 2.5},
    {"confidence": True},
    {"rt_ms": -5},
    {"rt_ms": 0},
    {"rt_ms": 3_600_001},
    {"rt_ms": 10**30},
    {"rt_ms": "900"},
    {"rt_ms": 1e308},
    {"attempt": 0},
    {"attempt": 2},  # main trials have one attempt
    {"left_option": "c"},
    {"shown_at": 5},
    {"answered_at": 10**20},
    {"trial_id": ""},
    {"trial_id": "x" * 65},
    {"trial_id": "t0001\x00"},
    {"trial_id": "../../etc/passwd"},
    {"trial_id": 7},
    {"extra_field": 1},
]


def test_bad_response_bodies_are_4xx_and_store_nothing(client, answers):
    body = start(client)
    token, tid = body["participant_token"], _mains(body)[0]
    # main answers are taken only after the practice is passed (the server enforces the flow)
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    for p in practice:
        assert answer(client, token, p, answers[p]).status_code == 200
    for bad in BAD_RESPONSES:
        payload = {"trial_id": tid, "choice": answers[tid], "confidence": 2, "rt_ms": 900} | bad
        r = client.post(f"/api/v1/participants/{token}/responses", json=payload)
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
    for field in ("trial_id", "choice", "confidence", "rt_ms"):
        payload = {"trial_id": tid, "choice": "a", "confidence": 2, "rt_ms": 900}
        del payload[field]
        assert (
            client.post(f"/api/v1/participants/{token}/responses", json=payload).status_code == 422
        )
    assert count_rows(client) == (1, len(practice))
    # a good answer still works afterwards
    assert answer(client, token, tid, answers[tid], shown_at=NOW_MS).status_code == 200
    assert count_rows(client) == (1, len(practice) + 1)


def test_malformed_json_wrong_type_and_csrf_shapes(client):
    token = start(client)["participant_token"]
    url = f"/api/v1/participants/{token}/responses"
    json_type = {"content-type": "application/json"}
    for raw in [b"{", b"", b"null", b"[]", b'"a"', b'{"trial_id": NaN}', b"\xff\xfe", b"1e999"]:
        r = client.post(url, content=raw, headers=json_type)
        assert r.status_code in (400, 422), (raw, r.status_code)
    # A cross-site form cannot send JSON: text/plain or form bodies are refused.
    good = b'{"trial_id": "t0003", "choice": "a", "confidence": 2, "rt_ms": 900}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = client.post(url, content=good, headers={"content-type": ctype})
        assert r.status_code in (415, 422), (ctype, r.status_code)
    r = client.post(f"/api/v1/participants/{token}/instructions",
                    content=b'{"instruction_time_s": Infinity}', headers=json_type)  # fmt: skip
    assert r.status_code == 422
    assert count_rows(client) == (1, 0)


def test_oversized_bodies_are_413(client):
    token = start(client)["participant_token"]
    huge = {"feedback": "x" * 200_000}
    r = client.post(f"/api/v1/participants/{token}/finish", json=huge)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer
        for _ in range(100):
            yield b"x" * 1024

    r = client.post("/api/v1/participants", content=chunks(),
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413
    r = client.post("/api/v1/participants", content=b"{}",
                    headers={"content-type": "application/json", "content-length": "abc"})  # fmt: skip
    assert r.status_code in (400, 413)
    # a chunked body under the limit still reaches the endpoint
    small = iter([b'{"platform": "local", ', b'"external_id": "chunky"}'])
    r = client.post(
        "/api/v1/participants", content=small, headers={"content-type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert count_rows(client) == (2, 0)


def test_bad_bodies_of_other_endpoints(client):
    for bad in [
        {"platform": "facebook", "external_id": "x"},
        {"platform": "local", "external_id": ""},
        {"platform": "local", "external_id": "a b"},
        {"platform": "local", "external_id": "x" * 129},
        {"platform": "local", "external_id": "nul\x00"},
        {"platform": "local", "external_id": 5},
        {"platform": "mturk", "external_id": "W1", "assignment_id": "A1",
         "turk_submit_to": "https://evil.example.com"},
    ]:  # fmt: skip
        assert client.post("/api/v1/participants", json=bad).status_code in (400, 422), bad
    token = start(client)["participant_token"]
    base = f"/api/v1/participants/{token}"
    for bad in [{"consent": "yes"}, {"consent": 1}, {}, {"consent": None}]:
        assert client.post(f"{base}/consent", json=bad).status_code == 422, bad
    for bad in [
        {"instruction_time_s": -1},
        {"instruction_time_s": 86_401},
        {"instruction_time_s": "10"},
        {"instruction_time_s": 3, "window_width": -5},
        {"instruction_time_s": 3, "window_width": 10**9},
        {"instruction_time_s": 3, "user_agent": "u" * 513},
        {"instruction_time_s": 3, "user_agent": "bad\x00agent"},
    ]:
        assert client.post(f"{base}/instructions", json=bad).status_code == 422, bad
    for bad in [{"feedback": "f" * 5001}, {"feedback": 3}, {"feedback": "nul\x00"}, {"x": 1}]:
        assert client.post(f"{base}/finish", json=bad).status_code == 422, bad
    assert count_rows(client) == (1, 0)


@pytest.mark.parametrize(
    "token", ["bad-token", "A" * 2000, "abc%00def" * 4, "%2e%2e%2f" * 6, "é" * 20]
)
def test_unknown_or_malformed_tokens_are_404(client, token):
    start(client)
    for path, body in [("responses", {"trial_id": "t0001", "choice": "o" + "0" * 15, "confidence": 1,
                                      "rt_ms": 5}), ("consent", {"consent": True}),
                       ("finish", {})]:  # fmt: skip
        r = client.post(f"/api/v1/participants/{token}/{path}", json=body)
        assert r.status_code == 404, (token[:10], path, r.status_code)
    assert client.get(f"/api/v1/participants/{token}").status_code == 404


def test_foreign_and_unknown_trials_replays_and_answers_after_finishing(client, answers):
    me, other = start(client, "ME"), start(client, "OTHER")
    token = me["participant_token"]
    mine = set(_mains(me)) | set(_practice(me))
    foreign = next(t for t in answers if t not in mine)
    assert answer(client, token, foreign).status_code == 404
    assert answer(client, token, "t9999").status_code == 404
    # practice, then every main trial; each POST is sent twice (a retry) and once changed
    for tid in _practice(me):
        assert answer(client, token, tid, answers[tid], attempt=1).status_code == 200
    for tid in _mains(me):
        first = answer(client, token, tid, answers[tid])
        again = answer(client, token, tid, answers[tid])
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        flipped = "a" if answers[tid] == "b" else "b"
        assert answer(client, token, tid, flipped).status_code == 409
    n_rows = len(_practice(me)) + len(_mains(me))
    assert count_rows(client) == (2, n_rows)
    assert client.post(f"/api/v1/participants/{token}/finish", json={}).status_code == 200
    tid = _mains(me)[0]
    assert answer(client, token, tid, answers[tid]).status_code == 409  # after finishing
    assert answer(client, token, _practice(me)[0], attempt=2).status_code == 409
    assert (
        client.post(f"/api/v1/participants/{token}/consent", json={"consent": False}).status_code
        == 409
    )
    assert client.post(f"/api/v1/participants/{token}/instructions",
                       json={"instruction_time_s": 1}).status_code == 409  # fmt: skip
    again = client.post("/api/v1/participants", json={"platform": "local", "external_id": "ME"})
    assert again.status_code == 409
    # the other participant's token cannot answer my trials (unless they are also its trials)
    theirs = set(_mains(other)) | set(_practice(other))
    only_mine = next(t for t in mine if t not in theirs)
    assert answer(client, other["participant_token"], only_mine).status_code == 404
    assert count_rows(client) == (2, n_rows)


def test_answers_before_consent_or_after_declining(client):
    body = start(client, consent=False)
    token = body["participant_token"]
    assert answer(client, token, _mains(body)[0]).status_code == 409
    assert (
        client.post(f"/api/v1/participants/{token}/consent", json={"consent": False}).status_code
        == 200
    )
    assert answer(client, token, _mains(body)[0]).status_code == 409
    assert (
        client.post(f"/api/v1/participants/{token}/consent", json={"consent": True}).status_code
        == 409
    )
    assert count_rows(client) == (1, 0)
