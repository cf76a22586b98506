"""The review: what a person reads before deciding whether a candidate index may serve."""

from __future__ import annotations

from typing import Any, Sequence

from ragindex.gate import EvalOutcome
from ragindex.names import DEFAULT_NAMES, PRODUCTION, ArtifactNames
from ragindex.pipeline import read_quality
from ragindex.registry import Registry
from ragindex.sources import load_manifest


def review_summary(registry: Registry, *, raw_ref: str, chunks_ref: str, index_ref: str,
                   outcome: EvalOutcome | dict[str, Any], names: ArtifactNames = DEFAULT_NAMES) -> str:
    """Markdown for the reviewer: what changed since production, eval side by side, quality, refs."""
    outcome = outcome if isinstance(outcome, dict) else outcome.to_json()
    index = registry.get(index_ref)
    chunks = registry.get(chunks_ref)
    production = registry.find(f"{names.index}:{PRODUCTION}")
    new_docs = {d["path"]: d["sha256"] for d in load_manifest(registry.download(raw_ref))["documents"]}
    old_docs: dict[str, str] = {}
    if production is not None and production.metadata.get("raw"):
        old_docs = {d["path"]: d["sha256"] for d in load_manifest(registry.download(production.metadata["raw"]))["documents"]}
    added = sorted(set(new_docs) - set(old_docs))
    removed = sorted(set(old_docs) - set(new_docs))
    changed = sorted(p for p in set(new_docs) & set(old_docs) if new_docs[p] != old_docs[p])
    quality = read_quality(registry.download(chunks_ref))
    cand, prod = outcome["candidate"], outcome.get("production")

    def link(ref: str | None) -> str:
        if not ref:
            return "—"
        url = registry.web_url(ref)
        return f"[`{ref}`]({url})" if url else f"`{ref}`"

    def listed(paths: Sequence[str]) -> str:
        return ", ".join(f"`{p}`" for p in paths[:10]) + (f" … (+{len(paths) - 10})" if len(paths) > 10 else "") or "none"

    prod_chunks = production.metadata.get("chunks") if production else None
    lines = [
        f"### Candidate {link(index.ref)} vs production {link(production.ref if production else None)}",
        "",
        f"**Gate: {'PASSED' if outcome['passed'] else 'FAILED'}** — {outcome['reason']}",
        "",
        "| metric | candidate | production |",
        "|---|---|---|",
        f"| recall@{cand['k']} | {cand['recall_at_k']:.3f} | {prod['recall_at_k']:.3f} |" if prod else
        f"| recall@{cand['k']} | {cand['recall_at_k']:.3f} | — |",
        f"| MRR | {cand['mrr']:.3f} | {prod['mrr']:.3f} |" if prod else f"| MRR | {cand['mrr']:.3f} | — |",
        f"| documents | {len(new_docs)} | {len(old_docs) if production else '—'} |",
        f"| chunks | {index.metadata.get('chunks')} | {prod_chunks if prod_chunks is not None else '—'} |",
        "",
        f"**Documents since production:** {len(added)} added ({listed(added)}), {len(removed)} removed "
        f"({listed(removed)}), {len(changed)} changed ({listed(changed)}).",
        f"**Embedding:** {index.metadata.get('embedded')} chunks embedded, {index.metadata.get('reused')} reused.",
        "",
        f"**Quality:** chunk length p50 {quality['chunk_length']['p50']:.0f}, max {quality['chunk_length']['max']}; "
        f"{quality['duplicate_chunks']} duplicate chunks.",
        "**PII findings (counts only):** " + (", ".join(
            f"`{path}`: " + ", ".join(f"{n} {kind}" for kind, n in found.items()) for path, found in quality["pii"].items())
            or "none"),
        "**Parse failures:** " + ("; ".join(f"`{f['path']}` ({f['reason']})" for f in quality["parse_failures"]) or "none"),
        "",
        f"Artifacts: raw {link(raw_ref)} → chunks {link(chunks_ref)} → index {link(index_ref)} → "
        f"report {link(outcome['report'])} (questions {link(outcome['questions'])}); chunks metadata "
        f"{chunks.metadata.get('chunk_size')}/{chunks.metadata.get('chunk_overlap')} size/overlap.",
    ]
    return "\n".join(lines)
