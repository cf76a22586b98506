"""``POST /search`` takes what ``Retriever.search`` takes: a mode and filters (source path prefix, document type),
answered as the library answers them (hits with their section path); a bad mode or filter is a 400 naming the
field; a served release's own ``retrieval.mode`` stays the default. In process (FastAPI's TestClient), on a real
registry and index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragindex.registry import RunInfo
from ragindex.retrieval import Retriever
from ragindex.serve import IndexFollower, create_app
from ragindex.tracelog import TraceLog, find_trace
from tests.conftest import write_files
from tests.serve.servers import QUESTION, evaluated_version, make_two_versions
from tests.serve.test_serve_release import log_prompt


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The two-version registry (v0 in production: forklifts.md and shifts.txt) and v0 as a Retriever."""
    tmp = tmp_path_factory.mktemp("search-body")
    registry, first, second = make_two_versions(tmp)
    return registry, first, second, tmp


def client(registry, tmp: Path, name: str = "vector-index") -> tuple[TestClient, Path]:
    trace = tmp / f"trace-{name}.jsonl"
    return TestClient(create_app(IndexFollower(registry.uri, name=name, poll_s=3600), TraceLog(trace))), trace


def answer(http: TestClient, **body) -> dict:
    response = http.post("/search", json={"question": QUESTION, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_search_takes_a_mode_and_filters_and_answers_as_the_library_does(served) -> None:
    registry, first, _, tmp = served
    library = Retriever(registry.download(first))
    assert library.mode == "hybrid", "an index's default mode is hybrid"
    http, trace = client(registry, tmp)
    with http:
        default = answer(http, k=2)
        assert default["mode"] == "hybrid"
        for mode in ("dense", "sparse", "hybrid"):
            body = answer(http, k=2, mode=mode)
            expected = library.search(QUESTION, k=2, mode=mode)
            assert body["mode"] == mode
            assert [(h["chunk_id"], round(h["score"], 5)) for h in body["hits"]] == \
                   [(h.chunk_id, round(h.score, 5)) for h in expected], mode
        dense, sparse = answer(http, k=2, mode="dense"), answer(http, k=2, mode="sparse")
        assert [h["score"] for h in dense["hits"]] != [h["score"] for h in sparse["hits"]], "the mode is applied"
        assert default["hits"][0]["source"] == "forklifts.md"
        assert default["hits"][0]["section"] == ["Forklifts"], "a hit carries the headings it is under"
        by_type = answer(http, k=2, filters={"doc_type": "text"})
        assert [h["source"] for h in by_type["hits"]] == ["shifts.txt"], "the filter is applied inside the search"
        by_prefix = answer(http, k=2, mode="dense", filters={"source_prefix": ["shift", "nowhere/"]})
        assert [h["source"] for h in by_prefix["hits"]] == ["shifts.txt"]
        both = answer(http, filters={"source_prefix": "forklift", "doc_type": ["pdf", "html"]})
        assert both["hits"] == []
    logged = find_trace(trace, by_prefix["trace_id"])
    assert logged["mode"] == "dense" and logged["filters"] == {"source_prefix": ["shift", "nowhere/"]}


def test_per_source_caps_each_documents_hits_as_the_library_does(tmp_path: Path) -> None:
    from ragindex.promotion import approve
    from ragindex.registry import open_registry

    rule = "A forklift certificate is valid for three years and is renewed after a practical test."
    corpus = write_files(tmp_path / "corpus", {"forklifts.md": "# Forklifts\n\n" + "\n\n".join(
        f"{rule} Section {n}." for n in range(6)), "shifts.txt": "Forklift shifts start at ten and end at six.\n"})
    registry = open_registry(str(tmp_path / "registry"))
    ref = evaluated_version(registry, corpus, tmp_path, "run-1")
    approve(registry, ref, actor="alice")
    library = Retriever(registry.download(ref))
    http, trace = client(registry, tmp_path)
    with http:
        plain = answer(http, k=3)
        assert [h["source"] for h in plain["hits"]] == ["forklifts.md"] * 3
        capped = answer(http, k=3, per_source=1)
    assert [h["chunk_id"] for h in capped["hits"]] == [h.chunk_id for h in library.search(QUESTION, 3, per_source=1)]
    assert [h["source"] for h in capped["hits"]] == ["forklifts.md", "shifts.txt"], "one each, then none left"
    assert find_trace(trace, capped["trace_id"])["per_source"] == 1


@pytest.mark.parametrize("body, field", [
    ({"mode": "semantic"}, "mode='semantic': must be one of dense, sparse, hybrid"),
    ({"mode": 3}, "mode: "),
    ({"filters": {"doc_type": "word"}}, "filter doc_type=word: must be one of markdown, html, pdf, text"),
    ({"filters": {"source_prefix": ""}}, "filter source_prefix=''"),
    ({"filters": {"source_prefix": [3]}}, "filter source_prefix=[3]"),
    ({"filters": {"path": "a/"}}, "filters: unknown key(s) path"),
    ({"filters": "a/"}, "filters: "),
    ({"question": ""}, "question: "),
    ({"k": 0}, "k: "),
    ({"per_source": 0}, "per_source: "),
])
def test_a_bad_mode_or_filter_is_a_400_naming_the_field(served, body: dict, field: str) -> None:
    registry, _, _, tmp = served
    http, _ = client(registry, tmp)
    with http:
        response = http.post("/search", json={"question": QUESTION, **body})
    assert response.status_code == 400 and field in response.json()["detail"], response.text


def test_a_served_release_keeps_its_own_mode_as_the_default(served) -> None:
    from ragindex.context import IngestContext
    from ragindex.gate import evaluate_release
    from ragindex.promotion import approve
    from ragindex.release import assemble_release, log_release

    registry, first, _, tmp = served
    prompt = log_prompt(registry, tmp / "prompt", "PROMPT")
    manifest = assemble_release(registry, first, prompt, k=2, overrides={"retrieval.mode": "sparse"})
    release = log_release(registry, manifest, run=RunInfo("r", group="search-body")).ref
    assert evaluate_release(IngestContext(registry, "eval-search-body"), release).passed
    approve(registry, release, actor="alice", reason="sparse release")
    library = Retriever(registry.download(first))
    http, trace = client(registry, tmp, name="rag-release")
    with http:
        body = answer(http)
        assert body["release"]["ref"] == release and body["mode"] == "sparse", "the release's mode, not the index's"
        assert [h["chunk_id"] for h in body["hits"]] == [h.chunk_id for h in library.search(QUESTION, 2, "sparse")]
        asked = answer(http, mode="dense")
        assert asked["mode"] == "dense" and len(asked["hits"]) == 2, "a request may still choose its mode"
        assert [h["chunk_id"] for h in asked["hits"]] == [h.chunk_id for h in library.search(QUESTION, 2, "dense")]
    assert json.loads(json.dumps(find_trace(trace, body["trace_id"])))["mode"] == "sparse"
