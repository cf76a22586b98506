"""The Weights & Biases backend (``wandb://ENTITY/PROJECT``), the system of record in production.

Mapping of the registry contract onto W&B:

- one ``log_artifact`` call is one W&B run (``job_type``/``group``/``config`` from RunInfo) that
  ``use_artifact``s each consumed ref and logs one ``wandb.Artifact``; W&B's own manifest digest
  gives the dedup (identical content returns the existing version);
- reads, alias moves and metadata updates go through ``wandb.Api()``; W&B keeps aliases exclusive;
- W&B has no alias history, so each move is appended to the metadata of the version receiving the
  alias under ``ragindex.alias_moves`` and ``alias_history`` is rebuilt by scanning the versions;
  that key is hidden from ``ArtifactVersion.metadata``;
- lineage comes from ``artifact.logged_by()`` and that run's ``used_artifacts()``.

``wandb`` is imported lazily, and both the module and the Api can be injected for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ragindex.settings import ragindex_home

from .base import RegistryBase, refuse_type_change
from .digest import dir_digest
from .protocol import AliasMove, ArtifactNotFound, ArtifactVersion, LogRequest, RegistryError, RunInfo, split_ref
from .rules import RESERVED_PREFIX, VERSION_TAG, fill_atomically, utc_now

ALIAS_MOVES_KEY = f"{RESERVED_PREFIX}alias_moves"
REFERENCES_KEY = "references"
RESERVED_METADATA_KEYS = frozenset({ALIAS_MOVES_KEY})
_MISSING_HINTS = ("not found", "does not exist", "no such", "could not find")


def looks_missing(exc: BaseException) -> bool:
    """Whether a W&B error means "no such artifact" rather than a transport or auth failure."""
    text = str(exc).lower()
    return any(hint in text for hint in _MISSING_HINTS)


def collection_name(artifact: Any) -> str:
    """The artifact's name without ``:version`` (W&B's ``name`` is ``collection:vN`` once logged)."""
    return str(artifact.name).split(":", 1)[0]


def public_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata without the registry's bookkeeping keys."""
    return {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA_KEYS}


def reference_items(metadata: dict[str, Any]) -> list[tuple[str | None, str]]:
    """``(logical name or None, url)`` pairs from ``metadata["references"]`` (a list of URLs or a name→URL map)."""
    refs = metadata.get(REFERENCES_KEY) or []
    if isinstance(refs, dict):
        return [(str(name), str(url)) for name, url in refs.items()]
    if isinstance(refs, (list, tuple)):
        return [(None, str(url)) for url in refs]
    raise RegistryError(f"metadata[{REFERENCES_KEY!r}] must be a list of URLs or a name->URL mapping")


def has_references(artifact: Any) -> bool:
    """Whether a W&B artifact's manifest holds reference entries (their files are not digest-checked)."""
    manifest = getattr(artifact, "manifest", None)
    entries = getattr(manifest, "entries", None) or {}
    return any(getattr(entry, "ref", None) for entry in entries.values())


class WandbRegistry(RegistryBase):
    """The ``Registry`` protocol on W&B Artifacts in one ENTITY/PROJECT."""

    def __init__(
        self,
        entity: str,
        project: str,
        *,
        wandb_module: Any = None,
        api: Any = None,
        by_reference: bool = False,
        settings: Any = None,
        cache_dir: Path | None = None,
    ) -> None:
        if not entity or not project:
            raise RegistryError(f"wandb registry needs ENTITY and PROJECT, got {entity!r}/{project!r}")
        self.entity = entity
        self.project = project
        self.by_reference = by_reference
        self.uri = f"wandb://{entity}/{project}" + ("?reference=1" if by_reference else "")
        self._wandb = wandb_module
        self._api = api
        self._settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir else ragindex_home() / "cache" / "wandb" / entity / project

    def __repr__(self) -> str:
        return f"WandbRegistry({self.entity!r}, {self.project!r})"

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def wb(self) -> Any:
        """The wandb module, imported only when first needed."""
        if self._wandb is None:
            try:
                import wandb  # noqa: PLC0415 - lazy on purpose: importing wandb is slow
            except ImportError as exc:
                raise RegistryError(f"{self.uri} needs the 'wandb' package: {exc}") from exc
            self._wandb = wandb
        return self._wandb

    @property
    def api(self) -> Any:
        """The W&B public Api, created only when first needed."""
        if self._api is None:
            self._api = self.wb.Api()
        return self._api

    def _fetch(self, name: str, tag: str) -> Any:
        """The Api artifact ``name:tag`` names; ArtifactNotFound naming the ref when W&B has none."""
        path = f"{self.entity}/{self.project}/{name}:{tag}"
        try:
            return self.api.artifact(path)
        except Exception as exc:  # noqa: BLE001 - wandb raises CommError/ValueError variously
            if looks_missing(exc):
                raise ArtifactNotFound(f"artifact {path} not found in {self.uri}: {exc}") from exc
            raise RegistryError(f"cannot read artifact {path} from {self.uri}: {exc}") from exc

    def _fetch_or_none(self, name: str, tag: str) -> Any | None:
        """The Api artifact ``name:tag`` names, or None when it names nothing."""
        try:
            return self._fetch(name, tag)
        except ArtifactNotFound:
            return None

    def _provenance(self, artifact: Any) -> tuple[str | None, tuple[str, ...]]:
        """The producing run id and the refs that run consumed, from W&B's lineage."""
        try:
            producer = artifact.logged_by()
        except Exception:  # noqa: BLE001 - lineage is best effort on older servers
            return None, ()
        if producer is None:
            return None, ()
        consumed: list[str] = []
        for used in producer.used_artifacts():
            if getattr(used, "entity", self.entity) != self.entity:
                continue
            if getattr(used, "project", self.project) != self.project:
                continue
            consumed.append(f"{collection_name(used)}:{used.version}")
        return str(producer.id), tuple(sorted(dict.fromkeys(consumed)))

    def _web_url_of(self, artifact: Any) -> str:
        """The artifact page: W&B's own URL, or the standard one built from its parts."""
        url = ""
        try:
            url = artifact.url or ""
        except Exception:  # noqa: BLE001 - url needs a client; fall back to building it
            url = ""
        return url or (
            f"https://wandb.ai/{self.entity}/{self.project}/artifacts/"
            f"{artifact.type}/{collection_name(artifact)}/{artifact.version}"
        )

    def _to_version(self, artifact: Any) -> ArtifactVersion:
        """Turn an Api artifact into the protocol's value object."""
        producer, consumed = self._provenance(artifact)
        aliases = [a for a in artifact.aliases if not VERSION_TAG.match(a)]
        aliases.sort(key=lambda a: (a != "latest", a))
        return ArtifactVersion(
            name=collection_name(artifact),
            type=artifact.type,
            version=artifact.version,
            digest=artifact.digest,
            aliases=tuple(aliases),
            metadata=public_metadata(artifact.metadata),
            created_at=str(artifact.created_at),
            producer_run=producer,
            consumed=consumed,
            url=self._web_url_of(artifact),
        )

    def _raw_versions(self, name: str) -> list[Any]:
        """Every Api artifact of ``name``, oldest first."""
        latest = self._fetch_or_none(name, "latest")
        if latest is None:
            return []
        try:
            found = list(self.api.artifacts(latest.type, f"{self.entity}/{self.project}/{name}"))
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"cannot list versions of {name!r} in {self.uri}: {exc}") from exc
        return sorted(found, key=lambda a: int(str(a.version).lstrip("v")))

    def _record_move(
        self, artifact: Any, alias: str, previous: str | None, actor: str, reason: str
    ) -> None:
        """Append an alias move to the receiving version's metadata (W&B keeps no alias history)."""
        move = {
            "alias": alias,
            "from_version": previous,
            "to_version": artifact.version,
            "at": utc_now(),
            "actor": actor,
            "reason": reason,
        }
        metadata = dict(artifact.metadata or {})
        metadata[ALIAS_MOVES_KEY] = [*metadata.get(ALIAS_MOVES_KEY, []), move]
        artifact.metadata = metadata

    def _holder(self, name: str, alias: str) -> str | None:
        """The version currently holding ``alias`` (``vN``), or None."""
        holder = self._fetch_or_none(name, alias)
        return None if holder is None else str(holder.version)

    # -- writing -------------------------------------------------------------------------------

    def _init_kwargs(self, run: RunInfo) -> dict[str, Any]:
        """``wandb.init`` arguments for one pipeline step; a new run even if another is active."""
        kwargs: dict[str, Any] = {
            "entity": self.entity,
            "project": self.project,
            "job_type": run.job_type,
            "group": run.group,
            "config": dict(run.config),
            "reinit": "create_new",
        }
        if run.run_id:
            kwargs["id"] = run.run_id
            kwargs["resume"] = "allow"
        if self._settings is not None:
            kwargs["settings"] = self._settings
        return kwargs

    def _build_artifact(self, name: str, type: str, files: Path, metadata: dict[str, Any]) -> Any:
        """A ``wandb.Artifact`` with the directory's files (and references when enabled)."""
        artifact = self.wb.Artifact(name, type=type, metadata=metadata)
        artifact.add_dir(str(files))
        if self.by_reference:
            for logical, url in reference_items(metadata):
                artifact.add_reference(url, name=logical)
        return artifact

    def _log(self, request: LogRequest) -> ArtifactVersion:
        """Log a checked request in one W&B run; an identical existing version is found first (no run)."""
        name, wanted = request.name, list(request.aliases)
        existing = self._existing_with_digest(name, request.type, request.digest)
        if existing is not None:
            return self._reuse(existing, wanted, actor=f"run:{request.run.run_id or 'unknown'}")
        artifact = self._build_artifact(name, request.type, request.files, request.metadata)
        previous = {alias: self._holder(name, alias) for alias in wanted}
        wb_run = self.wb.init(**self._init_kwargs(request.run))
        ok = False
        try:
            for ref in request.consumed:
                wb_run.use_artifact(f"{self.entity}/{self.project}/{ref}")
            logged = wb_run.log_artifact(artifact, aliases=wanted)
            done = logged.wait() or logged
            version = str(done.version)
            ok = True
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the artifact in whatever W&B raised
            raise RegistryError(f"logging {name!r} to {self.uri} failed: {exc}") from exc
        finally:
            wb_run.finish(exit_code=0 if ok else 1)
        moved = [alias for alias in wanted if previous[alias] != version]
        if moved:
            stored = self._fetch(name, version)
            for alias in moved:
                self._record_move(stored, alias, previous[alias], f"run:{wb_run.id}", "logged")
            stored.save()
        return self._get(name, version)

    def _existing_with_digest(self, name: str, type: str, digest: str) -> Any | None:
        """An existing version of ``name`` with this digest, found before starting a run.

        W&B would dedup too, but its client always sends ``latest``, which would move ``latest``
        back to an older identical version; answering here keeps ``latest`` on the newest one.
        """
        for artifact in self._raw_versions(name):
            refuse_type_change(name, type, artifact.type)
            if artifact.digest == digest:
                return artifact
        return None

    def _reuse(self, artifact: Any, aliases: Sequence[str], *, actor: str) -> ArtifactVersion:
        """Return an existing identical version, applying the requested aliases to it."""
        version = self._to_version(artifact)
        for alias in aliases:
            version = self._set_alias(version, alias, actor, "logged")
        return version

    def _set_alias(self, version: ArtifactVersion, alias: str, actor: str, reason: str) -> ArtifactVersion:
        """Add ``alias`` via the Api (W&B takes it off the previous holder) and record the move."""
        target = self._fetch(version.name, version.version)
        previous = self._holder(version.name, alias)
        if previous == target.version:
            return self._to_version(target)
        self._record_move(target, alias, previous, actor, reason)
        target.aliases = [*target.aliases, alias]
        try:
            target.save()
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"cannot move alias {alias!r} to {version.ref} in {self.uri}: {exc}") from exc
        return self._get(version.name, str(target.version))

    def _update_metadata(self, version: ArtifactVersion, patch: dict[str, Any]) -> ArtifactVersion:
        """Merge ``patch`` into a version's metadata via the Api (files and digest stay immutable)."""
        target = self._fetch(version.name, version.version)
        target.metadata = {**dict(target.metadata or {}), **patch}
        try:
            target.save()
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"cannot update metadata of {version.ref} in {self.uri}: {exc}") from exc
        return self._get(version.name, version.version)

    # -- reading -------------------------------------------------------------------------------

    def _get(self, name: str, tag: str) -> ArtifactVersion:
        return self._to_version(self._fetch(name, tag))

    def _versions(self, name: str) -> list[ArtifactVersion]:
        return [self._to_version(a) for a in self._raw_versions(name)]

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        """Download into ``into`` and check the files against the version's digest."""
        artifact = self._fetch(version.name, version.version)
        try:
            artifact.download(root=str(into))
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"cannot download {version.ref} from {self.uri}: {exc}") from exc
        if not has_references(artifact) and dir_digest(into) != artifact.digest:
            raise RegistryError(f"download of {version.ref} does not match its digest")

    def _stored_dir(self, version: ArtifactVersion) -> Path:
        """The version's files in the local cache (downloaded once per digest)."""
        target = (self.cache_dir / version.name / version.digest).expanduser().resolve()
        if target.is_dir():
            return target
        return fill_atomically(target, lambda tmp: self._fill(version, tmp), version.ref)

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Alias moves rebuilt from the versions' metadata, oldest first."""
        moves: list[AliasMove] = []
        for artifact in self._raw_versions(name):
            for move in (artifact.metadata or {}).get(ALIAS_MOVES_KEY, []):
                if move.get("alias") != alias:
                    continue
                moves.append(
                    AliasMove(
                        name=name,
                        alias=alias,
                        from_version=move.get("from_version"),
                        to_version=move.get("to_version", artifact.version),
                        at=move.get("at", ""),
                        actor=move.get("actor", ""),
                        reason=move.get("reason", ""),
                    )
                )
        return sorted(moves, key=lambda m: m.at)

    def web_url(self, ref: str) -> str | None:
        """The W&B page of the version."""
        return self._web_url_of(self._fetch(*split_ref(ref)))
