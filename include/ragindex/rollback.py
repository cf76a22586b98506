"""Rollback: ``production`` goes back to a version that held it before, in one step, with the reason."""

from __future__ import annotations

from typing import Any

from ragindex.errors import RagindexError
from ragindex.names import DEFAULT_NAMES, PRODUCTION, ArtifactNames
from ragindex.promotion import promote
from ragindex.registry import Registry


def previous_production(registry: Registry, name: str) -> str:
    """The version that held ``production`` before the current holder took it."""
    current = registry.find(f"{name}:{PRODUCTION}")
    if current is None:
        raise RagindexError(f"{name}: no version holds '{PRODUCTION}', nothing to roll back")
    for move in reversed(registry.alias_history(name, PRODUCTION)):
        if move.to_version == current.version and move.from_version:
            return move.from_version
    raise RagindexError(f"{name}:{current.version} is the first '{PRODUCTION}' version; nothing earlier to roll back to")


def rollback(registry: Registry, *, to_version: str | None = None, reason: str = "", actor: str = "",
             names: ArtifactNames = DEFAULT_NAMES) -> dict[str, Any]:
    """Move ``production`` back (to ``to_version`` or the previous holder) and log why."""
    target_version = (to_version or "").strip() or previous_production(registry, names.index)
    target_ref = target_version if ":" in target_version else f"{names.index}:{target_version}"
    target = registry.find(target_ref)
    if target is None:
        raise RagindexError(f"rollback target {target_ref!r}: no such version of {names.index}")
    current = registry.find(f"{names.index}:{PRODUCTION}")
    outcome = promote(registry, target.ref, actor=actor or "rollback", reason=f"rollback: {reason}".strip(": "),
                      names=names)
    return {**outcome, "from": current.ref if current else None, "to": target.ref, "digest": target.digest}
