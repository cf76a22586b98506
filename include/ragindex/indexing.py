"""Write and read index directories: a FAISS file, a JSON-lines docstore, the BM25 index (``sparse/``, see
``ragindex.sparse``) and the settings that made them.

Every file is a pure function of (chunks, vectors, settings): no timestamps, so rebuilding the same
corpus gives the same bytes and the registry recognises it as the same version.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically, write_jsonl
from ragindex.chunking import Chunk, indexed_key, indexed_text
from ragindex.errors import IndexDirError
from ragindex.settings import IndexSettings
from ragindex.sparse import SPARSE_DIR, TermCounts, TermTable, write_sparse_index

if TYPE_CHECKING:  # numpy is imported where it is used: a no-op build never needs it (benchmarks/README.md)
    import numpy as np

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.jsonl"
SETTINGS_FILE = "index.json"
FORMAT_VERSION = 1
INDEXED_KEY = "indexed_sha256"  # a docstore record's key of its indexed text, where that is not its text


def _faiss():
    # faiss's loader logs at INFO every CPU extension it could not load ("Could not load library with AVX512
    # support"): noise in every task log, not the user's concern.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss  # heavy: imported only where an index is built or read

    return faiss


def make_faiss_index(vectors: np.ndarray, settings: IndexSettings):
    """Inner product over normalised vectors (cosine); flat by default, HNSW for large corpora."""
    faiss = _faiss()
    dim = vectors.shape[1]
    if settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # HNSW insertion order must not depend on thread timing
        try:
            index.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
    else:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    return index


def check_output_dir(out_dir: Path) -> Path:
    """Refuse, before any work is spent, an output path whose replacement would lose other data."""
    if out_dir.exists() and not out_dir.is_dir():
        raise IndexDirError(f"--out {out_dir}: exists and is not a folder; refusing to overwrite it")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / SETTINGS_FILE).is_file():
        raise IndexDirError(f"--out {out_dir}: folder exists and is not a ragindex index; refusing to overwrite it")
    return out_dir


def fixed_meta(index_settings: IndexSettings) -> dict[str, Any]:
    """The part of ``index.json`` this code version and the index settings decide alone (the no-op check in
    ``ragindex.pipeline`` compares a previous index's against it)."""
    return {"format": FORMAT_VERSION, "metric": "inner_product", "normalized": True, "index": asdict(index_settings)}


def write_index_dir(
    out_dir: Path,
    chunks: Sequence[Chunk],
    vectors: np.ndarray,
    *,
    index_settings: IndexSettings,
    description: dict[str, Any],
    extra_files: Sequence[Path] = (),
    sparse_reuse: Mapping[str, TermCounts] | TermTable | None = None,
) -> Path:
    """Build the index (FAISS, docstore, and the BM25 index unless ``index_settings.sparse`` is off; its term
    counts are taken from ``sparse_reuse`` for texts already tokenised) and replace ``out_dir`` atomically;
    a folder that is not an index is never overwritten."""
    import numpy as np
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    out_dir = check_output_dir(Path(out_dir))
    tmp = fresh_temp_dir(out_dir)
    try:
        index = make_faiss_index(np.ascontiguousarray(vectors, dtype=np.float32), index_settings)
        _faiss().write_index(index, str(tmp / INDEX_FILE))
        with_section = index_settings.section_path_in_text
        keys = [indexed_key(c, with_section) for c in chunks]
        # a record keeps the key of its indexed text when it is not the chunk's own, for the next build's cache
        write_jsonl(tmp / DOCSTORE_FILE, (chunk.to_json() | ({INDEXED_KEY: key} if key != chunk.sha256 else {})
                                          for chunk, key in zip(chunks, keys)))
        if index_settings.sparse:
            built = write_sparse_index(tmp / SPARSE_DIR, [indexed_text(c, with_section) for c in chunks], keys,
                                       k1=index_settings.bm25_k1, b=index_settings.bm25_b, reuse=sparse_reuse)
            log.info("sparse index: %d chunk texts tokenised, %d reused", built.tokenized, built.reused)
        meta = {**fixed_meta(index_settings), "dimension": int(vectors.shape[1]) if len(vectors) else 0,
                "chunks": len(chunks), **description}
        (tmp / SETTINGS_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        for extra in extra_files:
            shutil.copyfile(extra, tmp / Path(extra).name)
        replace_dir_atomically(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_index_settings(index_dir: Path) -> dict[str, Any]:
    """The settings an index was built with; a clear error when the folder is not an index."""
    index_dir = Path(index_dir)
    path = index_dir / SETTINGS_FILE
    if not index_dir.is_dir():
        raise IndexDirError(f"index {index_dir}: no such folder")
    if not path.is_file() or not (index_dir / INDEX_FILE).is_file():
        raise IndexDirError(f"index {index_dir}: not a ragindex index folder (missing {SETTINGS_FILE} or {INDEX_FILE})")
    return json.loads(path.read_text())


def iter_docstore(index_dir: Path) -> Iterator[dict[str, Any]]:
    """Stream docstore records in row order (the FAISS ids)."""
    with open(Path(index_dir) / DOCSTORE_FILE, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def read_chunks(index_dir: Path) -> list[Chunk]:
    """All chunks of an index, in row order."""
    return [Chunk.from_json(r) for r in iter_docstore(index_dir)]


def read_faiss(index_dir: Path):
    """The FAISS index object of an index folder."""
    return _faiss().read_index(str(Path(index_dir) / INDEX_FILE))


def cached_vectors(index_dir: Path | None, model_identity: str) -> dict[str, np.ndarray]:
    """The (indexed text's sha256 → vector) cache an earlier index offers, if it was built with the same model."""
    if index_dir is None:
        return {}
    settings = read_index_settings(index_dir)
    if settings.get("model_identity") != model_identity:
        return {}
    index = read_faiss(index_dir)
    if index.ntotal == 0:
        return {}
    vectors = index.reconstruct_n(0, index.ntotal) if not hasattr(index, "storage") else \
        _faiss().downcast_index(index.storage).reconstruct_n(0, index.ntotal)
    return {rec.get(INDEXED_KEY, rec["sha256"]): vectors[i] for i, rec in enumerate(iter_docstore(index_dir))}


@dataclass
class DocstoreReader:
    """Random access to docstore records by row without loading every text into memory."""

    path: Path
    offsets: list[int]

    @classmethod
    def open(cls, index_dir: Path) -> "DocstoreReader":
        """Scan once for line offsets; texts are read only for hits."""
        path = Path(index_dir) / DOCSTORE_FILE
        offsets, pos = [], 0
        with open(path, "rb") as fh:
            for line in fh:
                offsets.append(pos)
                pos += len(line)
        return cls(path, offsets)

    def get(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Records for the given FAISS ids."""
        out = []
        with open(self.path, "rb") as fh:
            for row in rows:
                fh.seek(self.offsets[row])
                out.append(json.loads(fh.readline()))
        return out
