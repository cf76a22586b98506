"""A file-backed fake of the W&B server and of the SDK calls the W&B adapter makes (a fake, not a W&B model).

No W&B server is reachable here. This stand-in keeps what a server would keep in one JSON file under a folder
(locked with ``fcntl``), so a process SIGKILLed half way leaves exactly what the server had received, and a
second process (the retry) sees it. Where the adapter relies on an SDK behaviour, the fake follows the wandb 0.31
source (paths relative to site-packages/wandb):

- ``wandb.init`` returns once the server has the run (``sdk/wandb_init.py``: ``deliver_run`` is awaited), so the
  run, its ``config`` and its ``created_at`` (server time) exist from ``init`` on; a failed or timed-out init is
  ``CommError(message)`` with ``.exc`` None (``errors/util.py``).
- ``run.summary[...] = ...`` is fire-and-forget (sent by the service on its file stream): here it reaches the
  server at ``finish()``, so a kill before ``finish`` loses it (the pessimistic, allowed outcome).
- ``run.log_artifact`` returns at once; ``Artifact.wait()`` blocks until the server committed the version and
  then reads it back by id (``sdk/artifacts/artifact.py``: ``wait`` -> ``_populate_after_save``); an upload
  failure surfaces as ``ValueError`` from ``wait()``.
- ``run.use_artifact`` / ``log_artifact`` make the run's own ``Api`` (``sdk/wandb_run.py``: ``_public_api``, cached
  in ``_cached_public_api``); a name is fetched first, an Api artifact is only recorded as used.
- ``Api()`` verifies the credentials (one request) and, without an ``entity`` override, asks for the default
  entity on the first path it parses (``apis/public/api.py``: ``_parse_*_path`` -> ``default_entity``).
- ``Api.runs`` caches one ``Runs`` per ``path + str(filters) + str(order)`` until ``Api.flush()``, and a cached
  one is not fetched again; the server sorts by the order asked for; one request per page.
- ``Artifact.save()`` on a logged version adds and deletes aliases by difference with those it was fetched with
  (``_add_aliases``, ``_delete_aliases``: one request each, none for an empty set), then sends the whole metadata
  it holds (``Artifact._update``): two saves of copies fetched before the other's save undo each other's
  metadata. The alias mutations alone send no metadata.
- ``Api().project(p, entity=e).id`` raises ``ValueError("Project p not found")`` for a missing project and
  ``ValueError("Unable to fetch project ID: ...")`` from a transport failure (``apis/public/projects.py``).

- W&B Registry (``apis/public/api.py`` ``registry``, ``sdk/wandb_run.py`` ``link_artifact`` ->
  ``sdk/artifacts/artifact.py`` ``Artifact.link``): ``Api.registry(name)`` raises ``RuntimeError`` on a server
  without the Registry feature and ``ValueError("Failed to load registry ...")`` for one it cannot load; linking a
  logged version into ``wandb-registry-R/C`` makes (or reuses) its membership there and moves the aliases given
  (an alias is unique within a collection); ``Api.artifact("wandb-registry-R/C:alias")`` is the link, with the
  source's ``source_name`` (``name:vN``), ``source_version`` and ``source_project``.

Every request is counted (``server.requests()``), with the cost model in ``COSTS`` (what the SDK sends for each
call, by reading the source; finishing a run costs more when stats, git state and requirements are uploaded).
Faults are injected per process with ``server.fail(op, exc)``; ``server.kill_at`` SIGKILLs the process at a
named point (for the kill matrix in test_wandb_adapter.py).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import uuid
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import wandb
from wandb.errors import AuthenticationError, CommError

ENTITY, PROJECT = "fake-team", "fake-project"
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


class WandbApiFailedError(Exception):
    """Shaped like ``wandb.sdk.lib.service.service_connection.WandbApiFailedError``: ``.response`` carries an
    ``ApiErrorResponse`` whose ``http_status`` is 0 when no HTTP answer came."""

    def __init__(self, message: str, http_status: int = 0) -> None:
        super().__init__(message)
        from wandb.proto import wandb_api_pb2

        self.response = wandb_api_pb2.ApiErrorResponse(message=message, http_status=http_status)


def api_failure(message: str, http_status: int = 0) -> CommError:
    """A public-Api call failing as ``normalize_exceptions`` reports it: ``CommError`` with the cause in ``.exc``."""
    cause = WandbApiFailedError(message, http_status)
    error = CommError(message, cause)
    error.__cause__ = cause
    return error


def sdk_error(outer: Exception, cause: BaseException | None) -> Exception:
    """``outer`` raised ``from cause``, as the SDK chains them."""
    outer.__cause__ = cause
    return outer


# Control-plane requests per SDK call (by reading wandb 0.31; data-plane file transfers are counted apart).
COSTS = {
    "authenticate": 1,          # Api(): _verify_login
    "default_entity": 1,        # first path parsed by an Api without an entity
    "get_project": 1,           # Project.id
    "create_project": 1,
    "artifact_by_name": 1,      # Api.artifact / use_artifact(name)
    "artifacts_page": 1,        # Api.artifacts, per page
    "runs_page": 1,             # Api.runs, per page (lazy=False: config and summary included)
    "run": 1,                   # Api.run
    "logged_by": 1,
    "upsert_run": 1,            # wandb.init: UpsertBucket
    "use_artifact": 1,          # record_artifact_use
    "expected_type": 1,         # log_artifact: _assert_can_log_artifact
    "create_artifact": 1, "create_manifest": 1, "upload_urls": 1, "commit_artifact": 1,
    "artifact_by_id": 1,        # wait(): _populate_after_save
    "add_aliases": 1, "delete_aliases": 1, "update_artifact": 1,
    "file_stream": 1,           # finish: the last file-stream post (summary, exit code)
    "run_files": 2,             # finish: config.yaml + wandb-summary.json upload urls + mark uploaded
    "stats": 4,                 # finish without x_disable_stats: system-metric posts of a short run
    "metadata_file": 1,         # wandb-metadata.json (unless x_disable_meta / x_disable_machine_info)
    "git_state": 1,             # diff.patch (unless disable_git)
    "requirements": 1,          # requirements.txt (unless x_save_requirements=False)
    "console_log": 1,           # output.log (console capture on)
}


def stamp(tick: int) -> str:
    """Server time for the ``tick``-th event: strictly increasing, one second apart."""
    return (EPOCH + timedelta(seconds=tick)).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeWandbServer:
    """The server's state in ``root/state.json`` (and stored files in ``root/blobs``), shared by processes."""

    kill_at: tuple[str, int] | None = None  # (checkpoint, n): SIGKILL this process at its n-th pass there

    def __init__(self, root: Path | None = None, *, regex_anchors: bool = True) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="fake-wandb-server-"))
            weakref.finalize(self, shutil.rmtree, str(root), True)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        self.regex_anchors = regex_anchors  # False: a server that takes ^ and $ literally (matches nothing)
        self.faults: dict[str, list[BaseException]] = {}
        self._passes: dict[str, int] = {}
        with self.state() as state:
            state.setdefault("projects", [[ENTITY, PROJECT]])
            state.setdefault("clock", 0)
            state.setdefault("requests", {})
            state.setdefault("collections", {})
            state.setdefault("runs", [])
            state.setdefault("registries", {})  # name -> {"types", "members", "collections"}
            state.setdefault("registry_enabled", True)
            state.setdefault("viewer", "ragindex-bot")

    # -- state ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def state(self) -> Iterator[dict[str, Any]]:
        """The state, locked for the block and written back atomically after it."""
        with open(self.root / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.root / "state.json"
            state = json.loads(path.read_text()) if path.exists() else {}
            yield state
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)

    def read(self) -> dict[str, Any]:
        with self.state() as state:
            return copy.deepcopy(state)

    def tick(self, state: dict[str, Any]) -> str:
        state["clock"] += 1
        return stamp(state["clock"])

    # -- requests, faults, kills ----------------------------------------------------------------------

    def request(self, op: str, times: int = 1) -> None:
        """Count a request; raise the fault queued for ``op`` (this process only), if any."""
        with self.state() as state:
            state["requests"][op] = state["requests"].get(op, 0) + COSTS.get(op, 1) * times
        queued = self.faults.get(op)
        if queued:
            raise queued.pop(0)

    def requests(self) -> dict[str, int]:
        return dict(self.read()["requests"])

    def total(self) -> int:
        return sum(self.requests().values())

    def fail(self, op: str, *errors: BaseException) -> None:
        """Make the next ``len(errors)`` requests ``op`` (in this process) raise these."""
        self.faults.setdefault(op, []).extend(errors)

    def checkpoint(self, point: str) -> None:
        """A named moment; SIGKILL here when ``kill_at`` says so (no finally blocks, no flush)."""
        self._passes[point] = self._passes.get(point, 0) + 1
        if self.kill_at is not None and self.kill_at == (point, self._passes[point]):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    # -- what the server knows ------------------------------------------------------------------------

    def has_project(self, entity: str, project: str) -> bool:
        return [entity, project] in self.read()["projects"]

    def runs(self) -> list[dict[str, Any]]:
        return self.read()["runs"]

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self.read()["collections"].get(name, [])

    def create_registry(self, name: str, *, types: list[str] | None = None,
                        members: dict[str, str] | None = None) -> None:
        """A W&B Registry (``types`` None: all artifact types allowed), its members' roles by username."""
        with self.state() as state:
            state["registries"][name] = {"types": types, "members": members or {state["viewer"]: "admin"},
                                         "collections": {}}

    def registry_links(self, registry: str, collection: str) -> list[dict[str, Any]]:
        """The memberships of a Registry collection: {"index", "source", "aliases"}."""
        return self.read()["registries"].get(registry, {}).get("collections", {}).get(collection, [])


# -- the public Api ----------------------------------------------------------------------------------------


class FakeApiArtifact:
    """A logged version as ``Api().artifact()`` returns it (a copy of what the server had at fetch time)."""

    def __init__(self, server: FakeWandbServer, name: str, body: dict[str, Any]) -> None:
        self._server = server
        self.id = body["id"]
        self.name = f"{name}:v{body['index']}"
        self.version = f"v{body['index']}"
        self.type = body["type"]
        self.digest = body["digest"]
        self.metadata = copy.deepcopy(body["metadata"])
        self.aliases: list[str] = list(body["aliases"])
        self._saved_aliases = list(body["aliases"])
        self.created_at = body["created_at"]
        self.entity, self.project = ENTITY, PROJECT
        self._files = dict(body["files"])
        self._producer = body["producer"]
        refs = body.get("refs", {})
        self.manifest = type("Manifest", (), {"entries": {
            p: type("Entry", (), {"ref": refs.get(p)})() for p in [*self._files, *refs]}})()

    def is_draft(self) -> bool:
        return False

    def logged_by(self) -> "FakeApiRun | None":
        self._server.request("logged_by")
        run = next((r for r in self._server.runs() if r["id"] == self._producer), None)
        return None if run is None else FakeApiRun(self._server, run)

    def save(self) -> None:
        """``Artifact._update``: add/delete aliases by difference with the fetched ones, then the whole metadata."""
        old, new = set(self._saved_aliases), set(self.aliases)
        self._add_aliases(new - old, target=None, checkpoint=False)
        self._delete_aliases(old - new, target=None, checkpoint=False)
        self._server.request("update_artifact")
        with self._server.state() as state:
            me = next(v for v in state["collections"][self._collection] if v["id"] == self.id)
            me["metadata"] = copy.deepcopy(self.metadata)
        self._saved_aliases = list(self.aliases)
        self._server.checkpoint("save:after")

    @property
    def _collection(self) -> str:
        return self.name.split(":")[0]

    def _add_aliases(self, alias_names: set[str], target: Any, checkpoint: bool = True) -> None:
        """``Artifact._add_aliases`` (what ``_update`` sends first): one AddAliases request unless the set is empty;
        an alias is exclusive within the collection, so it leaves whichever version held it."""
        if not alias_names:
            return
        self._server.request("add_aliases")
        with self._server.state() as state:
            versions = state["collections"][self._collection]
            me = next(v for v in versions if v["id"] == self.id)
            for other in versions:
                if other is not me:
                    other["aliases"] = [a for a in other["aliases"] if a not in alias_names]
            me["aliases"] = [*me["aliases"], *sorted(set(alias_names) - set(me["aliases"]))]
        if checkpoint:
            self._server.checkpoint("aliases:after")

    def _delete_aliases(self, alias_names: set[str], target: Any, checkpoint: bool = True) -> None:
        """``Artifact._delete_aliases``: one DeleteAliases request unless the set is empty."""
        if not alias_names:
            return
        self._server.request("delete_aliases")
        with self._server.state() as state:
            me = next(v for v in state["collections"][self._collection] if v["id"] == self.id)
            me["aliases"] = [a for a in me["aliases"] if a not in alias_names]
        if checkpoint:
            self._server.checkpoint("aliases:after")

    def download(self, root: str) -> str:
        for rel, blob in self._files.items():
            target = Path(root) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._server.root / "blobs" / blob, target)
        return root


class FakeApiRun:
    """A run as ``Api().runs()`` / ``Api().run()`` return it (lazy=False: config and summary loaded)."""

    def __init__(self, server: FakeWandbServer, body: dict[str, Any]) -> None:
        self._server = server
        self.id = body["id"]
        self.job_type, self.group, self.name = body["job_type"], body["group"], body["name"]
        self.config = copy.deepcopy(body["config"])
        self.summary_metrics = copy.deepcopy(body["summary"])
        self.created_at = body["created_at"]
        self.state = body["state"]
        self._used = body["used"]

    def used_artifacts(self) -> list[FakeApiArtifact]:
        found = []
        for ref in self._used:
            name, version = ref.split(":")
            body = next(v for v in self._server.versions(name) if f"v{v['index']}" == version)
            found.append(FakeApiArtifact(self._server, name, body))
        return found


def _value(run: dict[str, Any], key: str) -> Any:
    if key.startswith("config."):
        return run["config"].get(key[len("config."):])
    return {"jobType": run["job_type"], "name": run["id"], "group": run["group"], "state": run["state"]}[key]


def _matches(server: FakeWandbServer, run: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The Mongo-style run filters the adapter uses: equality, ``$in``, ``$regex`` (RE2 here is Python's re)."""
    for key, wanted in filters.items():
        if key == "$and":
            if not all(_matches(server, run, f) for f in wanted):
                return False
            continue
        value = _value(run, key)
        if isinstance(wanted, dict) and "$regex" in wanted:
            pattern = wanted["$regex"]
            if not server.regex_anchors and ("^" in pattern or "$" in pattern):
                return False  # a server that does not support anchors takes them literally
            if not (isinstance(value, str) and re.search(pattern, value)):
                return False
        elif isinstance(wanted, dict) and "$in" in wanted:
            if value not in wanted["$in"]:
                return False
        elif isinstance(wanted, dict):
            raise AssertionError(f"filter operator not modelled: {wanted}")
        elif value != wanted:
            return False
    return True


class FakeProject:
    def __init__(self, api: "FakeWandbApi", name: str, entity: str) -> None:
        self._api, self.name, self.entity = api, name, entity

    @property
    def id(self) -> str:
        try:
            self._api.server.request("get_project")
        except CommError as exc:  # projects.py: a failed GetProject is a ValueError from the transport error
            raise sdk_error(ValueError(f"Unable to fetch project ID: {{'name': {self.name!r}, 'entity': "
                                       f"{self.entity!r}}}"), exc.exc) from None
        if not self._api.server.has_project(self.entity, self.name):
            raise ValueError(f"Project {self.name} not found")
        return f"project-{self.name}"


class FakeWandbApi:
    """Stand-in for ``wandb.Api()``; its requests go to the fake server."""

    def __init__(self, server: FakeWandbServer | None = None, overrides: dict[str, Any] | None = None) -> None:
        self.server = server if server is not None else FakeWandbServer()
        self.settings = dict(overrides or {})
        self._runs: dict[str, Any] = {}
        self._default_entity: str | None = None
        self.server.request("authenticate")

    def flush(self) -> None:
        self._runs = {}

    def _entity(self) -> None:
        """``_parse_*_path``: an Api without an entity asks for the default one (cached once known)."""
        if not self.settings.get("entity") and self._default_entity is None:
            self.server.request("default_entity")
            self._default_entity = ENTITY

    def project(self, name: str, entity: str | None = None) -> FakeProject:
        if entity is None:
            self._entity()
        return FakeProject(self, name, entity or self.settings.get("entity") or ENTITY)

    def create_project(self, name: str, entity: str) -> None:
        self.server.request("create_project")
        with self.server.state() as state:
            if [entity, name] not in state["projects"]:
                state["projects"].append([entity, name])

    def registry(self, name: str, organization: str | None = None) -> "FakeRegistry":
        self.server.request("registry")
        state = self.server.read()
        if not state["registry_enabled"]:
            raise RuntimeError("api.registry() is not enabled on this wandb server version. Please upgrade your "
                               "server version or contact support at support@wandb.com.")
        if name not in state["registries"]:
            raise ValueError(f"Failed to load registry {name!r} in organization {organization or 'fake-org'!r}.")
        return FakeRegistry(self.server, name, state["registries"][name])

    def viewer(self) -> Any:
        self.server.request("viewer")
        return FakeUser(self.server.read()["viewer"])

    def _linked(self, path: str) -> "FakeLinkedArtifact":
        registry, rest = path[len("wandb-registry-"):].split("/", 1)
        collection, tag = rest.split(":")
        self.server.request("artifact_by_name")
        for body in self.server.registry_links(registry, collection):
            if f"v{body['index']}" == tag or tag in body["aliases"]:
                return FakeLinkedArtifact(registry, collection, body)
        message = f"artifact membership '{collection}:{tag}' not found in 'fake-org/wandb-registry-{registry}'"
        raise CommError(message, ValueError(message))

    def artifact(self, path: str) -> FakeApiArtifact:
        self._entity()
        if path.startswith("wandb-registry-"):
            return self._linked(path)  # type: ignore[return-value]
        entity, project, rest = path.split("/", 2)
        name, tag = rest.split(":")
        self.server.request("artifact_by_name")
        if not self.server.has_project(entity, project):
            message = f"project '{project}' not found under entity '{entity}'"
            raise CommError(message, ValueError(message))
        for body in self.server.versions(name):
            if f"v{body['index']}" == tag or tag in body["aliases"]:
                return FakeApiArtifact(self.server, name, body)
        message = f"artifact membership '{name}:{tag}' not found in '{entity}/{project}'"
        raise CommError(message, ValueError(message))

    def artifacts(self, type_name: str, name: str, per_page: int = 50) -> list[FakeApiArtifact]:
        self._entity()
        collection = name.split("/")[-1]
        found = [FakeApiArtifact(self.server, collection, b) for b in self.server.versions(collection)
                 if b["type"] == type_name]
        self.server.request("artifacts_page", max(1, math.ceil(len(found) / per_page)))
        return sorted(found, key=lambda a: -int(a.version[1:]))  # the server lists newest first

    def run(self, path: str) -> FakeApiRun:
        self._entity()
        if path not in self._runs:
            self.server.request("run")
            run_id = path.rsplit("/", 1)[-1]
            body = next((r for r in self.server.runs() if r["id"] == run_id), None)
            if body is None:
                raise CommError(f"Could not find run {path}", ValueError(f"Could not find run {path}"))
            self._runs[path] = FakeApiRun(self.server, body)
        return self._runs[path]

    def runs(self, path: str, filters: dict[str, Any] | None = None, order: str = "+created_at", per_page: int = 50,
             lazy: bool = True) -> list[FakeApiRun]:
        self._entity()
        key = (path or "") + str(filters or {}) + str(order)
        if key not in self._runs:
            field = order.lstrip("+-")
            assert field == "created_at", order
            found = [r for r in self.server.runs() if _matches(self.server, r, filters or {})]
            found.sort(key=lambda r: (r["created_at"], r["seq"]), reverse=order.startswith("-"))
            self.server.request("runs_page", max(1, math.ceil(len(found) / per_page)))
            self._runs[key] = [FakeApiRun(self.server, r) for r in found]
        return list(self._runs[key])


# -- a run --------------------------------------------------------------------------------------------------


class FakeUser:
    def __init__(self, username: str) -> None:
        self.username = self.name = username


class FakeMember:
    def __init__(self, username: str, role: str) -> None:
        self.user, self.role = FakeUser(username), role


class FakeRegistry:
    """What ``Api.registry(name)`` returns: allowed types and members (``user_members()`` is one request)."""

    def __init__(self, server: FakeWandbServer, name: str, body: dict[str, Any]) -> None:
        self._server, self.name = server, name
        self.allow_all_artifact_types = body["types"] is None
        self.artifact_types = list(body["types"] or [])
        self._members = dict(body["members"])

    def user_members(self) -> list[FakeMember]:
        self._server.request("registry_members")
        return [FakeMember(u, r) for u, r in self._members.items()]


class FakeLinkedArtifact:
    """A Registry membership as ``Api.artifact("wandb-registry-R/C:tag")`` returns it (``is_link`` True)."""

    def __init__(self, registry: str, collection: str, body: dict[str, Any]) -> None:
        self.is_link = True
        self.name = f"{collection}:v{body['index']}"
        self.version = f"v{body['index']}"
        self.aliases = list(body["aliases"])
        self.source_name = body["source"]
        self.source_version = body["source"].split(":")[1]
        self.source_project = PROJECT
        self.source_qualified_name = f"{ENTITY}/{PROJECT}/{body['source']}"


class FakeRunSummary(dict):
    """``run.summary``: writes stay in this process until ``finish`` sends them (fire-and-forget)."""


class FakeLoggedArtifact:
    """What ``run.log_artifact`` returns: the draft, committed by the server when ``wait()`` is awaited."""

    def __init__(self, run: "FakeWandbRun", artifact: Any, aliases: list[str]) -> None:
        self._run, self._artifact, self._aliases = run, artifact, aliases

    def wait(self) -> FakeApiArtifact:
        run, server = self._run, self._run.server
        server.request("create_artifact")
        server.request("create_manifest")
        server.request("upload_urls")
        server.request("commit_artifact")
        source = self._artifact
        name = source.name
        files, refs = {}, {}
        for path, entry in source.manifest.entries.items():
            if getattr(entry, "ref", None):
                refs[path] = entry.ref
                continue
            blob = f"{entry.digest}".replace("/", "_").replace("+", "-")
            target = server.root / "blobs" / blob
            if not target.exists():
                shutil.copyfile(entry.local_path, target)
            files[path] = blob
        with server.state() as state:
            versions = state["collections"].setdefault(name, [])
            if versions and versions[0]["type"] != source.type:
                raise ValueError(f"Artifact {name} already exists with type '{versions[0]['type']}'; cannot "
                                 f"create another with type '{source.type}'")
            body = next((v for v in versions if v["digest"] == source.digest), None)
            if body is None:
                body = {"id": uuid.uuid4().hex, "index": len(versions), "type": source.type,
                        "digest": source.digest, "metadata": dict(source.metadata), "aliases": [],
                        "created_at": server.tick(state), "files": files, "refs": refs, "producer": run.id}
                versions.append(body)
            moved = {*self._aliases, "latest"}
            for other in versions:
                if other is not body:
                    other["aliases"] = [a for a in other["aliases"] if a not in moved]
            body["aliases"] = list(dict.fromkeys([*body["aliases"], *sorted(moved)]))
            committed = copy.deepcopy(body)
        server.checkpoint("commit:after")
        server.request("artifact_by_id")
        return FakeApiArtifact(server, name, committed)


class FakeWandbRun:
    """Stand-in for the run ``wandb.init`` returns. The server has it (config, created_at) from ``init``."""

    def __init__(self, module: "FakeWandbModule", init_kwargs: dict[str, Any]) -> None:
        self.server = module.server
        self.init_kwargs = init_kwargs
        self.id = uuid.uuid4().hex[:8]
        self.calls: list[tuple] = []
        self.summary = FakeRunSummary()
        self.history: list[dict[str, Any]] = []  # ``run.log`` rows, fire-and-forget like the summary
        self._cached_public_api: FakeWandbApi | None = None
        self._finished = False

    def _public_api(self) -> FakeWandbApi:
        """``Run._public_api``: the run's own Api (entity and project set), made once."""
        if self._cached_public_api is None:
            self._cached_public_api = FakeWandbApi(self.server, {"entity": self.init_kwargs["entity"],
                                                                 "project": self.init_kwargs["project"]})
        return self._cached_public_api

    def _add_used(self, ref: str) -> None:
        with self.server.state() as state:
            body = next(r for r in state["runs"] if r["id"] == self.id)
            body["used"].append(ref)

    def use_artifact(self, artifact_or_name: Any) -> Any:
        self.calls.append(("use_artifact", artifact_or_name if isinstance(artifact_or_name, str)
                           else artifact_or_name.name))
        api = self._public_api()
        artifact = api.artifact(artifact_or_name) if isinstance(artifact_or_name, str) else artifact_or_name
        self.server.request("use_artifact")
        self._add_used(artifact.name)
        return artifact

    def log_artifact(self, artifact: Any, aliases: list[str]) -> FakeLoggedArtifact:
        self.calls.append(("log_artifact", artifact, list(aliases)))
        self._public_api()
        self.server.request("expected_type")
        return FakeLoggedArtifact(self, artifact, list(aliases))

    def link_artifact(self, artifact: Any, target_path: str, aliases: list[str] | None = None) -> Any:
        """``Run.link_artifact`` -> ``Artifact.link``: one LinkArtifact request; the source's membership in the
        Registry collection is made or reused, and each alias given moves to it (``latest``: the newest)."""
        self.calls.append(("link_artifact", artifact.name, target_path, list(aliases or [])))
        self.server.checkpoint("link:before")
        self.server.request("link_artifact")
        registry, collection = target_path[len("wandb-registry-"):].split("/", 1)
        source = artifact.name if ":" in artifact.name else f"{artifact.name}:{artifact.version}"
        with self.server.state() as state:
            if not state["registry_enabled"] or registry not in state["registries"]:
                message = f"registry {registry!r} not found"
                raise CommError(message, ValueError(message))
            links = state["registries"][registry]["collections"].setdefault(collection, [])
            body = next((b for b in links if b["source"] == source), None)
            if body is None:
                body = {"index": len(links), "source": source, "aliases": []}
                links.append(body)
            for alias in [*(aliases or []), "latest"] if body["index"] == len(links) - 1 else (aliases or []):
                for other in links:
                    other["aliases"] = [a for a in other["aliases"] if a != alias]
                body["aliases"].append(alias)
        self.server.checkpoint("link:after")
        return FakeLinkedArtifact(registry, collection, body)

    def log(self, data: dict[str, Any]) -> None:
        """``run.log``: a history row sent on the file stream (a ``Table`` becomes its columns and rows, as the
        run-table file W&B stores); here it reaches the server at ``finish``."""
        self.calls.append(("log", sorted(data)))
        row = {}
        for key, value in data.items():
            if isinstance(value, wandb.Table):
                value = {"_type": "table", "columns": list(value.columns), "data": [list(r) for r in value.data]}
            row[key] = value
        self.history.append(row)

    def finish(self, exit_code: int | None = None) -> None:
        self.calls.append(("finish", exit_code))
        self.server.checkpoint("finish:before")
        settings = self.init_kwargs.get("settings")
        extras = ["file_stream", "run_files"]
        if settings is None or not getattr(settings, "x_disable_stats", False):
            extras.append("stats")
        if settings is None or not (getattr(settings, "x_disable_meta", False)
                                    or getattr(settings, "x_disable_machine_info", False)):
            extras.append("metadata_file")
        if settings is None or not getattr(settings, "disable_git", False):
            extras.append("git_state")
        if settings is None or getattr(settings, "x_save_requirements", True):
            extras.append("requirements")
        if settings is None or getattr(settings, "console", "off") != "off":
            extras.append("console_log")
        for op in extras:
            self.server.request(op)
        with self.server.state() as state:
            body = next(r for r in state["runs"] if r["id"] == self.id)
            body["summary"].update(copy.deepcopy(dict(self.summary)))
            body.setdefault("history", []).extend(copy.deepcopy(self.history))
            body["state"] = "finished" if not exit_code else "failed"
        self._finished = True


class FakeWandbModule:
    """Stand-in for the ``wandb`` module: the real ``Artifact`` and ``Settings``, ``init`` and ``Api`` faked."""

    Artifact = wandb.Artifact
    Settings = wandb.Settings
    Table = wandb.Table  # a plain data object: the real one

    def __init__(self, server: "FakeWandbServer | FakeWandbApi | None" = None) -> None:
        if isinstance(server, FakeWandbApi):
            server = server.server
        self.server = server if server is not None else FakeWandbServer()
        self.runs: list[FakeWandbRun] = []
        self.fail_init: Exception | None = None
        self.apis: list[FakeWandbApi] = []

    def init(self, **kwargs: Any) -> FakeWandbRun:
        self.server.checkpoint("init:before")
        if self.fail_init is not None:
            raise self.fail_init
        run = FakeWandbRun(self, kwargs)
        self.server.request("upsert_run")
        if [kwargs["entity"], kwargs["project"]] not in self.server.read()["projects"]:
            raise CommError(f"Error uploading run: returned error 404: project {kwargs['project']!r} not found "
                            f"under entity {kwargs['entity']!r}")
        with self.server.state() as state:
            state["runs"].append({"id": run.id, "seq": len(state["runs"]), "job_type": kwargs["job_type"],
                                  "group": kwargs.get("group"), "name": kwargs.get("name"),
                                  "config": copy.deepcopy(kwargs.get("config") or {}), "summary": {},
                                  "created_at": self.server.tick(state), "state": "running", "used": []})
        self.runs.append(run)
        self.server.checkpoint("init:after")
        return run

    def Api(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> FakeWandbApi:  # noqa: N802
        api = FakeWandbApi(self.server, overrides)
        self.apis.append(api)
        return api


__all__ = ["ENTITY", "PROJECT", "AuthenticationError", "CommError", "FakeWandbApi", "FakeWandbModule",
           "FakeWandbRun", "FakeWandbServer", "WandbApiFailedError", "api_failure", "sdk_error", "stamp"]
