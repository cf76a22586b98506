"""The versioned data-flow steps: each runs one stage of ``ragindex.pipeline`` in the run's work folder and
logs what it produced, so lineage links raw-documents → processed-chunks → vector-index. The DAG's tasks and
``ragindex ingest`` call these same functions; only refs and small dicts pass between them.

Evaluation and the decisions that follow live in rooms of their own: ``gate``, ``review``, ``promotion``,
``rollback``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically
from ragindex.context import MANUAL, IngestContext
from ragindex.names import ARTIFACT_TYPES, PRODUCTION
from ragindex.pipeline import build_index_from_shards, chunk_snapshot, embed_shard, plan_embeddings
from ragindex.registry import ArtifactVersion, Registry
from ragindex.sources import MANIFEST_NAME, fetch_folder, is_remote, snapshot
from ragindex.timing import Steps
from ragindex.workdir import WorkDir, prune_work_dirs

log = logging.getLogger(__name__)


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
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def index_for_corpus(ctx: IngestContext, corpus_digest: str) -> ArtifactVersion | None:
    """The newest index built from this corpus with these settings, if any; the model's weights are hashed
    for the settings only when some index was built from this corpus (a new corpus needs no hash)."""
    from ragindex.embedding import model_identity

    built = [v for v in ctx.registry.versions(ctx.names.index) if v.metadata.get("corpus_digest") == corpus_digest]
    if not built:
        return None
    fingerprint = ctx.settings_fingerprint(model_identity(ctx.settings.model, ctx.settings.embedding_backend))
    return next((v for v in reversed(built) if v.metadata.get("settings_fingerprint") == fingerprint), None)


def logs_by_reference(registry: Registry, source: str) -> bool:
    """Object-storage corpora go to W&B by reference (no upload) when the registry URI asks for it."""
    return bool(getattr(registry, "by_reference", False)) and "://" in source and not source.startswith("file://")


def manifest_only(work: WorkDir, source: str, entries: Sequence[Any]) -> tuple[Path, dict[str, str]]:
    """A folder with just the snapshot's manifest, plus ``files/PATH → URL`` references to the documents."""
    target = work.raw_manifest_only
    tmp = fresh_temp_dir(target)
    shutil.copyfile(work.raw / MANIFEST_NAME, tmp / MANIFEST_NAME)
    replace_dir_atomically(tmp, target)
    return target, {f"files/{e.path}": f"{source.rstrip('/')}/{e.path}" for e in entries}


def unchanged_reason(ctx: IngestContext, existing: ArtifactVersion) -> str | None:
    """Why a run over a corpus that already has an index (these settings) stops, or None when it goes on.

    Scheduled, backfill and CLI runs never create anything for an indexed corpus, whatever became of its
    index. A manual run stops only when that index already is production (nobody is asked to approve what
    serves already); otherwise it goes on, reusing every version, so the index can be evaluated and
    reviewed again (the review summary then says what was decided before).
    """
    if ctx.run_type == MANUAL and PRODUCTION not in existing.aliases:
        return None
    state = f"it holds '{PRODUCTION}'" if PRODUCTION in existing.aliases else "no new versions"
    return f"corpus unchanged: {existing.ref} was built from it with these settings ({state})"


def pull_documents(ctx: IngestContext) -> PullResult:
    """Snapshot the source and log ``raw-documents``; report 'unchanged' (and log nothing) when this corpus,
    with these settings, already has an index version and the run's kind does not want it again."""
    work, steps = ctx.work, Steps()
    prune_work_dirs(work.root.parent, work.root)
    snap = snapshot(ctx.source, work.raw, ctx.as_of, ctx.settings.corpus, ctx.settings.documents,
                    ctx.settings.parse_memory_mb)
    steps.done("snapshot")
    existing = index_for_corpus(ctx, snap.content_digest)
    steps.done("registry lookup")
    if existing is not None and existing.metadata.get("pipeline_run_id") != ctx.pipeline_run_id:
        why = unchanged_reason(ctx, existing)
        if why:
            log.info("%s; nothing to do: %d documents from %s; %s", why, len(snap.entries), ctx.source, steps)
            return PullResult(existing.metadata.get("raw"), True, len(snap.entries), snap.content_digest,
                              existing.ref, snap.refused, message=why)
    metadata = {**ctx.metadata(), **snap.snapshot_facts(), "corpus_digest": snap.content_digest}
    logged_dir = work.raw
    if logs_by_reference(ctx.registry, ctx.source):
        logged_dir, metadata["references"] = manifest_only(work, ctx.source, snap.entries)
    version = ctx.registry.log_artifact(ctx.names.raw, ARTIFACT_TYPES["raw"], logged_dir, run=ctx.run("pull_documents"),
                                        aliases=ctx.aliases, metadata=metadata)
    steps.done("log")
    log.info("%s: %d documents (%d refused) from %s%s, %s; %s", version.ref, len(snap.entries), len(snap.refused),
             ctx.source, f" as of {ctx.as_of}" if ctx.as_of else "",
             "a new corpus" if existing is None else f"the corpus of {existing.ref} again", steps)
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


def chunk_documents(ctx: IngestContext, raw_ref: str) -> ChunkResult:
    """Parse + chunk a raw version, log ``processed-chunks``, and plan the embedding shards."""
    from ragindex.embedding import model_identity

    work, steps = ctx.work, Steps()
    previous = previous_index_for(ctx, model_identity(ctx.settings.model, ctx.settings.embedding_backend))
    previous_dir = ctx.registry.download(previous.ref) if previous else None
    raw_dir = ctx.registry.download(raw_ref)
    steps.done("download")
    result = chunk_snapshot(raw_dir, work.chunks, ctx.settings, previous=previous_dir, source=ctx.source)
    steps.done("parse + chunk")
    q = result.quality
    chunking = ctx.settings.chunking
    version = ctx.registry.log_artifact(
        ctx.names.chunks, ARTIFACT_TYPES["chunks"], work.chunks, run=ctx.run("chunk_documents"), uses=[raw_ref],
        aliases=ctx.aliases,
        metadata=ctx.metadata(documents=result.documents, chunks=result.chunks, raw=raw_ref,
                              parsed=result.parsed, documents_reused=result.documents_reused,
                              chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
                              splitter=chunking.splitter,
                              quality={"chunk_length": q["chunk_length"], "parse_failures": len(q["parse_failures"]),
                                       "duplicate_chunks": q["duplicate_chunks"], "pii_totals": q["pii_totals"],
                                       "documents_with_pii": len(q["pii"])}))
    steps.done("log")
    plan = plan_embeddings(work, previous_dir, ctx.settings, ctx.shards)
    steps.done("plan")
    log.info("%s: %d documents (%d parsed, %d unchanged, %d failed), %d chunks; to embed %d new texts in %d "
             "shard(s), %d chunks reuse vectors of %s; %s", version.ref, result.documents, result.parsed,
             result.documents_reused, len(result.failed), result.chunks, plan.to_embed, len(plan.shards),
             plan.reused, previous.ref if previous else "no earlier index", steps)
    return ChunkResult(version.ref, result.documents, result.chunks, result.failed, plan.to_embed, plan.reused,
                       len(plan.shards), previous.ref if previous else None)


# ---------------------------------------------------------------- embed + index

def embed_chunks(ctx: IngestContext, shard: int) -> int:
    """Embed one shard of the plan (a mapped task); returns how many texts it embedded."""
    return embed_shard(ctx.work, shard)


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
    from ragindex.indexing import read_index_settings

    work, steps = ctx.work, Steps()
    stats = build_index_from_shards(work, ctx.settings)
    steps.done("assemble + write")
    index_meta = read_index_settings(work.index)
    identity = index_meta["model_identity"]
    chunking = ctx.settings.chunking
    version = ctx.registry.log_artifact(
        ctx.names.index, ARTIFACT_TYPES["index"], work.index, run=ctx.run("build_index"), uses=[chunks_ref],
        aliases=ctx.aliases,
        metadata=ctx.metadata(raw=raw_ref, chunks_ref=chunks_ref, chunks=stats["chunks"],
                              documents=stats["documents"], embedded=stats["embedded"], reused=stats["reused"],
                              model=ctx.settings.model, model_identity=identity, dimension=index_meta["dimension"],
                              embedding_backend=ctx.settings.embedding_backend,
                              index_kind=ctx.settings.index.kind, corpus_digest=index_meta["corpus_digest"],
                              chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
                              settings_fingerprint=ctx.settings_fingerprint(identity)))
    steps.done("log")
    reused_version = version.metadata.get("pipeline_run_id") != ctx.pipeline_run_id
    log.info("%s%s: %d chunks of %d documents (this run embedded %d, reused %d), a %s index; %s", version.ref,
             " (identical to the version an earlier run built)" if reused_version else "", stats["chunks"],
             stats["documents"], stats["embedded"], stats["reused"], ctx.settings.index.kind, steps)
    return IndexResult(version.ref, stats["chunks"], stats["embedded"], stats["reused"])


# ---------------------------------------------------------------- the whole chain without Airflow

def ingest(ctx: IngestContext) -> dict[str, Any]:
    """pull → chunk → embed every shard → index, as ``ragindex ingest`` runs it in one process."""
    pulled = pull_documents(ctx)
    if pulled.unchanged:
        return {"unchanged": True, "raw": pulled.raw, "chunks": None, "index": pulled.existing_index,
                "embedded": 0, "reused": 0, "documents": pulled.documents, "message": pulled.message}
    chunked = chunk_documents(ctx, pulled.raw)
    for shard in range(chunked.shards):
        embed_chunks(ctx, shard)
    built = build_index(ctx, pulled.raw, chunked.chunks)
    ctx.work.remove()
    return {"unchanged": False, "raw": pulled.raw, "chunks": chunked.chunks, "index": built.index,
            "embedded": built.embedded, "reused": built.reused, "documents": chunked.documents,
            "failed": chunked.failed, "refused": pulled.refused}



# ---------------------------------------------------------------- prompt and release

def local_prompt_folder(ctx: IngestContext, location: str) -> Path:
    """A prompt folder on this machine: as given, or copied from an object-storage URL (``s3://CONN_ID@...``
    through its connection, like a source) into the run's work folder."""
    if not is_remote(location):
        return Path(location.removeprefix("file://"))
    target = ctx.work.root / "prompt-source"
    tmp = fresh_temp_dir(target)
    try:
        fetch_folder(location, tmp, "prompts")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_dir_atomically(tmp, target)


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt folder that parsed and kept its budget for every eval question, not yet logged."""

    prompt: Any
    budget: Any
    location: str


def check_prompt_folder(ctx: IngestContext, location: str, questions: Sequence[Any]) -> CheckedPrompt:
    """Check a prompt folder before any work (parse, variables, budget with chunk-sized placeholder hits for
    every eval question); it is logged only once the run goes on (``log_checked_prompt``)."""
    from ragindex.prompts import check_budget, load_prompt, placeholder_retriever, require_within_budget

    prompt = load_prompt(local_prompt_folder(ctx, location))
    chunk_size = ctx.settings.chunking.chunk_size
    budget = check_budget(prompt, questions, placeholder_retriever(chunk_size), ctx.gate.k,
                          retrieval=f"placeholder ({chunk_size} characters)")
    require_within_budget(prompt, budget)
    return CheckedPrompt(prompt, budget, location)


def log_checked_prompt(ctx: IngestContext, checked: CheckedPrompt) -> str:
    """Log a checked prompt as ``prompt-template:vN``; unchanged content is the existing version."""
    from ragindex.prompts import log_prompt

    steps, location, budget = Steps(), checked.location, checked.budget
    result = log_prompt(ctx.registry, checked.prompt, budget, run=ctx.run("log_prompt"),
                        origin=location if is_remote(location) else None)
    steps.done("log")
    log.info("%s%s from %s: largest prompt %d of %d characters over %d questions; %s", result.ref,
             "" if result.created else " (unchanged)", location, budget.max_chars, budget.budget, len(budget.sizes),
             steps)
    return result.ref


def release_candidate(ctx: IngestContext, index_ref: str, prompt_ref: str, questions_ref: str) -> tuple[str, bool]:
    """The run's release: its index, prompt and eval set with the run's retrieval settings, as ``rag-release:vN``
    (the same parts and settings are the existing version: ``created`` False)."""
    from ragindex.release import assemble_release, log_release

    manifest = assemble_release(ctx.registry, index_ref, prompt_ref, questions_ref=questions_ref, k=ctx.gate.k,
                                names=ctx.names)
    result = log_release(ctx.registry, manifest, run=ctx.run("assemble_release"), name=ctx.names.release)
    log.info("%s%s: %s + %s on %s", result.ref, "" if result.created else " (unchanged)", manifest.index.ref,
             manifest.prompt.ref, manifest.questions.ref)
    return result.ref, result.created
