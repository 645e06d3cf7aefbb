"""Prolific's REST API (https://api.prolific.com/api/v1/) on httpx.

The study body is built by :func:`study_body` (pure, so ``--dry-run`` prints exactly what
would be sent); :class:`ProlificClient` sends it with the token from ``PROLIFIC_TOKEN``
(never printed, never written), retries 429 (after ``Retry-After``) and 5xx with backoff,
and turns every other failure into one :class:`CausalvisError` line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.recruit.plan import RecruitPlan

API = "https://api.prolific.com/api/v1"
TOKEN_ENV = "PROLIFIC_TOKEN"
PLACEHOLDERS = ("PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
                "&SESSION_ID={{%SESSION_ID%}}")  # fmt: skip
# Prolific's rejection category for a failed pre-registered check.
REJECTION_CATEGORY = "FAILED_CHECK"
RETURN_REASON = "Did not give consent"


def completion_codes(cfg: StudyConfig) -> list[dict[str, Any]]:
    """The codes the server redirects with (``[server] prolific_*_code``), one per kind.

    Passed → manual review (``recruit review`` approves); failed checks → manual review
    (rejected with the failed rule); no consent → ask for a return; screened out (device
    check or study full) → ask for a return."""
    s = cfg.server
    if not s.prolific_completion_code:
        raise CausalvisError("[server] prolific_completion_code is empty in study.toml: "
                             "set the codes the server redirects with first")
    codes = [("COMPLETED", s.prolific_completion_code, "MANUALLY_REVIEW")]
    if s.prolific_failed_checks_code and s.prolific_failed_checks_code != s.prolific_completion_code:
        codes.append(("FAILED_ATTENTION_CHECK", s.prolific_failed_checks_code, "MANUALLY_REVIEW"))
    if s.prolific_no_consent_code:
        codes.append(("NO_CONSENT", s.prolific_no_consent_code, "REQUEST_RETURN"))
    screened = s.prolific_screened_out_code or s.prolific_full_code
    if screened:
        codes.append(("SCREENED_OUT", screened, "REQUEST_RETURN"))
    seen: set[str] = set()
    for _, code, _ in codes:
        if code in seen:
            raise CausalvisError(f"[server] completion code {code!r} is used for two outcomes: "
                                 "Prolific needs each code unique")
        seen.add(code)
    return [{"code": code, "code_type": kind, "actor": "participant",
             "actions": [{"action": action}]} for kind, code, action in codes]  # fmt: skip


def study_url(public_url: str) -> str:
    """The experiment's address with Prolific's placeholders (the server's parameters)."""
    if not public_url.startswith("https://"):
        raise CausalvisError(f"--public-url {public_url!r}: Prolific needs an https:// address")
    return f"{public_url.rstrip('/')}/?{PLACEHOLDERS}"


def study_body(cfg: StudyConfig, plan: RecruitPlan, public_url: str, *,
               previous_studies: Sequence[str] = (), description: str = "") -> dict[str, Any]:
    """The draft study for ``POST /studies/``: desktop only, earlier runs blocked."""
    body: dict[str, Any] = {
        "name": cfg.texts.title,
        "internal_name": f"causalvis:{cfg.name}",
        "description": description or (
            f"{cfg.texts.title}: look at images and answer which of two is what a unit of a "
            f"neural network responds to more (about {plan.minutes} minutes, desktop only)."),
        "external_study_url": study_url(public_url),
        "prolific_id_option": "url_parameters",
        "completion_codes": completion_codes(cfg),
        "estimated_completion_time": plan.minutes,
        "maximum_allowed_time": max(plan.minutes * 3, plan.minutes + 30),
        "reward": plan.reward,
        "currency": plan.currency,
        "total_available_places": plan.places,
        "device_compatibility": ["desktop"],
    }
    if previous_studies:
        body["filters"] = [{"filter_id": "previous_studies",
                            "selected_values": list(previous_studies)}]  # fmt: skip
    return body


def bonus_csv(rows: Sequence[tuple[str, int]]) -> str:
    """``<participant_id>,<amount>`` lines, amounts in major units (Prolific's format)."""
    return "".join(f"{pid},{amount / 100:.2f}\n" for pid, amount in rows)


class ProlificClient:
    """One method per endpoint used; ``dry_run`` prints each request and sends nothing."""

    def __init__(self, token: str | None = None, *, base_url: str = API, dry_run: bool = False,
                 echo: Callable[[str], None] = print, retries: int = 4,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = 30.0) -> None:
        self.dry_run, self.echo, self.retries, self.sleep = dry_run, echo, retries, sleep
        self.base_url = base_url.rstrip("/")
        token = token or os.environ.get(TOKEN_ENV, "")
        if not token and not dry_run:
            raise CausalvisError(f"no Prolific API token: set {TOKEN_ENV} in the environment "
                                 "(Prolific → Settings → API tokens)")
        self._http = None if dry_run else httpx.Client(
            base_url=self.base_url, timeout=timeout,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
        self.sent: list[tuple[str, str]] = []  # (method, path) of every request made

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None, *, dry_result: Any = None,
                retry_5xx: bool = True) -> Any:
        """Send one request; 429 is always retried (nothing was done), a 5xx or a lost
        connection only where ``retry_5xx`` (a non-idempotent call may have happened)."""
        shown = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        if self.dry_run:
            payload = "" if body is None else " " + json.dumps(body, indent=2, sort_keys=True)
            self.echo(f"{method} {self.base_url}{shown}{payload}")
            return {} if dry_result is None else dry_result
        assert self._http is not None
        self.sent.append((method, path))
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, json=body, params=params)
            except httpx.HTTPError as exc:
                if attempt == self.retries or not retry_5xx:
                    raise CausalvisError(f"Prolific {method} {path}: {exc}") from exc
                self.sleep(2.0 ** attempt)
                continue
            if resp.status_code == 429 or (resp.status_code >= 500 and retry_5xx):
                if attempt == self.retries:
                    break
                self.sleep(_retry_after(resp, 2.0 ** attempt))
                continue
            return _result(method, path, resp)
        raise CausalvisError(f"Prolific {method} {path}: HTTP {resp.status_code} after "
                             f"{self.retries + 1} tries ({_detail(resp)}); run again later")

    # -- studies --------------------------------------------------------------------------
    def create_study(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/studies/", body,
                            dry_result={"id": "DRY-RUN-STUDY", "status": "UNPUBLISHED"})

    def publish(self, study_id: str) -> dict[str, Any]:
        return self.request("POST", f"/studies/{study_id}/transition/", {"action": "PUBLISH"})

    def stop(self, study_id: str) -> dict[str, Any]:
        return self.request("POST", f"/studies/{study_id}/transition/", {"action": "STOP"})

    def get_study(self, study_id: str) -> dict[str, Any]:
        return self.request("GET", f"/studies/{study_id}/")

    def set_places(self, study_id: str, places: int) -> dict[str, Any]:
        return self.request("PATCH", f"/studies/{study_id}/", {"total_available_places": places})

    # -- submissions ----------------------------------------------------------------------
    def submissions(self, study_id: str) -> list[dict[str, Any]]:
        out = self.request("GET", f"/studies/{study_id}/submissions/", dry_result={"results": []})
        return list(out.get("results", []))

    def approve(self, submission_id: str) -> dict[str, Any]:
        return self.request("POST", f"/submissions/{submission_id}/transition/",
                            {"action": "APPROVE"})

    def reject(self, submission_id: str, message: str) -> dict[str, Any]:
        return self.request("POST", f"/submissions/{submission_id}/transition/",
                            {"action": "REJECT", "message": message,
                             "rejection_category": REJECTION_CATEGORY})  # fmt: skip

    def request_return(self, submission_id: str, reasons: Sequence[str]) -> dict[str, Any]:
        return self.request("POST", f"/submissions/{submission_id}/request-return/",
                            {"request_return_reasons": list(reasons)})

    # -- bonuses (set up, then pay: the pay call is NOT idempotent) -----------------------
    def setup_bonus(self, study_id: str, rows: Sequence[tuple[str, int]]) -> dict[str, Any]:
        return self.request("POST", "/submissions/bonus-payments/",
                            {"study_id": study_id, "csv_bonuses": bonus_csv(rows)},
                            dry_result={"id": "DRY-RUN-BONUS"})  # fmt: skip

    def pay_bonus(self, bonus_id: str) -> dict[str, Any]:
        return self.request("POST", f"/bulk-bonus-payments/{bonus_id}/pay/", retry_5xx=False)


def _retry_after(resp: httpx.Response, default: float) -> float:
    try:
        return min(float(resp.headers.get("Retry-After", default)), 120.0)
    except ValueError:
        return default


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200].strip() or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("detail") or err.get("title") or err)[:300]
        return str(err)[:300]
    return str(data)[:300]


def _result(method: str, path: str, resp: httpx.Response) -> Any:
    if resp.status_code in (401, 403):
        raise CausalvisError(f"Prolific refused the API token (HTTP {resp.status_code}): check "
                             f"{TOKEN_ENV} (a valid, unexpired token of this workspace)")
    if resp.status_code >= 400:
        raise CausalvisError(f"Prolific {method} {path}: HTTP {resp.status_code} "
                             f"({_detail(resp)})")
    if not resp.content:
        return {}
    try:
        return resp.json()
    except ValueError as exc:
        raise CausalvisError(f"Prolific {method} {path}: the answer is not JSON") from exc
