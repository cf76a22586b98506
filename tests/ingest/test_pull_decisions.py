"""When does a run over an unchanged corpus stop at pull_documents? (real local registry, real model)"""

from __future__ import annotations

import pytest

from ragindex.ingest import IngestContext, ingest, promote, pull_documents
from ragindex.registry import open_registry
from ragindex.settings import BuildSettings, ChunkingSettings


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pull")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Pallets\n\nEuro pallets measure 1200 by 800 millimetres.\n")
    (corpus / "b.txt").write_text("Night shifts start at ten and end at six in the morning.\n")
    registry = open_registry(str(root / "registry"))
    settings = BuildSettings(chunking=ChunkingSettings(200, 20))

    def ctx(run_id: str, run_type: str) -> IngestContext:
        return IngestContext(registry, run_id, settings, source=str(corpus), run_type=run_type, work_root=root / "work")

    first = ingest(ctx("first", "cli"))
    return registry, ctx, first


def test_scheduled_run_over_unchanged_corpus_stops(built):
    registry, ctx, first = built
    result = pull_documents(ctx("weekly", "scheduled"))
    assert result.unchanged and result.existing_index == first["index"]


def test_manual_run_over_unchanged_corpus_goes_on_while_its_index_is_not_production(built):
    registry, ctx, first = built
    result = pull_documents(ctx("again", "manual"))
    assert not result.unchanged
    assert result.raw == first["raw"]  # identical content: the existing version, not a new one
    assert len(registry.versions("raw-documents")) == 1


def test_manual_run_stops_once_that_index_is_production(built):
    registry, ctx, first = built
    promote(registry, first["index"], actor="test")
    assert pull_documents(ctx("after-promotion", "manual")).unchanged
