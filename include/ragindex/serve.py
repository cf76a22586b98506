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

    POST /search   {"question": "...", "k": 5,     →  {"ref", "digest", "alias", "mode", "hits": [...], "trace_id"}
                    "mode"?, "filters"?: {"source_prefix", "doc_type"}, "per_source"?}
    POST /context  {"question": "...", "key"?}  →  the rendered prompt, the hits, the release, index and prompt
                                                    refs with digests, and a trace id (a release is served)
    GET  /healthz                              →  {"status", "ref", "digest", "alias", "registry", ...}
    POST /refresh                              →  {"changed": bool, "ref", "digest"}

Serving a release (``--name rag-release``, the default once a release holds production): the whole release
(index, prompt, settings) is loaded and swapped as one ``Served``, so no answer mixes the prompt of one release
with the index of another; ``/search`` uses the release's k and mode unless the request names its own. A body
that does not fit (a bad mode or filter included) is a 400 naming the field. Every answer is a line of the trace log
(``ragindex.tracelog``) with its trace id; ``ragindex trace ID`` reads it back with the decisions behind it.

``Retriever`` stays the library form of the same thing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
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
    """The body of ``POST /search``: what ``Retriever.search`` takes. k: the release's own when a release is
    served, else 5; mode: the release's ``retrieval.mode``, else the index's own; filters: ``source_prefix``
    and/or ``doc_type`` (a string or a list), checked by ``SearchFilters``; per_source: at most that many hits
    from one document."""

    question: str = Field(min_length=1)
    k: int | None = Field(default=None, ge=1, le=100)
    mode: str | None = None
    filters: dict[str, Any] | None = None
    per_source: int | None = Field(default=None, ge=1)


class ContextRequest(BaseModel):
    """The body of ``POST /context``: a question, and optionally the caller's key for the request."""

    question: str = Field(min_length=1)
    key: str | None = None


class FeedbackRequest(BaseModel):
    """The body of ``POST /feedback``: a rating of one answer, by its trace id."""

    trace_id: str = Field(min_length=1)
    rating: float = Field(ge=-1, le=1)


@dataclass(frozen=True)
class Served:
    """One loaded version: an index, or a release with its index and prompt (swapped as one)."""

    retriever: Retriever
    ref: str
    digest: str
    loaded_at: str
    k: int = 5
    index_ref: str = ""
    index_digest: str = ""
    prompt: Any = None  # ragindex.prompts.Prompt of a release
    prompt_ref: str = ""
    prompt_digest: str = ""
    settings: dict[str, Any] | None = None

    def refs(self) -> dict[str, Any]:
        """What an answer came from, by ref and digest."""
        body: dict[str, Any] = {"ref": self.ref, "digest": self.digest}
        if self.prompt is not None:
            body |= {"release": {"ref": self.ref, "digest": self.digest},
                     "index": {"ref": self.index_ref, "digest": self.index_digest},
                     "prompt": {"ref": self.prompt_ref, "digest": self.prompt_digest}}
        return body


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
        """A version loaded and warmed up beside the one serving (which answers meanwhile); a release with its
        exact index and prompt."""
        from ragindex.promotion import is_release

        if self.load_delay_s:
            time.sleep(self.load_delay_s)
        now = datetime.now(timezone.utc).isoformat()
        if not is_release(version):
            retriever = Retriever(self.registry.download(version.ref), ref=version.ref)
            retriever.search("warm-up", k=1)  # encoder and index ready before the first real request
            return Served(retriever, version.ref, version.digest, now, index_ref=version.ref,
                          index_digest=version.digest)
        from ragindex.prompts import read_prompt
        from ragindex.release import read_release

        manifest = read_release(self.registry, version.ref).manifest
        _prompt_version, prompt = read_prompt(self.registry, manifest.prompt.ref)
        retriever = Retriever(self.registry.download(manifest.index.ref), ref=manifest.index.ref,
                              mode=manifest.setting("retrieval.mode"))
        retriever.search("warm-up", k=1)
        return Served(retriever, version.ref, version.digest, now, k=int(manifest.setting("retrieval.k")),
                      index_ref=manifest.index.ref, index_digest=manifest.index.digest, prompt=prompt,
                      prompt_ref=manifest.prompt.ref, prompt_digest=manifest.prompt.digest,
                      settings=manifest.settings)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version; say why in /healthz
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("cannot follow %s:%s: %s", self.name, self.alias, self.last_error)

    def start(self, *, wait: bool = True) -> None:
        """Load the version now (or, with ``wait`` off, on the first check that finds it), then follow the alias
        in the background."""
        if wait:
            self.refresh()
        else:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a canary arm may have nothing to serve yet
                self.last_error = f"{type(exc).__name__}: {exc}"
        self._thread = threading.Thread(target=self._follow, name="ragindex-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def create_app(follower: IndexFollower, trace: Any = None, canary: tuple[IndexFollower, float] | None = None) -> Any:
    """The FastAPI app around a follower (started and stopped with the app), logging every answer to ``trace``
    (a ``ragindex.tracelog.TraceLog``) when given; with ``canary`` (a follower of another alias and a percent),
    that share of requests, chosen by a hash of the request's key (else its trace id), is answered by it."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower.start()
        if canary is not None:
            canary[0].start(wait=False)
        try:
            yield
        finally:
            follower.stop()
            if canary is not None:
                canary[0].stop()
            if trace is not None:
                trace.close()

    app = FastAPI(title="ragindex serve", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Any, exc: RequestValidationError) -> Any:
        """A body that does not fit is the caller's error: a 400 naming each field and what is wrong with it."""
        from fastapi.responses import JSONResponse

        problems = [f"{'.'.join(str(part) for part in error['loc'] if part != 'body') or 'body'}: {error['msg']}"
                    for error in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    def serving() -> Served:
        try:
            return follower.current()
        except RagindexError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc

    from ragindex.canary import CANARY, PRODUCTION_ARM

    arm_alias = {PRODUCTION_ARM: follower.alias, CANARY: canary[0].alias if canary is not None else None}

    def choose(key: str) -> tuple[Served, str]:
        """The arm answering a request: the canary's share by the key's hash (while the canary has a version)."""
        from ragindex.canary import in_canary

        if canary is not None and canary[0]._current is not None and in_canary(key, canary[1]):
            return canary[0]._current, CANARY
        return serving(), PRODUCTION_ARM

    def log_answer(kind: str, served: Served, trace_id: str, question: str, hits: list[Any], started: float,
                   key: str | None = None, arm: str = PRODUCTION_ARM, query: dict[str, Any] | None = None) -> None:
        if trace is None:
            return
        from ragindex.tracelog import question_fields

        trace.write({"at": datetime.now(timezone.utc).isoformat(), "trace_id": trace_id, "endpoint": kind,
                     "arm": arm, "alias": arm_alias[arm],
                     **served.refs(),
                     "key": key, **(query or {}),
                     "hits": [{"chunk_id": h.chunk_id, "score": round(float(h.score), 6)} for h in hits],
                     "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                     **question_fields(question, log_text=trace.log_text)})

    @app.post("/search")
    def search(request: SearchRequest) -> dict[str, Any]:
        import uuid

        started = time.perf_counter()
        trace_id = uuid.uuid4().hex
        served, arm = choose(trace_id)
        mode = request.mode or served.retriever.mode  # a release's retrieval.mode, else the index's default
        try:
            hits = served.retriever.search(request.question, k=request.k or served.k, mode=mode,
                                           filters=request.filters, per_source=request.per_source)
        except RagindexError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        log_answer("search", served, trace_id, request.question, hits, started, arm=arm,
                   query={"mode": mode, **({"filters": request.filters} if request.filters else {}),
                          **({"per_source": request.per_source} if request.per_source else {})})
        return {**served.refs(), "alias": follower.alias, "arm": arm, "trace_id": trace_id, "mode": mode,
                "hits": [h.to_json() for h in hits]}

    @app.post("/context")
    def context(request: ContextRequest) -> dict[str, Any]:
        """The prompt a model should get for the question: the release's retrieval, rendered through its prompt."""
        import uuid

        started = time.perf_counter()
        trace_id = uuid.uuid4().hex
        served, arm = choose(request.key or trace_id)  # one Served: index and prompt of the same release
        if served.prompt is None:
            raise HTTPException(status_code=409, detail=f"{served.ref} is an index, not a release: /context needs "
                                                        "`ragindex serve --name rag-release`")
        try:
            hits = served.retriever.search(request.question, k=served.k)
            rendered = served.prompt.render_for(request.question, hits)
        except RagindexError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        log_answer("context", served, trace_id, request.question, hits, started, key=request.key, arm=arm)
        return {**served.refs(), "alias": follower.alias, "arm": arm, "trace_id": trace_id,
                "settings": served.settings,
                "prompt": {**served.refs()["prompt"], "messages": rendered.messages(), "chars": rendered.chars},
                "hits": [h.to_json() for h in hits]}

    @app.post("/feedback")
    def feedback(request: FeedbackRequest) -> dict[str, Any]:
        """A rating of an answer (-1 … 1), a line of the trace log beside the answer it rates."""
        if trace is None:
            raise HTTPException(status_code=409, detail="no trace log: feedback has nowhere to go")
        trace.write({"at": datetime.now(timezone.utc).isoformat(), "endpoint": "feedback",
                     "trace_id": request.trace_id, "rating": request.rating})
        return {"recorded": True, "trace_id": request.trace_id}

    @app.get("/healthz")
    def healthz() -> Any:
        from fastapi.responses import JSONResponse

        served = follower._current
        body = {"status": "ok" if served else "loading", "alias": f"{follower.name}:{follower.alias}",
                "registry": follower.registry.uri, "ref": served.ref if served else None,
                "digest": served.digest if served else None, "loaded_at": served.loaded_at if served else None,
                "last_checked": follower.last_checked, "last_error": follower.last_error, "poll_s": follower.poll_s,
                "trace_log": str(trace.path) if trace is not None else None,
                "trace_dropped": trace.dropped if trace is not None else 0,
                "canary": None if canary is None else {
                    "alias": f"{canary[0].name}:{canary[0].alias}", "percent": canary[1],
                    "ref": canary[0]._current.ref if canary[0]._current else None, "last_error": canary[0].last_error}}
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


def default_name(registry: Any, alias: str = PRODUCTION) -> str:
    """What to follow when not told: the release once one holds the alias, else the index (as before releases)."""
    return DEFAULT_NAMES.release if registry.find(f"{DEFAULT_NAMES.release}:{alias}") is not None \
        else DEFAULT_NAMES.index


def serve(registry_uri: str | None, *, name: str | None, alias: str, host: str, port: int, poll_s: float | None,
          trace_log: str | None = None, log_questions: bool = False, canary: str | None = None) -> None:
    """Run the service until interrupted (uvicorn, one process: the index is in memory once)."""
    import uvicorn

    from ragindex.registry import open_registry
    from ragindex.settings import ragindex_home
    from ragindex.tracelog import TraceLog

    started = time.monotonic()
    name = name or default_name(open_registry(registry_uri, create=False), alias)
    trace = TraceLog(Path(trace_log) if trace_log else ragindex_home() / "traces" / f"serve-{port}.jsonl",
                     log_text=log_questions)
    from ragindex.canary import CanarySpec

    arm = None
    if canary:
        spec = CanarySpec.parse(canary)
        arm = (IndexFollower(registry_uri, name=name, alias=spec.alias, poll_s=poll_s), spec.percent)
    app = create_app(IndexFollower(registry_uri, name=name, alias=alias, poll_s=poll_s), trace, arm)
    log.info("ragindex serve %s:%s on http://%s:%d, trace log %s (set up in %.1f s)", name, alias, host, port,
             trace.path, time.monotonic() - started)
    uvicorn.run(app, host=host, port=port, log_level="warning")
