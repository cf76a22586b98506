"""Modes and filters of ``Retriever.search``: dense, sparse and hybrid per query; filters by source prefix
and document type applied inside the search (k hits come back when k chunks match, for flat and HNSW
indexes alike), and clear errors for bad modes and filters."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ragindex.cli import main
from ragindex.errors import RagindexError, SettingsError
from ragindex.pipeline import build
from ragindex.retrieval import Retriever, SearchFilters, fuse
from ragindex.settings import BuildSettings, IndexSettings, RetrievalSettings

from .conftest import SMALL, write_files

# Forklift text everywhere, so an unfiltered top-k is full of other folders' chunks.
FORKLIFT = ("Forklift operators must wear a high-visibility vest and keep the forks lowered while driving "
            "through the warehouse aisles; the forklift horn is sounded at every blind corner.")
CORPUS = {
    "safety/forklifts.md": "# Forklifts\n\n" + "\n\n".join([FORKLIFT] * 4),
    "safety/ladders.txt": "Ladders are inspected before use. Forklift drivers never lift people on the forks.",
    "hr/leave.html": "<html><body><h1>Leave</h1><p>Forklift training days count as working days. "
                     "Holiday requests need a week's notice.</p><p>Sick leave is reported by 9 am.</p></body></html>",
    "hr/payroll.txt": "Payroll runs on the 25th. Forklift certification bonuses are paid with the next salary.",
    "hr/benefits.md": "# Benefits\n\nThe forklift team gets safety shoes every year. Dental cover starts after "
                      "three months.\n\nThe pension plan matches five percent.",
}


@pytest.fixture(scope="module", params=["flat", "hnsw"])
def hybrid_index(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus above, built once per FAISS index kind with small chunks."""
    corpus = write_files(tmp_path_factory.mktemp("hybrid") / "corpus", CORPUS)
    out = corpus.parent / "index"
    build(str(corpus), out, BuildSettings(chunking=SMALL.chunking, index=IndexSettings(kind=request.param, hnsw_m=8)))
    return out


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_each_mode_answers_per_query(hybrid_index: Path, mode: str) -> None:
    retriever = Retriever(hybrid_index)
    hits = retriever.search("When does dental cover start?", k=3, mode=mode)
    assert hits and hits[0].source == "hr/benefits.md", [h.source for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retriever.mode == "hybrid"  # a per-query mode does not change the index's default


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_prefix_filter_still_gives_k_hits_from_inside_the_prefix(hybrid_index: Path, mode: str) -> None:
    retriever = Retriever(hybrid_index)
    unfiltered = retriever.search("forklift vest forks lowered", k=3, mode=mode)
    assert not any(h.source.startswith("hr/") for h in unfiltered), "the hr/ chunks are not in the plain top-3"
    hits = retriever.search("forklift vest forks lowered", k=3, mode=mode, filters={"source_prefix": "hr/"})
    assert len(hits) == 3, "filtering inside the search, not dropping hits after the top-k"
    assert {h.source for h in hits} <= {"hr/leave.html", "hr/payroll.txt", "hr/benefits.md"}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_doc_type_filter_and_a_combined_filter(hybrid_index: Path, mode: str) -> None:
    retriever = Retriever(hybrid_index)
    html = retriever.search("forklift", k=5, mode=mode, filters=SearchFilters(doc_type=("html",)))
    assert html and {h.source for h in html} == {"hr/leave.html"}
    both = retriever.search("forklift", k=5, mode=mode, filters={"source_prefix": ["safety/"], "doc_type": "text"})
    assert both and {h.source for h in both} == {"safety/ladders.txt"}
    assert retriever.search("forklift", k=5, mode=mode, filters={"source_prefix": "nowhere/"}) == []


def test_bad_modes_and_filters_are_named(hybrid_index: Path) -> None:
    retriever = Retriever(hybrid_index)
    with pytest.raises(RagindexError, match="mode='bm42'"):
        retriever.search("forklift", mode="bm42")
    with pytest.raises(RagindexError, match="doc_type=docx: must be one of"):
        retriever.search("forklift", filters={"doc_type": "docx"})
    with pytest.raises(RagindexError, match="unknown key\\(s\\) path"):
        retriever.search("forklift", filters={"path": "hr/"})
    with pytest.raises(RagindexError, match="source_prefix"):
        retriever.search("forklift", filters={"source_prefix": [3]})


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_per_source_keeps_each_documents_best_hits_in_rank_order(hybrid_index: Path, mode: str) -> None:
    retriever = Retriever(hybrid_index)
    question = "forklift vest forks lowered"
    everything = retriever.search(question, k=retriever.index.ntotal, mode=mode)
    assert [h.source for h in everything[:2]] == ["safety/forklifts.md"] * 2, "one document leads uncapped"
    for cap in (1, 2):
        taken: dict[str, int] = {}
        expected = []
        for hit in everything:  # the uncapped ranking, each document's hits past the cap skipped
            if taken.get(hit.source, 0) < cap:
                taken[hit.source] = taken.get(hit.source, 0) + 1
                expected.append(hit.chunk_id)
        hits = retriever.search(question, k=4, mode=mode, per_source=cap)
        assert [h.chunk_id for h in hits] == expected[:4], cap
        assert max(Counter(h.source for h in hits).values()) <= cap
    assert retriever.search(question, k=4, mode=mode, per_source=4) == everything[:4], "a cap that never binds"


def test_per_source_with_a_filter_gives_fewer_than_k_when_the_documents_run_out(hybrid_index: Path) -> None:
    hits = Retriever(hybrid_index).search("forklift", k=5, filters={"source_prefix": "hr/"}, per_source=1)
    assert sorted(h.source for h in hits) == ["hr/benefits.md", "hr/leave.html", "hr/payroll.txt"]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_per_source_reads_deeper_than_the_candidates_when_one_document_fills_them(tmp_path: Path, mode: str) -> None:
    """130 chunks of one document (one text, embedded once) ahead of every other: the first 100 candidates
    hold one document only, so the search must read on to find three."""
    corpus = write_files(tmp_path / "corpus", {"manual.md": "# Vests\n\n" + "\n\n".join([FORKLIFT] * 130),
                                               "a.txt": CORPUS["hr/payroll.txt"],
                                               "b.txt": CORPUS["safety/ladders.txt"]})
    build(str(corpus), tmp_path / "index", BuildSettings(chunking=SMALL.chunking))
    retriever = Retriever(tmp_path / "index")
    assert retriever.index.ntotal > 130 > retriever.retrieval.candidates
    plain = retriever.search("forklift vest forks lowered horn", k=3, mode=mode)
    assert {h.source for h in plain} == {"manual.md"}
    hits = retriever.search("forklift vest forks lowered horn", k=3, mode=mode, per_source=1)
    assert sorted(h.source for h in hits) == ["a.txt", "b.txt", "manual.md"]
    assert hits[0].source == "manual.md", "the leading document keeps its first place"


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_a_bad_per_source_is_named(hybrid_index: Path, value) -> None:
    with pytest.raises(RagindexError, match="per_source="):
        Retriever(hybrid_index).search("forklift", per_source=value)


def test_fusion_orders_by_reciprocal_rank_or_by_weighted_scores() -> None:
    dense = [(0.9, 1), (0.8, 2), (0.1, 3)]
    sparse = [(12.0, 2), (6.0, 3)]
    rrf = fuse(dense, sparse, RetrievalSettings(fusion="rrf", rrf_k=60))
    assert [r for _, r in rrf] == [2, 3, 1]  # high in both lists beats first in one
    assert rrf[0][0] == pytest.approx(1 / 62 + 1 / 61)
    dense_heavy = fuse(dense, sparse, RetrievalSettings(fusion="weighted", dense_weight=0.9))
    assert [r for _, r in dense_heavy][0] == 1
    sparse_heavy = fuse(dense, sparse, RetrievalSettings(fusion="weighted", dense_weight=0.1))
    assert [r for _, r in sparse_heavy][0] == 2 and [r for _, r in sparse_heavy][-1] == 3


def test_the_default_fusion_keeps_one_rankings_top_hit_in_the_top_5() -> None:
    """Why rrf_k is 5 (benchmarks/README.md): the first hit of one ranking, absent from the other, against six
    chunks 10th-15th in both; with k = 60 their two small shares outweigh its one large share."""
    def ranking(head: list[int]) -> list[tuple[float, int]]:
        rows = head + list(range(1, 7))  # rows 1-6: 10th to 15th in both rankings
        return [(1.0 - i / 100, row) for i, row in enumerate(rows)]

    dense = ranking([0] + list(range(200, 208)))  # row 0: dense's first hit, not in the sparse ranking
    sparse = ranking(list(range(300, 309)))
    top5 = [row for _, row in fuse(dense, sparse, RetrievalSettings())[:5]]
    assert top5[:2] == [0, 300], top5  # the two first hits lead (tied, by row)
    old = [row for _, row in fuse(dense, sparse, RetrievalSettings(rrf_k=60))[:5]]
    assert 0 not in old and set(old) <= set(range(1, 7)), old


def test_retrieval_settings_are_checked_and_recorded(hybrid_index: Path) -> None:
    with pytest.raises(SettingsError, match="retrieval mode='fuzzy'"):
        RetrievalSettings(mode="fuzzy")
    with pytest.raises(SettingsError, match="needs the sparse"):
        IndexSettings(sparse=False)
    settings = BuildSettings(index=IndexSettings(retrieval=RetrievalSettings(mode="sparse", rrf_k=20)))
    assert BuildSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    meta = json.loads((hybrid_index / "index.json").read_text())
    assert meta["index"]["retrieval"] == {**RetrievalSettings().__dict__}


def test_dense_only_indexes_can_be_built(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {"a.txt": CORPUS["hr/payroll.txt"]})
    settings = BuildSettings(chunking=SMALL.chunking,
                             index=IndexSettings(sparse=False, retrieval=RetrievalSettings(mode="dense")))
    build(str(corpus), tmp_path / "index", settings)
    assert not (tmp_path / "index" / "sparse").exists()
    with pytest.raises(RagindexError, match="has no sparse"):
        Retriever(tmp_path / "index").search("payroll", mode="hybrid")


def test_search_command_takes_mode_and_filters(hybrid_index: Path, capsys) -> None:
    code = main(["search", str(hybrid_index), "forklift vest", "-k", "2", "--mode", "sparse",
                 "--source-prefix", "hr/", "--doc-type", "text", "--json"])
    hits = json.loads(capsys.readouterr().out)
    assert code == 0 and [h["source"] for h in hits] == ["hr/payroll.txt"]
    assert main(["search", str(hybrid_index), "forklift", "--source-prefix", "safety/"]) == 0
    out = capsys.readouterr().out
    assert "safety/" in out and "hr/" not in out
    assert main(["search", str(hybrid_index), "forklift vest", "-k", "3", "--per-source", "1", "--json"]) == 0
    sources = [h["source"] for h in json.loads(capsys.readouterr().out)]
    assert len(sources) == 3 == len(set(sources)), sources
