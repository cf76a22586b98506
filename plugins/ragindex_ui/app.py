"""The FastAPI app the plugin mounts at ``/ragindex``: server-rendered pages of the registry's versions.

Routes (relative to the mount point):

- ``/``                    every artifact's versions: digests, aliases (``production`` highlighted), key
                           metadata and eval figures;
- ``/lineage/{ref}``       one version: its details and lineage (raw → chunks → index → report) as an SVG
                           graph and a nested list;
- ``/api/versions``        the same listing as JSON; ``/api/lineage/{ref}`` the lineage as JSON.

Every route accepts ``?registry=URI`` (default: ``RAGINDEX_REGISTRY``, else the local registry). Pages are
only served to users Airflow has authenticated (the UI's JWT cookie or an ``Authorization: Bearer`` header),
unless the app is built with ``require_auth=False`` (tests) or ``RAGINDEX_UI_AUTH=0``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

TEMPLATES = Path(__file__).with_name("templates")


async def require_airflow_user(request: Request) -> None:
    """Let through only requests Airflow's auth manager recognises (cookie set by the UI, or bearer token)."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    request.state.ragindex_user = await resolve_user_from_token(token)


@lru_cache(maxsize=1)
def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "svg"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env().get_template(name).render(**context), status_code=status_code)


def _urls(request: Request, registry: str | None) -> dict[str, Any]:
    """Absolute-path links under wherever the app is mounted (``root_path``), keeping ``?registry=``."""
    prefix = (request.scope.get("root_path") or "").rstrip("/")
    query = f"?{urlencode({'registry': registry})}" if registry else ""

    def lineage(ref: str) -> str:
        return f"{prefix}/lineage/{quote(ref, safe='')}{query}"

    return {"home": f"{prefix}/{query}", "lineage": lineage, "query": query}


def _registry_or_error(request: Request, registry: str | None) -> Any:
    from ragindex_ui.views import RegistryUnavailable, open_checked

    try:
        return open_checked(registry)
    except RegistryUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc


def create_app(*, require_auth: bool | None = None) -> FastAPI:
    """Build the app; ``require_auth`` defaults to on (``RAGINDEX_UI_AUTH=0`` turns it off)."""
    if require_auth is None:
        require_auth = os.environ.get("RAGINDEX_UI_AUTH", "1").strip().lower() not in ("0", "false", "no", "off")
    app = FastAPI(title="ragindex index versions", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(require_airflow_user)] if require_auth else [])

    @app.exception_handler(HTTPException)
    async def html_errors(request: Request, exc: HTTPException) -> Any:
        if "/api/" in request.url.path:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return _render("error.html", exc.status_code, status=exc.status_code, detail=str(exc.detail),
                       urls=_urls(request, request.query_params.get("registry")))

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, registry: str | None = None) -> HTMLResponse:
        from ragindex_ui.views import listing

        reg = _registry_or_error(request, registry)
        return _render("index.html", data=listing(reg), urls=_urls(request, registry))

    @app.get("/lineage/{ref:path}", response_class=HTMLResponse)
    def lineage(request: Request, ref: str, registry: str | None = None) -> HTMLResponse:
        from ragindex.registry import ArtifactNotFound, RegistryError
        from ragindex_ui.views import lineage_view

        reg = _registry_or_error(request, registry)
        try:
            data = lineage_view(reg, ref)
        except ArtifactNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except RegistryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return _render("lineage.html", data=data, urls=_urls(request, registry))

    @app.get("/api/versions")
    def api_versions(request: Request, registry: str | None = None) -> dict[str, Any]:
        from ragindex_ui.views import listing

        return listing(_registry_or_error(request, registry))

    @app.get("/api/lineage/{ref:path}")
    def api_lineage(request: Request, ref: str, registry: str | None = None) -> dict[str, Any]:
        from ragindex.registry import ArtifactNotFound, RegistryError

        reg = _registry_or_error(request, registry)
        try:
            return reg.lineage(ref)
        except ArtifactNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except RegistryError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    return app
