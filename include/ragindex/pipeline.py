"""The steps of an index build, shared by the CLI and the Airflow DAGs.

Each step reads and writes folders (never large data in memory between steps, nor in XCom), writes
to a temporary name and renames, and produces the same bytes when re-run on the same input.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically, write_jsonl
from ragindex.chunking import Chunk, chunk_document
from ragindex.errors import SourceError
from ragindex.indexing import DOCSTORE_FILE, SETTINGS_FILE
from ragindex.parsing import PARSER_VERSION, ParseError, ParsedDocument, parse_document
from ragindex.quality import document_summary, quality_report
from ragindex.settings import BuildSettings
from ragindex.sources import FILES_DIR, load_manifest

log = logging.getLogger(__name__)

CHUNKS_FILE = "chunks.jsonl"
QUALITY_FILE = "quality.json"
CHUNKING_FILE = "chunking.json"
DOCUMENTS_FILE = "documents.jsonl"
REUSED_FILE = "reused.npz"


# ---------------------------------------------------------------- parse + chunk

@dataclass
class ChunkingResult:
    """What the chunk step produced: the chunks file's folder and the run's quality figures."""

    chunks_dir: Path
    documents: int
    chunks: int
    failed: list[dict[str, str]]
    quality: dict[str, Any]
    parsed: int = 0
    documents_reused: int = 0


def parse_documents(raw_dir: Path, paths: Sequence[str], settings: BuildSettings
                    ) -> tuple[list[ParsedDocument], list[dict[str, str]]]:
    """Parse documents of a snapshot; failures are collected with their reason, the rest go on."""

    def one(rel: str) -> ParsedDocument | dict[str, str]:
        try:
            return parse_document(raw_dir / FILES_DIR / rel, rel, timeout_s=settings.parse_timeout_s,
                                  memory_mb=settings.parse_memory_mb)
        except ParseError as exc:
            return {"path": rel, "reason": str(exc)}
        except Exception as exc:  # a parser bug must not sink the other documents
            return {"path": rel, "reason": f"unexpected parser error ({type(exc).__name__}: {exc})"}

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(one, paths))
    docs = [r for r in results if isinstance(r, ParsedDocument)]
    failed = [r for r in results if isinstance(r, dict)]
    for f in failed:
        log.warning("could not parse %s: %s", f["path"], f["reason"])
    return docs, failed


def parse_snapshot(raw_dir: Path, settings: BuildSettings) -> tuple[list[ParsedDocument], list[dict[str, str]]]:
    """Parse every document of a snapshot."""
    return parse_documents(raw_dir, [d["path"] for d in load_manifest(raw_dir)["documents"]], settings)


def chunking_key(settings: BuildSettings) -> dict[str, Any]:
    """What must match for an earlier run's chunks of an unchanged document to be reused."""
    return {"chunking": asdict(settings.chunking), "parser_version": PARSER_VERSION}


def load_parse_cache(previous: Path | None, settings: BuildSettings) -> dict[tuple[str, str], tuple[dict, list[Chunk]]]:
    """(path, sha256) → (document summary, its chunks) from an earlier chunks or index folder made with the
    same chunking settings and parser; an unchanged document is then neither parsed nor chunked again."""
    if previous is None or not (previous / DOCUMENTS_FILE).is_file():
        return {}
    made_with = next((json.loads((previous / name).read_text()) for name in (CHUNKING_FILE, SETTINGS_FILE)
                      if (previous / name).is_file()), {})
    if {k: made_with.get(k) for k in ("chunking", "parser_version")} != chunking_key(settings):
        return {}
    chunks_file = previous / CHUNKS_FILE if (previous / CHUNKS_FILE).is_file() else previous / DOCSTORE_FILE
    by_path: dict[str, list[Chunk]] = {}
    with open(chunks_file, encoding="utf-8") as fh:
        for line in fh:
            chunk = Chunk.from_json(json.loads(line))
            by_path.setdefault(chunk.source, []).append(chunk)
    with open(previous / DOCUMENTS_FILE, encoding="utf-8") as fh:
        summaries = [json.loads(line) for line in fh]
    return {(d["path"], d["sha256"]): (d, by_path.get(d["path"], [])) for d in summaries}


def chunk_snapshot(raw_dir: Path, chunks_dir: Path, settings: BuildSettings, previous: Path | None = None) -> ChunkingResult:
    """Parse + chunk a snapshot into ``chunks_dir`` (chunks.jsonl, documents.jsonl, quality.json,
    chunking.json), reusing ``previous``'s work for documents whose content did not change."""
    manifest = load_manifest(raw_dir)
    cache = load_parse_cache(previous, settings)
    summaries: dict[str, dict[str, Any]] = {}
    chunks_by_path: dict[str, list[Chunk]] = {}
    todo = []
    for entry in manifest["documents"]:
        hit = cache.get((entry["path"], entry["sha256"]))
        if hit is None:
            todo.append(entry)
        else:
            summaries[entry["path"]], chunks_by_path[entry["path"]] = hit
    docs, failed = parse_documents(raw_dir, [e["path"] for e in todo], settings)
    sha_of = {e["path"]: e["sha256"] for e in todo}
    for doc in docs:
        chunks_by_path[doc.path] = chunk_document(doc, settings.chunking)
        summaries[doc.path] = document_summary(doc, sha_of[doc.path], len(chunks_by_path[doc.path]))
    for f in failed:  # a document that failed stays failed until its content changes: never re-parse a hostile PDF
        summaries[f["path"]] = {"path": f["path"], "sha256": sha_of[f["path"]], "failed": f["reason"]}
    ok = [summaries[p] for p in sorted(summaries) if not summaries[p].get("failed")]
    failures = [{"path": p, "reason": summaries[p]["failed"]} for p in sorted(summaries) if summaries[p].get("failed")]
    if not ok:
        raise SourceError(f"source {manifest['source']!r}: none of its {len(manifest['documents'])} documents could be parsed")
    chunks = [c for d in ok for c in chunks_by_path[d["path"]]]
    quality = quality_report(ok, chunks, failures, manifest.get("refused", []))
    tmp = fresh_temp_dir(chunks_dir)
    write_jsonl(tmp / CHUNKS_FILE, (c.to_json() for c in chunks))
    write_jsonl(tmp / DOCUMENTS_FILE, (summaries[p] for p in sorted(summaries)))
    (tmp / QUALITY_FILE).write_text(json.dumps(quality, indent=1, sort_keys=True))
    (tmp / CHUNKING_FILE).write_text(json.dumps(
        {**chunking_key(settings), "corpus_digest": manifest["content_digest"]}, indent=1, sort_keys=True))
    replace_dir_atomically(tmp, chunks_dir)
    return ChunkingResult(chunks_dir, len(ok), len(chunks), failures, quality, parsed=len(todo),
                          documents_reused=len(manifest["documents"]) - len(todo))


def read_chunks_file(chunks_dir: Path) -> list[Chunk]:
    """The chunks a chunk step wrote, in order."""
    with open(chunks_dir / CHUNKS_FILE, encoding="utf-8") as fh:
        return [Chunk.from_json(json.loads(line)) for line in fh]


# ---------------------------------------------------------------- embed

@dataclass
class EmbedPlanFile:
    """A plan written to disk so that mapped tasks on other workers can each take a shard."""

    path: Path
    to_embed: int
    reused: int
    shards: int


def shard_count(to_embed: int, shard_size: int, max_shards: int) -> int:
    """Enough shards of about ``shard_size`` texts for workers to share, but never more than ``max_shards``."""
    return max(1, min(max_shards, -(-to_embed // max(1, shard_size))))


def plan_embeddings(chunks_dir: Path, previous_index: Path | None, model: str, plan_path: Path,
                    shards: int | None = 1, *, shard_size: int = 256, max_shards: int = 16) -> EmbedPlanFile:
    """Decide which texts need the model and split them into shards; the vectors reused from the
    previous index are copied beside the plan, so later steps never read that index again."""
    from ragindex.embedding import model_identity, plan_embedding, save_vectors
    from ragindex.indexing import cached_vectors

    identity = model_identity(model)
    cache = cached_vectors(previous_index, identity) if previous_index else {}
    chunks = read_chunks_file(chunks_dir)
    plan = plan_embedding(chunks, cache)
    reused_shas = sorted({c.sha256 for c in chunks if c.sha256 in cache})
    reused = np.stack([cache[s] for s in reused_shas]) if reused_shas else np.zeros((0, 0), np.float32)
    save_vectors(plan_path.with_name(REUSED_FILE), reused_shas, reused)
    shard_lists = plan.shards(shards or shard_count(len(plan.to_embed), shard_size, max_shards))
    body = {"model": model, "model_identity": identity, "reused": plan.reused, "total_chunks": plan.total_chunks,
            "shards": [[sha for sha, _ in s] for s in shard_lists]}
    tmp = plan_path.with_name(plan_path.name + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, plan_path)
    return EmbedPlanFile(plan_path, len(plan.to_embed), plan.reused, len(shard_lists))


def embed_shard(chunks_dir: Path, plan_path: Path, shard: int, out_path: Path) -> int:
    """Embed one shard of the plan into ``out_path`` (.npz); re-running rewrites the same vectors."""
    from ragindex.embedding import encode_texts, save_vectors

    plan = json.loads(plan_path.read_text())
    wanted = plan["shards"][shard]
    wanted_set = set(wanted)
    texts_by_sha = {c.sha256: c.text for c in read_chunks_file(chunks_dir) if c.sha256 in wanted_set}
    vectors = encode_texts(plan["model"], [texts_by_sha[s] for s in wanted]) if wanted else np.zeros((0, 0), np.float32)
    save_vectors(out_path, wanted, vectors)
    return len(wanted)


def build_index_from_shards(chunks_dir: Path, plan_path: Path, shard_paths: Sequence[Path], out_dir: Path,
                            settings: BuildSettings, description: dict[str, Any] | None = None) -> dict[str, Any]:
    """Join cached and freshly embedded vectors in chunk order and write the index folder."""
    from ragindex.embedding import assemble_vectors, load_vectors
    from ragindex.indexing import write_index_dir

    plan = json.loads(plan_path.read_text())
    chunks = read_chunks_file(chunks_dir)
    lookup = load_vectors(plan_path.with_name(REUSED_FILE))
    for p in shard_paths:
        lookup.update(load_vectors(Path(p)))
    dimension = next((len(v) for v in lookup.values()), 0)
    vectors = assemble_vectors(chunks, lookup, dimension)
    chunking = json.loads((chunks_dir / CHUNKING_FILE).read_text())
    quality = json.loads((chunks_dir / QUALITY_FILE).read_text())
    desc = {"model": plan["model"], "model_identity": plan["model_identity"], "chunking": chunking["chunking"],
            "parser_version": chunking["parser_version"], "corpus_digest": chunking["corpus_digest"],
            "documents": quality["documents"], **(description or {})}
    # documents.jsonl travels with the index so that the next build can skip unchanged documents
    write_index_dir(out_dir, chunks, vectors, index_settings=settings.index, description=desc,
                    extra_files=[chunks_dir / DOCUMENTS_FILE])
    return {"chunks": len(chunks), "embedded": sum(len(s) for s in plan["shards"]), "reused": plan["reused"]}


# ---------------------------------------------------------------- the whole build, without a registry

@dataclass
class BuildResult:
    """What ``ragindex build`` reports."""

    out: str
    documents: int
    chunks: int
    embedded: int
    reused: int
    failed: list[dict[str, str]]
    refused: list[dict[str, str]]
    seconds: float
    quality: dict[str, Any] = field(repr=False, default_factory=dict)
    parsed: int = 0
    documents_reused: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return {k: getattr(self, k) for k in ("out", "documents", "chunks", "embedded", "reused", "failed",
                                               "refused", "seconds", "quality", "parsed", "documents_reused")}


def build(source: str, out: Path, settings: BuildSettings, previous: Path | None = None,
          as_of: str | None = None, work_root: Path | None = None) -> BuildResult:
    """Snapshot → parse → chunk → embed (reusing ``previous``) → index, in a private work folder."""
    from ragindex.indexing import check_output_dir, read_index_settings
    from ragindex.sources import snapshot

    started = time.monotonic()
    check_output_dir(Path(out))
    if previous is not None:
        read_index_settings(previous)  # a wrong --previous is an error, not a silent full rebuild
    work = Path(tempfile.mkdtemp(prefix="ragindex-build-", dir=work_root))
    try:
        snap = snapshot(source, work / "raw", as_of)
        chunked = chunk_snapshot(work / "raw", work / "chunks", settings, previous=previous)
        plan = plan_embeddings(work / "chunks", previous, settings.model, work / "embed" / "plan.json")
        shard = work / "embed" / "shard-0.npz"
        embed_shard(work / "chunks", plan.path, 0, shard)
        stats = build_index_from_shards(work / "chunks", plan.path, [shard], Path(out), settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(str(out), chunked.documents, stats["chunks"], stats["embedded"], stats["reused"],
                       chunked.failed, snap.refused, round(time.monotonic() - started, 3), chunked.quality,
                       parsed=chunked.parsed, documents_reused=chunked.documents_reused)
