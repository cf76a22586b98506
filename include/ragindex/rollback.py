"""Rollback: ``production`` goes back, in one step, to a version that held it before (so was approved) and has
not been rejected since.

Anything else is refused with the version's decision; ``force`` (with a reason) overrides, and the record
says it was forced. The history rollback reads (who held production, and before whom) is the registry's
alias history, which on W&B is made of the promote and rollback runs themselves.
"""

from __future__ import annotations

from typing import Any, Sequence

from ragindex.errors import GovernanceError, RagindexError
from ragindex.names import DEFAULT_NAMES, PRODUCTION, ArtifactNames
from ragindex.promotion import related_versions
from ragindex.registry import AliasChange, AliasMove, ArtifactVersion, Decision, Registry
from ragindex.review import REJECTED, describe, latest_review

ROLLBACK = "rollback"


def _previous_holder(name: str, current: ArtifactVersion | None, moves: Sequence[AliasMove]) -> str:
    """The version that held ``production`` before ``current`` took it, from the alias history ``moves``."""
    if current is None:
        raise RagindexError(f"{name}: no version holds '{PRODUCTION}', nothing to roll back")
    for move in reversed(moves):
        if move.to_version == current.version and move.from_version:
            return move.from_version
    raise RagindexError(f"{name}:{current.version} is the first '{PRODUCTION}' version; nothing earlier to roll back to")


def previous_production(registry: Registry, name: str) -> str:
    """The version that held ``production`` before the current holder took it."""
    return _previous_holder(name, registry.find(f"{name}:{PRODUCTION}"), registry.alias_history(name, PRODUCTION))


def rollback(registry: Registry, *, to_version: str | None = None, reason: str = "", actor: str = "",
             force: bool = False, pipeline_run: str | None = None, names: ArtifactNames = DEFAULT_NAMES) -> dict[str, Any]:
    """Move ``production`` back (to ``to_version`` or the previous holder) and record who did it and why.
    Re-running it for the same pipeline run returns the rollback on record (``recorded_before``), so a retry
    never steps back a second time."""
    key = f"{ROLLBACK}/{pipeline_run}" if pipeline_run else ""
    done = registry.decision(key) if key else None
    if done is not None:
        return {"from": done.details.get("from"), "to": done.ref, "digest": registry.get(done.ref).digest,
                "forced": done.verdict == "forced_rollback", "changed": True, "recorded_before": True,
                "decision": done.record_id}
    current = registry.find(f"{names.index}:{PRODUCTION}")
    moves = registry.alias_history(names.index, PRODUCTION)  # read once: on W&B it is a query over runs
    target_version = (to_version or "").strip() or _previous_holder(names.index, current, moves)
    target_ref = target_version if ":" in target_version else f"{names.index}:{target_version}"
    target = registry.find(target_ref)
    if target is None:
        raise RagindexError(f"rollback target {target_ref!r}: no such version of {names.index}")
    outcome = {"from": current.ref if current else None, "to": target.ref, "digest": target.digest, "forced": False}
    if current is not None and current.ref == target.ref:
        return {**outcome, "changed": False}
    review = latest_review(registry, target)
    rejected_since = review is not None and review.verdict == REJECTED  # held production, then was rejected
    held = any(move.to_version == target.version for move in moves)  # only approved versions can have
    approved_before = held and not rejected_since
    if not approved_before:
        decided = describe(review)
        if not force:
            why = (f"it was {decided}, after it held '{PRODUCTION}'" if rejected_since
                   else f"it never held '{PRODUCTION}' (its review: {decided})")
            raise GovernanceError(f"rollback to {target.ref} refused: {why}; roll back only to a version that was "
                                  "approved, or force it with a reason")
        if not reason.strip():
            raise GovernanceError(f"a forced rollback to {target.ref} needs a reason (its review: {decided})")
    changes = (AliasChange(target.ref, PRODUCTION), *(AliasChange(r, PRODUCTION) for r in related_versions(target)))
    decision = registry.record_decision(Decision(
        kind=ROLLBACK, verdict="rolled_back" if approved_before else "forced_rollback", ref=target.ref,
        actor=actor or "rollback", reason=reason, pipeline_run=pipeline_run,
        key=key, changes=changes,
        details={"from": outcome["from"]}))
    return {**outcome, "from": decision.details.get("from"), "changed": True, "forced": not approved_before,
            "recorded_before": False, "decision": decision.record_id}
