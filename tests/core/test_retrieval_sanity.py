"""Retrieval sanity on the shipped sample corpus, with every embedding backend: its questions find their
documents (recall@5 >= 0.8) in every retrieval mode, hybrid (the default) ranks them at least as well as
dense, and queries are encoded with the index's own backend."""

from __future__ import annotations

import json

import pytest

from ragindex.errors import RagindexError
from ragindex.indexing import read_chunks, read_index_settings
from ragindex.pipeline import build
from ragindex.retrieval import Retriever
from ragindex.settings import BuildSettings

from .conftest import REPO

SAMPLE = REPO / "include" / "sample_data"
CORPUS = SAMPLE / "corpus"
QUESTIONS = SAMPLE / "eval_questions.jsonl"
K = 5


def load_questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=["onnx", "onnx-int8", "torch"])
def sample_index(request, tmp_path_factory: pytest.TempPathFactory):
    """The sample corpus built once per backend, with the default settings otherwise."""
    assert CORPUS.is_dir() and QUESTIONS.is_file(), "the shipped sample corpus and its questions are missing"
    out = tmp_path_factory.mktemp("sample") / "index"
    result = build(str(CORPUS), out, BuildSettings(embedding_backend=request.param))
    return out, result


def test_sample_corpus_builds_without_failures(sample_index) -> None:
    out, result = sample_index
    documents = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(CORPUS).parts))
    assert result.failed == [] and result.refused == []
    assert result.documents == len(documents)
    assert {c.source for c in read_chunks(out)} == set(documents)


def test_every_expected_source_exists_in_the_corpus() -> None:
    questions = load_questions()
    assert len(questions) >= 10
    for q in questions:
        assert q["question"].strip()
        assert (CORPUS / q["expected_source"]).is_file(), q


@pytest.fixture(scope="module")
def sample_hits(sample_index) -> list[tuple[dict, list]]:
    """Each question with its top-K hits (searched once per backend)."""
    retriever = Retriever(sample_index[0])
    assert retriever.backend == read_index_settings(sample_index[0])["embedding_backend"]
    return [(q, retriever.search(q["question"], k=K)) for q in load_questions()]


def test_recall_at_5_is_at_least_0_8(sample_hits) -> None:
    found, misses = 0, []
    for q, hits in sample_hits:
        assert len(hits) == K
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        sources = [h.source for h in hits]
        if q["expected_source"] in sources:
            found += 1
        else:
            misses.append((q["question"], q["expected_source"], sources))
    recall = found / len(sample_hits)
    assert recall >= 0.8, f"recall@{K} = {recall:.2f}; misses: {misses}"


def test_pdf_hits_carry_their_page_numbers(sample_hits) -> None:
    pdf_hits = [h for _, hits in sample_hits for h in hits if h.source.endswith(".pdf")]
    assert pdf_hits
    for _question, hits in sample_hits:
        for hit in hits:
            if hit.source.endswith(".pdf"):
                assert isinstance(hit.page, int) and hit.page >= 1
            else:
                assert hit.page is None


def test_retriever_rejects_empty_questions_and_bad_k(sample_index) -> None:
    retriever = Retriever(sample_index[0])
    with pytest.raises(RagindexError, match="must not be empty"):
        retriever.search("  ")
    with pytest.raises(RagindexError, match="k=0"):
        retriever.search("forklift", k=0)


def test_switching_backend_re_embeds_and_never_mixes_vectors(tmp_path) -> None:
    torch_index = tmp_path / "torch"
    first = build(str(CORPUS), torch_index, BuildSettings(embedding_backend="torch"))
    onnx = build(str(CORPUS), tmp_path / "onnx", BuildSettings(embedding_backend="onnx"), previous=torch_index)
    assert onnx.reused == 0 and onnx.embedded == first.embedded, "another backend's vectors are not reused"
    meta = read_index_settings(tmp_path / "onnx")
    assert meta["embedding_backend"] == "onnx" and "/onnx-ort" in meta["model_identity"]
    again = build(str(CORPUS), tmp_path / "onnx-again", BuildSettings(embedding_backend="onnx"),
                  previous=tmp_path / "onnx")
    assert again.embedded == 0 and again.reused == onnx.chunks


def ranks_by_mode(index) -> dict[str, list[int | None]]:
    """Per mode, each sample question's rank of its expected document among the top-K hits (None: absent)."""
    retriever = Retriever(index)
    out = {}
    for mode in ("dense", "sparse", "hybrid"):
        ranks = []
        for q in load_questions():
            sources = [h.source for h in retriever.search(q["question"], k=K, mode=mode)]
            ranks.append(sources.index(q["expected_source"]) + 1 if q["expected_source"] in sources else None)
        out[mode] = ranks
    return out


def test_every_mode_finds_the_sample_documents_and_hybrid_is_not_worse_than_dense(sample_index) -> None:
    ranks = ranks_by_mode(sample_index[0])
    recall = {mode: sum(r is not None for r in rs) / len(rs) for mode, rs in ranks.items()}
    mrr = {mode: sum(1 / r for r in rs if r) / len(rs) for mode, rs in ranks.items()}
    assert min(recall.values()) >= 0.8, recall
    assert Retriever(sample_index[0]).mode == "hybrid"
    assert mrr["hybrid"] >= mrr["dense"], mrr
