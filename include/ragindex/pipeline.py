"""The folder-level stages of an index build: snapshot → parse + chunk → plan → embed shards → index.

Each stage reads and writes folders of a ``WorkDir`` (never large data in memory between stages, nor in
XCom), writes to a temporary name and renames, and produces the same bytes when re-run on the same input.
``build`` runs the stages in one process (``ragindex build``); the versioned steps of ``ragindex.ingest``
(the DAG's tasks, ``ragindex ingest``) run the same stages one by one and log what they produce. This
module also owns the chunks folder's format (``chunks.jsonl``, ``documents.jsonl``, ``quality.json``,
``chunking.json``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically, write_jsonl
from ragindex.chunking import Chunk, chunk_document, indexed_key, indexed_text
from ragindex.errors import SourceError
from ragindex.indexing import SETTINGS_FILE, read_chunks
from ragindex.parsing import PARSER_VERSION, ParseError, ParsedDocument, parse_document
from ragindex.quality import document_summary, quality_report
from ragindex.settings import BuildSettings, ShardSettings
from ragindex.sources import FILES_DIR, load_manifest
from ragindex.workdir import EmbedPlan, WorkDir

log = logging.getLogger(__name__)

CHUNKS_FILE = "chunks.jsonl"
QUALITY_FILE = "quality.json"
CHUNKING_FILE = "chunking.json"
DOCUMENTS_FILE = "documents.jsonl"


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
    """Parse documents of a snapshot; failures are collected with their reason, the rest go on. Text is
    parsed in this process; PDFs by a few limited worker processes started once for the whole run."""
    from ragindex.parsing import PdfWorkers, document_kind

    cores = max(2, os.cpu_count() or 2)
    pdfs = sum(1 for rel in paths if document_kind(rel) == "pdf")
    workers = PdfWorkers(min(cores, pdfs), timeout_s=settings.parse_timeout_s,
                         memory_mb=settings.parse_memory_mb) if pdfs else None

    def one(rel: str) -> ParsedDocument | dict[str, str]:
        try:
            return parse_document(raw_dir / FILES_DIR / rel, rel, timeout_s=settings.parse_timeout_s,
                                  memory_mb=settings.parse_memory_mb, limits=settings.documents, pdf=workers)
        except ParseError as exc:
            return {"path": rel, "reason": str(exc)}
        except Exception as exc:  # a parser bug must not sink the other documents
            return {"path": rel, "reason": f"unexpected parser error ({type(exc).__name__}: {exc})"}

    try:
        with ThreadPoolExecutor(max_workers=cores) as pool:
            results = list(pool.map(one, paths))
    finally:
        if workers is not None:
            workers.close()
    docs = [r for r in results if isinstance(r, ParsedDocument)]
    failed = [r for r in results if isinstance(r, dict)]
    for f in failed:
        log.warning("could not parse %s: %s", f["path"], f["reason"])
    return docs, failed


def chunking_key(settings: BuildSettings) -> dict[str, Any]:
    """What must match for an earlier run's chunks of an unchanged document to be reused."""
    return {"chunking": asdict(settings.chunking), "parser_version": PARSER_VERSION,
            "document_limits": asdict(settings.documents)}


def load_parse_cache(previous: Path | None, settings: BuildSettings) -> dict[tuple[str, str], tuple[dict, list[Chunk]]]:
    """(path, sha256) → (document summary, its chunks) from an earlier chunks or index folder made with the
    same chunking settings and parser; an unchanged document is then neither parsed nor chunked again."""
    if previous is None or not (previous / DOCUMENTS_FILE).is_file():
        return {}
    made_with = next((json.loads((previous / name).read_text()) for name in (CHUNKING_FILE, SETTINGS_FILE)
                      if (previous / name).is_file()), {})
    wanted = chunking_key(settings)
    if {k: made_with.get(k) for k in wanted} != wanted:
        return {}
    by_path = chunks_by_source(read_chunks_file(previous) if (previous / CHUNKS_FILE).is_file()
                               else read_chunks(previous))
    return {(d["path"], d["sha256"]): (d, by_path.get(d["path"], [])) for d in read_documents(previous)}


def chunk_snapshot(raw_dir: Path, chunks_dir: Path, settings: BuildSettings, previous: Path | None = None,
                   source: str | None = None) -> ChunkingResult:
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
    where = source or manifest.get("source") or str(raw_dir)
    check_corpus_chars(where, docs, summaries.values(), settings)
    sha_of = {e["path"]: e["sha256"] for e in todo}
    for doc in docs:
        chunks, refusal = bounded_chunks(doc, settings)
        if refusal:
            failed.append({"path": doc.path, "reason": refusal})
            log.warning("refused %s: %s", doc.path, refusal)
            continue
        chunks_by_path[doc.path] = chunks
        summaries[doc.path] = document_summary(doc, sha_of[doc.path], len(chunks))
    for f in failed:  # a document that failed stays failed until its content changes: never re-parse a hostile PDF
        summaries[f["path"]] = {"path": f["path"], "sha256": sha_of[f["path"]], "failed": f["reason"]}
    ok = [summaries[p] for p in sorted(summaries) if not summaries[p].get("failed")]
    failures = [{"path": p, "reason": summaries[p]["failed"]} for p in sorted(summaries) if summaries[p].get("failed")]
    if not ok:
        raise SourceError(f"source {where!r}: none of its {len(manifest['documents'])} documents could be parsed")
    chunks = [c for d in ok for c in chunks_by_path[d["path"]]]
    quality = quality_report(ok, chunks, failures, manifest.get("refused", []))
    tmp = fresh_temp_dir(chunks_dir)
    write_jsonl(tmp / CHUNKS_FILE, (c.to_json() for c in chunks))
    write_jsonl(tmp / DOCUMENTS_FILE, (summaries[p] for p in sorted(summaries)))
    (tmp / QUALITY_FILE).write_text(json.dumps(quality, indent=1, sort_keys=True))
    (tmp / CHUNKING_FILE).write_text(json.dumps(
        {**chunking_key(settings), "corpus_digest": manifest["content_digest"]}, indent=1, sort_keys=True))
    replace_dir_atomically(tmp, chunks_dir)
    remember_chunks_file(chunks_dir, chunks)
    return ChunkingResult(chunks_dir, len(ok), len(chunks), failures, quality, parsed=len(todo),
                          documents_reused=len(manifest["documents"]) - len(todo))


def check_corpus_chars(where: str, parsed: Sequence[ParsedDocument], reused: Any, settings: BuildSettings) -> None:
    """Stop, before any embedding, a corpus whose text is beyond ``max_corpus_chars``."""
    total = sum(d.text_length for d in parsed) + sum(s.get("chars", 0) for s in reused if not s.get("failed"))
    if total > settings.corpus.max_chars:
        raise SourceError(f"source {where!r}: {total:,} characters of text, more than max_corpus_chars="
                          f"{settings.corpus.max_chars:,}: is the source the folder you meant?")


def bounded_chunks(doc: ParsedDocument, settings: BuildSettings) -> tuple[list[Chunk], str | None]:
    """A document's chunks, or why it is refused: more chunks than ``max_document_chunks`` (estimated first,
    so a huge text is not split to find that out)."""
    limit = settings.documents.max_chunks
    step = max(1, settings.chunking.chunk_size - settings.chunking.chunk_overlap)
    if doc.text_length / step > 2 * limit:
        return [], f"too many chunks: about {doc.text_length // step:,}, more than max_document_chunks={limit:,}"
    chunks = chunk_document(doc, settings.chunking)
    if len(chunks) > limit:
        return [], f"too many chunks: {len(chunks):,}, more than max_document_chunks={limit:,}"
    return chunks, None


# The last chunks file read or written in this process, by the file's identity (device, inode, size, mtime):
# the stages of one ``build`` read the same file three times. Chunks are frozen, so sharing them is safe.
_last_chunks: tuple[tuple[int, int, int, int], list[Chunk]] | None = None


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_chunks_file(chunks_dir: Path) -> list[Chunk]:
    """The chunks a chunk step wrote, in order (parsed once per process while the file stays the same)."""
    global _last_chunks
    path = Path(chunks_dir) / CHUNKS_FILE
    identity = _file_identity(path)
    if _last_chunks is not None and _last_chunks[0] == identity:
        return list(_last_chunks[1])
    with open(path, encoding="utf-8") as fh:
        chunks = [Chunk.from_json(json.loads(line)) for line in fh]
    _last_chunks = (identity, chunks)
    return list(chunks)


def remember_chunks_file(chunks_dir: Path, chunks: list[Chunk]) -> None:
    """Note the chunks just written to ``chunks_dir``, so that the next stage of this process need not parse them."""
    global _last_chunks
    _last_chunks = (_file_identity(Path(chunks_dir) / CHUNKS_FILE), list(chunks))


def read_documents(folder: Path) -> list[dict[str, Any]]:
    """The per-document summaries (``documents.jsonl``) of a chunks or index folder, failed ones included;
    none for a folder without that file."""
    path = Path(folder) / DOCUMENTS_FILE
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def chunks_by_source(chunks: Iterable[Chunk]) -> dict[str, list[Chunk]]:
    """Chunks grouped by their document, each group in its original order."""
    grouped: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        grouped.setdefault(chunk.source, []).append(chunk)
    return grouped


def read_quality(chunks_dir: Path) -> dict[str, Any]:
    """The quality figures a chunk step wrote (``quality.json``)."""
    return json.loads((Path(chunks_dir) / QUALITY_FILE).read_text())


def read_chunking(chunks_dir: Path) -> dict[str, Any]:
    """What the chunks were made with (``chunking.json``): settings, parser version, corpus digest."""
    return json.loads((Path(chunks_dir) / CHUNKING_FILE).read_text())


# ---------------------------------------------------------------- embed

def plan_embeddings(work: WorkDir, previous_index: Path | None, settings: BuildSettings,
                    shards: ShardSettings | None = None) -> EmbedPlan:
    """Decide which texts need the model and split them into shards; the vectors reused from the
    previous index are copied beside the plan, so later stages never read that index again."""
    import numpy as np
    from ragindex.embedding import model_identity, plan_embedding, save_vectors
    from ragindex.indexing import cached_vectors

    model, backend = settings.model, settings.embedding_backend
    with_section = settings.index.section_path_in_text
    identity = model_identity(model, backend)
    cache = cached_vectors(previous_index, identity) if previous_index else {}
    chunks = read_chunks_file(work.chunks)
    plan = plan_embedding(chunks, cache, with_section)
    keys = {indexed_key(c, with_section) for c in chunks}
    reused_shas = sorted(keys & cache.keys())
    reused = np.stack([cache[s] for s in reused_shas]) if reused_shas else np.zeros((0, 0), np.float32)
    save_vectors(work.reused, reused_shas, reused)
    # the BM25 term counts of unchanged texts travel the same way: the build step does not tokenise them again
    from ragindex.sparse import reusable_table, save_reused_terms

    save_reused_terms(reused_terms_dir(work), reusable_table(previous_index, keys))
    shard_lists = plan.shards((shards or ShardSettings()).count(len(plan.to_embed)))
    result = EmbedPlan(model=model, model_identity=identity, reused=plan.reused, total_chunks=plan.total_chunks,
                       shards=tuple(tuple(sha for sha, _ in s) for s in shard_lists), backend=backend,
                       section_path=with_section)
    result.write(work.plan)
    return result


def reused_terms_dir(work: WorkDir) -> Path:
    """Where the plan keeps the previous index's term counts of this run's unchanged texts."""
    return work.embed / "reused-terms"


def embed_shard(work: WorkDir, shard: int) -> int:
    """Embed one shard of the plan; re-running rewrites the same vectors. Returns how many it embedded."""
    import numpy as np
    from ragindex.embedding import encode_texts, encoder, save_vectors
    from ragindex.timing import Steps

    steps = Steps()
    plan = EmbedPlan.read(work.plan)
    wanted = plan.shards[shard]
    wanted_set = set(wanted)
    texts_by_sha = {key: indexed_text(c, plan.section_path) for c in read_chunks_file(work.chunks)
                    if (key := indexed_key(c, plan.section_path)) in wanted_set}
    steps.done("read")
    vectors = np.zeros((0, 0), np.float32)
    if wanted:
        encoder(plan.model, plan.backend)  # loaded once per process: timed apart from the texts
        steps.done("model")
        vectors = encode_texts(plan.model, [texts_by_sha[s] for s in wanted], backend=plan.backend)
        steps.done("encode")
    save_vectors(work.shard(shard), wanted, vectors)
    steps.done("save")
    log.info("shard %d of %d: %s with %s (%s backend); %d of %d chunks reuse cached vectors; %s", shard + 1,
             len(plan.shards), f"embedded {len(wanted)} new texts" if wanted else "nothing to embed, no model loaded",
             plan.model, plan.backend, plan.reused, plan.total_chunks, steps)
    return len(wanted)


def build_index_from_shards(work: WorkDir, settings: BuildSettings, out_dir: Path | None = None) -> dict[str, Any]:
    """Join cached and freshly embedded vectors in chunk order and write the index folder."""
    from ragindex.embedding import assemble_vectors, load_vectors
    from ragindex.indexing import write_index_dir
    from ragindex.sparse import load_reused_terms

    plan = EmbedPlan.read(work.plan)
    chunks = read_chunks_file(work.chunks)
    lookup = load_vectors(work.reused)
    for i in range(len(plan.shards)):
        lookup.update(load_vectors(work.shard(i)))
    dimension = next((len(v) for v in lookup.values()), 0)
    vectors = assemble_vectors(chunks, lookup, dimension, plan.section_path)
    chunking = read_chunking(work.chunks)
    quality = read_quality(work.chunks)
    desc = {"model": plan.model, "model_identity": plan.model_identity, "embedding_backend": plan.backend,
            "corpus_digest": chunking["corpus_digest"],
            "documents": quality["documents"], **{k: chunking.get(k) for k in chunking_key(settings)}}
    # documents.jsonl travels with the index so that the next build can skip unchanged documents
    write_index_dir(out_dir or work.index, chunks, vectors, index_settings=settings.index, description=desc,
                    extra_files=[work.chunks / DOCUMENTS_FILE], sparse_reuse=load_reused_terms(reused_terms_dir(work)))
    return {"chunks": len(chunks), "embedded": plan.to_embed, "reused": plan.reused,
            "documents": quality["documents"]}


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
        return asdict(self)


def build(source: str, out: Path, settings: BuildSettings, previous: Path | None = None,
          as_of: str | None = None, work_root: Path | None = None) -> BuildResult:
    """Every stage in one process, in a private work folder: the chain the versioned steps run one by one
    (unless nothing changed since ``previous``: then its folder is copied, see ``unchanged_index``)."""
    from ragindex.indexing import check_output_dir, read_index_settings
    from ragindex.sources import snapshot

    started = time.monotonic()
    check_output_dir(Path(out))
    # a wrong --previous is an error, not a silent full rebuild
    made_with = read_index_settings(previous) if previous is not None else None
    work = WorkDir(Path(tempfile.mkdtemp(prefix="ragindex-build-", dir=work_root)))
    try:
        snap = snapshot(source, work.raw, as_of, settings.corpus, settings.documents, settings.parse_memory_mb)
        if made_with is not None:
            same = copy_if_unchanged(Path(previous), made_with, work.raw, Path(out), settings, source)
            if same is not None:
                return BuildResult(str(out), same.documents, same.chunks, 0, same.chunks, same.failed, snap.refused,
                                   round(time.monotonic() - started, 3), same.quality, parsed=0,
                                   documents_reused=same.documents_reused)
        from ragindex.embedding import load_encoder_in_background

        loading = load_encoder_in_background(settings.model, settings.embedding_backend)
        chunked = chunk_snapshot(work.raw, work.chunks, settings, previous=previous, source=source)
        plan = plan_embeddings(work, previous, settings, ShardSettings(max_shards=1))
        if loading is not None:
            loading.join()
        for shard in range(len(plan.shards)):
            embed_shard(work, shard)
        stats = build_index_from_shards(work, settings, Path(out))
    finally:
        work.remove()
    return BuildResult(str(out), chunked.documents, stats["chunks"], stats["embedded"], stats["reused"],
                       chunked.failed, snap.refused, round(time.monotonic() - started, 3), chunked.quality,
                       parsed=chunked.parsed, documents_reused=chunked.documents_reused)


# ---------------------------------------------------------------- nothing changed

def unchanged_index(previous: Path, made_with: dict[str, Any], manifest: dict[str, Any],
                    settings: BuildSettings) -> bool:
    """Whether building this snapshot with these settings, ``previous`` given, would write ``previous`` again
    byte for byte: the same documents (paths and sha256), every setting and the exact model identity recorded
    alike, the index and sparse formats (and bm25s) of this version, and only the files a build writes. The
    model identity is checked last: it is the one costly check (it hashes the weights)."""
    from ragindex.indexing import DOCSTORE_FILE, INDEX_FILE, fixed_meta
    from ragindex.sparse import SPARSE_DIR, written_alike

    expected = json.loads(json.dumps({
        **fixed_meta(settings.index), "model": settings.model, "embedding_backend": settings.embedding_backend,
        "corpus_digest": manifest["content_digest"], **chunking_key(settings)}))
    if {k: made_with.get(k) for k in expected} != expected:
        return False
    if set(made_with) != set(expected) | {"dimension", "chunks", "documents", "model_identity"}:
        return False  # written by another version of this code: rebuild, so the bytes are this version's
    files = {INDEX_FILE, DOCSTORE_FILE, SETTINGS_FILE, DOCUMENTS_FILE} | ({SPARSE_DIR} if settings.index.sparse else set())
    if {p.name for p in previous.iterdir()} != files:
        return False
    index = settings.index
    if index.sparse and not written_alike(previous, made_with["chunks"], k1=index.bm25_k1, b=index.bm25_b):
        return False
    documents = {(d["path"], d["sha256"]) for d in read_documents(previous)}
    if documents != {(e["path"], e["sha256"]) for e in manifest["documents"]}:
        return False
    from ragindex.embedding import model_identity

    return made_with["model_identity"] == model_identity(settings.model, settings.embedding_backend)


def copy_if_unchanged(previous: Path, made_with: dict[str, Any], raw_dir: Path, out: Path, settings: BuildSettings,
                      source: str) -> ChunkingResult | None:
    """When nothing changed since ``previous`` (``unchanged_index``), copy its folder to ``out`` (a temp folder
    beside it, renamed into place) and say what a build would have said of it; otherwise None, and nothing
    written. A no-op run then parses, embeds and indexes nothing and imports no model runtime, FAISS or bm25s."""
    manifest = load_manifest(raw_dir)
    if not unchanged_index(previous, made_with, manifest, settings):
        return None
    summaries = read_documents(previous)  # sorted by path, as chunk_snapshot writes them
    ok = [d for d in summaries if not d.get("failed")]
    failures = [{"path": d["path"], "reason": d["failed"]} for d in summaries if d.get("failed")]
    if not ok:
        return None  # the full path raises the error that says so
    check_corpus_chars(source or manifest.get("source") or str(raw_dir), [], ok, settings)
    chunks = read_chunks(previous)
    quality = quality_report(ok, chunks, failures, manifest.get("refused", []))
    copy_index_dir(previous, out)
    log.info("nothing changed since %s (%d documents, %d chunks): its index copied to %s", previous, len(ok),
             len(chunks), out)
    return ChunkingResult(out, len(ok), len(chunks), failures, quality, parsed=0,
                          documents_reused=len(manifest["documents"]))


def copy_index_dir(previous: Path, out: Path) -> None:
    """Copy an index folder's files (not their permissions: a registry's files are read-only) into a temp
    folder beside ``out`` and rename it into place, so ``out`` is never half written and, unlike hard links,
    the two folders never share a file."""
    import shutil

    files = sorted(p for p in previous.rglob("*") if p.is_file())  # listed before the temp folder exists
    tmp = fresh_temp_dir(out)
    try:
        for path in files:
            target = tmp / path.relative_to(previous)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        replace_dir_atomically(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
