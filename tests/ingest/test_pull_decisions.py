"""When does a run over an unchanged corpus stop at pull_documents? (real local registry, real model)

Each test builds its own registry from the same two-document corpus, so any one of them runs alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragindex.context import IngestContext
from ragindex.ingest import ingest, pull_documents
from ragindex.promotion import promote
from ragindex.registry import open_registry
from ragindex.settings import BuildSettings, ChunkingSettings


class Built:
    """A registry holding one ingest of the corpus, and a way to make contexts of later runs over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.corpus.mkdir()
        (self.corpus / "a.md").write_text("# Pallets\n\nEuro pallets measure 1200 by 800 millimetres.\n")
        (self.corpus / "b.txt").write_text("Night shifts start at ten and end at six in the morning.\n")
        self.registry = open_registry(str(root / "registry"))
        self.settings = BuildSettings(chunking=ChunkingSettings(200, 20))
        self.first = ingest(self.ctx("first", "cli"))

    def ctx(self, run_id: str, run_type: str) -> IngestContext:
        return IngestContext(self.registry, run_id, self.settings, source=str(self.corpus), run_type=run_type,
                             work_root=self.root / "work")


@pytest.fixture
def built(tmp_path) -> Built:
    return Built(tmp_path)


def test_scheduled_run_over_unchanged_corpus_stops(built):
    result = pull_documents(built.ctx("weekly", "scheduled"))
    assert result.unchanged and result.existing_index == built.first["index"]


def test_manual_run_over_unchanged_corpus_goes_on_while_its_index_is_not_production(built):
    result = pull_documents(built.ctx("again", "manual"))
    assert not result.unchanged
    assert result.raw == built.first["raw"]  # identical content: the existing version, not a new one
    assert len(built.registry.versions("raw-documents")) == 1


def test_manual_run_stops_once_that_index_is_production(built):
    promote(built.registry, built.first["index"], actor="test")
    assert pull_documents(built.ctx("after-promotion", "manual")).unchanged
