"""``ragindex serve``: the inference service in front of the version behind an alias (``production`` by
default) of any registry. It loads that version on start-up and follows the alias: when a promotion or a
rollback moves it, the new version is loaded *beside* the old one, warmed up, and only then swapped in (one
assignment of ref, digest and index together). A request holds the version it started with, so none fails or
mixes versions during a switch.

How a move is heard of: every ``poll_s`` the follower asks the registry's cheap ``alias_token`` (local: about
30 us, so it polls every 0.5 s and every answer comes from the new version within 2 s of a move, a load
included; W&B: one artifact query, every 5 s, so within 5 s plus that query plus the new version's download and
load), and ``POST /refresh`` reads the alias at once: the ``rag_deploy`` DAG, scheduled on the production-index
Asset, calls it on every endpoint it is given.

    POST /search   {"question": "...", "k": 5}  →  {"ref", "digest", "alias", "hits": [...]}
    GET  /healthz                              →  {"status", "ref", "digest", "alias", "registry", ...}
    POST /refresh                              →  {"changed": bool, "ref", "digest"}

``Retriever`` stays the library form of the same thing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from ragindex.errors import RagindexError
from ragindex.names import DEFAULT_NAMES, PRODUCTION
from ragindex.retrieval import Retriever

log = logging.getLogger(__name__)

# How often the alias is checked when not told, by registry scheme: the local check is a kept SQLite
# connection's data_version; a W&B check is an artifact query (720 an hour per server at 5 s).
DEFAULT_POLL_S = {"file": 0.5, "wandb": 5.0}
FALLBACK_POLL_S = 5.0
# Tests only: seconds each load of a version sleeps, to widen the switch window a non-atomic swap would show in.
TEST_LOAD_DELAY_ENV = "RAGINDEX_SERVE_TEST_LOAD_DELAY_S"


def default_poll_s(registry_uri: str) -> float:
    """The poll interval for a registry when none is given (cheap local checks often, W&B queries less)."""
    return DEFAULT_POLL_S.get(registry_uri.split("://", 1)[0], FALLBACK_POLL_S)


def load_delay_for_tests_s() -> float:
    """The test-only load delay (0 unless the tests set it), refused when it is not a number of seconds."""
    raw = os.environ.get(TEST_LOAD_DELAY_ENV, "").strip()
    try:
        delay = float(raw) if raw else 0.0
    except ValueError:
        raise RagindexError(f"{TEST_LOAD_DELAY_ENV}={raw!r}: expected seconds (a number)") from None
    if delay < 0:
        raise RagindexError(f"{TEST_LOAD_DELAY_ENV}={raw!r}: must not be negative")
    return delay


class SearchRequest(BaseModel):
    """The body of ``POST /search``."""

    question: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=100)


@dataclass(frozen=True)
class Served:
    """One loaded version."""

    retriever: Retriever
    ref: str
    digest: str
    loaded_at: str


class IndexFollower:
    """The version behind ``name:alias`` in a registry, replaced (load beside, warm up, swap) when it moves."""

    def __init__(self, registry_uri: str | None = None, *, name: str = DEFAULT_NAMES.index, alias: str = PRODUCTION,
                 poll_s: float | None = None) -> None:
        from ragindex.registry import open_registry

        self.registry = open_registry(registry_uri, create=False)
        poll_s = default_poll_s(self.registry.uri) if poll_s is None else float(poll_s)
        if not poll_s > 0:
            raise RagindexError(f"poll seconds {poll_s:g}: must be more than 0 (POST /refresh checks at once)")
        self.name, self.alias, self.poll_s = name, alias, poll_s
        self.load_delay_s = load_delay_for_tests_s()
        self._current: Served | None = None
        self._token: str | None = None  # the alias token the served version was read under
        self._lock = threading.Lock()  # one refresh at a time; readers never wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_checked: str | None = None
        self.last_error: str | None = None

    def current(self) -> Served:
        """The version to answer with (a request keeps it until it is done)."""
        served = self._current
        if served is None:
            raise RagindexError(f"no version of {self.name}:{self.alias} is loaded yet")
        return served

    def refresh(self, *, force: bool = False) -> bool:
        """Load the alias's version if it is not the one served; True when it switched. Unless ``force``d, an
        unchanged alias token ends it there (no full read); the token is read *before* the version, so a move
        racing the read is seen again on the next check."""
        with self._lock:
            token = self.registry.alias_token(self.name, self.alias)
            self.last_checked = datetime.now(timezone.utc).isoformat()
            served = self._current
            if not force and served is not None and token == self._token:
                return False
            version = self.registry.get(f"{self.name}:{self.alias}")
            if served is not None and served.digest == version.digest:
                self._token = token
                return False
            self._current = self._load(version)  # the one swap: ref, digest and index together
            self._token = token
            log.info("serving %s (digest %s)%s", version.ref, version.digest,
                     f", was {served.ref}" if served else "")
            return True

    def _load(self, version: Any) -> Served:
        """A version loaded and warmed up beside the one serving (which answers meanwhile)."""
        folder = self.registry.download(version.ref)
        if self.load_delay_s:
            time.sleep(self.load_delay_s)
        retriever = Retriever(folder, ref=version.ref)
        retriever.search("warm-up", k=1)  # encoder and index ready before the first real request
        return Served(retriever, version.ref, version.digest, datetime.now(timezone.utc).isoformat())

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version; say why in /healthz
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("cannot follow %s:%s: %s", self.name, self.alias, self.last_error)

    def start(self) -> None:
        """Load the version now, then follow the alias in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._follow, name="ragindex-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def create_app(follower: IndexFollower) -> Any:
    """The FastAPI app around a follower (started and stopped with the app)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower.start()
        try:
            yield
        finally:
            follower.stop()

    app = FastAPI(title="ragindex serve", lifespan=lifespan)

    def serving() -> Served:
        try:
            return follower.current()
        except RagindexError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc

    @app.post("/search")
    def search(request: SearchRequest) -> dict[str, Any]:
        served = serving()
        try:
            hits = served.retriever.search(request.question, k=request.k)
        except RagindexError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return {"ref": served.ref, "digest": served.digest, "alias": follower.alias,
                "hits": [h.to_json() for h in hits]}

    @app.get("/healthz")
    def healthz() -> Any:
        from fastapi.responses import JSONResponse

        served = follower._current
        body = {"status": "ok" if served else "loading", "alias": f"{follower.name}:{follower.alias}",
                "registry": follower.registry.uri, "ref": served.ref if served else None,
                "digest": served.digest if served else None, "loaded_at": served.loaded_at if served else None,
                "last_checked": follower.last_checked, "last_error": follower.last_error, "poll_s": follower.poll_s}
        return JSONResponse(body, status_code=200 if served else 503)

    @app.post("/refresh")
    def refresh() -> dict[str, Any]:
        """Read the alias now, in full (a deploy step calls this after a move)."""
        try:
            changed = follower.refresh(force=True)
        except RagindexError as exc:  # the registry cannot be read: the loaded version keeps answering
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        served = serving()
        return {"changed": changed, "ref": served.ref, "digest": served.digest}

    return app


def serve(registry_uri: str | None, *, name: str, alias: str, host: str, port: int, poll_s: float | None) -> None:
    """Run the service until interrupted (uvicorn, one process: the index is in memory once)."""
    import uvicorn

    started = time.monotonic()
    app = create_app(IndexFollower(registry_uri, name=name, alias=alias, poll_s=poll_s))
    log.info("ragindex serve on http://%s:%d (set up in %.1f s)", host, port, time.monotonic() - started)
    uvicorn.run(app, host=host, port=port, log_level="warning")
