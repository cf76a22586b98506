"""The Weights & Biases backend (``wandb://ENTITY/PROJECT``), the system of record in production.

How the registry contract maps onto W&B (checked call by call against the wandb 0.31 SDK source):

- **Versions.** One ``log_artifact`` is one W&B run (``job_type`` = the pipeline step, ``group`` = the
  pipeline run, ``name`` = ``<pipeline run>/<step>``) that ``use_artifact``s each consumed version and logs one
  ``wandb.Artifact``. The registry's digest equals W&B's, so an identical existing version is found *before*
  any run starts or any file is staged; a retry of a step that already logged therefore creates nothing. Runs
  get fresh ids (never a fixed id resumed): a run deleted in the UI cannot block a retry, and a version's
  lineage is exactly the run that logged it. Files are added with the ``immutable`` policy, so nothing is
  copied into W&B's staging area (which would be left behind on a failure).
- **Lineage on reads.** The logging run writes the version's producer and consumed refs into reserved
  metadata (``ragindex.lineage``), so listing N versions costs one paged query, not 2 per version;
  versions logged by other tools fall back to ``logged_by()`` / ``used_artifacts()``.
- **Decisions and alias history are W&B runs.** Each review, staging, promotion, rollback and plain alias
  move is its own run (``job_type`` = its kind, in the pipeline run's group) that uses the version it decides
  on, makes the alias changes through the public API and writes the moves into its summary. The history
  (and rollback's "previous holder") is read back from those runs in server order (``created_at``), and a
  decision's ``key`` (in the run config) makes a retried step find its record instead of writing a second one.
- **Failures** are registry errors naming the ref, the URI and the reason (never the API key): a project that
  does not exist or cannot be read is an error, not "no versions yet"; a W&B error is "not found" only when
  the SDK says the artifact is missing, not when the text of an auth or network failure happens to contain
  those words. Network failures are ``RegistryUnavailable`` (retryable).

``wandb`` is imported lazily, and both the module and the Api can be injected for tests.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ragindex.settings import ragindex_home

from .base import RegistryBase, refuse_type_change
from .digest import dir_digest
from .protocol import (
    AliasChange,
    AliasMove,
    ArtifactNotFound,
    ArtifactVersion,
    Decision,
    LogRequest,
    RegistryError,
    RegistryUnavailable,
    RunInfo,
    split_ref,
)
from .rules import LATEST, RESERVED_PREFIX, VERSION_TAG, fill_atomically, utc_now

LINEAGE_KEY = f"{RESERVED_PREFIX}lineage"
RECORD_KEY = f"{RESERVED_PREFIX}record"  # in a run's summary: {"complete": True, "moves": [...]}
REFERENCES_KEY = "references"
DEFAULT_BASE_URL = "https://api.forge.coreweave.com"  # wandb 0.31's default (wandb/sdk/lib/urls.py)
T = TypeVar("T")
log = logging.getLogger(__name__)

# Which extra a reference URL needs (the SDK's storage handlers import these clients).
REFERENCE_CLIENTS = {"s3": ("boto3", "ragindex[s3]"), "gs": ("google.cloud.storage", "ragindex[gcs]"),
                     "gcs": ("google.cloud.storage", "ragindex[gcs]")}


def collection_name(artifact: Any) -> str:
    """The artifact's name without ``:version`` (W&B's ``name`` is ``collection:vN`` once logged)."""
    return str(artifact.name).split(":", 1)[0]


def public_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata without the registry's bookkeeping keys."""
    return {k: v for k, v in (metadata or {}).items() if not str(k).startswith(RESERVED_PREFIX)}


def reference_items(metadata: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``(logical name or None, url)`` pairs from ``metadata["references"]`` (a list of URLs or a name→URL map)."""
    refs = metadata.get(REFERENCES_KEY) or []
    if isinstance(refs, dict):
        return [(str(name), str(url)) for name, url in refs.items()]
    if isinstance(refs, (list, tuple)):
        return [(None, str(url)) for url in refs]
    raise RegistryError(f"metadata[{REFERENCES_KEY!r}] must be a list of URLs or a name->URL mapping")


def require_reference_client(url: str) -> None:
    """Refuse a reference whose storage client (an optional extra) is not installed, naming the package."""
    import importlib.util

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    module, extra = REFERENCE_CLIENTS.get(scheme, (None, None))
    if module and importlib.util.find_spec(module.split(".")[0]) is None:
        raise RegistryError(f"reference {url!r} needs the package {module.split('.')[0]!r}, which is not installed "
                            f"(pip install '{extra}')")


def has_references(artifact: Any) -> bool:
    """Whether a W&B artifact's manifest holds reference entries (their files are not digest-checked)."""
    manifest = getattr(artifact, "manifest", None)
    entries = getattr(manifest, "entries", None) or {}
    return any(getattr(entry, "ref", None) for entry in entries.values())


def scrub(text: str) -> str:
    """An error message without the API key in it, wherever the SDK may have put it."""
    key = os.environ.get("WANDB_API_KEY", "")
    return text.replace(key, "***") if len(key) >= 8 else text


def _missing_artifact(exc: BaseException) -> bool:
    """The SDK's way of saying "no such artifact": a CommError wrapping a ValueError ("artifact membership
    'name:tag' not found in 'e/p'"); a missing project reads "project 'p' not found under entity 'e'"."""
    inner = getattr(exc, "exc", None)
    text = str(inner).lower()
    return isinstance(inner, ValueError) and "not found" in text and "under entity" not in text


def _transport(exc: BaseException) -> bool:
    """A failure to talk to the server (no HTTP status, or a timeout) rather than an answer."""
    inner = getattr(exc, "exc", exc)
    if type(inner).__name__ not in ("WandbApiFailedError", "ConnectionError", "Timeout", "TimeoutError"):
        return False
    status = getattr(getattr(inner, "response", None), "http_status", None)
    return status in (None, 0, 408, 429, 502, 503, 504)


def _names_pattern(name: str) -> str:
    """The run-filter regex that finds ``name`` in a run's ``ragindex_names`` ("a|b|c")."""
    return f"(^|\\|){re.escape(name)}(\\||$)"


class WandbRegistry(RegistryBase):
    """The ``Registry`` protocol on W&B Artifacts in one ENTITY/PROJECT."""

    def __init__(self, entity: str, project: str, *, wandb_module: Any = None, api: Any = None,
                 by_reference: bool = False, settings: Any = None, cache_dir: Path | None = None,
                 base_url: str | None = None, run_dir: Path | None = None) -> None:
        if not entity or not project:
            raise RegistryError(f"wandb registry needs ENTITY and PROJECT, got {entity!r}/{project!r}")
        self.entity = entity
        self.project = project
        self.by_reference = by_reference
        self.uri = f"wandb://{entity}/{project}" + ("?reference=1" if by_reference else "")
        self.base_url = (base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._wandb = wandb_module
        self._api = api
        self._settings = settings
        self._project_checked = False
        home = ragindex_home()
        self.cache_dir = Path(cache_dir) if cache_dir else home / "cache" / "wandb" / entity / project
        self.run_dir = Path(run_dir) if run_dir else home / "wandb"

    def __repr__(self) -> str:
        return f"WandbRegistry({self.entity!r}, {self.project!r})"

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def wb(self) -> Any:
        """The wandb module, imported only when first needed."""
        if self._wandb is None:
            try:
                import wandb  # noqa: PLC0415 - lazy on purpose: importing wandb is slow
            except ImportError as exc:
                raise RegistryError(f"{self.uri} needs the 'wandb' package (pip install 'ragindex[wandb]'): "
                                    f"{exc}") from exc
            self._wandb = wandb
        return self._wandb

    @property
    def api(self) -> Any:
        """The W&B public Api (it verifies the credentials when created)."""
        if self._api is None:
            self._api = self._call("connect", lambda: self.wb.Api(overrides={"base_url": self.base_url}))
        return self._api

    def _translate(self, what: str, exc: BaseException) -> RegistryError:
        """Whatever the SDK raised, as a registry error naming ``what`` and the URI (never the API key)."""
        inner = getattr(exc, "exc", None)
        cause = f" <- {type(inner).__name__}: {inner}" if inner is not None and str(inner) != str(exc) else ""
        reason = scrub(f"{type(exc).__name__}: {exc}{cause}")
        if type(exc).__name__ in ("AuthenticationError", "UsageError") or " 401" in reason or " 403" in reason:
            return RegistryError(f"{what} in {self.uri}: W&B refused the credentials ({reason}); check "
                                 "WANDB_API_KEY and the entity's permissions")
        if _transport(exc):
            return RegistryUnavailable(f"{what} in {self.uri}: W&B did not answer ({reason})")
        return RegistryError(f"{what} in {self.uri} failed: {reason}")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run an SDK call; whatever it raises becomes a registry error (see ``_translate``)."""
        try:
            return fn()
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises CommError, ValueError, UsageError, ...
            raise self._translate(what, exc) from None

    def check_project(self) -> None:
        """Fail loudly, naming the URI, when the project does not exist or cannot be read (once per registry)."""
        if self._project_checked:
            return
        try:
            _ = self.api.project(self.project, entity=self.entity).id  # one GetProject query; raises if missing
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "not found" in str(exc).lower():
                raise RegistryError(f"{self.uri}: no such W&B project, or it is not readable with this API key "
                                    f"({scrub(str(exc))}); create it with `ragindex init {self.uri}` or in the "
                                    "W&B UI") from None
            raise self._translate(f"reading project {self.entity}/{self.project}", exc) from None
        self._project_checked = True

    def create_project(self) -> None:
        """``ragindex init``: make the project (W&B projects are never created by accident here)."""
        self._call(f"creating project {self.project}", lambda: self.api.create_project(self.project, self.entity))
        self._project_checked = False
        self.check_project()

    def _path(self, name: str, tag: str) -> str:
        return f"{self.entity}/{self.project}/{name}:{tag}"

    def _fetch(self, name: str, tag: str) -> Any:
        """The Api artifact ``name:tag`` names; ArtifactNotFound only when W&B says it has none."""
        self.check_project()
        path = self._path(name, tag)
        try:
            return self.api.artifact(path)
        except Exception as exc:  # noqa: BLE001
            if _missing_artifact(exc):
                raise ArtifactNotFound(f"artifact {path} not found in {self.uri}: {scrub(str(exc))}") from None
            raise self._translate(f"reading artifact {name}:{tag}", exc) from None

    def _fetch_or_none(self, name: str, tag: str) -> Any | None:
        try:
            return self._fetch(name, tag)
        except ArtifactNotFound:
            return None

    def web_base(self) -> str:
        """The W&B web app that belongs to the configured server (W&B Server, wandb.ai, the SDK's default)."""
        explicit = os.environ.get("WANDB_APP_URL", "").strip()
        if explicit:
            return explicit.rstrip("/")
        try:
            from wandb.util import api_to_app_url  # noqa: PLC0415

            return api_to_app_url(self.base_url).rstrip("/")
        except ImportError:
            return self.base_url.replace("://api.", "://app.")

    def _url(self, type_name: str, name: str, version: str) -> str:
        return f"{self.web_base()}/{self.entity}/{self.project}/artifacts/{type_name}/{name}/{version}"

    def _provenance(self, artifact: Any) -> tuple[str | None, tuple[str, ...]]:
        """Producer run and consumed refs: from ragindex's own metadata, else W&B's lineage queries."""
        recorded = (artifact.metadata or {}).get(LINEAGE_KEY)
        if isinstance(recorded, dict):
            return recorded.get("run"), tuple(recorded.get("consumed") or ())
        try:
            producer = artifact.logged_by()
            if producer is None:
                return None, ()
            used = [u for u in producer.used_artifacts() if getattr(u, "entity", self.entity) == self.entity
                    and getattr(u, "project", self.project) == self.project]
        except Exception:  # noqa: BLE001 - lineage of a version not logged by ragindex is best effort
            return None, ()
        return str(producer.id), tuple(sorted({f"{collection_name(u)}:{u.version}" for u in used}))

    def _to_version(self, artifact: Any) -> ArtifactVersion:
        """An Api artifact as the protocol's value object, without further queries for ragindex's versions."""
        producer, consumed = self._provenance(artifact)
        aliases = [a for a in artifact.aliases if not VERSION_TAG.match(a)]
        aliases.sort(key=lambda a: (a != LATEST, a))
        name = collection_name(artifact)
        return ArtifactVersion(name=name, type=artifact.type, version=artifact.version, digest=artifact.digest,
                               aliases=tuple(aliases), metadata=public_metadata(artifact.metadata),
                               created_at=str(artifact.created_at), producer_run=producer, consumed=consumed,
                               url=self._url(artifact.type, name, artifact.version))

    def _raw_versions(self, name: str) -> list[Any]:
        """Every Api artifact of ``name``, oldest first ([] only when the project exists and has none)."""
        latest = self._fetch_or_none(name, LATEST)
        if latest is None:
            return []
        found = self._call(f"listing versions of {name}", lambda: list(
            self.api.artifacts(latest.type, f"{self.entity}/{self.project}/{name}", per_page=100)))
        return sorted(found, key=lambda a: int(str(a.version).lstrip("v")))

    def _init_kwargs(self, run: RunInfo, config: dict[str, Any]) -> dict[str, Any]:
        """``wandb.init`` arguments: a fresh run named after the pipeline run and step, its folder under
        RAGINDEX_HOME, no console capture (task logs stay in Airflow) unless RAGINDEX_WANDB_CONSOLE says so."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"entity": self.entity, "project": self.project, "job_type": run.job_type,
                                  "group": run.group, "name": run.name or (f"{run.group}/{run.job_type}" if run.group
                                                                            else run.job_type),
                                  "config": config, "reinit": "create_new", "dir": str(self.run_dir)}
        settings_class = getattr(self.wb, "Settings", None)
        if self._settings is not None:
            kwargs["settings"] = self._settings
        elif settings_class is not None:
            console = os.environ.get("RAGINDEX_WANDB_CONSOLE", "off")
            kwargs["settings"] = settings_class(console=console, silent=True, base_url=self.base_url)
        return kwargs

    def _start(self, run: RunInfo, config: dict[str, Any]) -> Any:
        return self._call(f"starting a W&B run for {run.job_type}", lambda: self.wb.init(**self._init_kwargs(run, config)))

    def _finish(self, wb_run: Any, ok: bool) -> None:
        """End the run; a failure to end it is reported, but never masks what happened inside it."""
        try:
            wb_run.finish(exit_code=0 if ok else 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("finishing W&B run %s in %s failed: %s", getattr(wb_run, "id", "?"), self.uri,
                        scrub(str(exc)))

    # -- storage primitives ----------------------------------------------------------------------------

    def _existing_with_digest(self, name: str, type: str, digest: str) -> Any | None:
        """An existing version of ``name`` with this digest, found before any run or staging."""
        for artifact in self._raw_versions(name):
            refuse_type_change(name, type, artifact.type)
            if artifact.digest == digest:
                return artifact
        return None

    def _build_artifact(self, request: LogRequest, producer: str) -> Any:
        """The ``wandb.Artifact``: files in place (immutable policy: no staging copy), references if enabled."""
        metadata = {**request.metadata, LINEAGE_KEY: {"run": producer, "consumed": list(request.consumed)}}
        artifact = self.wb.Artifact(request.name, type=request.type, metadata=metadata)
        artifact.add_dir(str(request.files), policy="immutable")
        if self.by_reference:
            for logical, url in reference_items(request.metadata):
                require_reference_client(url)
                artifact.add_reference(url, name=logical)
        return artifact

    def _log(self, request: LogRequest) -> ArtifactVersion:
        name, wanted = request.name, list(request.aliases)
        existing = self._existing_with_digest(name, request.type, request.digest)
        if existing is not None:
            return self._reuse(existing, wanted, actor=f"run:{request.run.group or 'unknown'}/{request.run.job_type}")
        previous = {alias: self._holder(name, alias) for alias in wanted}
        config = {**request.run.config, "ragindex_artifact": name, "ragindex_names": name}
        wb_run = self._start(request.run, config)
        ok = False
        try:
            artifact = self._call(f"preparing {name!r}", lambda: self._build_artifact(request, str(wb_run.id)))
            for ref in request.consumed:
                self._call(f"using {ref}", lambda ref=ref: wb_run.use_artifact(f"{self.entity}/{self.project}/{ref}"))
            logged = self._call(f"logging {name!r}", lambda: wb_run.log_artifact(artifact, aliases=wanted))
            version = str((self._call(f"uploading {name!r}", logged.wait) or logged).version)
            moves = [AliasMove(name, a, previous[a], version, utc_now(), f"run:{wb_run.id}", "logged")
                     for a in wanted if previous[a] != version]
            self._write_record(wb_run, moves)
            ok = True
        finally:
            self._finish(wb_run, ok)
        return self._get(name, version)

    def _reuse(self, artifact: Any, aliases: list[str], *, actor: str) -> ArtifactVersion:
        """An existing identical version, with the requested aliases moved onto it."""
        return self._move_aliases(self._to_version(artifact), aliases, actor=actor, reason="logged")

    def _move_aliases(self, version: ArtifactVersion, aliases: Sequence[str], *, actor: str,
                      reason: str) -> ArtifactVersion:
        """Aliases moved onto an existing version as one alias record run (none when all are on it already:
        W&B aliases are exclusive within a name, so the version's own aliases say who holds them)."""
        changes = tuple(AliasChange(version.ref, a) for a in aliases if a not in version.aliases)
        if not changes:
            return version
        self.record_decision(Decision(kind="alias", verdict="moved", ref=version.ref, actor=actor, reason=reason,
                                      changes=changes))
        return self._get(version.name, version.version)

    def _holder(self, name: str, alias: str) -> str | None:
        """The version currently holding ``alias`` (``vN``), or None."""
        holder = self._fetch_or_none(name, alias)
        return None if holder is None else str(holder.version)

    def _plan(self, change: AliasChange, actor: str, reason: str) -> AliasMove | None:
        """The move a change would make now (None: it is in place already)."""
        name, version = split_ref(change.ref)
        held = self._holder(name, change.alias)
        if (held != version) if change.remove else (held == version):
            return None
        return AliasMove(name, change.alias, held, None if change.remove else version, utc_now(), actor, reason)

    def _save_change(self, change: AliasChange) -> None:
        """Make one alias change through the Api (``save()`` adds and removes aliases by difference)."""
        name, version = split_ref(change.ref)
        target = self._fetch(name, version)
        if change.remove:
            target.aliases = [a for a in target.aliases if a != change.alias]
        else:
            target.aliases = [*target.aliases, change.alias]
        self._call(f"moving alias {change.alias!r} of {change.ref}", target.save)

    def _interrupted_moves(self, key: str) -> dict[tuple[str, str], AliasMove]:
        """Moves an interrupted earlier try of this decision planned (and may have made): a retry that finds
        an alias already in place records that move, so the history has it exactly once."""
        planned: dict[tuple[str, str], AliasMove] = {}
        for run in self._runs({"config.ragindex_key": key}):
            record = self._summary(run)
            if not record.get("complete"):
                planned.update({(m["name"], m["alias"]): AliasMove(**m) for m in record.get("moves", [])})
        return planned

    def _record(self, decision: Decision) -> Decision:
        names = sorted({decision.name, *(split_ref(c.ref)[0] for c in decision.changes)})
        config = {"ragindex_key": decision.key, "ragindex_artifact": decision.name, "ragindex_names": "|".join(names),
                  "ragindex_decision": decision.to_json()}
        why = decision.move_reason
        earlier = self._interrupted_moves(decision.key)
        plans = [(c, self._plan(c, decision.actor, why)) for c in decision.changes]
        moves = [m for m in (p or earlier.get((split_ref(c.ref)[0], c.alias)) for c, p in plans) if m is not None]
        wb_run = self._start(RunInfo(job_type=decision.kind, group=decision.pipeline_run,
                                     name=f"{decision.pipeline_run or 'cli'}/{decision.kind}"), config)
        ok = False
        try:
            self._call(f"using {decision.ref}",
                       lambda: wb_run.use_artifact(f"{self.entity}/{self.project}/{decision.ref}"))
            self._write_record(wb_run, moves, complete=False)
            for change, plan in plans:
                if plan is not None:
                    self._save_change(change)
            self._write_record(wb_run, moves, complete=True)
            ok = True
        finally:
            self._finish(wb_run, ok)
        return self._find_record(decision.key) or decision.recorded(at=utc_now(), record_id=str(wb_run.id),
                                                                     moves=moves)

    def _write_record(self, wb_run: Any, moves: list[AliasMove], *, complete: bool = True) -> None:
        """The run's record: its moves, planned (``complete`` False) or made; a run never marked complete was
        interrupted and is no record."""
        body = {"complete": complete, "moves": [asdict(m) for m in moves]}
        self._call("writing the run's record", lambda: wb_run.summary.__setitem__(RECORD_KEY, body))

    def _runs(self, filters: dict[str, Any]) -> list[Any]:
        """Runs matching ``filters``, oldest first, read fresh (the SDK caches ``Api.runs`` per query)."""
        self.check_project()
        cache = getattr(self.api, "_runs", None)
        if isinstance(cache, dict):
            cache.clear()
        return self._call("reading the record runs", lambda: list(self.api.runs(
            f"{self.entity}/{self.project}", filters=filters, order="+created_at", per_page=100, lazy=False)))

    @staticmethod
    def _summary(run: Any) -> dict[str, Any]:
        summary = getattr(run, "summary_metrics", None)
        if not isinstance(summary, dict):
            summary = dict(getattr(run, "summary", {}) or {})
        record = summary.get(RECORD_KEY)
        return record if isinstance(record, dict) else {}

    def _stored_record(self, run: Any) -> Decision | None:
        """A finished record run as a Decision (server time), or None for a log run or an interrupted one."""
        body = (run.config or {}).get("ragindex_decision")
        record = self._summary(run)
        if not isinstance(body, dict) or not record.get("complete"):
            return None
        moves = [AliasMove(**{**m, "at": str(run.created_at)}) for m in record.get("moves", [])]
        return Decision.from_json(body).recorded(at=str(run.created_at), record_id=str(run.id), moves=moves)

    def _records(self, name: str) -> list[Decision]:
        found: dict[str, Decision] = {}
        for run in self._runs({"config.ragindex_artifact": name}):
            stored = self._stored_record(run)
            if stored is not None and stored.key not in found:  # an interrupted try left no complete record
                found[stored.key] = stored
        return list(found.values())

    def _find_record(self, key: str) -> Decision | None:
        for run in self._runs({"config.ragindex_key": key}):
            stored = self._stored_record(run)
            if stored is not None:
                return stored
        return None

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every move of ``alias`` within ``name``, from the log and record runs, in server order."""
        moves: list[AliasMove] = []
        seen_keys: set[str] = set()
        for run in self._runs({"config.ragindex_names": {"$regex": _names_pattern(name)}}):
            record = self._summary(run)
            key = (run.config or {}).get("ragindex_key")
            if not record.get("complete") or (key and key in seen_keys):
                continue
            seen_keys.add(key or str(run.id))
            moves += [AliasMove(**{**m, "at": str(run.created_at)}) for m in record.get("moves", [])
                      if m.get("name") == name and m.get("alias") == alias]
        return moves

    def alias_token(self, name: str, alias: str) -> str:
        """The holder's version and digest from one artifact query (no history: that is a run query), so a
        server polling it every few seconds learns of a move within its poll interval plus that query."""
        artifact = self._fetch_or_none(name, alias)
        return "absent" if artifact is None else f"{artifact.version}:{artifact.digest}"

    def _set_alias(self, version: ArtifactVersion, alias: str, actor: str, reason: str) -> ArtifactVersion:
        """A plain alias move is a record run too, so the alias history lives in W&B."""
        return self._move_aliases(version, [alias], actor=actor, reason=reason)

    def _update_metadata(self, version: ArtifactVersion, patch: dict[str, Any]) -> ArtifactVersion:
        target = self._fetch(version.name, version.version)

        def save() -> None:
            target.metadata = {**dict(target.metadata or {}), **patch}
            target.save()

        self._call(f"updating the metadata of {version.ref}", save)
        return self._get(version.name, version.version)

    def _get(self, name: str, tag: str) -> ArtifactVersion:
        return self._to_version(self._fetch(name, tag))

    def _versions(self, name: str) -> list[ArtifactVersion]:
        return [self._to_version(a) for a in self._raw_versions(name)]

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        """Download into ``into`` and check the files against the version's digest."""
        artifact = self._fetch(version.name, version.version)
        self._call(f"downloading {version.ref}", lambda: artifact.download(root=str(into)))
        if not has_references(artifact) and dir_digest(into) != artifact.digest:
            raise RegistryError(f"download of {version.ref} from {self.uri} does not match its digest")

    def _stored_dir(self, version: ArtifactVersion) -> Path:
        """The version's files in the local cache (downloaded once per digest)."""
        target = (self.cache_dir / version.name / version.digest).expanduser().resolve()
        if target.is_dir():
            return target
        return fill_atomically(target, lambda tmp: self._fill(version, tmp), version.ref, keep_existing=True)

    def producer(self, version: ArtifactVersion) -> RunInfo | None:
        """The W&B run that logged the version (one query), without the registry's bookkeeping config."""
        if not version.producer_run:
            return None
        run = self._call(f"reading the run that logged {version.ref}",
                         lambda: self.api.run(f"{self.entity}/{self.project}/{version.producer_run}"))
        config = {k: v for k, v in dict(run.config or {}).items() if not str(k).startswith("ragindex_")}
        return RunInfo(job_type=run.job_type, group=getattr(run, "group", None), config=config,
                       run_id=str(run.id), name=getattr(run, "name", None))

    def web_url(self, ref: str) -> str | None:
        """The W&B page of the version, under the configured server's web app."""
        return self.get(ref).url
