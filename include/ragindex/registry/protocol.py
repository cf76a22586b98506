"""The artifact-registry contract shared by every backend (local catalogue, Weights & Biases).

Semantics follow W&B Artifacts so that backends are interchangeable:
- versions are ``v0, v1, ...`` per artifact name; a version's digest comes from its files' contents;
- logging content identical to an existing version of that name returns that version (no new one);
- ``latest`` always follows the newest version; every other alias is exclusive within a name;
- each version records the run that produced it and the versions that run consumed (lineage).

The rules are applied once, in ``base.RegistryBase``; ``rules`` says what they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ContextManager, Protocol, Sequence, runtime_checkable

from ragindex.errors import ArtifactNotFound, ConcurrentMove, RegistryError, RegistryUnavailable

__all__ = ["DECISION_KINDS", "AliasChange", "AliasMove", "ArtifactNotFound", "ArtifactVersion", "ConcurrentMove",
           "Decision", "LogRequest", "Registry", "RegistryError", "RegistryUnavailable", "RunInfo", "split_ref"]

# What a decision record can be about. "alias" records a plain alias move (``set_alias``) on backends whose
# alias history is made of records (W&B); it is history, not a decision, so ``decisions()`` leaves it out.
DECISION_KINDS = ("review", "stage", "promote", "rollback")
RECORD_KINDS = (*DECISION_KINDS, "alias")


@dataclass(frozen=True)
class RunInfo:
    """Who is logging: one pipeline step of one pipeline run (a W&B run of ``job_type`` in ``group``)."""

    job_type: str
    group: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ArtifactVersion:
    """One immutable version of an artifact and what is known about it."""

    name: str
    type: str
    version: str
    digest: str
    aliases: tuple[str, ...]
    metadata: dict[str, Any]
    created_at: str
    producer_run: str | None = None
    consumed: tuple[str, ...] = ()
    url: str | None = None

    @property
    def ref(self) -> str:
        """The stable reference ``name:vN`` used everywhere else."""
        return f"{self.name}:{self.version}"

    @property
    def index(self) -> int:
        """The numeric part of the version, for ordering."""
        return int(self.version.lstrip("v"))


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias, kept so a rollback can find the previous holder (``to_version`` None: removed)."""

    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    actor: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AliasChange:
    """One alias change a decision makes: put ``alias`` on ``ref``, or take it off ``ref`` (``remove``)."""

    ref: str
    alias: str
    remove: bool = False


@dataclass(frozen=True)
class Decision:
    """A recorded decision about one version: what (kind, verdict), on which version, who, why, in which
    pipeline run, and the alias moves it made. ``key`` makes recording idempotent: recording a decision
    whose key is already on record returns that record and changes nothing. ``expect`` makes the moves a
    compare-and-set: ``{"name:alias": "vN"}`` (``None``: no version) is who must hold each alias when the moves are
    made, as the caller's checks found it, else ``ConcurrentMove`` and nothing moves."""

    kind: str
    verdict: str
    ref: str
    actor: str
    reason: str = ""
    pipeline_run: str | None = None
    key: str = ""
    changes: tuple[AliasChange, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, str | None] = field(default_factory=dict)
    at: str = ""
    record_id: str = ""
    moves: tuple[AliasMove, ...] = ()

    @property
    def name(self) -> str:
        """The artifact name of the version decided on."""
        return split_ref(self.ref)[0]

    @property
    def move_reason(self) -> str:
        """What the alias history says of the moves this decision made ("rollback (rolled_back): why")."""
        if self.kind == "alias":
            return self.reason
        return f"{self.kind} ({self.verdict})" + (f": {self.reason}" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, as stored and as the CLI prints it."""
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Decision":
        """Inverse of ``to_json``."""
        body = dict(body)
        changes = tuple(AliasChange(**c) for c in body.pop("changes", ()))
        moves = tuple(AliasMove(**m) for m in body.pop("moves", ()))
        return cls(**body, changes=changes, moves=moves)

    def recorded(self, *, at: str, record_id: str, moves: Sequence[AliasMove]) -> "Decision":
        """This decision as the registry stored it."""
        return replace(self, at=at, record_id=record_id, moves=tuple(moves))


@dataclass(frozen=True)
class LogRequest:
    """A checked ``log_artifact`` call, as the base class hands it to a backend."""

    name: str
    type: str
    files: Path
    manifest: dict[str, str]
    digest: str
    run: RunInfo
    metadata: dict[str, Any]
    aliases: tuple[str, ...]
    consumed: tuple[str, ...]


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``name:tag`` (tag = ``vN`` or an alias; missing tag means ``latest``)."""
    name, sep, tag = ref.partition(":")
    if not name:
        raise RegistryError(f"invalid artifact ref {ref!r}: expected NAME:VERSION or NAME:ALIAS")
    return name, (tag if sep and tag else "latest")


@runtime_checkable
class Registry(Protocol):
    """Where versions live. ``open_registry(uri)`` picks the backend."""

    uri: str

    def log_artifact(
        self,
        name: str,
        type: str,
        files: Path,
        *,
        run: RunInfo,
        metadata: dict[str, Any] | None = None,
        aliases: Sequence[str] = (),
        uses: Sequence[str] = (),
    ) -> ArtifactVersion:
        """Log the files under directory ``files`` as a version of ``name``; dedup by digest."""
        ...

    def get(self, ref: str) -> ArtifactVersion:
        """Resolve ``name:vN`` / ``name:alias`` / ``name`` (latest); raise ArtifactNotFound."""
        ...

    def find(self, ref: str) -> ArtifactVersion | None:
        """Like ``get``, but None when the ref names no version."""
        ...

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first (empty list when the name is unknown)."""
        ...

    def download(self, ref: str, root: Path | None = None) -> Path:
        """Materialise a version's files in a directory and return it (cached, never half-written)."""
        ...

    def set_alias(self, ref: str, alias: str, *, actor: str = "", reason: str = "") -> ArtifactVersion:
        """Point ``alias`` at ``ref`` (taking it off any other version) and record the move."""
        ...

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` within ``name``, oldest first."""
        ...

    def alias_token(self, name: str, alias: str) -> str:
        """What ``name:alias`` names now, read as cheaply as the backend can (a server following the alias polls
        it): an equal token means the same version, a move changes it (then ``get`` says to what); an alias no
        version holds has a token too."""
        ...

    def update_metadata(self, ref: str, patch: dict[str, Any]) -> ArtifactVersion:
        """Merge ``patch`` into a version's metadata (files and digest stay immutable)."""
        ...

    def lineage(self, ref: str) -> dict[str, Any]:
        """The upstream graph of a version: ``{"root": ref, "nodes": {ref: {...}}, "edges": [[src, dst]]}``."""
        ...

    def web_url(self, ref: str) -> str | None:
        """A link a person can open for the version (W&B page), or None for the local backend."""
        ...

    def record_decision(self, decision: Decision) -> Decision:
        """Record a decision and make its alias changes, atomically and once per ``decision.key``; with
        ``decision.expect``, only while those holders hold (else ``ConcurrentMove``, nothing moved)."""
        ...

    def governance_lock(self) -> ContextManager[None]:
        """Held around a governance move's checks and its record (promote, rollback), so that of the processes
        sharing the lock (the local registry's folder; on W&B, this machine's RAGINDEX_HOME) one moves at a time;
        re-entrant in one process."""
        ...

    def decisions(self, name: str) -> list[Decision]:
        """Every decision recorded on versions of ``name``, oldest first (server order on W&B)."""
        ...

    def decision(self, key: str) -> Decision | None:
        """The decision recorded under ``key``, or None."""
        ...

    def interrupted(self, key: str) -> bool:
        """Whether an earlier try of record ``key`` was interrupted between its moves and its record."""
        ...

    def producer(self, version: ArtifactVersion) -> RunInfo | None:
        """The step that produced a version (job type, pipeline run, config), or None when unknown."""
        ...
