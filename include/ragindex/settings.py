"""Every setting and its default, one frozen dataclass per concern.

The Params forms of the DAGs and the CLI's options take their defaults from here, so a default is written
once. ``BuildSettings`` decides what an index contains and is recorded with every version it produces;
the others decide how a run is sharded, gated and reviewed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragindex.errors import SettingsError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# onnx: the same vectors as torch (cosine 1.0), a start without torch, faster encoding; see the README.
EMBEDDING_BACKENDS = ("torch", "onnx", "onnx-int8")
DEFAULT_EMBEDDING_BACKEND = "onnx-int8"
SPLITTERS = ("recursive", "markdown")
INDEX_KINDS = ("flat", "hnsw")
RETRIEVAL_MODES = ("dense", "sparse", "hybrid")
FUSIONS = ("rrf", "weighted")
DOC_TYPES = ("markdown", "html", "pdf", "text")  # what ragindex.parsing.document_kind calls its parsers
# Seconds one PDF may take to parse: TeX Live's source3.pdf (1,611 pages) takes 75 s on a busy 2-core machine.
PARSE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ChunkingSettings:
    """How documents are cut into chunks."""

    chunk_size: int = 1000
    chunk_overlap: int = 150
    splitter: str = "recursive"

    def __post_init__(self) -> None:
        if self.chunk_size < 50:
            raise SettingsError(f"chunk_size={self.chunk_size}: must be at least 50 characters")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise SettingsError(
                f"chunk_overlap={self.chunk_overlap}: must be >= 0 and smaller than chunk_size={self.chunk_size}"
            )
        if self.splitter not in SPLITTERS:
            raise SettingsError(f"splitter={self.splitter!r}: must be one of {', '.join(SPLITTERS)}")


@dataclass(frozen=True)
class RetrievalSettings:
    """How an index is searched unless a query says otherwise: recorded in ``index.json`` so a version's
    default mode travels with it. Defaults measured in benchmarks/bench_quality.py (see the README)."""

    mode: str = "hybrid"
    fusion: str = "rrf"  # rrf: sum of 1/(rrf_k + rank); weighted: dense_weight * dense + (1 - it) * sparse, min-max
    # rrf_k 5, 100 candidates: chosen in bench_quality.py --sweep, checked on held-out questions (benchmarks/
    # README.md); with k = 60, chunks mid-way down both lists pushed one list's top hit out of the top 5.
    rrf_k: int = 5
    dense_weight: float = 0.5
    candidates: int = 100  # how deep each ranking is read before fusion

    def __post_init__(self) -> None:
        if self.mode not in RETRIEVAL_MODES:
            raise SettingsError(f"retrieval mode={self.mode!r}: must be one of {', '.join(RETRIEVAL_MODES)}")
        if self.fusion not in FUSIONS:
            raise SettingsError(f"fusion={self.fusion!r}: must be one of {', '.join(FUSIONS)}")
        if self.rrf_k < 1 or self.candidates < 1:
            raise SettingsError(f"rrf_k={self.rrf_k}, candidates={self.candidates}: both must be at least 1")
        if not 0 <= self.dense_weight <= 1:
            raise SettingsError(f"dense_weight={self.dense_weight}: must be between 0 and 1")


@dataclass(frozen=True)
class IndexSettings:
    """Which FAISS index is built over the (normalised) vectors, whether a BM25 index is built beside it
    (``sparse``, with its k1 and b), how the two are searched by default (``retrieval``), and whether a
    chunk's section path is part of what both index (``section_path_in_text``)."""

    kind: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    sparse: bool = True
    # Lucene's and Elasticsearch's own defaults for Lucene's BM25 (bm25s's k1 is 1.5): in the default hybrid mode, as
    # many or more first hits and top-5 hits on every set and backend of bench_quality.py --sweep (benchmarks/README.md)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    # A chunk's section path ("Page title › Section") goes before its text in what is embedded and
    # BM25-indexed (not in the text a hit shows): measured in benchmarks/bench_quality.py (README).
    section_path_in_text: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.retrieval, dict):  # the form index.json and BuildSettings.to_dict record
            try:
                object.__setattr__(self, "retrieval", RetrievalSettings(**self.retrieval))
            except TypeError as exc:
                raise SettingsError(f"unknown retrieval setting: {exc}") from None
        if self.kind not in INDEX_KINDS:
            raise SettingsError(f"index kind={self.kind!r}: must be one of {', '.join(INDEX_KINDS)}")
        if self.hnsw_m < 4:
            raise SettingsError(f"hnsw_m={self.hnsw_m}: must be at least 4")
        if self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise SettingsError(f"bm25_k1={self.bm25_k1} (>= 0), bm25_b={self.bm25_b} (0..1): out of range")
        if not self.sparse and self.retrieval.mode != "dense":
            raise SettingsError(f"retrieval mode={self.retrieval.mode!r} needs the sparse (BM25) index, "
                                "but sparse=False")


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may contribute, and what counts as prose: a file beyond these is refused with the
    rule it broke (reported like any parse failure, not parsed again until it changes)."""

    # Big enough for the largest real manuals we know of: TeX Live's source3.pdf (texlive-latex-base-doc, 1,611
    # pages) is 3.8 M characters and about 4,800 chunks at the default chunking.
    max_chars: int = 5_000_000
    max_chunks: int = 10_000
    # Text that is not prose: encoded data (base64, hex), minified code, dumps. Calibrated on every PDF of
    # Debian's texlive-latex-base-doc (269, plus texlive-base's amssymb.pdf), every source of python3.11-doc
    # (497 reST files) and the sample corpus, none of which these rules refuse:
    # - a "long run" is a stretch of `long_run`+ characters without whitespace, of 10+ distinct characters
    #   (so a "=====" rule of a reST table is not one); words and URLs are far shorter;
    # - a "word" is a token of prose or of technical text (``ragindex.parsing.word_share``: ``don't``,
    #   ``\alpha``, ``foo_bar()``, ``x.y``), among the tokens that are not punctuation alone (leader dots);
    #   the lowest share in those documents is 31 % (tulm.pdf, a listing of font declarations; amssymb.pdf
    #   41 %, Python's lowest 55 %); base64, number tables and minified code have 0 %, hex dumps 2-14 %;
    # - a "long line" has `long_line`+ characters: minified code and dumps are one line, prose paragraphs are not.
    long_run: int = 100
    max_long_run_share: float = 0.2
    min_word_share: float = 0.25
    long_line: int = 5_000
    max_long_line_share: float = 0.5

    def __post_init__(self) -> None:
        if self.max_chars < 1_000 or self.max_chunks < 1:
            raise SettingsError(f"max_document_chars={self.max_chars} (>= 1000), max_document_chunks="
                                f"{self.max_chunks} (>= 1): out of range")
        shares = (self.max_long_run_share, self.min_word_share, self.max_long_line_share)
        if not all(0 <= x <= 1 for x in shares) or self.long_run < 20 or self.long_line < 200:
            raise SettingsError("prose rule out of range: shares in [0, 1], long_run >= 20, long_line >= 200")


@dataclass(frozen=True)
class CorpusLimits:
    """How big a corpus may be before a run stops with a clear error, before any embedding: a mis-pointed
    source (a whole drive, a log folder) costs seconds, not hours."""

    max_documents: int = 100_000
    max_bytes: int = 20 * 2**30
    max_chars: int = 1_000_000_000

    def __post_init__(self) -> None:
        if self.max_documents < 1 or self.max_bytes < 1 or self.max_chars < 1:
            raise SettingsError(f"corpus limits must be positive: {self}")


@dataclass(frozen=True)
class BuildSettings:
    """Everything that changes the bytes of an index, plus the limits that keep parsing safe."""

    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    model: str = DEFAULT_MODEL
    embedding_backend: str = DEFAULT_EMBEDDING_BACKEND
    parse_timeout_s: float = PARSE_TIMEOUT_S
    parse_memory_mb: int = 1536
    documents: DocumentLimits = field(default_factory=DocumentLimits)
    corpus: CorpusLimits = field(default_factory=CorpusLimits)

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise SettingsError("model: must name a sentence-transformers model or a local model folder")
        if self.embedding_backend not in EMBEDDING_BACKENDS:
            raise SettingsError(f"embedding_backend={self.embedding_backend!r}: must be one of "
                                f"{', '.join(EMBEDDING_BACKENDS)}")
        if self.parse_timeout_s <= 0:
            raise SettingsError(f"parse_timeout_s={self.parse_timeout_s}: must be positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for metadata and W&B run configs."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildSettings":
        """Inverse of ``to_dict``; unknown keys are an error so typos do not pass silently."""
        data = dict(data)
        try:
            parts = {"chunking": ChunkingSettings(**data.pop("chunking", {})),
                     "index": IndexSettings(**data.pop("index", {})),
                     "documents": DocumentLimits(**data.pop("documents", {})),
                     "corpus": CorpusLimits(**data.pop("corpus", {}))}
            return cls(**parts, **data)
        except TypeError as exc:
            raise SettingsError(f"unknown build setting: {exc}") from None


@dataclass(frozen=True)
class ShardSettings:
    """How a run's new texts are split over mapped embedding tasks, so workers share them."""

    shard_size: int = 256
    max_shards: int = 8

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.max_shards < 1:
            raise SettingsError(f"shard_size={self.shard_size}, max_shards={self.max_shards}: both must be >= 1")

    def count(self, to_embed: int) -> int:
        """Enough shards of about ``shard_size`` texts, never more than ``max_shards``, at least one."""
        return max(1, min(self.max_shards, -(-to_embed // self.shard_size)))


@dataclass(frozen=True)
class GateSettings:
    """The retrieval gate a candidate passes before anyone is asked to review it."""

    k: int = 5
    min_recall: float = 0.6
    max_regression: float = 0.05

    def __post_init__(self) -> None:
        if self.k < 1:
            raise SettingsError(f"eval k={self.k}: must be at least 1")
        if not 0 <= self.min_recall <= 1 or not 0 <= self.max_regression <= 1:
            raise SettingsError(f"min_recall={self.min_recall}, max_regression={self.max_regression}: "
                                "both must be between 0 and 1")


@dataclass(frozen=True)
class DriftSettings:
    """The data gate: how far a candidate may drift from production before promotion needs a person's
    explicit approval (or fails, when no reviewer is asked). Shares are of production's counts."""

    max_documents_removed: float = 0.25
    max_chunks_changed: float = 0.5
    max_new_pii_documents: int = 0
    max_chunk_length_drop: float = 0.3
    max_duplicate_increase: float = 0.1

    def __post_init__(self) -> None:
        shares = (self.max_documents_removed, self.max_chunks_changed, self.max_chunk_length_drop,
                  self.max_duplicate_increase)
        if not all(0 <= x <= 1 for x in shares) or self.max_new_pii_documents < 0:
            raise SettingsError(f"drift thresholds out of range (shares in [0, 1], counts >= 0): {self}")


@dataclass(frozen=True)
class ReviewSettings:
    """Whether a person approves promotion, and how long the request waits for one."""

    require_approval: bool = True
    timeout_hours: float = 72.0

    def __post_init__(self) -> None:
        if self.timeout_hours <= 0:
            raise SettingsError(f"review timeout={self.timeout_hours} h: must be positive")


def ragindex_home() -> Path:
    """Where caches, work files and the default local registry live (``RAGINDEX_HOME``)."""
    return Path(os.environ.get("RAGINDEX_HOME") or Path.home() / ".ragindex").expanduser()


def models_home() -> Path:
    """Where exported models (ONNX) are kept: ``RAGINDEX_MODELS``, else ``$RAGINDEX_HOME/models``."""
    configured = os.environ.get("RAGINDEX_MODELS", "").strip()
    return Path(configured).expanduser() if configured else ragindex_home() / "models"
