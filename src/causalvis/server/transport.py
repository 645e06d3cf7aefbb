"""Transport limits of ``causalvis serve``: a header read timeout, the uvicorn settings.

uvicorn closes idle keep-alive connections but has no timeout for a request whose headers
arrive slowly: a slowloris client that sends a byte every few seconds holds its
connection (and a place under the connection cap) for ever. :class:`TimedH11Protocol`
closes a connection whose request line and headers are not complete ``header_timeout_s``
after it opened or after the first byte of its next request. Body read timeouts are in
``guards.Guards`` (408). uvicorn imports the protocol by name (also in worker processes),
so the timeout travels in an environment variable.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_ENV = "CAUSALVIS_HEADER_TIMEOUT_S"
PROTOCOL = "causalvis.server.transport:TimedH11Protocol"
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
              b"content-length: 24\r\nconnection: close\r\n\r\nrequest headers too slow")  # fmt: skip


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = float(os.environ.get(HEADER_TIMEOUT_ENV, "10"))
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self._waiting_for_headers():
            self.transport.write(_TIMED_OUT)
            self.transport.close()

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_headers():
            self._arm()  # the first byte of a request starts its header clock
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm()  # headers complete: the request runs (body: Guards' timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(server_cfg: Any) -> dict[str, Any]:
    """The uvicorn settings of ``[server]`` (also sets the header timeout's variable)."""
    os.environ[HEADER_TIMEOUT_ENV] = str(server_cfg.header_timeout_s)
    return {
        "http": PROTOCOL,
        "server_header": False,  # no "server: uvicorn" banner
        "date_header": True,
        "timeout_keep_alive": server_cfg.keep_alive_s,
        "limit_concurrency": server_cfg.max_connections,
        "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers
    }
