"""Access control: admin token, participant tokens, hidden ground truth, served files,
CORS, rate limit and security headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

from reliability_helpers import answer, make_client, start
from server_bundle_factory import ADMIN

from causalvis.server.guards import Rate, RateLimiter

ADMIN_PATHS = ["/api/v1/admin/progress", "/api/v1/admin/responses.csv",
               "/api/v1/admin/responses.parquet"]  # fmt: skip


def test_admin_api_requires_the_token_compared_in_constant_time(client, monkeypatch):
    wrong = [None, "", "Bearer", "Bearer ", f"Basic {ADMIN}", f"Bearer {ADMIN}x",
             f"Bearer {ADMIN[:-1]}", "Bearer " + "é" * 10, f"bearer{ADMIN}"]  # fmt: skip
    for path in ADMIN_PATHS:
        for value in wrong:
            headers = {} if value is None else {"Authorization": value.encode("utf-8")}
            r = client.get(path, headers=headers)
            assert r.status_code == 401, (path, value)
            assert r.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    client.get(ADMIN_PATHS[0], headers={"Authorization": "Bearer guess"})
    assert calls, "the admin token must be checked with hmac.compare_digest"
    # the dashboard page itself holds no data: everything comes from the token-gated API
    from causalvis.server import app as app_module

    static_page = (app_module.HERE / "static" / "admin.html").read_bytes()
    assert client.get("/admin").content == static_page


def test_participant_tokens_are_unguessable_and_scoped(client, answers):
    tokens = [start(client, f"P{i}", consent=False)["participant_token"] for i in range(12)]
    assert len(set(tokens)) == len(tokens)
    for t in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", t)  # >= 32 url-safe chars = 192 bits
        assert len(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))) * 8 >= 128
    # a token shows only its own participant's state; one character off is unknown
    a, b = tokens[0], tokens[1]
    sa, sb = (
        client.get(f"/api/v1/participants/{a}").json(),
        client.get(f"/api/v1/participants/{b}").json(),
    )
    assert set(sa) == set(sb) and "participant_token" not in sa
    flipped = a[:-1] + ("A" if a[-1] != "A" else "B")
    assert client.get(f"/api/v1/participants/{flipped}").status_code == 404


def _walk(obj, path=""):  # type: ignore[no-untyped-def]
    if isinstance(obj, dict):
        yield path, obj
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def test_ground_truth_of_main_and_catch_trials_is_never_sent(client, answers, study):
    bodies: list[dict] = []

    def keep(r):  # type: ignore[no-untyped-def]
        assert r.status_code in (200, 201), r.text
        bodies.append(r.json())
        return r.json()

    welcome = keep(client.post("/api/v1/participants", json={"platform": "prolific",
                                                              "external_id": "PRO1"}))  # fmt: skip
    token = welcome["participant_token"]
    base = f"/api/v1/participants/{token}"
    keep(client.post(f"{base}/consent", json={"consent": True}))
    keep(client.post(f"{base}/instructions", json={"instruction_time_s": 30}))
    practice = [t["trial_id"] for t in welcome["trials"] if t["kind"] == "practice"]
    scored = [t["trial_id"] for t in welcome["trials"] if t["kind"] != "practice"]
    for tid in practice:
        keep(answer(client, token, tid, answers[tid]))
    for tid in scored:
        keep(client.get(base))
        keep(answer(client, token, tid, answers[tid]))
    keep(client.get(base))
    keep(client.post(f"{base}/finish", json={}))
    csv_truth = (study / "trials.csv").read_text()
    kinds = {line.split(",")[0]: line for line in csv_truth.splitlines()[1:]}
    assert any(",catch," in kinds[t] for t in scored), "the session must contain a catch trial"
    for body in bodies:
        for where, node in _walk(body):
            if node.get("trial_id") in scored:
                assert "correct" not in node, where
                assert node.get("kind", "main") == "main", where  # catch trials look like main
                assert not ({"correct", "act_a", "act_b", "box_a", "rel_diff"} & set(node)), where
        text = json.dumps(body)
        assert "catch" not in text and "trials.csv" not in text
    for r_body in bodies[3 + len(practice) :]:  # acks of scored trials carry no correctness
        assert "correct" not in r_body
    example = welcome["example"]
    assert example["trial_id"] not in scored


def test_only_bundle_assets_are_served(client, study):
    asset = next((study / "bundle" / "assets").iterdir()).name
    assert client.get(f"/assets/{asset}").status_code == 200
    secrets = ["trials.csv", "study.toml", "responses.sqlite", ".admin-token.sha256",
               "bundle/sessions.json"]  # fmt: skip
    attempts = []
    for s in secrets:
        attempts += [f"/assets/../../{s}", f"/assets/..%2f..%2f{s}", f"/assets/%2e%2e/%2e%2e/{s}",
                     f"/assets/%252e%252e%252f%252e%252e%252f{s}", f"/assets/..\\..\\{s}",
                     f"/assets/....//....//{s}", f"/static/../../{s}", f"/assets/%2e%2e%5c{s}",
                     f"/{s}", f"/assets/{s}", f"/static/..%2f..%2f..%2f{s}"]  # fmt: skip
    attempts += ["/assets/", "/assets/.", "/assets/%00", "/assets//etc/passwd",
                 "/assets/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e%2fapi.js"]  # fmt: skip
    private = [(study / "trials.csv").read_bytes()[:200], b"root:x:0:0"]
    for path in attempts:
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert not any(p in r.content for p in private), path


def test_cors_closed_by_default(client):
    origin = {"Origin": "https://evil.example.com"}
    pre = client.options(
        "/api/v1/participants",
        headers=origin
        | {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code >= 400
    r = client.get("/healthz", headers=origin)
    r2 = client.post("/api/v1/participants", headers=origin,
                     json={"platform": "local", "external_id": "X1"})  # fmt: skip
    for resp in (pre, r, r2):
        assert not any(h.lower().startswith("access-control-") for h in resp.headers)


def test_participant_creation_is_rate_limited_per_ip(study):
    with make_client(study, rate=Rate(3, 60)) as c:
        codes = [c.post("/api/v1/participants", json={"platform": "local",
                                                      "external_id": f"R{i}"}).status_code
                 for i in range(5)]  # fmt: skip
        assert codes == [201, 201, 201, 429, 429]
        r = c.post("/api/v1/participants", json={"platform": "local", "external_id": "R9"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "too many" in r.json()["detail"]
        # a spoofed X-Forwarded-For does not reset the limit (not trusted by default)
        r = c.post("/api/v1/participants", headers={"X-Forwarded-For": "10.9.8.7"},
                   json={"platform": "local", "external_id": "R10"})  # fmt: skip
        assert r.status_code == 429
        # other endpoints are not limited
        assert c.get("/healthz").status_code == 200
    limiter = RateLimiter(Rate(2, 10))
    assert [limiter.allow("ip", now=t) for t in (0, 0, 0, 4.9, 5.1, 5.2)] == [
        True, True, False, False, True, False]  # fmt: skip
    assert limiter.allow("other-ip", now=5.2)


def test_security_headers(client):
    pages = {"/": None, "/?platform=mturk&assignmentId=A1": "mturk", "/admin": "admin",
             "/api/v1/admin/progress": None, "/healthz": None, "/assets/nope.png": None}  # fmt: skip
    for path, mode in pages.items():
        h = client.get(path).headers
        assert h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "no-referrer", path
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "object-src 'none'" in csp, path
        assert "'unsafe-eval'" not in csp and "script-src 'self'" in csp, path
        if mode == "mturk":  # MTurk shows the page in an iframe on mturk.com
            assert (
                "frame-ancestors 'self' https://www.mturk.com https://workersandbox.mturk.com"
                in csp
            )
            assert "x-frame-options" not in h
        else:
            assert "frame-ancestors 'none'" in csp and h["x-frame-options"] == "DENY", path
    admin_page = client.get("/admin")
    scripts = re.findall(r"<script>(.*?)</script>", admin_page.text, flags=re.S)
    assert scripts
    for block in scripts:  # the dashboard's inline script is allowed by hash, nothing else
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in admin_page.headers["content-security-policy"]
    assert "unsafe-inline" not in admin_page.headers["content-security-policy"].split(
        "script-src")[1].split(";")[0]  # fmt: skip
    assert client.get("/api/v1/admin/progress").headers["cache-control"] == "no-store"
