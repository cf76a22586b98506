"""Query an index: what a serving application calls, for a folder or a registry ref alike.

Three modes: ``dense`` (cosine over the FAISS index), ``sparse`` (BM25 over the chunk texts) and ``hybrid``
(both rankings fused, reciprocal-rank by default); an index's default is the ``retrieval`` setting it was
built with (indexes built before the sparse index: dense, and they refuse the other modes). Filters (source
path prefix, document type) restrict the candidates inside each search: a FAISS ID selector on the dense
side, a mask on the BM25 scores on the sparse side, so k hits come back whenever k chunks match.
``per_source`` caps the hits from one document (a collapse, as Elasticsearch's ``collapse`` or Qdrant's
``group_size``): the rankings are read deeper until k hits from distinct enough documents are found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ragindex.errors import RagindexError
from ragindex.indexing import DocstoreReader, iter_docstore, read_faiss, read_index_settings
from ragindex.settings import DOC_TYPES, RETRIEVAL_MODES, RetrievalSettings
from ragindex.sparse import SparseIndex


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with its score and provenance. The score is the ranking's own: cosine (dense),
    BM25 (sparse) or the fused score (hybrid: reciprocal-rank sum, or the weighted normalised scores)."""

    score: float
    source: str
    page: int | None
    text: str
    chunk_id: str
    start: int
    section: tuple[str, ...] = ()  # the headings the chunk is under (none for indexes built before sections)

    def to_json(self) -> dict[str, Any]:
        """JSON form used by ``ragindex search --json`` and ``POST /search``."""
        return {**asdict(self), "section": list(self.section)}


def _strings(name: str, value: Any) -> tuple[str, ...]:
    """A filter value given as one string or a list of them."""
    values = (value,) if isinstance(value, str) else tuple(value or ())
    if not all(isinstance(v, str) and v for v in values):
        raise RagindexError(f"filter {name}={value!r}: must be a non-empty string or a list of them")
    return values


@dataclass(frozen=True)
class SearchFilters:
    """Which chunks a search may return: a source path starting with one of ``source_prefix`` (a plain
    string prefix of the path relative to the corpus; end it with ``/`` for a folder) and a document type
    among ``doc_type`` (markdown, html, pdf, text). An empty tuple does not restrict."""

    source_prefix: tuple[str, ...] = ()
    doc_type: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_prefix", _strings("source_prefix", self.source_prefix))
        object.__setattr__(self, "doc_type", _strings("doc_type", self.doc_type))
        unknown = sorted(set(self.doc_type) - set(DOC_TYPES))
        if unknown:
            raise RagindexError(f"filter doc_type={', '.join(unknown)}: must be one of {', '.join(DOC_TYPES)}")

    @classmethod
    def of(cls, filters: "SearchFilters | Mapping[str, Any] | None") -> "SearchFilters":
        """Filters from a ``SearchFilters``, a mapping (a request body's ``filters``) or None."""
        if filters is None or isinstance(filters, SearchFilters):
            return filters or cls()
        if not isinstance(filters, Mapping):
            raise RagindexError(f"filters={filters!r}: must be a mapping of source_prefix and/or doc_type")
        unknown = sorted(set(filters) - {"source_prefix", "doc_type"})
        if unknown:
            raise RagindexError(f"filters: unknown key(s) {', '.join(unknown)} (known: source_prefix, doc_type)")
        return cls(filters.get("source_prefix", ()), filters.get("doc_type", ()))  # "" is refused, not ignored

    def __bool__(self) -> bool:
        return bool(self.source_prefix or self.doc_type)


def retrieval_settings_of(index_settings: Mapping[str, Any]) -> RetrievalSettings:
    """The search defaults an index was built with; an index from before them is dense only."""
    recorded = index_settings.get("index", {}).get("retrieval")
    return RetrievalSettings(**recorded) if recorded else RetrievalSettings(mode="dense")


def fuse(dense: Sequence[tuple[float, int]], sparse: Sequence[tuple[float, int]], settings: RetrievalSettings
         ) -> list[tuple[float, int]]:
    """One ranking of rows from two (each best first): reciprocal rank (sum of 1/(rrf_k + rank)) or, for
    ``weighted``, dense_weight * the min-max normalised cosine + the rest * the normalised BM25 score."""
    fused: dict[int, float] = {}
    if settings.fusion == "rrf":
        for ranking in (dense, sparse):
            for rank, (_, row) in enumerate(ranking, 1):
                fused[row] = fused.get(row, 0.0) + 1.0 / (settings.rrf_k + rank)
    else:
        for ranking, weight in ((dense, settings.dense_weight), (sparse, 1.0 - settings.dense_weight)):
            if not ranking:
                continue
            scores = [s for s, _ in ranking]
            low, span = min(scores), max(scores) - min(scores)
            for score, row in ranking:
                fused[row] = fused.get(row, 0.0) + weight * ((score - low) / span if span > 0 else 1.0)
    return sorted(((s, r) for r, s in fused.items()), key=lambda sr: (-sr[0], sr[1]))


class Retriever:
    """Loads an index once and answers top-k questions against it."""

    def __init__(self, index_dir: Path | str, *, ref: str | None = None, mode: str | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.settings = read_index_settings(self.index_dir)
        self.index = read_faiss(self.index_dir)
        self.docstore = DocstoreReader.open(self.index_dir)
        self.model = self.settings["model"]
        self.backend = self.settings.get("embedding_backend", "torch")  # indexes before backends were torch
        self.ref = ref
        self.retrieval = retrieval_settings_of(self.settings)
        self.sparse = SparseIndex(self.index_dir) if SparseIndex.exists(self.index_dir) else None
        self.mode = self._check_mode(mode or self.retrieval.mode)
        self._row_meta: tuple[list[str], np.ndarray] | None = None

    @classmethod
    def from_ref(cls, ref: str, registry_uri: str | None = None, mode: str | None = None) -> "Retriever":
        """Open ``vector-index:production`` (or any ref) from a registry, downloading it once into the cache."""
        from ragindex.registry import open_registry

        registry = open_registry(registry_uri, create=False)
        version = registry.get(ref)
        return cls(registry.download(version.ref), ref=version.ref, mode=mode)

    @classmethod
    def open(cls, target: str, registry_uri: str | None = None, mode: str | None = None) -> "Retriever":
        """A folder if one exists at ``target``, else a registry ref."""
        if Path(target).exists() or ":" not in target:
            return cls(target, mode=mode)
        return cls.from_ref(target, registry_uri, mode=mode)

    @property
    def modes(self) -> tuple[str, ...]:
        """The retrieval modes this index can answer (sparse and hybrid need its BM25 index)."""
        return RETRIEVAL_MODES if self.sparse is not None else ("dense",)

    def _check_mode(self, mode: str) -> str:
        """A known mode that this index can answer."""
        if mode not in RETRIEVAL_MODES:
            raise RagindexError(f"mode={mode!r}: must be one of {', '.join(RETRIEVAL_MODES)}")
        if mode != "dense" and self.sparse is None:
            raise RagindexError(f"mode={mode!r}: index {self.ref or self.index_dir} has no sparse (BM25) index "
                                "(built before ragindex had one, or with sparse off); search it with mode='dense' "
                                "or rebuild it")
        return mode

    def search(self, question: str, k: int = 5, mode: str | None = None,
               filters: SearchFilters | Mapping[str, Any] | None = None, per_source: int | None = None) -> list[Hit]:
        """Top-k chunks for a question, in ``mode`` (default: the index's), among the chunks ``filters``
        allows (a ``SearchFilters`` or a mapping with ``source_prefix`` and/or ``doc_type``), at most
        ``per_source`` of them from one document (None: no cap)."""
        if not question.strip():
            raise RagindexError("question: must not be empty")
        if k < 1:
            raise RagindexError(f"k={k}: must be at least 1")
        if per_source is not None and (isinstance(per_source, bool) or not isinstance(per_source, int)
                                       or per_source < 1):
            raise RagindexError(f"per_source={per_source!r}: must be a whole number of at least 1 (or none)")
        mode = self._check_mode(mode or self.mode)
        filters = SearchFilters.of(filters)
        if self.index.ntotal == 0:
            return []
        allowed = self._allowed_rows(filters) if filters else None
        if allowed is not None and not allowed.any():
            return []
        if per_source is None:
            depth = max(k, self.retrieval.candidates) if mode == "hybrid" else k
            ranked = self._ranked(question, mode, depth, allowed)[:k]
        else:
            ranked = self._capped_ranking(question, mode, k, per_source, allowed)
        records = self.docstore.get([r for _, r in ranked])
        return [Hit(s, rec["source"], rec["page"], rec["text"], rec["chunk_id"], rec["start"],
                    tuple(rec.get("section") or ())) for (s, _), rec in zip(ranked, records)]

    def _ranked(self, question: str, mode: str, depth: int, allowed: np.ndarray | None) -> list[tuple[float, int]]:
        """(score, row) best first: the mode's ranking, each side read ``depth`` deep."""
        dense = self._dense(question, depth, allowed) if mode != "sparse" else []
        sparse = self.sparse.search(question, depth, allowed) if mode != "dense" else []
        return dense if mode == "dense" else sparse if mode == "sparse" else fuse(dense, sparse, self.retrieval)

    def _capped_ranking(self, question: str, mode: str, k: int, per_source: int, allowed: np.ndarray | None
                        ) -> list[tuple[float, int]]:
        """The mode's top k with at most ``per_source`` per document, reading deeper while too few documents fill it."""
        rows = self.index.ntotal if allowed is None else int(allowed.sum())
        depth = max(k, self.retrieval.candidates)
        while True:
            ranked = self._capped(self._ranked(question, mode, depth, allowed), k, per_source)
            if len(ranked) == k or depth >= rows:
                return ranked
            depth = min(rows, depth * 4)  # too few documents among the candidates: read both rankings deeper

    def _capped(self, ranked: Sequence[tuple[float, int]], k: int, per_source: int) -> list[tuple[float, int]]:
        """The first k of ``ranked`` (fewer if it runs out) with at most ``per_source`` from one document."""
        sources = self._row_meta_once()[0]
        kept: list[tuple[float, int]] = []
        taken: dict[str, int] = {}
        for score, row in ranked:
            if taken.get(sources[row], 0) < per_source:
                taken[sources[row]] = taken.get(sources[row], 0) + 1
                kept.append((score, row))
                if len(kept) == k:
                    break
        return kept

    def _dense(self, question: str, n: int, allowed: np.ndarray | None) -> list[tuple[float, int]]:
        """(cosine, row) of the n nearest chunks among the allowed rows (a FAISS ID selector)."""
        from ragindex.queries import query_vector

        query = query_vector(self.model, question, self.backend)
        n = min(n, self.index.ntotal if allowed is None else int(allowed.sum()))
        if allowed is None:
            scores, rows = self.index.search(query, n)
        else:
            scores, rows = self._filtered_dense(query, n, allowed)
        return [(float(s), int(r)) for s, r in zip(scores[0], rows[0]) if r >= 0]

    def _filtered_dense(self, query: np.ndarray, n: int, allowed: np.ndarray):
        """Search inside the allowed rows only: an ID selector passed to the flat scan, or to HNSW's graph
        walk; when the walk finds fewer than n allowed rows (a narrow filter), the exact scan over the HNSW
        index's stored vectors with the same selector."""
        from ragindex.indexing import _faiss

        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.flatnonzero(allowed).astype(np.int64))
        if not hasattr(self.index, "hnsw"):
            return self.index.search(query, n, params=faiss.SearchParameters(sel=selector))
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.index.hnsw.efSearch, n))
        scores, rows = self.index.search(query, n, params=params)
        if (rows[0] >= 0).sum() < n:
            storage = faiss.downcast_index(self.index.storage)
            scores, rows = storage.search(query, n, params=faiss.SearchParameters(sel=selector))
        return scores, rows

    def _row_meta_once(self) -> tuple[list[str], np.ndarray]:
        """Each row's source and document type, read from the docstore once per Retriever."""
        from ragindex.parsing import document_kind

        if self._row_meta is None:
            sources = [rec["source"] for rec in iter_docstore(self.index_dir)]
            self._row_meta = (sources, np.array([document_kind(s) for s in sources]))
        return self._row_meta

    def _allowed_rows(self, filters: SearchFilters) -> np.ndarray:
        """A boolean per row: does the chunk pass the filters."""
        sources, kinds = self._row_meta_once()
        allowed = np.ones(len(sources), dtype=bool)
        if filters.source_prefix:
            prefixes = filters.source_prefix
            allowed &= np.fromiter((s.startswith(prefixes) for s in sources), dtype=bool, count=len(sources))
        if filters.doc_type:
            allowed &= np.isin(kinds, list(filters.doc_type))
        return allowed
