"""App factory: the API, the study's public assets, the built front end, the dashboard.

Only ``bundle/assets/`` and the front end are reachable as files; ``trials.csv``,
``sessions.json`` and everything else in the study folder are never served.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from causalvis import __version__
from causalvis.errors import CausalvisError
from causalvis.responses.db import default_url, open_database, open_reader
from causalvis.server.admin import AdminToken, resolve_admin_token
from causalvis.server.api import build_router
from causalvis.server.bundle import load_bundle
from causalvis.server.guards import Guards, Rate, inline_script_hashes
from causalvis.server.service import Experiment
from causalvis.server.storage import Storage

HERE = Path(__file__).resolve().parent
SWITCH_INTERVAL_S = 0.001
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>causalvis</title>
<p>The web front end is not built. Run <code>make setup</code> (or
<code>npm install &amp;&amp; npm run build</code> in <code>web/</code>) and restart.</p>"""


def find_web_dist() -> Path | None:
    """The built front end: $CAUSALVIS_WEB_DIST, the repo's web/dist, or a packaged copy."""
    candidates = []
    if os.environ.get("CAUSALVIS_WEB_DIST"):
        candidates.append(Path(os.environ["CAUSALVIS_WEB_DIST"]))
    candidates += [HERE.parents[2] / "web" / "dist", HERE / "web_dist"]
    for path in candidates:
        if (path / "index.html").is_file():
            return path
    return None


class AssetResponse(FileResponse):
    """An asset with the same headers as every other: ``ETag`` = the content hash in its
    name, no ``Last-Modified`` (file times would tell options apart, e.g. a padded one)."""

    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        self.headers.setdefault("content-length", str(stat_result.st_size))
        self.headers.setdefault("etag", f'"{Path(str(self.path)).stem}"')


ASSET_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable"}


def _safe_file(base: Path, rel: str) -> Path:
    """``base/rel`` if it is a file inside ``base``; anything else is a 404."""
    parts = rel.split("/")
    if not rel or any(not _SAFE_NAME.match(p) for p in parts):
        raise HTTPException(404, "not found")
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise HTTPException(404, "not found")
    return path


def create_app(
    study_dir: str | Path,
    db_url: str | None = None,
    *,
    admin_token: str | None = None,
    web_dist: Path | None = None,
    create_rate: Rate | None = None,
    overassign_factor: float | None = None,
    root_path: str = "",
    server_overrides: dict | None = None,
) -> FastAPI:
    """Load the bundle, migrate the database, and wire the routes.

    ``root_path``: the path prefix a reverse proxy serves the study under (``/study1``);
    asset URLs sent to the browser carry it.

    ``create_rate`` limits new participants per client IP (default: $CAUSALVIS_CREATE_RATE
    or 30/60 s); a database that fails (full disk, read-only) answers 503 with the reason.
    ``overassign_factor`` overrides ``server.overassign_factor`` (a simulated pilot may
    exceed the plan; real participants follow the study's setting); ``server_overrides``
    other ``[server]`` fields (``serve``'s transport limits), validated like the file.
    """
    study_dir = Path(study_dir)
    bundle = load_bundle(study_dir)
    url = db_url or default_url(study_dir)
    engine, factory = open_database(url)
    admin: AdminToken = resolve_admin_token(study_dir, admin_token)
    if overassign_factor is not None and overassign_factor < 1.0:
        raise CausalvisError("overassign_factor must be >= 1.0")
    root_path = root_path.rstrip("/")
    if root_path and not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", root_path):
        raise CausalvisError(f"--root-path {root_path!r}: expected a path like /study1")
    readers = open_reader(engine, factory)
    try:
        server_cfg = bundle.config.server.model_validate(
            bundle.config.server.model_dump() | (server_overrides or {}))
    except ValueError as exc:
        raise CausalvisError(f"server limits: {exc}") from exc
    exp = Experiment(bundle=bundle, sessions=factory, secret=admin.digest,
                     asset_prefix=f"{root_path}/assets/",
                     overassign_factor=overassign_factor, readers=readers)  # fmt: skip
    storage = Storage(engine, factory, interval_s=bundle.config.server.checkpoint_interval_s)
    dist = web_dist or find_web_dist()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        storage.start()  # the periodic WAL checkpoint
        # An export or progress computation in a worker thread holds the GIL for up to
        # the switch interval at a time (5 ms by default) on each hand-over a participant's
        # request needs; 1 ms keeps participants' p99 near its idle value (reliability.md).
        previous = sys.getswitchinterval()
        sys.setswitchinterval(min(previous, SWITCH_INTERVAL_S))
        try:
            yield
        finally:
            sys.setswitchinterval(previous)
            storage.stop()
            if readers.kw.get("bind") is not engine:
                readers.kw["bind"].dispose()

    app = FastAPI(title=f"causalvis: {bundle.name}", version=__version__, docs_url=None,
                  redoc_url=None, openapi_url="/api/v1/openapi.json",
                  lifespan=lifespan, root_path=root_path)  # fmt: skip
    app.state.experiment = exp
    app.state.admin = admin
    app.state.engine = engine
    app.state.db_url = url
    app.state.root_path = root_path
    app.state.web_dist = dist
    app.state.storage = storage
    app.state.server_config = server_cfg
    router = build_router(exp, admin, storage, progress_max_age_s=server_cfg.progress_max_age_s)
    app.state.progress_cache = router.progress_cache  # type: ignore[attr-defined]
    app.include_router(router)

    admin_html = HERE / "static" / "admin.html"
    app.add_middleware(
        Guards,
        rate=create_rate or Rate.from_env(),
        admin_script_hashes=inline_script_hashes(admin_html.read_text()),
        body_timeout_s=server_cfg.body_timeout_s,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, which fails (500) on NaN/Infinity and
        # returns whatever megabytes were sent; name the field and the rule only.
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]  # fmt: skip
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def database_failed(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The session rolled back: nothing half-written. Clients retry 5xx with backoff.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        await run_in_threadpool(storage.write_failed, reason)  # remember it, free the WAL
        return JSONResponse(
            {"detail": f"database unavailable, nothing was stored; retry later ({reason})"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    assets = bundle.assets_dir

    @app.get("/assets/{name:path}", include_in_schema=False)
    def asset(name: str, request: Request) -> Response:
        path = _safe_file(assets, name)
        if request.headers.get("if-none-match", "").strip() == f'"{path.stem}"':
            return Response(status_code=304, headers={**ASSET_HEADERS, "ETag": f'"{path.stem}"'})
        return AssetResponse(path, headers=ASSET_HEADERS)

    @app.get("/", include_in_schema=False, response_model=None)
    def index() -> FileResponse | HTMLResponse:
        if dist is None:
            return HTMLResponse(NOT_BUILT, status_code=503)
        return FileResponse(dist / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if dist is None:
            raise HTTPException(404, "front end not built")
        return FileResponse(_safe_file(dist, name), headers={"Cache-Control": "no-cache"})

    @app.get("/admin", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(admin_html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict:
        # Public: no paths or reasons here (those are in /api/v1/admin/health).
        return {"ok": True, "study": bundle.name, "writable": storage.writable}

    @app.get("/readyz", include_in_schema=False)
    def ready() -> JSONResponse:
        # Liveness is /healthz; ready = the database answers now and takes writes (a
        # load balancer sends participants only to ready processes).
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"ready": False, "database": False}, status_code=503)
        ok = storage.writable
        return JSONResponse({"ready": ok, "database": True, "writable": ok},
                            status_code=200 if ok else 503)

    return app


__all__ = ["CausalvisError", "create_app", "find_web_dist"]
