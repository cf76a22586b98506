"""Sync: replay one registry into another, so a site that works air-gapped (on the local registry) can later
hand W&B the same record: every version with the same files and digest, the same lineage (the step that
produced it, the versions it used), the same aliases, and the same decision and alias history, in order.

W&B's offline mode cannot record lineage (``use_artifact`` refuses offline), so this is the way to get a
local history into W&B intact. Every step is idempotent (versions by digest, decisions and alias moves by a
key), so a second sync copies nothing and an interrupted sync resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from graphlib import TopologicalSorter
from typing import Any, Sequence

from ragindex.errors import RagindexError
from ragindex.names import DEFAULT_NAMES
from ragindex.registry import AliasChange, AliasMove, ArtifactVersion, Decision, Registry, RunInfo
from ragindex.registry.rules import LATEST

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What a sync copied and what the target had already."""

    source: str
    target: str
    copied: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    decisions_copied: int = 0
    decisions_present: int = 0
    moves_copied: int = 0
    moves_present: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return asdict(self)


def source_names(source: Registry, names: Sequence[str] | None) -> list[str]:
    """The names to sync: as given, else every name the source lists (else the pipeline's names)."""
    if names:
        return list(names)
    listed = getattr(source, "names", None)
    return list(listed()) if callable(listed) else list(DEFAULT_NAMES.in_pipeline_order())


def dependency_order(versions: Sequence[ArtifactVersion]) -> list[ArtifactVersion]:
    """Versions so that each comes after the versions it used, and in version order within a name."""
    by_ref = {v.ref: v for v in versions}
    graph: dict[str, set[str]] = {}
    previous: dict[str, str] = {}  # name -> its latest version so far: vN after vN-1 (the sorter chains the rest)
    for v in sorted(versions, key=lambda v: (v.name, v.index)):
        graph[v.ref] = {c for c in v.consumed if c in by_ref} | ({previous[v.name]} if v.name in previous else set())
        previous[v.name] = v.ref
    return [by_ref[ref] for ref in TopologicalSorter(graph).static_order()]


class _Sync:
    """One sync's state: the ref mapping and the target's digests, read once."""

    def __init__(self, source: Registry, target: Registry, names: list[str]) -> None:
        self.source, self.target, self.names = source, target, names
        self.report = SyncReport(source.uri, target.uri)
        self.mapping: dict[str, str] = {}
        self.origin = hashlib.sha256(source.uri.encode()).hexdigest()[:12]
        self._target_digests: dict[str, dict[str, str]] = {}

    def target_ref(self, version: ArtifactVersion) -> str | None:
        if version.name not in self._target_digests:
            self._target_digests[version.name] = {v.digest: v.ref for v in self.target.versions(version.name)}
        return self._target_digests[version.name].get(version.digest)

    def copy_version(self, version: ArtifactVersion) -> None:
        """Log the version's files in the target, as its own producing step, using the mapped inputs."""
        existing = self.target_ref(version)
        if existing is not None:
            self.mapping[version.ref] = existing
            self.report.present.append(f"{version.ref} = {existing}")
            return
        missing = [c for c in version.consumed if c not in self.mapping]
        if missing:
            raise RagindexError(f"cannot sync {version.ref}: it used {missing}, which are not being synced "
                                "(sync their names too)")
        run = self.source.producer(version) or RunInfo(job_type="sync")
        logged = self.target.log_artifact(
            version.name, version.type, self.source.download(version.ref),
            run=RunInfo(job_type=run.job_type, group=run.group, config=run.config, name=run.name),
            metadata=version.metadata, uses=[self.mapping[c] for c in version.consumed])
        if logged.digest != version.digest:
            raise RagindexError(f"sync of {version.ref} gave digest {logged.digest}, not {version.digest}")
        self._target_digests[version.name][logged.digest] = logged.ref
        self.mapping[version.ref] = logged.ref
        self.report.copied.append(f"{version.ref} -> {logged.ref}")
        log.info("synced %s -> %s", version.ref, logged.ref)

    def mapped_changes(self, changes: Sequence[AliasChange]) -> tuple[AliasChange, ...] | None:
        """A decision's alias changes on the target's refs (None when one names a version not synced)."""
        out = []
        for change in changes:
            if change.ref not in self.mapping:
                return None
            out.append(AliasChange(self.mapping[change.ref], change.alias, change.remove))
        return tuple(out)

    def replay(self, record: Decision) -> None:
        """Record a decision (or a plain alias move) in the target once, with its origin in ``details``."""
        changes = self.mapped_changes(record.changes)
        if record.ref not in self.mapping or changes is None:
            return
        plain = record.kind == "alias"
        if self.target.decision(record.key) is not None:
            if plain:
                self.report.moves_present += 1
            else:
                self.report.decisions_present += 1
            return
        origin = {"registry": self.source.uri, "at": record.at, "record": record.record_id}
        self.target.record_decision(Decision(
            kind=record.kind, verdict=record.verdict, ref=self.mapping[record.ref], actor=record.actor,
            reason=record.reason, pipeline_run=record.pipeline_run, key=record.key, changes=changes,
            details={**record.details, "synced_from": origin}))
        if plain:
            self.report.moves_copied += 1
        else:
            self.report.decisions_copied += 1

    def history(self, versions: Sequence[ArtifactVersion]) -> list[Decision]:
        """The source's decisions and its other alias moves (as records), over every name, in the order they
        happened; a move a decision made is replayed by that decision, not twice. ``versions``: the source's
        versions of those names, as already listed."""
        decisions = [d for name in self.names for d in self.source.decisions(name)]
        decided = {(m.name, m.alias, m.from_version, m.to_version, m.at) for d in decisions for m in d.moves}
        plain = []
        for name in self.names:
            aliases = {a for v in versions if v.name == name for a in v.aliases if a != LATEST}
            aliases |= {c.alias for d in decisions for c in d.changes if c.ref.startswith(f"{name}:")}
            plain += [m for alias in sorted(aliases) for m in self.source.alias_history(name, alias)
                      if (m.name, m.alias, m.from_version, m.to_version, m.at) not in decided]
        events = [(d.at, d) for d in decisions] + [(m.at, self.as_record(m)) for m in plain]
        return [record for _, record in sorted(events, key=lambda e: e[0])]

    def as_record(self, move: AliasMove) -> Decision:
        """A plain alias move as an ``alias`` record with a key that names it in the source."""
        version = move.to_version or move.from_version
        key = f"sync/{self.origin}/{move.name}/{move.alias}/{move.at}/{move.from_version}>{move.to_version}"
        return Decision(kind="alias", verdict="moved", ref=f"{move.name}:{version}", actor=move.actor,
                        reason=move.reason, key=key, at=move.at,
                        changes=(AliasChange(f"{move.name}:{version}", move.alias, remove=move.to_version is None),))


def sync(source: Registry, target: Registry, names: Sequence[str] | None = None) -> SyncReport:
    """Copy every version of ``names`` (default: all) from ``source`` to ``target``, then their history."""
    if source.uri == target.uri:
        raise RagindexError(f"sync: source and target are the same registry ({source.uri})")
    chosen = source_names(source, names)
    state = _Sync(source, target, chosen)
    versions = [v for name in chosen for v in source.versions(name)]
    for version in dependency_order(versions):
        state.copy_version(version)
    for record in state.history(versions):
        state.replay(record)
    return state.report
