"""Request guards of the experiment server: body size cap (413) and read timeout (408),
participant-creation
(and screened-out) rate limit per client IP (429), and security headers (CSP, nosniff, framing, referrer).

Pure ASGI middleware (no ``BaseHTTPMiddleware``) so that the hot path pays one function
call per request, and a body that is too large is refused before it is read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from causalvis.errors import CausalvisError

MAX_BODY_BYTES = 64 * 1024  # the largest legitimate body (feedback text) is ~20 kB
RATE_ENV = "CAUSALVIS_CREATE_RATE"  # "N/SECONDS" new participants per client IP; "0" = off
DEFAULT_RATE = "30/60"
MTURK_ORIGINS = "https://www.mturk.com https://workersandbox.mturk.com"
CREATE_PATH = "/api/v1/participants"
SCREENED_PATH = "/api/v1/screened_out"  # a counter row each: limited like creation

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Rate:
    """At most ``count`` requests per ``seconds`` per key (token bucket); count 0 = off."""

    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str | None, where: str = RATE_ENV) -> Rate:
        text = (text or DEFAULT_RATE).strip()
        if text in ("0", "off", "none"):
            return cls(0, 1.0)
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)", text)
        if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
            raise CausalvisError(f"{where}={text!r}: expected N/SECONDS (e.g. 30/60) or 0 (off)")
        return cls(int(m.group(1)), float(m.group(2)))

    @classmethod
    def from_env(cls) -> Rate:
        return cls.parse(os.environ.get(RATE_ENV))


class RateLimiter:
    """Token buckets per client IP, bounded in memory (least recently seen IPs dropped)."""

    def __init__(self, rate: Rate, max_keys: int = 65_536) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        if self.rate.count == 0:
            return True
        now = time.monotonic() if now is None else now
        per_s = self.rate.count / self.rate.seconds
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.rate.count), now))
            tokens = min(float(self.rate.count), tokens + (now - last) * per_s)
            ok = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return ok


def csp(script_hashes: tuple[str, ...] = (), *, mturk: bool = False) -> str:
    """The Content-Security-Policy: same-origin only; framing only by MTurk in MTurk mode.

    ``style-src 'unsafe-inline'`` is needed because jsPsych writes style attributes.
    """
    scripts = " ".join(["'self'", *(f"'sha256-{h}'" for h in script_hashes)])
    ancestors = f"'self' {MTURK_ORIGINS}" if mturk else "'none'"
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        f"base-uri 'none'; form-action 'self' {MTURK_ORIGINS}; frame-ancestors {ancestors}"
    )


def inline_script_hashes(html: str) -> tuple[str, ...]:
    """CSP hashes of the inline ``<script>`` blocks of a page we serve ourselves."""
    blocks = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    return tuple(base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)


async def _send_json(send: Send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


class Guards:
    """ASGI middleware: 413 for large bodies, 429 for creation floods, security headers."""

    def __init__(self, app: ASGIApp, *, rate: Rate, admin_script_hashes: tuple[str, ...] = (),
                 max_body: int = MAX_BODY_BYTES, body_timeout_s: float = 10.0) -> None:  # fmt: skip
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.max_body = max_body
        self.limiter = RateLimiter(rate)
        self.screen_limiter = RateLimiter(rate)
        self._csp = csp().encode()
        self._csp_mturk = csp(mturk=True).encode()
        self._csp_admin = csp(admin_script_hashes).encode()

    @staticmethod
    def _client_ip(scope: Scope) -> str:
        # Behind a reverse proxy on this host uvicorn already puts X-Forwarded-For here
        # (--forwarded-allow-ips, default 127.0.0.1); a client cannot spoof it directly.
        client = scope.get("client")
        return client[0] if client else "unknown"

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope.get("path", "")
        query: bytes = scope.get("query_string", b"")
        mturk = path == "/" and re.search(rb"(^|&)platform=mturk(&|$)", query) is not None
        policy = self._csp_mturk if mturk else self._csp_admin if path == "/admin" else self._csp
        out = [
            (b"content-security-policy", policy),
            (b"x-content-type-options", b"nosniff"),
            # Participant ids travel in the URL: never leak them to other sites.
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if not mturk:  # X-Frame-Options cannot name MTurk; CSP frame-ancestors does
            out.append((b"x-frame-options", b"DENY"))
        if path.startswith("/api/"):
            out.append((b"cache-control", b"no-store"))
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers(scope)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", ())}
                message["headers"] = list(message.get("headers", ())) + [
                    (k, v) for k, v in extra if k not in names
                ]
            await send(message)

        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                await _send_json(send_with_headers, 413,
                                 f"request body larger than {self.max_body} bytes")  # fmt: skip
                return
        limiter = {CREATE_PATH: self.limiter, SCREENED_PATH: self.screen_limiter}.get(
            scope["path"].rstrip("/")) if scope["method"] == "POST" else None  # fmt: skip
        if limiter is not None and not limiter.allow(self._client_ip(scope)):
            retry = str(max(1, round(limiter.rate.seconds / limiter.rate.count)))
            await _send_json(send_with_headers, 429, "too many new participants from this "
                             "address; try again shortly", [(b"retry-after", retry.encode())])  # fmt: skip
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            # Read the body (bounded in size and time: chunked uploads have no length, a
            # slow client may trickle it) before the app sees it.
            chunks: list[bytes] = []
            size, more = 0, True
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    while more:
                        message = await receive()
                        if message["type"] != "http.request":
                            return
                        chunks.append(message.get("body", b""))
                        size += len(chunks[-1])
                        more = message.get("more_body", False)
                        if size > self.max_body:
                            await _send_json(send_with_headers, 413,
                                             f"request body larger than {self.max_body} bytes")  # fmt: skip
                            return
            except TimeoutError:
                await _send_json(send_with_headers, 408, "request body too slow",
                                 [(b"connection", b"close")])  # fmt: skip
                return
            body, replayed = b"".join(chunks), False

            async def replay() -> dict:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
