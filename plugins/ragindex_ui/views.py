"""What the pages show, computed from a registry: version rows, eval figures and lineage graphs.

Plain data (dicts and lists) for the templates; no FastAPI here, so it is easy to test. Only the light
``ragindex.names`` is imported at module level; the registry is imported inside the functions: the plugin
module is loaded by every Airflow process, the pages only by the API server when someone opens them.
"""

from __future__ import annotations

from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

from ragindex.names import DEFAULT_NAMES, PRODUCTION

SHORT_DIGEST = 12
PIPELINE_ORDER = DEFAULT_NAMES.in_pipeline_order()  # raw → chunks → index → eval questions → report


class RegistryUnavailable(Exception):
    """The registry named by the request (or the deployment) cannot be opened."""


def open_checked(uri: str | None) -> Any:
    """Open the registry ``uri`` names (blank: ``RAGINDEX_REGISTRY`` or the local default).

    A local registry is only opened when its catalogue already exists: opening one creates folders,
    which a page view must never do (and ``?registry=`` comes from the browser).
    """
    from ragindex.registry import RegistryError, default_registry_uri, open_registry
    from ragindex_airflow.connections import wandb_registry_uri

    target = (uri or "").strip() or default_registry_uri()
    if target.startswith("wandb://"):
        try:  # wandb://CONN_ID@… and a bare wandb:// read the Airflow connection, as the DAGs' tasks do
            target = wandb_registry_uri(target)
        except RegistryError as exc:
            raise RegistryUnavailable(str(exc)) from exc
    else:
        from ragindex.registry.local import CATALOG

        if target.startswith("file://"):
            path = target[len("file://"):]
        elif "://" in target:
            raise RegistryUnavailable(f"unsupported registry URI {target!r} (use wandb://ENTITY/PROJECT or a folder)")
        else:
            path = target
        if not path or not (Path(path).expanduser() / CATALOG).is_file():
            raise RegistryUnavailable(f"no registry at {target!r} yet (no {CATALOG}): run rag_ingest or "
                                      "`ragindex ingest` first")
    try:
        return open_registry(target)
    except RegistryError as exc:
        raise RegistryUnavailable(str(exc)) from exc


def artifact_names(registry: Any) -> list[str]:
    """Every artifact name: the pipeline's names first (in pipeline order), then any others."""
    defaults = list(PIPELINE_ORDER)
    listed = getattr(registry, "names", None)
    if not callable(listed):  # W&B: no cheap listing; the pipeline's names are the ones that matter
        return defaults
    present = list(listed())
    return [n for n in defaults if n in present] + sorted(n for n in present if n not in defaults)


def short(digest: str | None) -> str:
    return (digest or "")[:SHORT_DIGEST]


def fmt_num(value: Any, digits: int = 3) -> str:
    """Numbers for people: floats rounded, ints as they are, missing as an em dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def key_metadata(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The metadata a reviewer looks at first, as (label, value) pairs; absent fields are left out."""
    pairs: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, ""):
            pairs.append((label, fmt_num(value)))

    add("documents", meta.get("documents"))
    add("chunks", meta.get("chunks"))
    if meta.get("chunk_size") is not None:
        overlap = meta.get("chunk_overlap")
        pairs.append(("chunk size / overlap", f"{meta['chunk_size']} / {fmt_num(overlap)}"))
    add("splitter", meta.get("splitter"))
    add("model", meta.get("model"))
    if meta.get("embedded") is not None or meta.get("reused") is not None:
        pairs.append(("embedded / reused", f"{fmt_num(meta.get('embedded'))} / {fmt_num(meta.get('reused'))}"))
    add("index", meta.get("index_kind"))
    add("dimension", meta.get("dimension"))
    add("questions", meta.get("questions") if isinstance(meta.get("questions"), int) else None)
    add("refused", meta.get("refused") or None)
    quality = meta.get("quality")
    if isinstance(quality, dict) and quality.get("parse_failures"):
        add("parse failures", quality["parse_failures"])
    add("run", meta.get("pipeline_run_id"))
    add("logical date", meta.get("logical_date"))
    return pairs


def eval_figures(name_type: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    """recall@k / MRR / gate of a vector-index (``metadata.eval``) or of an eval-report (top level)."""
    source = meta.get("eval") if isinstance(meta.get("eval"), dict) else None
    if source is None and "recall_at_k" in meta:
        source = meta
    if source is None:
        return None
    figures = {
        "k": source.get("k"),
        "recall": fmt_num(source.get("recall_at_k")),
        "mrr": fmt_num(source.get("mrr")),
        "passed": source.get("passed"),
        "report": source.get("report") if isinstance(source.get("report"), str) else None,
        "index": meta.get("index") if source is meta and isinstance(meta.get("index"), str) else None,
        "production": None,
        "reason": meta.get("reason") if source is meta else None,
    }
    if source is meta and meta.get("production"):
        figures["production"] = {"ref": meta["production"], "recall": fmt_num(meta.get("production_recall_at_k")),
                                 "mrr": fmt_num(meta.get("production_mrr"))}
    return figures


def decision_view(decision: Any) -> dict[str, Any]:
    """A decision record for the pages: what, who, when (UTC), why, and the alias moves it made."""
    from ragindex.review import describe

    overrides = (decision.details or {}).get("overrides") if isinstance(decision.details, dict) else None
    return {"kind": decision.kind, "verdict": decision.verdict, "ref": decision.ref, "actor": decision.actor,
            "reason": decision.reason, "at": (decision.at or "")[:19].replace("T", " "), "run": decision.pipeline_run,
            "text": describe(decision), "key": decision.key,
            "overrides": (f"the rejection on {(overrides.get('at') or '')[:16].replace('T', ' ')} by "
                          f"{overrides.get('actor')}" + (f": “{overrides['reason']}”" if overrides.get("reason") else ""))
            if overrides else None,
            "moves": [f"{m.name} {m.alias}: {m.from_version or '—'} → {m.to_version or '—'}" for m in decision.moves]}


def decisions_by_ref(decisions: list[Any]) -> dict[str, dict[str, Any]]:
    """For each version decided on: its latest review and its latest promotion or rollback."""
    from ragindex.promotion import PROMOTE
    from ragindex.review import REVIEW
    from ragindex.rollback import ROLLBACK

    latest: dict[str, dict[str, Any]] = {}
    for d in decisions:  # oldest first: a later decision replaces an earlier one in its slot
        slot = "review" if d.kind == REVIEW else "promotion" if d.kind in (PROMOTE, ROLLBACK) else None
        if slot:
            latest.setdefault(d.ref, {})[slot] = d
    return {ref: {slot: decision_view(d) for slot, d in slots.items()} for ref, slots in latest.items()}


def standing_view(known: Any) -> dict[str, Any] | None:
    """A version's standing for the pages: a badge's words and colour, and the sentence behind it."""
    if known is None or (known.review is None and known.forced_in is None):
        return None
    css = ("forced_in" if known.label == "forced in" else "none" if known.review is None
           else "ungated" if known.review.verdict in ("approved", "auto_approved") and not known.eligible
           else known.review.verdict)
    return {"label": known.label, "badge": known.badge, "css": css, "text": known.words(),
            "eligible": known.eligible, "forced_in": known.label == "forced in"}


def version_row(version: Any, decided: dict[str, Any] | None = None, known: Any = None) -> dict[str, Any]:
    """One version for a table row or a graph node, with the decisions on it and where it stands."""
    meta = dict(version.metadata or {})
    aliases = list(version.aliases)
    decided = decided or {}
    review = decided.get("review")
    standing = standing_view(known)
    return {
        "ref": version.ref,
        "name": version.name,
        "type": version.type,
        "version": version.version,
        "digest": version.digest,
        "short_digest": short(version.digest),
        "aliases": aliases,
        "production": PRODUCTION in aliases,
        "created_at": (version.created_at or "")[:19].replace("T", " "),
        "details": key_metadata(meta),
        "eval": eval_figures(version.type, meta),
        "review": review,
        "standing": standing,
        "rejected": bool(known is not None and known.rejected),
        "forced_in": bool(standing and standing["forced_in"]),
        "promotion": decided.get("promotion"),
        "consumed": list(version.consumed),
        "url": version.url,
    }


def web_url(registry: Any, version: Any) -> str | None:
    """The registry's page of a version (W&B), or None (local backend)."""
    if version.url:
        return version.url
    if str(getattr(registry, "uri", "")).startswith("wandb://"):
        try:
            return registry.web_url(version.ref)
        except Exception:  # noqa: BLE001 - a missing link must not break the page
            return None
    return None


HISTORY_SHOWN = 30


def listing(registry: Any) -> dict[str, Any]:
    """The index page: each artifact with its versions (newest first) and the decisions on them, who holds
    production, and the latest decisions (reviews, staging, promotions, rollbacks) newest first."""
    from ragindex.standing import standings_from

    sections, history = [], []
    production = None
    for name in artifact_names(registry):
        versions = registry.versions(name)
        decisions = registry.decisions(name) if versions else []
        decided = decisions_by_ref(decisions)
        known = standings_from(versions, decisions)
        history += decisions
        rows = []
        for v in reversed(versions):
            row = version_row(v, decided.get(v.ref), known.get(v.ref))
            row["url"] = web_url(registry, v)
            rows.append(row)
            if row["production"] and production is None and name == DEFAULT_NAMES.index:
                production = row
        sections.append({"name": name, "type": versions[0].type if versions else "", "rows": rows})
    if production is None:  # another name holding production (custom ArtifactNames)
        production = next((r for s in sections for r in s["rows"] if r["production"]), None)
    history.sort(key=lambda d: d.at, reverse=True)
    return {"registry": str(getattr(registry, "uri", "")), "sections": sections, "production": production,
            "decisions": [decision_view(d) for d in history[:HISTORY_SHOWN]]}


# ---------------------------------------------------------------- lineage


def _downstream_refs(registry: Any, ref: str, row: dict[str, Any]) -> list[str]:
    """Versions that consumed ``ref`` (transitively). Local: a scan of the catalogue; W&B: the eval report."""
    listed = getattr(registry, "names", None)
    if not callable(listed):
        report = (row.get("eval") or {}).get("report")
        return [report] if report else []
    everything = [v for name in listed() for v in registry.versions(name)]
    found: list[str] = []
    reached = {ref}
    changed = True
    while changed:
        changed = False
        for v in everything:
            if v.ref not in reached and reached.intersection(v.consumed):
                reached.add(v.ref)
                found.append(v.ref)
                changed = True
    return found


def _layers(nodes: dict[str, Any], edges: list[list[str]]) -> dict[str, int]:
    """Column of each node: the longest path from a source (raw → chunks → index → report)."""
    ups: dict[str, set[str]] = {ref: set() for ref in nodes}
    for src, dst in edges:
        if src in ups and dst in ups:
            ups[dst].add(src)
    depth: dict[str, int] = {}
    for ref in TopologicalSorter(ups).static_order():  # versions are immutable, so the graph has no cycle
        depth[ref] = max((depth[u] + 1 for u in ups[ref]), default=0)
    # A side input (eval-questions) sits just left of its first consumer, not in the first column,
    # so its edge does not run under the boxes in between.
    for ref in nodes:
        if not ups[ref]:
            consumers = [depth[dst] for src, dst in edges if src == ref and dst in depth]
            if consumers:
                depth[ref] = max(depth[ref], min(consumers) - 1)
    return depth


def main_chain(nodes: dict[str, Any], edges: list[list[str]], root: str) -> list[str]:
    """The pipeline path through ``root``: up along the deepest inputs (raw → chunks → index), then down."""
    depth = _layers(nodes, edges)
    chain = [root]
    while True:
        ups = [src for src, dst in edges if dst == chain[0] and src in nodes and src not in chain]
        if not ups:
            break
        # the deepest input; on a tie one that has inputs itself (an index, not a question set)
        chain.insert(0, max(ups, key=lambda r: (depth[r], any(dst == r for _, dst in edges), r)))
    while True:
        downs = [dst for src, dst in edges if src == chain[-1] and dst in nodes and dst not in chain]
        if not downs:
            break
        chain.append(min(downs, key=lambda r: (depth[r], r)))
    return chain


BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 200, 64, 70, 22, 16


def svg_layout(nodes: dict[str, dict[str, Any]], edges: list[list[str]], root: str) -> dict[str, Any]:
    """Box positions and edge paths for a left-to-right SVG of the lineage graph."""
    depth = _layers(nodes, edges)
    columns: dict[int, list[str]] = {}
    order = {name: i for i, name in enumerate(PIPELINE_ORDER)}
    for ref in sorted(nodes, key=lambda r: (order.get(nodes[r]["name"], 99), r)):
        columns.setdefault(depth[ref], []).append(ref)
    pos: dict[str, tuple[int, int]] = {}
    for col, refs in columns.items():
        for row, ref in enumerate(refs):
            pos[ref] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    boxes = [{**nodes[ref], "ref": ref, "x": x, "y": y, "root": ref == root} for ref, (x, y) in pos.items()]
    paths = []
    for src, dst in edges:
        if src in pos and dst in pos:
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H // 2, x2 - 4, y2 + BOX_H // 2
            mid = (sx + ex) // 2
            paths.append({"src": src, "dst": dst, "d": f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"})
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(r) for r in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    return {"boxes": boxes, "paths": paths, "width": width, "height": height, "box_w": BOX_W, "box_h": BOX_H}


def upstream_tree(nodes: dict[str, dict[str, Any]], ref: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``ref`` and, nested below it, the versions it was made from (for the nested list)."""
    node = nodes[ref]
    children = [] if ref in seen else [
        upstream_tree(nodes, up, seen | {ref}) for up in node.get("consumed", []) if up in nodes
    ]
    return {"node": node, "children": children}


def lineage_view(registry: Any, ref: str) -> dict[str, Any]:
    """The detail page of a version: its row, its upstream tree and the graph up- and downstream of it."""
    from ragindex.standing import standings_from

    root_version = registry.get(ref)
    root_decisions = registry.decisions(root_version.name)
    decided: dict[str, dict[str, Any]] = {root_version.name: decisions_by_ref(root_decisions)}
    by_name: dict[str, list[Any]] = {root_version.name: root_decisions}
    root = version_row(root_version, decided[root_version.name].get(root_version.ref),
                       standings_from([root_version], root_decisions)[root_version.ref])
    root["url"] = web_url(registry, root_version)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[list[str]] = []

    def merge(graph: dict[str, Any]) -> None:
        for node_ref in graph["nodes"]:
            if node_ref not in nodes:
                v = registry.get(node_ref)
                if v.name not in decided:
                    by_name[v.name] = registry.decisions(v.name)
                    decided[v.name] = decisions_by_ref(by_name[v.name])
                row = version_row(v, decided[v.name].get(v.ref), standings_from([v], by_name[v.name])[v.ref])
                row["url"] = web_url(registry, v)
                nodes[node_ref] = row
        for edge in graph["edges"]:
            if edge not in edges:
                edges.append(list(edge))

    merge(registry.lineage(root_version.ref))
    downstream = []
    for down_ref in _downstream_refs(registry, root_version.ref, root):
        try:
            merge(registry.lineage(down_ref))
            downstream.append(nodes[registry.get(down_ref).ref])
        except Exception:  # noqa: BLE001 - a dangling metadata ref must not break the page
            continue
    chain = [nodes[r] for r in main_chain(nodes, edges, root_version.ref)]
    return {
        "registry": str(getattr(registry, "uri", "")),
        "root": root,
        "tree": upstream_tree(nodes, root_version.ref),
        "downstream": downstream,
        "svg": svg_layout(nodes, edges, root_version.ref),
        "chain": chain,
        "edges": edges,
        "decisions": [decision_view(d) for d in root_decisions if d.ref == root_version.ref],
    }

