"""The versioned pipeline: each step consumes registry versions and logs one, so lineage links
raw-documents → processed-chunks → vector-index → eval-report. The DAGs and ``ragindex ingest`` call
these same functions; only refs and small dicts pass between them, files stay on shared storage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ragindex.errors import RagindexError
from ragindex.atomic import fresh_temp_dir, replace_dir_atomically
from ragindex.pipeline import QUALITY_FILE, build_index_from_shards, chunk_snapshot, embed_shard, plan_embeddings
from ragindex.registry import ArtifactNotFound, ArtifactVersion, Registry, RunInfo
from ragindex.settings import BuildSettings, ragindex_home
from ragindex.sources import load_manifest, snapshot

log = logging.getLogger(__name__)

PRODUCTION = "production"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class ArtifactNames:
    """Artifact names are settings; these defaults match the W&B project layout in the README."""

    raw: str = "raw-documents"
    chunks: str = "processed-chunks"
    index: str = "vector-index"
    questions: str = "eval-questions"
    report: str = "eval-report"


TYPES = {"raw": "raw_dataset", "chunks": "dataset", "index": "index", "questions": "eval_dataset", "report": "evaluation"}


def snapshot_alias(date: str | datetime | None) -> str | None:
    """``snapshot-YYYY-MM-DD`` of a run's logical date (None when the run has none)."""
    if not date:
        return None
    text = date.isoformat() if isinstance(date, datetime) else str(date)
    return f"snapshot-{text[:10]}"


def new_pipeline_run_id(prefix: str = "cli") -> str:
    """An id for a run started outside Airflow (Airflow runs use their own run_id)."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class IngestContext:
    """Everything a step needs to know about the pipeline run it belongs to."""

    registry: Registry
    pipeline_run_id: str
    settings: BuildSettings = field(default_factory=BuildSettings)
    source: str = ""
    as_of: str | None = None
    logical_date: str | None = None
    names: ArtifactNames = field(default_factory=ArtifactNames)
    aliases: tuple[str, ...] = ()
    work_root: Path | None = None
    run_type: str = "manual"

    @property
    def work_dir(self) -> Path:
        """This run's files, on storage every worker reaches (``$RAGINDEX_HOME/work`` by default)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.pipeline_run_id)
        return (self.work_root or ragindex_home() / "work") / safe

    def run(self, job_type: str) -> RunInfo:
        """One W&B run per step, grouped by pipeline run; the same step of the same run reuses its id."""
        digest = hashlib.sha256(f"{self.pipeline_run_id}/{job_type}".encode()).hexdigest()[:12]
        return RunInfo(job_type=job_type, group=self.pipeline_run_id, run_id=f"{job_type}-{digest}",
                       config={"settings": self.settings.to_dict(), "source": self.source, "as_of": self.as_of,
                               "logical_date": self.logical_date, "run_type": self.run_type})

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """What every version carries for reviewers and auditors."""
        return {"pipeline_run_id": self.pipeline_run_id, "logical_date": self.logical_date, "run_type": self.run_type,
                "source": self.source, "as_of": self.as_of, **extra}

    def settings_fingerprint(self, model_identity: str) -> str:
        """Identity of everything besides the corpus that changes an index's bytes."""
        body = {"chunking": asdict(self.settings.chunking), "index": asdict(self.settings.index), "model": model_identity}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def newest(registry: Registry, name: str) -> ArtifactVersion | None:
    """The newest version of ``name``, or None before the first one."""
    try:
        return registry.get(f"{name}:latest")
    except ArtifactNotFound:
        return None


def find_alias(registry: Registry, name: str, alias: str) -> ArtifactVersion | None:
    """The version holding ``alias``, or None."""
    try:
        return registry.get(f"{name}:{alias}")
    except ArtifactNotFound:
        return None


# ---------------------------------------------------------------- pull

@dataclass
class PullResult:
    """The raw version a run works on, or why there is nothing to do."""

    raw: str | None
    unchanged: bool
    documents: int
    corpus_digest: str
    existing_index: str | None = None
    refused: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def _index_for_corpus(ctx: IngestContext, corpus_digest: str, fingerprint: str) -> ArtifactVersion | None:
    for version in reversed(ctx.registry.versions(ctx.names.index)):
        meta = version.metadata
        if meta.get("corpus_digest") == corpus_digest and meta.get("settings_fingerprint") == fingerprint:
            return version
    return None


def prune_work_dirs(work_root: Path, keep: Path, older_than_days: float = 7.0) -> int:
    """Remove the work folders of runs idle for a week (longer than any review waits), so disk use stays flat."""
    import time

    if not work_root.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_days * 86400, 0
    for entry in work_root.iterdir():
        if entry.is_dir() and entry != keep and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def logs_by_reference(registry: Registry, source: str) -> bool:
    """Object-storage corpora go to W&B by reference (no upload) when the registry URI asks for it."""
    return bool(getattr(registry, "by_reference", False)) and "://" in source and not source.startswith("file://")


def manifest_only(raw_dir: Path, source: str, entries: Sequence[Any]) -> tuple[Path, dict[str, str]]:
    """A folder with just the manifest, plus ``files/PATH → URL`` references to the documents in place."""
    from ragindex.sources import MANIFEST_NAME

    target = raw_dir.with_name("raw-manifest")
    tmp = fresh_temp_dir(target)
    shutil.copyfile(raw_dir / MANIFEST_NAME, tmp / MANIFEST_NAME)
    replace_dir_atomically(tmp, target)
    return target, {f"files/{e.path}": f"{source.rstrip('/')}/{e.path}" for e in entries}


def wants_second_review(ctx: IngestContext, existing: ArtifactVersion) -> bool:
    """A manual run over an unchanged corpus whose index was rejected or failed its gate goes on (reusing
    every version) so a person can evaluate and review it again; scheduled runs do not nag weekly."""
    return ctx.run_type == "manual" and PRODUCTION not in existing.aliases


def pull_documents(ctx: IngestContext) -> PullResult:
    """Snapshot the source and log ``raw-documents``; report 'unchanged' when the newest version already
    has this content and an index was built from it with the same settings."""
    from ragindex.embedding import model_identity

    prune_work_dirs(ctx.work_dir.parent, ctx.work_dir)
    raw_dir = ctx.work_dir / "raw"
    snap = snapshot(ctx.source, raw_dir, ctx.as_of)
    latest = newest(ctx.registry, ctx.names.raw)
    if latest and latest.metadata.get("corpus_digest") == snap.content_digest \
            and latest.metadata.get("pipeline_run_id") != ctx.pipeline_run_id:
        existing = _index_for_corpus(ctx, snap.content_digest, ctx.settings_fingerprint(model_identity(ctx.settings.model)))
        if existing is not None and not wants_second_review(ctx, existing):
            log.info("corpus unchanged since %s (index %s); nothing to do", latest.ref, existing.ref)
            return PullResult(latest.ref, True, len(snap.entries), snap.content_digest, existing.ref, snap.refused)
    metadata = ctx.metadata(documents=len(snap.entries), corpus_digest=snap.content_digest,
                            bytes=sum(e.size for e in snap.entries), refused=len(snap.refused))
    logged_dir = raw_dir
    if logs_by_reference(ctx.registry, ctx.source):
        logged_dir, metadata["references"] = manifest_only(raw_dir, ctx.source, snap.entries)
    version = ctx.registry.log_artifact(ctx.names.raw, TYPES["raw"], logged_dir, run=ctx.run("pull_documents"),
                                        aliases=ctx.aliases, metadata=metadata)
    return PullResult(version.ref, False, len(snap.entries), snap.content_digest, None, snap.refused)


# ---------------------------------------------------------------- chunk (+ embedding plan)

@dataclass
class ChunkResult:
    """The chunks version and the embedding work it implies (shards for mapped tasks)."""

    chunks: str
    documents: int
    chunk_count: int
    failed: list[dict[str, str]]
    to_embed: int
    reused: int
    shards: int
    previous_index: str | None

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def previous_index_for(ctx: IngestContext, identity: str) -> ArtifactVersion | None:
    """The newest index built with the same model: its vectors feed the embedding cache."""
    for version in reversed(ctx.registry.versions(ctx.names.index)):
        if version.metadata.get("model_identity") == identity:
            return version
    return None


def chunk_documents(ctx: IngestContext, raw_ref: str, *, shard_size: int = 256, max_shards: int = 16) -> ChunkResult:
    """Parse + chunk a raw version, log ``processed-chunks``, and plan the embedding shards."""
    from ragindex.embedding import model_identity

    identity = model_identity(ctx.settings.model)
    previous = previous_index_for(ctx, identity)
    previous_dir = ctx.registry.download(previous.ref) if previous else None
    raw_dir = ctx.registry.download(raw_ref)
    chunks_dir = ctx.work_dir / "chunks"
    result = chunk_snapshot(raw_dir, chunks_dir, ctx.settings, previous=previous_dir)
    q = result.quality
    version = ctx.registry.log_artifact(
        ctx.names.chunks, TYPES["chunks"], chunks_dir, run=ctx.run("chunk_documents"), uses=[raw_ref],
        aliases=ctx.aliases,
        metadata=ctx.metadata(documents=result.documents, chunks=result.chunks, raw=raw_ref,
                              parsed=result.parsed, documents_reused=result.documents_reused,
                              chunk_size=ctx.settings.chunking.chunk_size,
                              chunk_overlap=ctx.settings.chunking.chunk_overlap,
                              splitter=ctx.settings.chunking.splitter,
                              quality={"chunk_length": q["chunk_length"], "parse_failures": len(q["parse_failures"]),
                                       "duplicate_chunks": q["duplicate_chunks"], "pii_totals": q["pii_totals"],
                                       "documents_with_pii": len(q["pii"])}))
    plan = plan_embeddings(chunks_dir, previous_dir, ctx.settings.model, ctx.work_dir / "embed" / PLAN_FILE,
                           shards=None, shard_size=shard_size, max_shards=max_shards)
    return ChunkResult(version.ref, result.documents, result.chunks, result.failed, plan.to_embed, plan.reused,
                       plan.shards, previous.ref if previous else None)


# ---------------------------------------------------------------- embed + index

def shard_path(ctx: IngestContext, shard: int) -> Path:
    """Where shard ``shard``'s vectors go."""
    return ctx.work_dir / "embed" / f"shard-{shard:04d}.npz"


def embed_chunks(ctx: IngestContext, shard: int) -> int:
    """Embed one shard of the plan (a mapped task); returns how many texts it embedded."""
    return embed_shard(ctx.work_dir / "chunks", ctx.work_dir / "embed" / PLAN_FILE, shard, shard_path(ctx, shard))


@dataclass
class IndexResult:
    """The index version and how its vectors were obtained."""

    index: str
    chunks: int
    embedded: int
    reused: int

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def build_index(ctx: IngestContext, raw_ref: str, chunks_ref: str) -> IndexResult:
    """Join the shards with the reused vectors, write the FAISS index + docstore, log ``vector-index``."""
    from ragindex.embedding import model_identity

    plan_path = ctx.work_dir / "embed" / PLAN_FILE
    shards = len(json.loads(plan_path.read_text())["shards"])
    out = ctx.work_dir / "index"
    identity = model_identity(ctx.settings.model)
    stats = build_index_from_shards(ctx.work_dir / "chunks", plan_path, [shard_path(ctx, i) for i in range(shards)],
                                    out, ctx.settings)
    index_meta = json.loads((out / "index.json").read_text())
    quality = json.loads((ctx.work_dir / "chunks" / QUALITY_FILE).read_text())
    version = ctx.registry.log_artifact(
        ctx.names.index, TYPES["index"], out, run=ctx.run("build_index"), uses=[chunks_ref], aliases=ctx.aliases,
        metadata=ctx.metadata(raw=raw_ref, chunks_ref=chunks_ref, chunks=stats["chunks"],
                              documents=quality["documents"], embedded=stats["embedded"], reused=stats["reused"],
                              model=ctx.settings.model, model_identity=identity, dimension=index_meta["dimension"],
                              index_kind=ctx.settings.index.kind, corpus_digest=index_meta["corpus_digest"],
                              chunk_size=ctx.settings.chunking.chunk_size,
                              chunk_overlap=ctx.settings.chunking.chunk_overlap,
                              settings_fingerprint=ctx.settings_fingerprint(identity)))
    return IndexResult(version.ref, stats["chunks"], stats["embedded"], stats["reused"])


# ---------------------------------------------------------------- evaluate

@dataclass
class EvalOutcome:
    """The report version, the gate's decision and the figures a reviewer compares."""

    report: str
    questions: str
    passed: bool
    reason: str
    candidate: dict[str, Any]
    production: dict[str, Any] | None
    production_ref: str | None

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Evaluation figures without the per-question rows (those stay in the report file, not in XCom)."""
    return {k: v for k, v in metrics.items() if k != "results"} if metrics else None


def log_eval_questions(ctx: IngestContext, questions_file: Path) -> ArtifactVersion:
    """Version the question set (identical content resolves to the existing version)."""
    from ragindex.evaluation import QUESTIONS_FILE, load_questions

    load_questions(questions_file)  # refuse a malformed set before it becomes a version
    target = ctx.work_dir / "eval-questions"
    tmp = fresh_temp_dir(target)
    shutil.copyfile(questions_file, tmp / QUESTIONS_FILE)
    replace_dir_atomically(tmp, target)
    return ctx.registry.log_artifact(ctx.names.questions, TYPES["questions"], target,
                                     run=ctx.run("register_eval_questions"), aliases=ctx.aliases,
                                     metadata={"questions": sum(1 for ln in open(questions_file) if ln.strip()),
                                               "origin": str(questions_file)})


def evaluate_index(ctx: IngestContext, index_ref: str, questions_file: Path, *, k: int = 5,
                   min_recall: float = 0.6, max_regression: float = 0.05) -> EvalOutcome:
    """Score candidate and production on the versioned question set, apply the gate, log ``eval-report``."""
    from ragindex.evaluation import evaluate, gate, load_questions
    from ragindex.retrieval import Retriever

    questions_version = log_eval_questions(ctx, Path(questions_file))
    questions = load_questions(ctx.registry.download(questions_version.ref))
    candidate = evaluate(Retriever(ctx.registry.download(index_ref), ref=index_ref), questions, k)
    production_version = find_alias(ctx.registry, ctx.names.index, PRODUCTION)
    production = None
    if production_version is not None:
        prod_retriever = Retriever(ctx.registry.download(production_version.ref), ref=production_version.ref)
        production = evaluate(prod_retriever, questions, k)
    decision = gate(candidate, production, min_recall=min_recall, max_regression=max_regression)
    report = {"candidate": index_ref, "production": production_version.ref if production_version else None,
              "questions": questions_version.ref, "k": k,
              "thresholds": {"min_recall": min_recall, "max_regression": max_regression},
              "candidate_metrics": candidate, "production_metrics": production, "gate": decision.to_json()}
    target = ctx.work_dir / "eval-report"
    tmp = fresh_temp_dir(target)
    (tmp / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    replace_dir_atomically(tmp, target)
    summary = {"recall_at_k": candidate["recall_at_k"], "mrr": candidate["mrr"], "k": k, "passed": decision.passed}
    version = ctx.registry.log_artifact(
        ctx.names.report, TYPES["report"], target, run=ctx.run("evaluate_index"),
        uses=[index_ref, questions_version.ref], aliases=ctx.aliases,
        metadata=ctx.metadata(index=index_ref, questions=questions_version.ref, **summary,
                              production=report["production"],
                              production_recall_at_k=production["recall_at_k"] if production else None,
                              production_mrr=production["mrr"] if production else None, reason=decision.reason))
    ctx.registry.update_metadata(index_ref, {"eval": {**summary, "report": version.ref}})
    return EvalOutcome(version.ref, questions_version.ref, decision.passed, decision.reason, headline(candidate),
                       headline(production), report["production"])


# ---------------------------------------------------------------- promote / rollback

def promote(registry: Registry, index_ref: str, *, actor: str, reason: str = "",
            names: ArtifactNames = ArtifactNames(), report_ref: str | None = None) -> dict[str, Any]:
    """Move ``production`` to the index and mark the versions it came from; re-running changes nothing."""
    index = registry.get(index_ref)
    current = find_alias(registry, names.index, PRODUCTION)
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


def previous_production(registry: Registry, name: str) -> str:
    """The version that held ``production`` before the current holder took it."""
    current = find_alias(registry, name, PRODUCTION)
    if current is None:
        raise RagindexError(f"{name}: no version holds '{PRODUCTION}', nothing to roll back")
    for move in reversed(registry.alias_history(name, PRODUCTION)):
        if move.to_version == current.version and move.from_version:
            return move.from_version
    raise RagindexError(f"{name}:{current.version} is the first '{PRODUCTION}' version; nothing earlier to roll back to")


def rollback(registry: Registry, *, to_version: str | None = None, reason: str = "", actor: str = "",
             names: ArtifactNames = ArtifactNames()) -> dict[str, Any]:
    """Move ``production`` back (to ``to_version`` or the previous holder) and log why."""
    target_version = (to_version or "").strip() or previous_production(registry, names.index)
    target_ref = target_version if ":" in target_version else f"{names.index}:{target_version}"
    try:
        target = registry.get(target_ref)
    except ArtifactNotFound:
        raise RagindexError(f"rollback target {target_ref!r}: no such version of {names.index}") from None
    current = find_alias(registry, names.index, PRODUCTION)
    outcome = promote(registry, target.ref, actor=actor or "rollback", reason=f"rollback: {reason}".strip(": "),
                      names=names)
    return {**outcome, "from": current.ref if current else None, "to": target.ref, "digest": target.digest}


# ---------------------------------------------------------------- the whole chain without Airflow

def ingest(ctx: IngestContext) -> dict[str, Any]:
    """pull → chunk → embed every shard → index, as ``ragindex ingest`` runs it in one process."""
    pulled = pull_documents(ctx)
    if pulled.unchanged:
        return {"unchanged": True, "raw": pulled.raw, "chunks": None, "index": pulled.existing_index,
                "embedded": 0, "reused": 0, "documents": pulled.documents,
                "message": f"corpus unchanged since {pulled.raw} and {pulled.existing_index} was built from it "
                           "with these settings: no new versions"}
    chunked = chunk_documents(ctx, pulled.raw)
    for shard in range(chunked.shards):
        embed_chunks(ctx, shard)
    built = build_index(ctx, pulled.raw, chunked.chunks)
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return {"unchanged": False, "raw": pulled.raw, "chunks": chunked.chunks, "index": built.index,
            "embedded": built.embedded, "reused": built.reused, "documents": chunked.documents,
            "failed": chunked.failed, "refused": pulled.refused}


def review_summary(registry: Registry, *, raw_ref: str, chunks_ref: str, index_ref: str,
                   outcome: EvalOutcome | dict[str, Any], names: ArtifactNames = ArtifactNames()) -> str:
    """Markdown for the reviewer: what changed since production, eval side by side, quality, refs."""
    outcome = outcome if isinstance(outcome, dict) else outcome.to_json()
    index = registry.get(index_ref)
    chunks = registry.get(chunks_ref)
    production = find_alias(registry, names.index, PRODUCTION)
    new_docs = {d["path"]: d["sha256"] for d in load_manifest(registry.download(raw_ref))["documents"]}
    old_docs: dict[str, str] = {}
    if production is not None and production.metadata.get("raw"):
        old_docs = {d["path"]: d["sha256"] for d in load_manifest(registry.download(production.metadata["raw"]))["documents"]}
    added = sorted(set(new_docs) - set(old_docs))
    removed = sorted(set(old_docs) - set(new_docs))
    changed = sorted(p for p in set(new_docs) & set(old_docs) if new_docs[p] != old_docs[p])
    quality = json.loads((registry.download(chunks_ref) / QUALITY_FILE).read_text())
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
