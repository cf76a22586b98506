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
  on, makes the alias changes with the SDK's alias mutations (``save()`` without its metadata write) and writes
  the moves into its summary. The history (and rollback's "previous holder") is read back from those runs in
  server time order (``created_at``), and a decision's ``key`` (in the run config) makes a retried step find its
  record instead of writing a second one.
- **Governance moves take turns.** W&B has no compare-and-set on aliases: a promotion or rollback holds a file
  lock on this machine (``governance_lock``) and the DAGs' moves share one Airflow pool; each record reads the
  holder it expects again once its run exists and, finding another, closes the run as aborted and moves
  nothing (``ConcurrentMove``: the step is run again against the new holder).
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
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ragindex.names import ARTIFACT_TYPES, PRODUCTION
from ragindex.settings import ragindex_home

from .base import RegistryBase, move_conflict, refuse_type_change
from .digest import dir_digest
from .protocol import (
    RECORD_KINDS,
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
from .rules import (
    BACKEND_METADATA_KEYS,
    LATEST,
    RESERVED_PREFIX,
    VERSION_TAG,
    WANDB_MAX_METADATA_KEYS,
    fill_atomically,
    utc_now,
)

LINEAGE_KEY = f"{RESERVED_PREFIX}lineage"
RECORD_KEY = f"{RESERVED_PREFIX}record"  # in a run's summary: {"complete": True, "moves": [...]}
REPORT_KEY = f"{RESERVED_PREFIX}report"  # in a report run's summary: {"complete": True, "table": ...}
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


_PROJECT_MISSING = re.compile(r"project '[^']*' not found under entity")


def _missing_artifact(exc: BaseException) -> bool:
    """The SDK's way of saying "no such artifact": a CommError wrapping a ValueError ("artifact membership
    'name:tag' not found in 'e/p'"); a missing project reads "project 'p' not found under entity 'e'"."""
    inner = getattr(exc, "exc", None)
    text = str(inner).lower()
    return isinstance(inner, ValueError) and "not found" in text and "under entity" not in text


# Why a W&B call failed, by cause (not by exception class: the SDK raises CommError, AuthenticationError,
# ValueError and UsageError for both kinds). See classify().
UNAVAILABLE, CREDENTIALS, MISSING, REFUSED = "unavailable", "credentials", "missing", "refused"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CREDENTIAL_STATUS = frozenset({401, 403})
_STATUS_TEXT = re.compile(r"(?:error|http|status(?: code)?|returned)[ :]+(\d{3})\b", re.IGNORECASE)
_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|deadline exceeded|connection (?:refused|reset|aborted|error)|temporar|unreachable|"
    r"no such host|\beof\b|service process is (?:not running|busy)|too many requests|rate limit|bad gateway|"
    r"service unavailable|gateway time|network", re.IGNORECASE)
_CREDENTIAL_TEXT = re.compile(r"api key|api_key|credential|unauthori[sz]ed|permission|forbidden|not logged in",
                              re.IGNORECASE)
_MISSING_TEXT = re.compile(r"not found|does not exist|no such (?:entity|project)", re.IGNORECASE)
_TRANSIENT_TYPES = ("ConnectionError", "Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout",
                    "WaitTimeoutError", "ChunkedEncodingError", "MailboxClosedError", "HandleAbandonedError")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``.exc`` of a CommError, ``__cause__``, ``__context__``), outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 12:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [getattr(item, "exc", None), item.__cause__, item.__context__]
    return seen


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status a failure carries (``WandbApiFailedError.response.http_status``, a requests response);
    0 means wandb-core got no HTTP answer at all."""
    response = getattr(exc, "response", None)
    for attr in ("http_status", "status_code"):
        status = getattr(response, attr, None)
        if isinstance(status, int):
            return status
    return None


def _by_status(status: int) -> str | None:
    if status in CREDENTIAL_STATUS:
        return CREDENTIALS
    if status in TRANSIENT_STATUS or status >= 500:
        return UNAVAILABLE
    if status == 404:
        return MISSING
    if 400 <= status < 500:
        return REFUSED
    return None


def classify(exc: BaseException, default: str = REFUSED) -> str:
    """Why a W&B call failed: UNAVAILABLE (no answer, a timeout, 429, 5xx: worth retrying), CREDENTIALS
    (401/403, a key the server refused), MISSING (no such entity or project) or REFUSED (validation, other 4xx).

    The cause decides, innermost first: an HTTP status wandb-core reports (0: no answer), a transport exception,
    then what the message says (``wandb.init`` raises ``CommError(message)`` with ``.exc`` None; ``Api()``
    reports an unreachable server as ``AuthenticationError``). ``default`` is for a failure that says nothing
    (an upload that failed in ``Artifact.wait()`` is worth a retry; a bare ``ValueError`` is not)."""
    chain = _chain(exc)
    for item in reversed(chain):
        status = _http_status(item)
        if status is None:
            continue
        if status == 0:
            return CREDENTIALS if _CREDENTIAL_TEXT.search(str(item)) and not _TRANSIENT_TEXT.search(str(item)) \
                else UNAVAILABLE
        verdict = _by_status(status)
        if verdict:
            return verdict
    if any(type(item).__name__ in _TRANSIENT_TYPES for item in chain):
        return UNAVAILABLE
    if any(type(item).__name__ in ("UsageError", "UnsupportedError") for item in chain):
        return REFUSED  # the SDK's own validation: no request was answered or refused
    for item in reversed(chain):
        text = str(item)
        found = _STATUS_TEXT.search(text)
        if found and _by_status(int(found.group(1))):
            return _by_status(int(found.group(1))) or default
        if _TRANSIENT_TEXT.search(text):
            return UNAVAILABLE
        if _CREDENTIAL_TEXT.search(text) and not text.startswith(("Failed to verify", "An error occurred while verif")):
            return CREDENTIALS
        if _MISSING_TEXT.search(text):
            return MISSING
    if any(type(item).__name__ == "AuthenticationError" for item in chain):
        return CREDENTIALS
    return default


def alias_mutations(artifact: Any) -> tuple[Callable[..., None], Callable[..., None], Any] | None:
    """The SDK's alias mutations of a logged version and the path they take, as ``Artifact._update`` calls them
    (wandb 0.31: ``_add_aliases(alias_names, target=FullArtifactPath(...))``, each sends nothing for an empty set),
    or None when this SDK has none (the caller then uses ``save()``)."""
    add, delete = getattr(artifact, "_add_aliases", None), getattr(artifact, "_delete_aliases", None)
    if not (callable(add) and callable(delete) and hasattr(artifact, "_saved_aliases")):
        return None
    try:
        from wandb.sdk.artifacts._validators import FullArtifactPath  # noqa: PLC0415
    except ImportError:
        return None
    path = FullArtifactPath(prefix=artifact.entity, project=artifact.project, name=collection_name(artifact))
    return add, delete, path


REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
REGISTRY_PREFIX = "wandb-registry-"


def _names_pattern(name: str) -> str:
    """A run filter that finds ``name`` in ``ragindex_names`` ("a|b|c") without regex anchors (some W&B
    servers do not support them); the caller keeps only the runs that name it exactly."""
    return re.escape(name)


def _created(run: Any) -> datetime:
    """A run's server time (``created_at``, ISO 8601 with or without a zone: UTC), the order records are read in."""
    try:
        when = datetime.fromisoformat(str(run.created_at).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _names(run: Any) -> list[str]:
    return str((run.config or {}).get("ragindex_names") or "").split("|")


class WandbRegistry(RegistryBase):
    """The ``Registry`` protocol on W&B Artifacts in one ENTITY/PROJECT."""

    def __init__(self, entity: str, project: str, *, wandb_module: Any = None, api: Any = None,
                 by_reference: bool = False, settings: Any = None, cache_dir: Path | None = None,
                 base_url: str | None = None, run_dir: Path | None = None, registry: str | None = None) -> None:
        if not entity or not project:
            raise RegistryError(f"wandb registry needs ENTITY and PROJECT, got {entity!r}/{project!r}")
        if registry is not None and not REGISTRY_NAME.match(registry):
            raise RegistryError(f"W&B Registry name {registry!r}: letters, digits, '-' and '_' only, without the "
                                "'wandb-registry-' prefix")
        self.entity = entity
        self.project = project
        self.by_reference = by_reference
        self.registry_name = registry or None  # a W&B Registry that production is also linked into
        query = "&".join(q for q in ("reference=1" if by_reference else "",
                                     f"registry={registry}" if registry else "") if q)
        self.uri = f"wandb://{entity}/{project}" + (f"?{query}" if query else "")
        self.base_url = (base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._wandb = wandb_module
        self._api = api
        self._settings = settings
        self._project_checked = False
        self._fetched: dict[str, Any] = {}  # Api artifacts fetched by this public call, by ``name:vN``
        self._key_runs: tuple[str, list[Any]] | None = None  # the runs _find_record just read for a key
        self._types: dict[str, str] = {}  # artifact name -> type, for web links without a query
        home = ragindex_home()
        self.cache_dir = Path(cache_dir) if cache_dir else home / "cache" / "wandb" / entity / project
        self.run_dir = Path(run_dir) if run_dir else home / "wandb"
        # W&B has no lock a mover can take; the processes of this machine take turns on a file (across machines the
        # Airflow pool serialises the DAGs' moves, and each record's compare-and-set catches the rest).
        self.lock_path = home / "locks" / re.sub(r"[^A-Za-z0-9_.-]", "_", f"wandb-{entity}-{project}.lock")

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
        """The W&B public Api (it verifies the credentials when created). Entity and project are given, so it
        never asks the server for a default entity (``Api._parse_*_path``)."""
        if self._api is None:
            overrides = {"base_url": self.base_url, "entity": self.entity, "project": self.project}
            self._api = self._call("connecting to W&B", lambda: self.wb.Api(overrides=overrides))
        return self._api

    def _translate(self, what: str, exc: BaseException, default: str = REFUSED) -> RegistryError:
        """Whatever the SDK raised, as a registry error chosen by its cause (see ``classify``), naming ``what``,
        the URI and the fix (never the API key)."""
        inner = getattr(exc, "exc", None) or exc.__cause__
        cause = f" <- {type(inner).__name__}: {inner}" if inner is not None and str(inner) != str(exc) else ""
        reason = scrub(f"{type(exc).__name__}: {exc}{cause}")
        why = classify(exc, default)
        if why == UNAVAILABLE:
            return RegistryUnavailable(f"{what} in {self.uri}: W&B did not answer ({reason}); retry later")
        if why == CREDENTIALS:
            return RegistryError(f"{what} in {self.uri}: W&B refused the credentials ({reason}); check "
                                 f"WANDB_API_KEY and that it may write to {self.entity}/{self.project}")
        if why == MISSING:
            return RegistryError(f"{what} in {self.uri}: no such W&B entity or project, or it is not readable "
                                 f"with this API key ({reason}); check the URI, or create the project with "
                                 f"`ragindex init {self.uri}`")
        return RegistryError(f"{what} in {self.uri}: W&B refused the request ({reason})")

    def _call(self, what: str, fn: Callable[[], T], default: str = REFUSED) -> T:
        """Run an SDK call; whatever it raises becomes a registry error (see ``_translate``)."""
        try:
            return fn()
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK raises CommError, ValueError, UsageError, ...
            raise self._translate(what, exc, default) from None

    def check_project(self) -> None:
        """Fail loudly, naming the URI, when the project does not exist or cannot be read (once per registry; an
        artifact read answers it too, see ``_fetch``, so a task whose first read is one pays no GetProject)."""
        if self._project_checked:
            return
        try:
            _ = self.api.project(self.project, entity=self.entity).id  # one GetProject query; raises if missing
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001
            if classify(exc) in (MISSING, REFUSED) and "not found" in str(exc).lower():
                raise self._no_project(exc) from None
            raise self._translate(f"reading project {self.entity}/{self.project}", exc) from None
        self._project_checked = True

    def _no_project(self, exc: BaseException) -> RegistryError:
        return RegistryError(f"{self.uri}: no such W&B project, or it is not readable with this API key "
                             f"({scrub(str(exc))}); create it with `ragindex init {self.uri}` or in the W&B UI")

    def create_project(self) -> None:
        """``ragindex init``: make the project (W&B projects are never created by accident here)."""
        self._call(f"creating project {self.project}", lambda: self.api.create_project(self.project, self.entity))
        self._project_checked = False
        self.check_project()

    def _path(self, name: str, tag: str) -> str:
        return f"{self.entity}/{self.project}/{name}:{tag}"

    def _fetch(self, name: str, tag: str) -> Any:
        """The Api artifact ``name:tag`` names; ArtifactNotFound only when W&B says it has none. The query names
        the project, so its answer also says whether the project exists (``Artifact._from_name``: "project 'p' not
        found under entity 'e'" otherwise): no GetProject beforehand."""
        path = self._path(name, tag)
        try:
            artifact = self.api.artifact(path)
        except Exception as exc:  # noqa: BLE001
            if _missing_artifact(exc):
                self._project_checked = True  # "artifact membership ... not found in 'e/p'": the project is there
                raise ArtifactNotFound(f"artifact {path} not found in {self.uri}: {scrub(str(exc))}") from None
            if _PROJECT_MISSING.search(str(getattr(exc, "exc", None) or exc)):
                raise self._no_project(exc) from None
            raise self._translate(f"reading artifact {name}:{tag}", exc) from None
        self._project_checked = True
        self._fetched[f"{name}:{artifact.version}"] = artifact
        return artifact

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
        self._types[name] = artifact.type
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

    def _run_settings(self) -> Any:
        """Settings of a registry run: no console capture (task logs stay in Airflow) unless
        RAGINDEX_WANDB_CONSOLE says so, and none of what a training run uploads (system stats, machine info,
        git state, requirements, code): each is requests a registry run does not need."""
        if self._settings is not None:
            return self._settings
        settings_class = getattr(self.wb, "Settings", None)
        if settings_class is None:
            return None
        console = os.environ.get("RAGINDEX_WANDB_CONSOLE", "off")
        return settings_class(console=console, silent=True, base_url=self.base_url, x_disable_stats=True,
                              x_disable_meta=True, x_disable_machine_info=True, disable_git=True,
                              x_save_requirements=False, disable_code=True, save_code=False)

    def _init_kwargs(self, run: RunInfo, config: dict[str, Any]) -> dict[str, Any]:
        """``wandb.init`` arguments: a fresh run named after the pipeline run and step, its folder under
        RAGINDEX_HOME."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"entity": self.entity, "project": self.project, "job_type": run.job_type,
                                  "group": run.group, "name": run.name or (f"{run.group}/{run.job_type}" if run.group
                                                                            else run.job_type),
                                  "config": config, "reinit": "create_new", "dir": str(self.run_dir)}
        settings = self._run_settings()
        if settings is not None:
            kwargs["settings"] = settings
        return kwargs

    def _start(self, run: RunInfo, config: dict[str, Any]) -> Any:
        """A new run; ``wandb.init`` returns once the server has it, ``config`` included."""
        wb_run = self._call(f"starting a W&B run for {run.job_type}",
                            lambda: self.wb.init(**self._init_kwargs(run, config)), default=UNAVAILABLE)
        # The run would make an Api of its own for use_artifact/log_artifact (wandb_run.py: Run._public_api,
        # cached in _cached_public_api): one more credential check per run. Ours is for the same server,
        # entity and project.
        if self._api is not None and getattr(wb_run, "_cached_public_api", False) is None:
            wb_run._cached_public_api = self._api
        return wb_run

    def _finish(self, wb_run: Any, ok: bool) -> str | None:
        """End the run; a failure to end it is returned (the caller reads the record back), never raised over
        what happened inside the run."""
        try:
            wb_run.finish(exit_code=0 if ok else 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("finishing W&B run %s in %s failed: %s", getattr(wb_run, "id", "?"), self.uri,
                        scrub(str(exc)))
            return scrub(f"{type(exc).__name__}: {exc}")
        return None

    def _read_back(self, wb_run: Any, key: str, failure: str | None) -> Decision | None:
        """The record as W&B holds it after ``finish`` (server time), else RegistryUnavailable: a run whose
        completion did not reach the server is no record, and the step must not succeed on a local copy."""
        run_id = str(getattr(wb_run, "id", ""))
        run = self._call(f"reading back the record of run {run_id}", lambda: self.api.run(
            f"{self.entity}/{self.project}/{run_id}"), default=UNAVAILABLE)
        stored = self._stored_record(run)
        logged = (run.config or {}).get("ragindex_key") == key and self._summary(run).get("complete")
        if (stored is None or stored.key != key) and not logged:
            raise RegistryUnavailable(f"recording {key} in {self.uri}: W&B holds no complete record of run {run_id}"
                                      + (f" (finishing it failed: {failure})" if failure else "")
                                      + "; a retry finishes it")
        return stored

    # -- one public call at a time: what it fetched is reused, never what an earlier call fetched -------------

    def log_artifact(self, *args: Any, **kwargs: Any) -> ArtifactVersion:
        self._fetched = {}
        try:
            return super().log_artifact(*args, **kwargs)
        finally:
            self._fetched = {}

    def record_decision(self, decision: Decision) -> Decision:
        self._fetched, self._key_runs = {}, None
        try:
            return super().record_decision(decision)
        finally:
            self._fetched, self._key_runs = {}, None

    def update_metadata(self, ref: str, patch: dict[str, Any]) -> ArtifactVersion:
        self._fetched = {}
        try:
            return super().update_metadata(ref, patch)
        finally:
            self._fetched = {}

    def _fetched_or_fetch(self, ref: str) -> Any:
        """The Api artifact this call fetched for ``ref`` (``name:vN``), else one fetch."""
        name, version = split_ref(ref)
        return self._fetched.get(ref) or self._fetch(name, version)

    # -- storage primitives ----------------------------------------------------------------------------

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

    @staticmethod
    def _log_key(name: str, digest: str) -> str:
        """The record key of the run that logs this content (one version per digest, so one key)."""
        return f"log/{name}@{digest}"

    def _log(self, request: LogRequest) -> ArtifactVersion:
        name, wanted = request.name, list(request.aliases)
        if len(request.metadata) + BACKEND_METADATA_KEYS > WANDB_MAX_METADATA_KEYS:  # the rules say so already
            raise RegistryError(f"metadata for {name!r} has {len(request.metadata)} keys; W&B stores at most "
                                f"{WANDB_MAX_METADATA_KEYS - BACKEND_METADATA_KEYS} besides the registry's own")
        versions = self._raw_versions(name)
        for artifact in versions:
            refuse_type_change(name, request.type, artifact.type)
        key = self._log_key(name, request.digest)
        existing = next((a for a in versions if a.digest == request.digest), None)
        if existing is not None:
            return self._reuse(existing, wanted, key=key,
                               actor=f"run:{request.run.group or 'unknown'}/{request.run.job_type}")
        holders = {a: str(v.version) for v in versions for a in v.aliases}
        plan = [AliasMove(name, a, holders.get(a), "", "", "", "logged") for a in wanted]  # to: what is logged
        config = {**request.run.config, "ragindex_artifact": name, "ragindex_names": name, "ragindex_key": key,
                  "ragindex_plan": [asdict(m) for m in plan]}
        wb_run = self._start(request.run, config)
        ok = False
        try:
            artifact = self._call(f"preparing {name!r}", lambda: self._build_artifact(request, str(wb_run.id)))
            for ref in request.consumed:
                used = self._fetched.get(ref) or f"{self.entity}/{self.project}/{ref}"
                self._call(f"using {ref}", lambda used=used: wb_run.use_artifact(used), default=UNAVAILABLE)
            logged = self._call(f"logging {name!r}", lambda: wb_run.log_artifact(artifact, aliases=wanted))
            done = self._call(f"uploading {name!r}", logged.wait, default=UNAVAILABLE) or logged
            version = str(done.version)
            moves = [replace(m, to_version=version, at=utc_now(), actor=f"run:{wb_run.id}") for m in plan
                     if m.from_version != version]
            self._write_record(wb_run, moves)
            ok = True
        finally:
            failure = self._finish(wb_run, ok)
        if failure is not None:
            self._read_back(wb_run, key, failure)
        return self._to_version(done)

    def _reuse(self, artifact: Any, aliases: list[str], *, key: str, actor: str) -> ArtifactVersion:
        """An existing identical version, with the requested aliases moved onto it. When the run that logged it
        was interrupted before its record reached W&B, the record is finished now (its planned moves)."""
        version = self._to_version(artifact)
        runs = self._open_tries(self._runs({"config.ragindex_key": key}))
        if runs:
            planned = {a for r in runs for a in (m.get("alias") for m in (r.config or {}).get("ragindex_plan") or [])}
            wanted = list(dict.fromkeys([*planned, *aliases]))
            changes = tuple(AliasChange(version.ref, a) for a in wanted)
            self.record_decision(Decision(kind="alias", verdict="moved", ref=version.ref, actor=actor,
                                          reason="logged", key=key, changes=changes))
            return replace(version, aliases=tuple(sorted({*version.aliases, *wanted},
                                                         key=lambda a: (a != LATEST, a))))
        return self._move_aliases(version, aliases, actor=actor, reason="logged")

    def _move_aliases(self, version: ArtifactVersion, aliases: Sequence[str], *, actor: str,
                      reason: str) -> ArtifactVersion:
        """Aliases moved onto an existing version as one alias record run (none when all are on it already:
        W&B aliases are exclusive within a name, so the version's own aliases say who holds them)."""
        changes = tuple(AliasChange(version.ref, a) for a in aliases if a not in version.aliases)
        if not changes:
            return version
        self.record_decision(Decision(kind="alias", verdict="moved", ref=version.ref, actor=actor, reason=reason,
                                      changes=changes))
        return replace(version, aliases=tuple(sorted({*version.aliases, *(c.alias for c in changes)},
                                                     key=lambda a: (a != LATEST, a))))

    def _holder(self, name: str, alias: str) -> str | None:
        """The version currently holding ``alias`` (``vN``), or None."""
        holder = self._fetch_or_none(name, alias)
        return None if holder is None else str(holder.version)

    def _plan(self, change: AliasChange, target: Any, actor: str, reason: str,
              expect: dict[str, str | None]) -> AliasMove | None:
        """The move a change would make now (None: it is in place already), from the version as this call
        fetched it; only an alias to add asks who holds it now, unless the decision expects a holder (then that one
        is checked once the run exists, see ``_check_holders``)."""
        name, version = split_ref(change.ref)
        has = change.alias in target.aliases
        if has != change.remove:
            return None
        where = f"{name}:{change.alias}"
        held = version if change.remove else expect[where] if where in expect else self._holder(name, change.alias)
        return AliasMove(name, change.alias, held, None if change.remove else version, utc_now(), actor, reason)

    def _check_holders(self, wb_run: Any, decision: Decision, resuming: bool) -> None:
        """The compare-and-set: with the run on record (its plan in its config), each alias the decision expects
        is read again; held by another version than the caller's checks found (one the governance lock does not
        reach moved it), the run is closed as aborted (no record, no open try) and nothing moves. A retry that
        finishes an interrupted try may find its own target holding it already."""
        for where, wanted in decision.expect.items():
            name, alias = split_ref(where)
            held = self._holder(name, alias)
            ours = {split_ref(c.ref)[1] for c in decision.changes
                    if split_ref(c.ref)[0] == name and c.alias == alias and not c.remove}
            if held == wanted or (resuming and held in ours):
                continue
            conflict = move_conflict(decision, where, held, self.uri)
            body = {"aborted": True, "reason": str(conflict)}
            self._call("closing the aborted run", lambda: wb_run.summary.__setitem__(RECORD_KEY, body))
            raise conflict

    @staticmethod
    def _open_tries(runs: Sequence[Any]) -> list[Any]:
        """The runs of one key (oldest first) that may have moved aliases without recording it: the incomplete ones
        after the last try that ended, complete or aborted by a compare-and-set (which found the holder moved on, so
        the earlier plans are void)."""
        open_runs: list[Any] = []
        for run in runs:
            record = WandbRegistry._summary(run)
            if record.get("aborted") or record.get("complete"):
                open_runs = []
            else:
                open_runs.append(run)
        return open_runs

    def _interrupted_moves(self, key: str) -> dict[tuple[str, str], AliasMove]:
        """Moves an interrupted earlier try of this record planned (in its run's config, which W&B holds from
        ``wandb.init`` on) and may have made: a retry that finds an alias in place records that move."""
        planned: dict[tuple[str, str], AliasMove] = {}
        runs = self._key_runs[1] if self._key_runs and self._key_runs[0] == key else self._runs(
            {"config.ragindex_key": key})
        for run in self._open_tries(runs):
            for m in (run.config or {}).get("ragindex_plan") or []:
                planned[(m["name"], m["alias"])] = AliasMove(**m)
        return planned

    def _interrupted_details(self, decision: Decision) -> Decision:
        """The decision with the details its interrupted first try planned (in that run's config)."""
        runs = self._key_runs[1] if self._key_runs and self._key_runs[0] == decision.key else []
        for run in self._open_tries(runs):
            body = (run.config or {}).get("ragindex_decision")
            if isinstance(body, dict) and isinstance(body.get("details"), dict):
                return replace(decision, details=body["details"])
        return decision

    def _record(self, decision: Decision) -> Decision:
        names = sorted({decision.name, *(split_ref(c.ref)[0] for c in decision.changes)})
        why = decision.move_reason
        # Only a key on file can have had an earlier try (base.record_decision looked it up: _find_record).
        earlier = self._interrupted_moves(decision.key) if self._key_runs else {}
        if earlier:  # finishing an interrupted try: its details (e.g. the previous holder) were read before its moves
            decision = self._interrupted_details(decision)
        targets = {c.ref: self._fetched_or_fetch(c.ref) for c in decision.changes}
        moves: list[AliasMove] = []
        for change in decision.changes:
            name, version = split_ref(change.ref)
            move = self._plan(change, targets[change.ref], decision.actor, why, decision.expect)
            if move is None and (name, change.alias) in earlier:  # made by the interrupted try: record it
                move = earlier[(name, change.alias)]
                move = replace(move, to_version=None if change.remove else (move.to_version or version))
            if move is not None:
                moves.append(move)
        links = []  # the changes the Registry does not hold yet: linked in the run below
        for change in self._registry_links(decision):
            move = self._plan_link(change, decision.actor, why)
            if move is not None:
                links.append(change)
            elif (self.registry_path(decision.name), PRODUCTION) in earlier:
                move = earlier[(self.registry_path(decision.name), PRODUCTION)]  # linked by the interrupted try
            if move is not None:
                moves.append(move)
        to_save = {c.ref for c in decision.changes
                   if (c.alias in targets[c.ref].aliases) == c.remove}
        config = {"ragindex_key": decision.key, "ragindex_artifact": decision.name, "ragindex_names": "|".join(names),
                  "ragindex_decision": decision.to_json(), "ragindex_plan": [asdict(m) for m in moves]}
        wb_run = self._start(RunInfo(job_type=decision.kind, group=decision.pipeline_run,
                                     name=f"{decision.pipeline_run or 'cli'}/{decision.kind}"), config)
        ok = False
        try:
            self._check_holders(wb_run, decision, resuming=bool(earlier))
            subject = self._fetched.get(decision.ref) or f"{self.entity}/{self.project}/{decision.ref}"
            self._call(f"using {decision.ref}", lambda: wb_run.use_artifact(subject), default=UNAVAILABLE)
            for change in links:  # first: a Registry that refuses the link (a protected alias) leaves nothing moved
                self._link(wb_run, targets[change.ref], change)
            for ref in dict.fromkeys(c.ref for c in decision.changes if c.ref in to_save):
                self._save_changes(targets[ref], [c for c in decision.changes if c.ref == ref])
            self._write_record(wb_run, moves)
            ok = True
        finally:
            failure = self._finish(wb_run, ok)
        stored = self._read_back(wb_run, decision.key, failure)
        assert stored is not None
        return stored

    def _save_changes(self, target: Any, changes: list[AliasChange]) -> None:
        """Every alias change on one version, by the SDK's own alias mutations: ``Artifact.save()`` on a logged
        version sends ``_add_aliases`` and ``_delete_aliases`` (by difference with the aliases fetched) and then
        UpdateArtifact with the whole metadata it was fetched with (sdk/artifacts/artifact.py ``_update``). An
        alias move needs only the first two: called directly, it costs no UpdateArtifact and cannot undo an
        ``update_metadata`` made since the fetch. An SDK without them (another version) gets ``save()``."""
        held = list(target.aliases)
        aliases = list(held)
        for change in changes:
            aliases = [a for a in aliases if a != change.alias] if change.remove else [*aliases, change.alias]
        aliases = list(dict.fromkeys(aliases))
        what = f"moving aliases {', '.join(('-' if c.remove else '+') + repr(c.alias) for c in changes)} of " \
               f"{collection_name(target)}:{target.version}"
        mutations = alias_mutations(target)
        if mutations is None:
            target.aliases = aliases
            self._call(what, target.save)
            return
        add, delete, path = mutations
        self._call(what, lambda: add(set(aliases) - set(held), target=path))
        self._call(what, lambda: delete(set(held) - set(aliases), target=path))
        target.aliases = aliases
        target._saved_aliases = list(aliases)  # what save() records after its mutations: nothing left to send

    def _write_record(self, wb_run: Any, moves: list[AliasMove]) -> None:
        """The run's record: the moves it made, marked complete (a run without it was interrupted and is no
        record; its planned moves are in its config)."""
        body = {"complete": True, "moves": [asdict(m) for m in moves]}
        self._call("writing the run's record", lambda: wb_run.summary.__setitem__(RECORD_KEY, body))

    def _runs(self, filters: dict[str, Any]) -> list[Any]:
        """Runs matching ``filters``, oldest first, read fresh (``Api.runs`` is cached per query until
        ``Api.flush()``)."""
        self.check_project()
        self._call("reading the record runs", self.api.flush)
        runs = self._call("reading the record runs", lambda: list(self.api.runs(
            f"{self.entity}/{self.project}", filters=filters, order="+created_at", per_page=100, lazy=False)),
            default=REFUSED)
        return sorted(runs, key=_created)  # by server time whatever order came back (stable among equal times)

    @staticmethod
    def _summary(run: Any, key: str = RECORD_KEY) -> dict[str, Any]:
        """The registry's entry ``key`` of a run's summary (a decision's record, a report's completion), or {}."""
        summary = getattr(run, "summary_metrics", None)
        if not isinstance(summary, dict):
            summary = dict(getattr(run, "summary", {}) or {})
        record = summary.get(key)
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
        for run in self._runs({"config.ragindex_artifact": name, "jobType": {"$in": list(RECORD_KINDS)}}):
            stored = self._stored_record(run)
            if stored is not None and stored.key not in found:  # an interrupted try left no complete record
                found[stored.key] = stored
        return list(found.values())

    def interrupted(self, key: str) -> bool:
        """A run of this key exists (its planned moves in its config) but none finished its record."""
        runs = self._key_runs[1] if self._key_runs and self._key_runs[0] == key else self._runs(
            {"config.ragindex_key": key})
        return bool(self._open_tries(runs)) and not any(self._summary(r).get("complete") for r in runs)

    def _governance_lock_path(self) -> Path:
        return self.lock_path

    def _find_record(self, key: str) -> Decision | None:
        runs = self._runs({"config.ragindex_key": key})
        self._key_runs = (key, runs)
        for run in runs:
            stored = self._stored_record(run)
            if stored is not None and stored.key == key:
                return stored
        return None

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every move of ``alias`` within ``name``, from the log and record runs, in server order."""
        moves: list[AliasMove] = []
        seen_keys: set[str] = set()
        for run in self._runs({"config.ragindex_names": {"$regex": _names_pattern(name)}}):
            record = self._summary(run)
            key = (run.config or {}).get("ragindex_key")
            if name not in _names(run) or not record.get("complete") or (key and key in seen_keys):
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
        """One save of the version as this call fetched it (the fetch that resolved the ref)."""
        target = self._fetched_or_fetch(version.ref)

        def save() -> None:
            target.metadata = {**dict(target.metadata or {}), **patch}
            target.save()

        self._call(f"updating the metadata of {version.ref}", save)
        return self._to_version(target)

    def _get(self, name: str, tag: str) -> ArtifactVersion:
        return self._to_version(self._fetch(name, tag))

    def _versions(self, name: str) -> list[ArtifactVersion]:
        return [self._to_version(a) for a in self._raw_versions(name)]

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        """Download into ``into`` and check the files against the version's digest."""
        artifact = self._fetched_or_fetch(version.ref)
        self._call(f"downloading {version.ref}", lambda: artifact.download(root=str(into)), default=UNAVAILABLE)
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
        """The W&B page of the version, built from its path when its type is known (no query), else fetched."""
        name, tag = split_ref(ref)
        if VERSION_TAG.match(tag) and name in self._types:
            return self._url(self._types[name], name, tag)
        return self.get(ref).url

    # -- report runs: figures about versions, beside them in their lineage ---------------------------------------

    def log_report_run(self, *, job_type: str, key: str, name: str, table: str, columns: Sequence[str],
                       rows: Sequence[Sequence[Any]], summary: dict[str, Any], uses: Sequence[str]) -> str:
        """A report as its own run (a W&B Table, summary figures, the versions it is about as used artifacts, so
        it shows in their lineage); the page's URL. One complete run per ``key``: the same report logged again
        returns the run already there, and a run whose end did not reach W&B is retried, never counted."""
        for run in self._runs({"config.ragindex_key": key}):
            if self._summary(run, REPORT_KEY).get("complete"):
                return self._run_url(str(run.id))
        wb_run = self._start(RunInfo(job_type=job_type, name=name), {"ragindex_key": key, "ragindex_report": table,
                                                                    "ragindex_uses": list(uses)})
        ok = False
        try:
            for ref in uses:
                self._call(f"using {ref}", lambda ref=ref: wb_run.use_artifact(f"{self.entity}/{self.project}/{ref}"),
                           default=UNAVAILABLE)
            data = self.wb.Table(columns=list(columns), data=[list(row) for row in rows])
            self._call(f"logging the {table} table", lambda: wb_run.log({table: data}), default=UNAVAILABLE)
            for field, value in {**summary, REPORT_KEY: {"complete": True, "table": table}}.items():
                wb_run.summary[field] = value
            ok = True
        finally:
            failure = self._finish(wb_run, ok)
        run_id = str(getattr(wb_run, "id", ""))
        stored = self._call(f"reading back report run {run_id}", lambda: self.api.run(
            f"{self.entity}/{self.project}/{run_id}"), default=UNAVAILABLE)
        if not self._summary(stored, REPORT_KEY).get("complete"):
            raise RegistryUnavailable(f"logging {key} to {self.uri}: W&B holds no complete report run {run_id}"
                                      + (f" (finishing it failed: {failure})" if failure else "") + "; run it again")
        return self._run_url(run_id)

    def _run_url(self, run_id: str) -> str:
        return f"{self.web_base()}/{self.entity}/{self.project}/runs/{run_id}"

    # -- W&B Registry: production linked into a registry collection as well ----------------------------------

    def registry_path(self, name: str) -> str:
        """The Registry collection a governed name is linked into: ``wandb-registry-REGISTRY/NAME``."""
        return f"{REGISTRY_PREFIX}{self.registry_name}/{name}"

    def _registry_links(self, decision: Decision) -> list[AliasChange]:
        """The changes of a decision that the Registry mirrors: ``production`` given to a version of the governed
        name itself (a promotion or a rollback of ``rag-release`` or ``vector-index``), none without a Registry."""
        if not self.registry_name:
            return []
        return [c for c in decision.changes
                if c.alias == PRODUCTION and not c.remove and split_ref(c.ref)[0] == decision.name]

    def registry_holder(self, name: str) -> str | None:
        """The version (``vN`` of the source collection) the Registry collection's ``production`` points at."""
        path = f"{self.registry_path(name)}:{PRODUCTION}"
        try:
            linked = self.api.artifact(path)
        except Exception as exc:  # noqa: BLE001 - classified below
            if _missing_artifact(exc):
                return None
            raise self._translate(f"reading {path}", exc) from None
        source = str(getattr(linked, "source_name", "") or "")
        if source.split(":")[0] != name or getattr(linked, "source_project", self.project) != self.project:
            return getattr(linked, "source_qualified_name", source) or None  # linked from elsewhere
        return str(linked.source_version)

    def _plan_link(self, change: AliasChange, actor: str, reason: str) -> AliasMove | None:
        """The Registry move a change implies, or None when the Registry's production is that version already."""
        name, version = split_ref(change.ref)
        held = self.registry_holder(name)
        if held == version:
            return None
        return AliasMove(name=self.registry_path(name), alias=PRODUCTION, from_version=held, to_version=version,
                         actor=actor, reason=reason, at="")

    def _link(self, wb_run: Any, target: Any, change: AliasChange) -> None:
        """Link the version into its Registry collection with ``production`` (moved there from any other)."""
        path = self.registry_path(split_ref(change.ref)[0])
        what = f"linking {change.ref} into {path} as {PRODUCTION!r}"
        try:
            wb_run.link_artifact(target, path, aliases=[PRODUCTION])
        except Exception as exc:  # noqa: BLE001 - classified: a refusal names the Registry's rules, not the key
            error = self._translate(what, exc)
            if isinstance(error, RegistryUnavailable):
                raise error from None
            raise RegistryError(f"{what}: the W&B Registry refused it ({scrub(str(exc))}); if '{PRODUCTION}' is a "
                                f"protected alias there, only registry admins may set it (`ragindex init {self.uri}` "
                                "checks this account's role); nothing was moved") from None

    def check_registry(self) -> list[str]:
        """What ``ragindex init`` says of the configured Registry: an error for a server without Registry, a
        registry that does not exist, one that refuses the governed types or lets this account only view;
        warnings (returned) where a protected ``production`` alias may be refused. Without a Registry: nothing."""
        if not self.registry_name:
            return []
        name, keep = self.registry_name, f"drop registry={self.registry_name} from {self.uri} to keep collection " \
                                           "aliases only"
        try:
            registry = self.api.registry(name)
        except RuntimeError as exc:
            raise RegistryError(f"{self.uri}: the W&B server at {self.base_url} has no Registry ({exc}); "
                                f"{keep}") from None
        except ValueError as exc:
            raise RegistryError(f"{self.uri}: no W&B Registry {name!r} is visible to this account ({exc}); create "
                                f"it (W&B App: Registry, New registry) or name another, or {keep}") from None
        except Exception as exc:  # noqa: BLE001
            raise self._translate(f"reading the W&B Registry {name!r}", exc) from None
        wanted = sorted({ARTIFACT_TYPES["release"], ARTIFACT_TYPES["index"]})
        allowed = set(getattr(registry, "artifact_types", []) or [])
        if not getattr(registry, "allow_all_artifact_types", True) and not set(wanted) <= allowed:
            raise RegistryError(f"{self.uri}: the W&B Registry {name!r} accepts the types {sorted(allowed)}, not "
                                f"{', '.join(t for t in wanted if t not in allowed)}; add them to its allowed types, "
                                f"or {keep}")
        role = self._registry_role(registry)
        if role in ("viewer", "restricted_viewer"):
            raise RegistryError(f"{self.uri}: this account is a {role} of the W&B Registry {name!r} and cannot link "
                                f"versions into it; make it a member (or admin) of the registry, or {keep}")
        if role != "admin":
            return [f"W&B Registry {name!r}: this account is {'a ' + role if role else 'not a direct member'} of "
                    f"it; if '{PRODUCTION}' is a protected alias there, only registry admins may set it and "
                    "promotions will be refused until the account is one"]
        return []

    def _registry_role(self, registry: Any) -> str | None:
        """This account's role in a Registry (user membership), or None when it is no direct member."""
        try:
            me = self.api.viewer()
            members = registry.user_members()
        except Exception as exc:  # noqa: BLE001
            raise self._translate(f"reading the members of the W&B Registry {self.registry_name!r}", exc) from None
        mine = getattr(me, "username", None) or getattr(me, "name", None)
        for member in members:
            user = getattr(member, "user", None)
            if mine and (getattr(user, "username", None) or getattr(user, "name", None)) == mine:
                role = getattr(member, "role", None)
                return str(getattr(role, "value", role)).lower() if role is not None else None
        return None
