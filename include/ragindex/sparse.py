"""The sparse (BM25) side of an index: a tokenizer for technical text, the per-chunk term counts that make
updates incremental, and the bm25s index built from them, all in the index folder's ``sparse/``.

Files (every one a pure function of the chunk texts and the BM25 settings, so equal chunks are equal bytes):

- ``sparse.json``: format, tokenizer version, k1, b, number of chunks and terms;
- ``terms.vocab.json`` (the sorted vocabulary), ``terms.shas.npy``, ``terms.offsets.npy``, ``terms.ids.npy``,
  ``terms.counts.npy``: per chunk (row order), the sorted ids of its terms and how often each occurs. The
  next build reads these for the chunks whose text did not change instead of tokenising them again;
- what ``bm25s.BM25.save`` writes (``params.index.json``, ``vocab.index.json``, ``*.csc.index.npy``): the
  precomputed BM25 scores, memory-mapped at query time.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from ragindex.errors import IndexDirError

if TYPE_CHECKING:  # numpy is imported where it is used: a no-op build never needs it (benchmarks/README.md)
    import numpy as np

SPARSE_DIR = "sparse"
META_FILE = "sparse.json"
FORMAT_VERSION = 1
# Bump when ``tokenize`` changes: term counts of another tokenizer are never reused.
TOKENIZER = "words-1"
BM25_METHOD = "lucene"

# A word (letters, digits, ``_``), optionally after a backslash (``\alpha``), optionally joined to more words
# by ``.``, ``-``, ``'`` or ``::`` (``os.path.join``, ``utf-8``, ``don't``, ``std::vector``, ``3.11``).
_TOKEN = re.compile(r"\\?\w+(?:(?:[.\-'’]|::)\w+)*")
_PART_SPLIT = re.compile(r"[^\W_]+|\d+")  # the letter/digit runs inside a compound (``foo_bar`` -> foo, bar)


# Lucene's English stop words, as bm25s 0.3.16 ships them (``bm25s.stopwords.STOPWORDS_EN``; 33 function words, IDF
# handles the rest). A copy, so that tokenising imports no bm25s (whose package imports ~0.25 s of numpy, scipy
# and tqdm) and a bm25s upgrade cannot change the tokens under the same TOKENIZER (tests/core/test_sparse.py
# checks the copy against the installed list).
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
))


def bm25s_module():
    """bm25s, imported without the optional packages it imports at module level and this module never uses:
    scipy (only its ``csc_backend="scipy"``; ours is the default, numpy) and tqdm (progress bars, always off
    here), which it falls back from when they are missing. That is most of bm25s's import cost in a fresh
    ``ragindex build`` process; a process that already imported either keeps it."""
    import sys

    if "bm25s" in sys.modules:
        return sys.modules["bm25s"]
    masked = [name for name in ("scipy", "tqdm") if name not in sys.modules]
    for name in masked:
        sys.modules[name] = None  # type: ignore[assignment]  # "import scipy" raises ImportError meanwhile
    try:
        import bm25s
    finally:
        for name in masked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    # bm25s sets its logger to DEBUG when imported: "Building index from IDs" in every task log otherwise
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(text: str) -> list[str]:
    """Terms of a text for BM25: NFKC, lower-case; each token whole (``foo_bar``, ``\\alpha``, ``x.y``) and,
    when it is a compound, its parts too (``foo``, ``bar``; ``alpha``; ``x``, ``y``), so a question in plain
    words still meets an identifier; Lucene's English stop words are dropped. Deterministic, no stemming."""
    out: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        token = match.group()
        if token not in STOPWORDS:
            out.append(token)
        parts = _PART_SPLIT.findall(token)
        if len(parts) > 1 or (parts and parts[0] != token):
            out.extend(p for p in parts if p not in STOPWORDS)
    return out


# ---------------------------------------------------------------- per-chunk term counts

TermCounts = tuple[tuple[str, ...], tuple[int, ...]]  # a chunk's distinct terms (sorted) and their counts


def count_terms(text: str) -> TermCounts:
    """A chunk's bag of terms, in the form the term table stores."""
    counts = sorted(Counter(tokenize(text)).items())
    return tuple(t for t, _ in counts), tuple(c for _, c in counts)


@dataclass(frozen=True)
class TermTable:
    """Per-row term counts over a sorted vocabulary (compressed rows), with each row's text sha256."""

    vocab: list[str]
    shas: list[str]
    offsets: np.ndarray  # int64, rows + 1
    ids: np.ndarray  # int32, ids into vocab, sorted within a row
    counts: np.ndarray  # int32

    @classmethod
    def from_rows(cls, shas: Sequence[str], rows: Sequence[TermCounts]) -> "TermTable":
        """The table of these rows; the vocabulary is sorted, so it depends only on the rows' terms."""
        import numpy as np
        vocab = sorted({t for terms, _ in rows for t in terms})
        index = {t: i for i, t in enumerate(vocab)}
        lengths = np.fromiter((len(terms) for terms, _ in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((index[t] for terms, _ in rows for t in terms), dtype=np.int32, count=int(offsets[-1]))
        counts = np.fromiter((c for _, cs in rows for c in cs), dtype=np.int32, count=int(offsets[-1]))
        return cls(vocab, list(shas), offsets, ids, counts)

    def row(self, i: int) -> TermCounts:
        """One row's terms and counts."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return tuple(self.vocab[j] for j in self.ids[lo:hi]), tuple(int(c) for c in self.counts[lo:hi])

    def by_sha(self, wanted: Iterable[str] | None = None) -> dict[str, TermCounts]:
        """sha256 → term counts, for every row or only the wanted texts."""
        keep = None if wanted is None else set(wanted)
        return {sha: self.row(i) for i, sha in enumerate(self.shas) if keep is None or sha in keep}

    @classmethod
    def from_mapping(cls, terms: Mapping[str, TermCounts]) -> "TermTable":
        """The table of sha256 → term counts, rows in sha256 order."""
        shas = sorted(terms)
        return cls.from_rows(shas, [terms[s] for s in shas])

    def take(self, shas: Sequence[str], rows: Sequence[int]) -> "TermTable":
        """The table of these rows of this one (in this order, under these sha256s), over the vocabulary they
        use: what ``from_rows`` makes of the same rows, computed on the arrays instead of term by term."""
        import numpy as np
        picked = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[picked], self.offsets[picked + 1] - self.offsets[picked]
        offsets = np.zeros(len(picked) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        where = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        ids = self.ids[where]
        used = np.unique(ids)  # sorted ids of a sorted vocabulary: the used terms, sorted
        return TermTable([self.vocab[i] for i in used.tolist()], list(shas), offsets,
                         np.searchsorted(used, ids).astype(np.int32), self.counts[where].astype(np.int32))

    def concat(self, other: "TermTable") -> "TermTable":
        """This table's rows, then ``other``'s, over the union of the two vocabularies."""
        import numpy as np
        vocab = sorted(set(self.vocab) | set(other.vocab))
        index = {t: i for i, t in enumerate(vocab)}

        def remap(table: TermTable) -> np.ndarray:
            return np.fromiter((index[t] for t in table.vocab), dtype=np.int32, count=len(table.vocab))[table.ids]

        offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        ids = np.concatenate([remap(self), remap(other)]).astype(np.int32)
        return TermTable(vocab, self.shas + other.shas, offsets, ids,
                         np.concatenate([self.counts, other.counts]).astype(np.int32))

    def select(self, wanted: Iterable[str]) -> "TermTable":
        """The rows of the wanted texts that this table has, each once, in sha256 order (as ``from_mapping``
        of ``by_sha(wanted)`` would make them)."""
        keep, first = set(wanted), {}
        for i, sha in enumerate(self.shas):
            if sha in keep:
                first.setdefault(sha, i)
        shas = sorted(first)
        return self.take(shas, [first[s] for s in shas])

    def token_ids(self) -> list[list[int]]:
        """Each row as the list of term ids ``bm25s.BM25.index`` takes (a term repeated as often as it occurs):
        the reference ``bm25_scores`` is tested against."""
        import numpy as np
        flat = np.repeat(self.ids, self.counts).tolist()
        ends = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])[self.offsets].tolist()
        return [flat[ends[i]:ends[i + 1]] for i in range(len(self.shas))]

    def write(self, folder: Path) -> None:
        """Write the table's files into ``folder`` (np.save: a fixed header and the raw array, no timestamp)."""
        import numpy as np
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "terms.vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        np.save(folder / "terms.shas.npy", np.array(self.shas, dtype="S64"))
        np.save(folder / "terms.offsets.npy", self.offsets)
        np.save(folder / "terms.ids.npy", self.ids)
        np.save(folder / "terms.counts.npy", self.counts)

    @classmethod
    def read(cls, folder: Path) -> "TermTable":
        """Inverse of ``write``."""
        import numpy as np
        vocab = json.loads((folder / "terms.vocab.json").read_text(encoding="utf-8"))
        shas = [s.decode() for s in np.load(folder / "terms.shas.npy").tolist()]
        return cls(vocab, shas, np.load(folder / "terms.offsets.npy"), np.load(folder / "terms.ids.npy"),
                   np.load(folder / "terms.counts.npy"))


def reusable_table(index_dir: Path | None, wanted: Iterable[str] | None = None) -> TermTable:
    """The term counts an earlier index offers (of the wanted texts, each once, in sha256 order), if its
    tokenizer is this one; an empty table otherwise."""
    folder = Path(index_dir) / SPARSE_DIR if index_dir is not None else None
    if folder is None or not (folder / META_FILE).is_file():
        return TermTable.from_rows([], [])
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("tokenizer") != TOKENIZER or meta.get("format") != FORMAT_VERSION:
        return TermTable.from_rows([], [])
    table = TermTable.read(folder)
    return table.select(table.shas if wanted is None else wanted)


def save_reused_terms(path: Path, terms: Mapping[str, TermCounts] | TermTable) -> None:
    """Keep reused term counts in a work folder, for the build step that runs after the plan."""
    from ragindex.atomic import fresh_temp_dir, replace_dir_atomically

    tmp = fresh_temp_dir(Path(path))
    (terms if isinstance(terms, TermTable) else TermTable.from_mapping(terms)).write(tmp)
    replace_dir_atomically(tmp, Path(path))


def load_reused_terms(path: Path) -> TermTable:
    """What ``save_reused_terms`` kept; an empty table when the plan kept none."""
    return TermTable.read(Path(path)) if (Path(path) / "terms.shas.npy").is_file() else TermTable.from_rows([], [])


# ---------------------------------------------------------------- build

@dataclass(frozen=True)
class SparseBuild:
    """What building the sparse index cost: how many chunk texts were tokenised, how many reused."""

    tokenized: int
    reused: int


def write_sparse_index(folder: Path, texts: Sequence[str], shas: Sequence[str], *, k1: float, b: float,
                       reuse: Mapping[str, TermCounts] | TermTable | None = None) -> SparseBuild:
    """Tokenise the texts not in ``reuse`` (each distinct text once), then write the term table and the
    bm25s index into ``folder``."""
    bm25s = bm25s_module()
    known = reuse if isinstance(reuse, TermTable) else TermTable.from_mapping(reuse or {})
    row_of: dict[str, int] = {}
    for i, sha in enumerate(known.shas):
        row_of.setdefault(sha, i)
    fresh: dict[str, TermCounts] = {}
    for text, sha in zip(texts, shas):
        if sha not in row_of and sha not in fresh:
            fresh[sha] = count_terms(text)
    row_of.update((sha, len(known.shas) + i) for i, sha in enumerate(fresh))
    both = known.concat(TermTable.from_rows(list(fresh), list(fresh.values())))
    table = both.take(shas, [row_of[sha] for sha in shas])
    tokenized = len(fresh)
    folder.mkdir(parents=True, exist_ok=True)
    table.write(folder)
    if texts:
        bm25 = bm25s.BM25(k1=k1, b=b, method=BM25_METHOD)
        bm25.scores, bm25.vocab_dict = bm25_scores(table, k1=k1, b=b), {t: i for i, t in enumerate(table.vocab)}
        bm25.nonoccurrence_array = None  # what bm25s.BM25.index leaves for the lucene method
        bm25.save(folder, show_progress=False)
    meta = sparse_meta(len(texts), len(table.vocab), k1=k1, b=b)
    (folder / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return SparseBuild(tokenized, len(texts) - tokenized)


def bm25_scores(table: TermTable, *, k1: float, b: float) -> dict:
    """The ``scores`` that ``bm25s.BM25(method="lucene").index`` computes of the table's rows, equal to the bit
    (tests/core/test_sparse.py), on the arrays: bm25s scores document by document in Python, ~0.08 s a thousand
    chunks, and an update scores every chunk again (idf and the mean length change with any document)."""
    import math

    import numpy as np
    rows = len(table.shas)
    terms_per_row = np.diff(table.offsets)
    ends = np.concatenate([[0], np.cumsum(table.counts, dtype=np.int64)])
    lengths = ends[table.offsets[1:]] - ends[table.offsets[:-1]]  # a row's length: its terms, with repeats
    average = lengths.mean() if rows else 0.0  # np.float64, as bm25s's np.array([len(...)]).mean()
    frequencies = np.bincount(table.ids, minlength=len(table.vocab))  # a term occurs once in a row's ids
    # the idf of each distinct document frequency with math.log, as bm25s computes it term by term, then float32
    idf_of_df = np.zeros(int(frequencies.max(initial=0)) + 1, dtype=np.float64)
    for df in np.unique(frequencies).tolist():
        idf_of_df[df] = math.log(1 + (rows - df + 0.5) / (df + 0.5)) if df else 0.0
    idf = idf_of_df[frequencies].astype(np.float32)
    # bm25s: tf / (k1 * ((1 - b) + b * l_d / l_avg) + tf), float64 from there on, then idf * it into float32
    row_of = np.repeat(np.arange(rows, dtype=np.int32), terms_per_row)
    tf = table.counts.astype(np.float32)
    denominator = k1 * ((1 - b) + b * lengths[row_of].astype(np.float64) / average) + tf
    data = (idf[table.ids] * (tf / denominator)).astype(np.float32)
    # CSC by term, rows ascending within a term (bm25s's _np_csc_python sorts the same (term, row) keys)
    order = np.argsort((table.ids.astype(np.int64) << 32) | row_of.astype(np.int64))
    indptr = np.zeros(len(table.vocab) + 1, dtype=np.int64)
    np.cumsum(frequencies, out=indptr[1:])
    return {"data": data[order], "indices": row_of[order], "indptr": indptr, "num_docs": rows}


def sparse_meta(chunks: int, terms: int, *, k1: float, b: float) -> dict:
    """What ``sparse.json`` says of a sparse index of this tokenizer, format, installed bm25s and BM25 settings
    (the library's version read without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        library = version("bm25s")
    except PackageNotFoundError:
        library = "0.0.0"  # what bm25s reports of itself when its metadata is missing
    return {"format": FORMAT_VERSION, "tokenizer": TOKENIZER, "library": f"bm25s {library}", "method": BM25_METHOD,
            "k1": k1, "b": b, "chunks": chunks, "terms": terms}


def written_alike(index_dir: Path, chunks: int, *, k1: float, b: float) -> bool:
    """Whether an index folder's sparse index was written by this tokenizer, format, bm25s and BM25 settings
    for ``chunks`` chunks: then the same chunk texts give the same bytes (``ragindex.pipeline`` copies it)."""
    path = Path(index_dir) / SPARSE_DIR / META_FILE
    if not path.is_file():
        return False
    meta = json.loads(path.read_text())
    return meta == sparse_meta(chunks, meta.get("terms"), k1=k1, b=b)


# ---------------------------------------------------------------- search

class SparseIndex:
    """BM25 scores of an index folder's chunks, loaded once (memory-mapped)."""

    def __init__(self, index_dir: Path) -> None:
        folder = Path(index_dir) / SPARSE_DIR
        if not (folder / META_FILE).is_file():
            raise IndexDirError(f"index {index_dir}: has no sparse (BM25) index ({SPARSE_DIR}/{META_FILE})")
        self.meta = json.loads((folder / META_FILE).read_text())
        self.size = int(self.meta["chunks"])
        self.bm25 = None
        if self.size:
            bm25s = bm25s_module()
            self.bm25 = bm25s.BM25.load(folder, mmap=True, show_progress=False)

    @staticmethod
    def exists(index_dir: Path) -> bool:
        """Whether the index folder carries a sparse index (indexes built before it do not)."""
        return (Path(index_dir) / SPARSE_DIR / META_FILE).is_file()

    def search(self, question: str, n: int, mask: np.ndarray | None = None) -> list[tuple[float, int]]:
        """(BM25 score, row) of the best ``n`` rows that share a term with the question, among the rows
        ``mask`` allows (scores of the others are zeroed before the top-n, so a filter never empties it)."""
        import numpy as np
        if self.bm25 is None:
            return []
        ids = sorted({self.bm25.vocab_dict[t] for t in tokenize(question) if t in self.bm25.vocab_dict})
        if not ids:
            return []
        weights = None if mask is None else mask.astype(np.float32)
        scores = self.bm25.get_scores(ids, weight_mask=weights)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > n:
            candidates = candidates[np.argpartition(-scores[candidates], n - 1)[:n]]
        order = np.lexsort((candidates, -scores[candidates]))  # best first; ties by row, so results are stable
        return [(float(scores[r]), int(r)) for r in candidates[order]]
