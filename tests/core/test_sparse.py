"""The BM25 side of an index: the tokenizer, the files in ``sparse/`` (same chunks, same bytes), incremental
term counts (an update tokenises only new texts) and old indexes without a sparse index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragindex import sparse
from ragindex.chunking import text_sha256
from ragindex.errors import RagindexError
from ragindex.indexing import SETTINGS_FILE, read_index_settings
from ragindex.pipeline import build
from ragindex.retrieval import Retriever
from ragindex.settings import BuildSettings, IndexSettings
from ragindex.sparse import SPARSE_DIR, SparseIndex, TermTable, tokenize, write_sparse_index

from tests.conftest import need

from .conftest import SMALL, write_files

TEXTS = ["Forklift operators wear a high-visibility vest.",
         "Call os.path.join(a, b) or use pathlib; see foo_bar and \\alpha in x.y.",
         "Returned parcels need a return authorization number.",
         "Forklift batteries are charged in bay 4, never in the aisle."]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tokenizer_keeps_technical_tokens_whole_and_in_parts() -> None:
    tokens = tokenize("Use os.path.join, foo_bar, \\alpha and x.y in Python 3.11 (UTF-8). The END.")
    for whole in ("os.path.join", "foo_bar", "\\alpha", "x.y", "3.11", "utf-8"):
        assert whole in tokens, whole
    for part in ("os", "path", "join", "foo", "bar", "alpha", "x", "y", "utf", "python", "end"):
        assert part in tokens, part
    assert "the" not in tokens and "and" not in tokens and "in" not in tokens  # Lucene's English stop words
    assert all(t == t.lower() for t in tokens)
    assert tokenize("ＦＵＬＬ width") == ["full", "width"]  # NFKC first
    assert tokenize(TEXTS[1]) == tokenize(TEXTS[1])


def test_same_chunks_make_the_same_bytes_whether_counts_are_reused_or_not(tmp_path: Path) -> None:
    shas = [text_sha256(t) for t in TEXTS]
    fresh = write_sparse_index(tmp_path / "a", TEXTS, shas, k1=1.5, b=0.75)
    assert (fresh.tokenized, fresh.reused) == (4, 0)
    again = write_sparse_index(tmp_path / "b", TEXTS, shas, k1=1.5, b=0.75)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    reuse = TermTable.read(tmp_path / "a").by_sha(shas[:3])
    partly = write_sparse_index(tmp_path / "c", TEXTS, shas, k1=1.5, b=0.75, reuse=reuse)
    assert (partly.tokenized, partly.reused) == (1, 3) and again.tokenized == 4
    assert files_of(tmp_path / "a") == files_of(tmp_path / "c")
    other_k1 = write_sparse_index(tmp_path / "d", TEXTS, shas, k1=1.2, b=0.75)
    assert other_k1.tokenized == 4 and files_of(tmp_path / "d") != files_of(tmp_path / "a")


WRITE_IN_SUBPROCESS = """
import sys
from ragindex.chunking import text_sha256
from ragindex.sparse import write_sparse_index
texts = sys.argv[2:]
write_sparse_index(__import__("pathlib").Path(sys.argv[1]), texts, [text_sha256(t) for t in texts], k1=1.5, b=0.75)
"""


def test_the_bytes_do_not_depend_on_the_process_hash_seed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", WRITE_IN_SUBPROCESS, str(tmp_path / seed), *TEXTS], env=env,
                       check=True, timeout=120)
    assert files_of(tmp_path / "1") == files_of(tmp_path / "2")


def test_bm25_search_ranks_term_matches_and_masks_inside_the_top_n(tmp_path: Path) -> None:
    write_sparse_index(tmp_path / SPARSE_DIR, TEXTS, [text_sha256(t) for t in TEXTS], k1=1.5, b=0.75)
    index = SparseIndex(tmp_path)
    hits = index.search("forklift vest", n=10)
    assert [row for _, row in hits] == [0, 3]  # only rows sharing a term; the one with both terms first
    assert hits[0][0] > hits[1][0] > 0
    masked = index.search("forklift vest", n=1, mask=np.array([False, True, True, True]))
    assert [row for _, row in masked] == [3]  # the mask applies before the top-1, so a hit remains
    assert index.search("join", n=5)[0][1] == 1 and index.search("zebra quantum", n=5) == []


def test_an_update_tokenises_only_new_texts(tmp_path: Path, monkeypatch) -> None:
    corpus = write_files(tmp_path / "corpus", {
        "a.md": "# Dock\n\nTrailers are chocked before anyone enters them.",
        "b.txt": "Dock plates are inspected every morning by the shift lead.",
    })
    first = tmp_path / "v1"
    build(str(corpus), first, SMALL)
    (corpus / "c.txt").write_text("Pallet jacks are parked by the charging wall.", encoding="utf-8")
    seen: list[str] = []
    real = sparse.count_terms
    monkeypatch.setattr(sparse, "count_terms", lambda text: seen.append(text) or real(text))
    second = build(str(corpus), tmp_path / "v2", SMALL, previous=first)
    assert seen == ["Pallet jacks are parked by the charging wall."], "unchanged chunks are not tokenised again"
    assert second.chunks == 3
    seen.clear()
    build(str(corpus), tmp_path / "full", SMALL)  # no previous: every text is tokenised ...
    assert len(seen) == 3
    assert files_of(tmp_path / "full" / SPARSE_DIR) == files_of(tmp_path / "v2" / SPARSE_DIR)  # ... same bytes
    meta = json.loads((tmp_path / "v2" / SPARSE_DIR / "sparse.json").read_text())
    assert meta["tokenizer"] == sparse.TOKENIZER and meta["chunks"] == 3


def test_counts_of_another_tokenizer_are_not_reused(tmp_index_copy: Path, monkeypatch) -> None:
    monkeypatch.setattr(sparse, "TOKENIZER", "words-0")
    assert sparse.reusable_table(tmp_index_copy).by_sha() == {}
    monkeypatch.undo()
    assert len(sparse.reusable_table(tmp_index_copy).by_sha()) > 0


@pytest.fixture
def tmp_index_copy(tiny_index, tmp_path: Path) -> Path:
    """A copy of the session's tiny index that a test may change."""
    copy = tmp_path / "index"
    shutil.copytree(tiny_index[0], copy)
    return copy


def test_an_index_from_before_the_sparse_index_is_dense_only(tmp_index_copy: Path) -> None:
    shutil.rmtree(tmp_index_copy / SPARSE_DIR)
    meta = read_index_settings(tmp_index_copy)
    meta["index"] = {k: meta["index"][k] for k in ("kind", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search")}
    (tmp_index_copy / SETTINGS_FILE).write_text(json.dumps(meta))
    retriever = Retriever(tmp_index_copy)
    assert retriever.mode == "dense" and retriever.sparse is None
    assert retriever.search("forklift vest", k=2)
    for mode in ("sparse", "hybrid"):
        with pytest.raises(RagindexError, match="has no sparse \\(BM25\\) index"):
            retriever.search("forklift vest", k=2, mode=mode)
        with pytest.raises(RagindexError, match="has no sparse"):
            Retriever(tmp_index_copy, mode=mode)


def test_index_json_records_the_sparse_and_retrieval_settings(tiny_index) -> None:
    meta = read_index_settings(tiny_index[0])
    defaults = IndexSettings()
    assert meta["index"]["sparse"] is True
    assert (meta["index"]["bm25_k1"], meta["index"]["bm25_b"]) == (defaults.bm25_k1, defaults.bm25_b) == (1.2, 0.75)
    sparse_json = json.loads((tiny_index[0] / SPARSE_DIR / "sparse.json").read_text())
    bm25s_params = json.loads((tiny_index[0] / SPARSE_DIR / "params.index.json").read_text())
    assert (sparse_json["k1"], sparse_json["b"]) == (bm25s_params["k1"], bm25s_params["b"]) == (1.2, 0.75)
    assert meta["index"]["retrieval"]["mode"] == "hybrid"
    assert (tiny_index[0] / SPARSE_DIR / "params.index.json").is_file()


def test_an_index_of_other_bm25_settings_as_previous_gets_a_new_sparse_index_from_its_term_counts(
        tiny_corpus: Path, tiny_index, tmp_path: Path) -> None:
    """An index built before k1 became 1.2 (bm25s's 1.5): the next build is no copy of it, and rewrites the
    BM25 scores with the new k1 from the term counts it reuses (nothing embedded, the same terms and vectors)."""
    from dataclasses import replace

    old = tmp_path / "k1-1.5"
    build(str(tiny_corpus), old, replace(SMALL, index=replace(SMALL.index, bm25_k1=1.5)))
    assert json.loads((old / SPARSE_DIR / "sparse.json").read_text())["k1"] == 1.5
    new = tmp_path / "k1-default"
    result = build(str(tiny_corpus), new, SMALL, previous=old)
    assert result.embedded == 0 and result.reused == result.chunks
    assert json.loads((new / SPARSE_DIR / "sparse.json").read_text())["k1"] == SMALL.index.bm25_k1 == 1.2
    assert read_index_settings(new)["index"]["bm25_k1"] == 1.2
    for name in ("terms.vocab.json", "terms.ids.npy", "terms.counts.npy"):  # the same terms, reused
        assert (new / SPARSE_DIR / name).read_bytes() == (old / SPARSE_DIR / name).read_bytes()
    # the same bytes as a fresh build with the new settings, and other scores than the old index's
    for name in ("data.csc.index.npy", "params.index.json"):
        assert (new / SPARSE_DIR / name).read_bytes() == (tiny_index[0] / SPARSE_DIR / name).read_bytes()
    assert (new / SPARSE_DIR / "data.csc.index.npy").read_bytes() != (old / SPARSE_DIR / "data.csc.index.npy").read_bytes()


def test_the_stop_words_are_the_ones_bm25s_ships() -> None:
    from bm25s.stopwords import STOPWORDS_EN

    assert sparse.STOPWORDS == frozenset(STOPWORDS_EN) and len(sparse.STOPWORDS) == 33


def random_rows(seed: int, n: int) -> tuple[list[str], list[sparse.TermCounts]]:
    import random

    rng = random.Random(seed)
    words = [f"w{i:03d}" for i in range(60)] + ["ünïcode", "os.path", "\\alpha"]
    by_sha: dict[str, sparse.TermCounts] = {}
    shas = [f"{seed}{rng.randint(0, n // 2):063d}" for _ in range(n)]  # repeated, as repeated chunk texts are
    for sha in shas:
        if sha not in by_sha:
            chosen = sorted(rng.sample(words, rng.randint(0, 12)))  # some rows have no terms at all
            by_sha[sha] = (tuple(chosen), tuple(rng.randint(1, 5) for _ in chosen))
    return shas, [by_sha[sha] for sha in shas]


def assert_same_table(a: TermTable, b: TermTable) -> None:
    assert (a.vocab, a.shas) == (b.vocab, b.shas)
    for name in ("offsets", "ids", "counts"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_table_operations_on_the_arrays_equal_building_the_table_term_by_term(seed: int) -> None:
    shas, rows = random_rows(seed, 40)
    table = TermTable.from_rows(shas, rows)
    order = list(range(39, -1, -3)) + [0, 0]
    assert_same_table(table.take([shas[i] for i in order], order),
                      TermTable.from_rows([shas[i] for i in order], [rows[i] for i in order]))
    assert_same_table(table.take([], []), TermTable.from_rows([], []))
    wanted = set(shas[::4]) | {"f" * 64}
    assert_same_table(table.select(wanted), TermTable.from_mapping(table.by_sha(wanted)))
    more_shas, more_rows = random_rows(seed + 10, 7)
    both = table.concat(TermTable.from_rows(more_shas, more_rows))
    assert_same_table(both.take(both.shas, range(len(both.shas))), TermTable.from_rows(shas + more_shas, rows + more_rows))
    assert table.token_ids() == [[i for i, c in zip(ids, counts) for _ in range(c)]
                                 for ids, counts in ((table.ids[lo:hi].tolist(), table.counts[lo:hi].tolist())
                                                     for lo, hi in zip(table.offsets[:-1], table.offsets[1:]))]


PYDOC_LIBRARY = Path("/usr/share/doc/python3.11/html/_sources/library")


def pydoc_chunk_texts(files: int = 60) -> list[str]:
    """Chunk texts of real reST pages (Debian's python3.11-doc), cut the way a default build cuts them."""
    need(PYDOC_LIBRARY.is_dir(), f"{PYDOC_LIBRARY}: install Debian's python3.11-doc")
    from ragindex.chunking import make_splitter

    splitter = make_splitter(BuildSettings().chunking, "text")
    return [t for path in sorted(PYDOC_LIBRARY.glob("*.rst.txt"))[:files]
            for t in splitter.split_text(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (1.5, 0.75), (0.9, 0.4), (2.0, 1.0), (0.0, 0.0)])
def test_scores_on_the_arrays_equal_what_bm25s_computes_text_by_text(k1: float, b: float, tmp_path: Path) -> None:
    """``bm25_scores`` is bm25s's own scoring, vectorised: the same float32 bits, and the same saved files."""
    texts = [*pydoc_chunk_texts(), "the and of", "", TEXTS[0], TEXTS[0]]  # rows without terms, repeated rows
    shas = [text_sha256(t) for t in texts]
    table = TermTable.from_rows(shas, [sparse.count_terms(t) for t in texts])
    reference = sparse.bm25s_module().BM25(k1=k1, b=b, method=sparse.BM25_METHOD)
    reference.index((table.token_ids(), {t: i for i, t in enumerate(table.vocab)}), create_empty_token=False,
                    show_progress=False)
    ours = sparse.bm25_scores(table, k1=k1, b=b)
    assert len(table.shas) > 1000 and ours["num_docs"] == reference.scores["num_docs"] == len(texts)
    for key in ("data", "indices", "indptr"):
        assert ours[key].dtype == reference.scores[key].dtype
        assert ours[key].tobytes() == reference.scores[key].tobytes(), key
    reference.save(tmp_path / "bm25s", show_progress=False)
    write_sparse_index(tmp_path / "ours", texts, shas, k1=k1, b=b)
    for path in sorted((tmp_path / "bm25s").iterdir()):
        assert (tmp_path / "ours" / path.name).read_bytes() == path.read_bytes(), path.name


def test_reuse_as_a_table_or_a_mapping_writes_the_same_bytes(tmp_path: Path) -> None:
    texts = [*TEXTS, TEXTS[0], "the and of", "New: a forklift vest, again."]
    shas = [text_sha256(t) for t in texts]
    fresh = write_sparse_index(tmp_path / "fresh", texts, shas, k1=1.5, b=0.75)
    table = TermTable.read(tmp_path / "fresh").select(shas[:4])
    as_table = write_sparse_index(tmp_path / "table", texts, shas, k1=1.5, b=0.75, reuse=table)
    as_mapping = write_sparse_index(tmp_path / "mapping", texts, shas, k1=1.5, b=0.75, reuse=table.by_sha())
    assert (fresh.tokenized, as_table.tokenized, as_mapping.tokenized) == (6, 2, 2)
    assert files_of(tmp_path / "fresh") == files_of(tmp_path / "table") == files_of(tmp_path / "mapping")


BM25S_PROBE = """
import json, logging, sys
from ragindex.sparse import bm25s_module
bm25s = bm25s_module()
skipped = sorted(m for m in ("scipy", "tqdm") if m in sys.modules)
import scipy.sparse  # the mask is lifted: whoever needs scipy later still gets it
print(json.dumps({"skipped": skipped, "bm25s": bm25s.__name__, "scipy": "scipy.sparse" in sys.modules,
                  "quiet": logging.getLogger("bm25s").getEffectiveLevel() == logging.WARNING}))
"""


def test_bm25s_is_imported_without_scipy_or_tqdm_which_stay_importable() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", BM25S_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"skipped": [], "bm25s": "bm25s", "scipy": True,
                                                                "quiet": True}
