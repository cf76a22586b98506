"""Rollback: ``production`` goes back, in one step, to an eligible version (``ragindex.standing``: it passed
its gate and its latest review approved it; no rejection, timeout or stale approval since).

Anything else is refused with the version's standing; ``force`` (with a reason) overrides, and the record says
it was forced. A forced move never makes a version eligible: it is "forced in" until a person approves it, so
an unforced rollback never returns to it. With no target ("undo"), rollback goes to the most recent earlier
holder of production that is eligible, read from the alias history (on W&B, the promote and rollback runs).
"""

from __future__ import annotations

from typing import Any, Sequence

from ragindex.errors import GovernanceError, RagindexError
from ragindex.names import DEFAULT_NAMES, PRODUCTION, ArtifactNames
from ragindex.promotion import governed, holds, related_versions
from ragindex.registry import AliasChange, AliasMove, ArtifactVersion, Decision, Registry
from ragindex.standing import FORCED_ROLLBACK, Standing, standings, standings_from

ROLLBACK = "rollback"
ROLLED_BACK = "rolled_back"


def _holders(moves: Sequence[AliasMove]) -> list[str]:
    """The versions that took production, most recent first, each once."""
    return list(dict.fromkeys(m.to_version for m in reversed(moves) if m.to_version))


def _undo_target(name: str, current: ArtifactVersion | None, moves: Sequence[AliasMove],
                 known: dict[str, Standing], force: bool = False) -> str:
    """The most recent earlier holder of production that is eligible (never a forced-in one); forced, the most
    recent earlier holder whatever its standing."""
    if current is None:
        raise RagindexError(f"{name}: no version holds '{PRODUCTION}', nothing to roll back")
    earlier = [v for v in _holders(moves) if v != current.version]
    if not earlier:
        raise RagindexError(f"{name}:{current.version} is the first '{PRODUCTION}' version; nothing earlier to roll "
                            "back to")
    for version in earlier:
        found = known.get(f"{name}:{version}")
        if found is not None and found.eligible:
            return version
    if force:
        return earlier[0]
    others = [f"{name}:{v}" for v in earlier[1:]]
    raise GovernanceError(_refusal(f"{name}:{earlier[0]}", known[f"{name}:{earlier[0]}"], held=True)
                          + (f" (nor is any earlier holder: {', '.join(others)})" if others else ""))


def previous_production(registry: Registry, name: str) -> str:
    """The version an unforced "undo" rollback would go to now."""
    return _undo_target(name, registry.find(f"{name}:{PRODUCTION}"), registry.alias_history(name, PRODUCTION),
                        standings(registry, name))


def governed_name(registry: Registry, names: ArtifactNames = DEFAULT_NAMES) -> str:
    """What a rollback moves when not told: the release once one serves (index and prompt move with it), else
    the index."""
    return names.release if registry.find(f"{names.release}:{PRODUCTION}") is not None else names.index


def _refusal(target_ref: str, known: Standing, held: bool) -> str:
    """Why an unforced rollback to ``target_ref`` is refused, in words true of its history."""
    history = f", after it held '{PRODUCTION}'" if held and known.rejected else ""
    return (f"rollback to {target_ref} refused: it was {known.words()}{history}; roll back only to a version "
            "that was approved, or force it with a reason")


def rollback(registry: Registry, *, to_version: str | None = None, reason: str = "", actor: str = "",
             force: bool = False, pipeline_run: str | None = None, names: ArtifactNames = DEFAULT_NAMES,
             name: str | None = None) -> dict[str, Any]:
    """Move ``production`` back (to ``to_version`` or the last eligible earlier holder) and record who did it and
    why. Re-running it for the same pipeline run returns the rollback on record (``recorded_before``), so a retry
    never steps back a second time. ``name``: what is rolled back (default: the release once one serves — and
    with it the index and prompt it names, in one decision — else the index). One mover at a time
    (``promotion.governed``): the holder read here is the one moved from."""
    return governed(registry, lambda: _rollback(registry, to_version=to_version, reason=reason, actor=actor,
                                                force=force, pipeline_run=pipeline_run, names=names, name=name))


def _rollback(registry: Registry, *, to_version: str | None, reason: str, actor: str, force: bool,
              pipeline_run: str | None, names: ArtifactNames, name: str | None) -> dict[str, Any]:
    """One try of ``rollback``; the decisions are read once (the run's record, if any, and the standings)."""
    name = name or governed_name(registry, names)
    key = f"{ROLLBACK}/{pipeline_run}" if pipeline_run else ""
    decisions = registry.decisions(name)
    done = next((d for d in decisions if d.key == key), None) if key else None
    if done is not None:
        return {"from": done.details.get("from"), "to": done.ref, "digest": registry.get(done.ref).digest,
                "forced": done.verdict == FORCED_ROLLBACK, "changed": True, "recorded_before": True,
                "decision": done.record_id}
    current = registry.find(f"{name}:{PRODUCTION}")
    moves = registry.alias_history(name, PRODUCTION)  # read once: on W&B it is a query over runs
    known = standings_from(registry.versions(name), decisions)
    target_version = (to_version or "").strip() or _undo_target(name, current, moves, known, force)
    target_ref = target_version if ":" in target_version else f"{name}:{target_version}"
    target = registry.find(target_ref)
    if target is None or target.name != name:
        raise RagindexError(f"rollback target {target_ref!r}: no such version of {name}")
    outcome = {"from": current.ref if current else None, "to": target.ref, "digest": target.digest, "forced": False}
    if current is not None and current.ref == target.ref and not (bool(key) and registry.interrupted(key)):
        return {**outcome, "changed": False}  # unless an earlier try moved the aliases, then died
    eligible = known[target.ref].eligible
    if not eligible:
        if not force:
            held = any(m.to_version == target.version for m in moves)
            raise GovernanceError(_refusal(target.ref, known[target.ref], held))
        if not reason.strip():
            raise GovernanceError(f"a forced rollback to {target.ref} needs a reason (it was "
                                  f"{known[target.ref].words()})")
    changes = (AliasChange(target.ref, PRODUCTION),
               *(AliasChange(r, PRODUCTION) for r in related_versions(target, registry=registry)))
    decision = registry.record_decision(Decision(
        kind=ROLLBACK, verdict=ROLLED_BACK if eligible else FORCED_ROLLBACK, ref=target.ref,
        actor=actor or "rollback", reason=reason, pipeline_run=pipeline_run,
        key=key, changes=changes, expect=holds(name, current),
        details={"from": outcome["from"]}))
    return {**outcome, "from": decision.details.get("from"), "changed": True, "forced": not eligible,
            "recorded_before": False, "decision": decision.record_id}
