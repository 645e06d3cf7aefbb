"""HTTP routes of the participant and admin API (the contract in docs/platforms.md)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from causalvis.server.admin import AdminToken
from causalvis.server.reads import ProgressCache, csv_chunks, parquet_chunks, render_json
from causalvis.server.schemas import (
    ConsentIn,
    FinishIn,
    InstructionsIn,
    NewParticipant,
    ResponseIn,
    ScreenedOutIn,
)
from causalvis.server.service import ApiError, Experiment
from causalvis.server.storage import Storage


def _call(fn, *args):  # type: ignore[no-untyped-def]
    """The service's answer, or its ApiError as ``{"detail", **extra}`` (e.g. a 409 with
    ``open_elsewhere: true`` for an older tab)."""
    try:
        return fn(*args)
    except ApiError as exc:
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)


def build_router(exp: Experiment, admin: AdminToken, storage: Storage | None = None,
                 *, progress_max_age_s: float = 5.0) -> APIRouter:  # fmt: skip
    router = APIRouter(prefix="/api/v1")
    progress_cache = ProgressCache(lambda: render_json(exp.progress()), progress_max_age_s)
    router.progress_cache = progress_cache  # type: ignore[attr-defined]  # (tests, benchmarks)

    def require_admin(authorization: str | None = Header(None)) -> None:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not admin.check(value.strip()):
            raise HTTPException(401, "admin token required", {"WWW-Authenticate": "Bearer"})

    # Assignment is serialised (balanced sessions); creations that wait for their turn wait
    # here on the event loop, not in worker threads, so a burst of new participants
    # cannot take every thread from the answers of those already running.
    create_turn = asyncio.Lock()

    @router.post("/participants", status_code=201)
    async def create(body: NewParticipant) -> JSONResponse:
        async with create_turn:
            try:
                status, payload = await run_in_threadpool(exp.create_participant, body)
            except ApiError as exc:  # e.g. "study full" carries where to send the participant
                return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)
        return JSONResponse(payload, status_code=status)

    @router.get("/config")
    def config() -> dict:
        """Public: the texts and settings of screens shown before a participant exists."""
        return exp.public_config()

    @router.post("/screened_out")
    def screened_out(body: ScreenedOutIn) -> dict:
        """The device check turned this visitor away: count it, free any slot, say where
        to go (rate-limited per client IP like participant creation)."""
        return _call(exp.screened_out, body)

    @router.get("/participants/{token}")
    def state(token: str) -> dict:
        return _call(exp.get_state, token)

    @router.post("/participants/{token}/consent")
    def consent(token: str, body: ConsentIn) -> dict:
        return _call(exp.set_consent, token, body)

    @router.post("/participants/{token}/instructions")
    def instructions(token: str, body: InstructionsIn) -> dict:
        return _call(exp.set_instructions, token, body)

    @router.post("/participants/{token}/responses")
    def respond(token: str, body: ResponseIn) -> dict:
        return _call(exp.record_response, token, body)

    @router.post("/participants/{token}/finish")
    def finish(token: str, body: FinishIn | None = None) -> dict:
        return _call(exp.finish, token, body or FinishIn())

    @router.get("/admin/progress", dependencies=[Depends(require_admin)])
    def progress() -> Response:
        # Cached (docs/reliability.md, *Readers apart from writers*): ``generated_at`` says
        # how old it is.
        return Response(progress_cache.get(), media_type="application/json")

    @router.get("/admin/health", dependencies=[Depends(require_admin)])
    def health() -> dict:
        """Free space, WAL size, the last write error and checkpoint (docs/reliability.md)."""
        return storage.report() if storage is not None else {}

    @router.get("/admin/responses.csv", dependencies=[Depends(require_admin)])
    def responses_csv() -> StreamingResponse:
        name = f"{exp.bundle.name}-responses.csv"
        return StreamingResponse(
            csv_chunks(exp),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @router.get("/admin/responses.parquet", dependencies=[Depends(require_admin)])
    def responses_parquet() -> StreamingResponse:
        name = f"{exp.bundle.name}-responses.parquet"
        return StreamingResponse(
            parquet_chunks(exp),
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
