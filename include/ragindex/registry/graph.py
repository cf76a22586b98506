"""Lineage graph construction shared by the backends, so both return the same shape."""

from __future__ import annotations

from typing import Any, Callable

from .protocol import ArtifactVersion


def lineage_node(version: ArtifactVersion) -> dict[str, Any]:
    """The node record of a lineage graph, identical across backends."""
    return {
        "name": version.name,
        "type": version.type,
        "version": version.version,
        "digest": version.digest,
        "aliases": list(version.aliases),
        "metadata": dict(version.metadata),
    }


def build_lineage(get: Callable[[str], ArtifactVersion], ref: str) -> dict[str, Any]:
    """Walk consumed refs upstream from ``ref``: ``{"root", "nodes", "edges": [[upstream, downstream]]}``."""
    root = get(ref)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[list[str]] = []
    pending = [root]
    while pending:
        version = pending.pop()
        if version.ref in nodes:
            continue
        nodes[version.ref] = lineage_node(version)
        for upstream_ref in version.consumed:
            edges.append([upstream_ref, version.ref])
            if upstream_ref not in nodes:
                pending.append(get(upstream_ref))
    return {"root": root.ref, "nodes": nodes, "edges": edges}
