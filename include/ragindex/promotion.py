"""Promotion: moving ``production`` onto an index version, and the versions it came from with it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ragindex.names import DEFAULT_NAMES, PRODUCTION, ArtifactNames
from ragindex.registry import Registry


def promote(registry: Registry, index_ref: str, *, actor: str, reason: str = "",
            names: ArtifactNames = DEFAULT_NAMES, report_ref: str | None = None) -> dict[str, Any]:
    """Move ``production`` to the index and mark the versions it came from; re-running changes nothing."""
    index = registry.get(index_ref)
    current = registry.find(f"{names.index}:{PRODUCTION}")
    related = [r for r in (index.metadata.get("raw"), index.metadata.get("chunks_ref"),
                           report_ref or (index.metadata.get("eval") or {}).get("report")) if r]
    if current is not None and current.ref == index.ref:
        return {"promoted": index.ref, "previous": None, "changed": False, "related": related}
    registry.set_alias(index.ref, PRODUCTION, actor=actor, reason=reason)
    for ref in related:
        registry.set_alias(ref, PRODUCTION, actor=actor, reason=f"came with {index.ref}")
    at = datetime.now(timezone.utc).isoformat()
    registry.update_metadata(index.ref, {"promotion": {"at": at, "by": actor, "reason": reason,
                                                       "previous": current.ref if current else None}})
    return {"promoted": index.ref, "previous": current.ref if current else None, "changed": True, "related": related}
