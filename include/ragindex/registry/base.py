"""The registry protocol's public methods, written once: every rule is applied here, before a backend
stores anything, so the local and W&B backends behave identically by construction.

A backend implements the storage primitives (the ``_``-methods below); it never re-checks names,
aliases or metadata, and never re-implements the download swap.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from ragindex.errors import ArtifactNotFound, ConcurrentMove, GovernanceError, RegistryError, RegistryUnavailable
from ragindex.names import GOVERNANCE_ALIASES

from .digest import dir_digest, manifest_digest, manifest_of
from .graph import build_lineage
from .protocol import (
    DECISION_KINDS,
    RECORD_KINDS,
    AliasChange,
    AliasMove,
    ArtifactVersion,
    Decision,
    LogRequest,
    RunInfo,
    split_ref,
)
from .rules import (
    VERSION_TAG,
    check_files,
    check_metadata,
    default_actor,
    fill_atomically,
    requested_aliases,
    to_json,
    validate_alias,
    validate_name,
)


# How long a governance move waits for another one holding the lock (a move takes seconds; a task that waited this
# long fails retryably rather than hanging its worker slot).
GOVERNANCE_LOCK_TIMEOUT_S = float(os.environ.get("RAGINDEX_GOVERNANCE_LOCK_TIMEOUT_S", "600"))
log = logging.getLogger(__name__)


class RegistryBase:
    """Shared behaviour of every backend; subclasses provide storage."""

    uri: str

    # -- the backend's primitives ------------------------------------------------------------------

    def _get(self, name: str, tag: str) -> ArtifactVersion:
        """The version ``name:tag`` names (``vN``, ``latest`` or an alias), else ArtifactNotFound."""
        raise NotImplementedError

    def _versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first."""
        raise NotImplementedError

    def _log(self, request: LogRequest) -> ArtifactVersion:
        """Store a checked request: the existing version when one has the digest, else a new one."""
        raise NotImplementedError

    def _set_alias(self, version: ArtifactVersion, alias: str, actor: str, reason: str) -> ArtifactVersion:
        """Move a checked alias onto ``version`` and record the move."""
        raise NotImplementedError

    def _update_metadata(self, version: ArtifactVersion, patch: dict[str, Any]) -> ArtifactVersion:
        """Merge a checked patch into the stored metadata."""
        raise NotImplementedError

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        """Write the version's files into the empty folder ``into``."""
        raise NotImplementedError

    def _stored_dir(self, version: ArtifactVersion) -> Path:
        """A complete, read-only folder of the version's files on this machine."""
        raise NotImplementedError

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` within ``name``, oldest first."""
        raise NotImplementedError

    def web_url(self, ref: str) -> str | None:
        """A link a person can open for the version, or None."""
        raise NotImplementedError

    def _record(self, decision: Decision) -> Decision:
        """Store a checked decision and make its alias changes (all or nothing where the backend can)."""
        raise NotImplementedError

    def producer(self, version: ArtifactVersion) -> RunInfo | None:
        """The step that produced a version (job type, pipeline run, config), or None when unknown."""
        raise NotImplementedError

    def _records(self, name: str) -> list[Decision]:
        """Every record (decisions and, where kept as records, alias moves) on versions of ``name``."""
        raise NotImplementedError

    def _find_record(self, key: str) -> Decision | None:
        """The record stored under ``key``, or None."""
        raise NotImplementedError

    def _governance_lock_path(self) -> Path:
        """The lock file governance moves hold (shared by every process that should take turns with this one)."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------------

    def log_artifact(self, name: str, type: str, files: Path, *, run: RunInfo,
                     metadata: dict[str, Any] | None = None, aliases: Sequence[str] = (),
                     uses: Sequence[str] = ()) -> ArtifactVersion:
        """Log the files under directory ``files`` as a version of ``name``; dedup by digest."""
        validate_name(name)
        files = check_files(files, name)
        wanted = requested_aliases(name, aliases)
        for alias in wanted:
            refuse_governance_alias(alias)
        metadata = check_metadata(metadata, f"metadata for {name!r}")
        to_json(dict(run.config), f"run config for {name!r}")
        consumed = tuple(self.get(ref).ref for ref in uses)
        manifest = manifest_of(files)
        return self._log(LogRequest(name=name, type=type, files=files, manifest=manifest,
                                    digest=manifest_digest(manifest), run=run, metadata=metadata,
                                    aliases=tuple(wanted), consumed=consumed))

    def get(self, ref: str) -> ArtifactVersion:
        """Resolve ``name:vN`` / ``name:alias`` / ``name`` (latest); raise ArtifactNotFound."""
        return self._get(*split_ref(ref))

    def find(self, ref: str) -> ArtifactVersion | None:
        """The version a ref names, or None when it names none (other failures still raise)."""
        try:
            return self.get(ref)
        except ArtifactNotFound:
            return None

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first (empty list when the name is unknown)."""
        return self._versions(name)

    def set_alias(self, ref: str, alias: str, *, actor: str = "", reason: str = "") -> ArtifactVersion:
        """Point ``alias`` at ``ref`` (taking it off any other version) and record the move. Governance aliases
        are refused here, whoever calls: they move only with a decision (``record_decision``)."""
        name, _tag = split_ref(ref)
        validate_alias(name, alias)
        refuse_governance_alias(alias)
        return self._set_alias(self.get(ref), alias, actor or default_actor(), reason)

    def update_metadata(self, ref: str, patch: dict[str, Any]) -> ArtifactVersion:
        """Merge ``patch`` into a version's metadata (files and digest stay immutable)."""
        version = self.get(ref)
        check_metadata({**version.metadata, **check_metadata(patch, f"metadata patch for {ref}")},
                       f"metadata for {version.ref}")
        return self._update_metadata(version, dict(patch))

    def download(self, ref: str, root: Path | None = None) -> Path:
        """Materialise a version's files in a directory and return it (cached, never half-written).

        Without ``root`` a cached folder is returned: treat it as read-only.
        """
        version = self.get(ref)
        if root is None:
            return self._stored_dir(version)
        root = Path(root).expanduser().resolve()
        if root.is_dir() and any(root.iterdir()) and dir_digest(root) == version.digest:
            return root
        return fill_atomically(root, lambda tmp: self._fill(version, tmp), version.ref)

    def alias_token(self, name: str, alias: str) -> str:
        """What ``name:alias`` names now (version and digest; "absent"), by a full read: a backend with a cheaper
        check overrides this."""
        version = self.find(f"{name}:{alias}")
        return "absent" if version is None else f"{version.version}:{version.digest}"

    def lineage(self, ref: str) -> dict[str, Any]:
        """The upstream graph of a version: ``{"root": ref, "nodes": {ref: {...}}, "edges": [[src, dst]]}``."""
        return build_lineage(self.get, ref)

    def record_decision(self, decision: Decision) -> Decision:
        """Record a decision and make its alias changes, once per ``decision.key`` (a retry gets the record)."""
        if decision.kind not in RECORD_KINDS:
            raise RegistryError(f"unknown decision kind {decision.kind!r} (one of {', '.join(RECORD_KINDS)})")
        key = decision.key or f"{decision.kind}/{uuid.uuid4().hex}"
        existing = self._find_record(key) if decision.key else None  # a key made just now is on no record
        if existing is not None:
            return existing
        subject = self.get(decision.ref)
        found = {decision.ref: subject}  # a promotion names its index three times; on W&B each lookup is a query
        changes = []
        for change in decision.changes:
            if change.ref not in found:
                found[change.ref] = self.get(change.ref)
            target = found[change.ref]
            changes.append(AliasChange(target.ref, validate_alias(target.name, change.alias), change.remove))
        to_json(decision.details, f"details of the {decision.kind} decision on {subject.ref}")
        expect = {checked_holder_key(where, version): version for where, version in decision.expect.items()}
        return self._record(replace(decision, ref=subject.ref, key=key, changes=tuple(changes), expect=expect,
                                    actor=decision.actor or default_actor(), at="", record_id="", moves=()))

    def decisions(self, name: str) -> list[Decision]:
        """Every decision recorded on versions of ``name``, oldest first."""
        return [d for d in self._records(name) if d.kind in DECISION_KINDS]

    def decision(self, key: str) -> Decision | None:
        """The decision recorded under ``key``, or None."""
        return self._find_record(key)

    @contextmanager
    def governance_lock(self) -> Iterator[None]:
        """One governance move at a time among the processes sharing ``_governance_lock_path`` (a file lock, so a
        killed holder releases it); re-entrant in one process (``approve`` holds it around ``promote``). Where the
        file system takes no locks (some network or bucket mounts), the move goes on without it, logged: each
        record's compare-and-set still refuses a move from a holder that is no longer there."""
        from filelock import FileLock, Timeout  # noqa: PLC0415

        lock = getattr(self, "_governance_file_lock", None)
        if lock is None:
            path = self._governance_lock_path()
            lock = self._governance_file_lock = FileLock(str(path), timeout=GOVERNANCE_LOCK_TIMEOUT_S)
        try:
            Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RegistryUnavailable(f"another promotion or rollback in {self.uri} has held {lock.lock_file} for "
                                      f"{GOVERNANCE_LOCK_TIMEOUT_S:g} s; try again once it has ended") from None
        except OSError as exc:
            log.warning("governance lock %s of %s not taken (%s): the move relies on its compare-and-set alone",
                        lock.lock_file, self.uri, exc)
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def interrupted(self, key: str) -> bool:
        """Whether an earlier try of the record ``key`` began its moves but left no complete record (a retry
        must call ``record_decision`` to finish it even though the aliases are in place). Never, where a record
        and its moves are one transaction (the local catalogue)."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def refuse_governance_alias(alias: str) -> None:
    """``production`` and ``staging`` move only with a decision record (``record_decision``), on every path."""
    if alias in GOVERNANCE_ALIASES:
        raise GovernanceError(f"alias {alias!r} is moved by decisions only: use `ragindex approve` (after "
                              "`ragindex evaluate`) or `ragindex rollback`")


def checked_holder_key(where: str, version: str | None) -> str:
    """An ``expect`` entry as the backends read it: ``name:alias`` and ``vN`` (or None), else the error naming it."""
    name, alias = split_ref(where)
    validate_name(name)
    validate_alias(name, alias)
    if version is not None and not VERSION_TAG.match(str(version)):
        raise RegistryError(f"expected holder of {where!r} must be a version tag like 'v3' or None, got {version!r}")
    return f"{name}:{alias}"


def move_conflict(decision: Decision, where: str, held: str | None, uri: str) -> ConcurrentMove:
    """The compare-and-set's refusal, naming the alias, who holds it and who the decision's checks found."""
    expected = decision.expect[where]
    return ConcurrentMove(f"{decision.kind} of {decision.ref} in {uri} not recorded: {where} is held by "
                          f"{held or 'no version'}, not {expected or 'no version'} as its checks found; another move "
                          "came first and nothing was moved (run it again to check against the new holder)")


def refuse_type_change(name: str, wanted: str, existing: str | None) -> None:
    """A name keeps the type of its first version (W&B requires it)."""
    if existing is not None and existing != wanted:
        raise RegistryError(f"cannot log {name!r} as type {wanted!r}: it already has type {existing!r}")


__all__ = ["RegistryBase", "checked_holder_key", "default_actor", "move_conflict", "refuse_governance_alias",
           "refuse_type_change"]
