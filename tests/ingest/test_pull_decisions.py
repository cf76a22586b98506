"""When does a run over a corpus that already has an index stop at pull_documents? (real local registry, real
model). Each test builds its own registry from the same two-document corpus, so any one of them runs alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ragindex.context import IngestContext
from ragindex.gate import evaluate_index
from ragindex.ingest import ingest, pull_documents
from ragindex.promotion import approve
from ragindex.registry import open_registry
from ragindex.review import REJECTED, record_review
from ragindex.settings import BuildSettings, ChunkingSettings

PALLETS = "# Pallets\n\nEuro pallets measure 1200 by 800 millimetres.\n"


class Built:
    """A registry holding one ingest of the corpus, and a way to make contexts of later runs over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.corpus.mkdir()
        (self.corpus / "a.md").write_text(PALLETS)
        (self.corpus / "b.txt").write_text("Night shifts start at ten and end at six in the morning.\n")
        self.questions = root / "questions.jsonl"
        self.questions.write_text(json.dumps({"question": "How big is a euro pallet?", "expected_source": "a.md"}))
        self.registry = open_registry(str(root / "registry"))
        self.settings = BuildSettings(chunking=ChunkingSettings(200, 20))
        self.first = ingest(self.ctx("first", "cli"))

    def ctx(self, run_id: str, run_type: str, as_of: str | None = None) -> IngestContext:
        return IngestContext(self.registry, run_id, self.settings, source=str(self.corpus), run_type=run_type,
                             as_of=as_of, work_root=self.root / "work")

    def approve(self, index_ref: str) -> None:
        evaluate_index(self.ctx(f"eval-{index_ref}", "cli"), index_ref, self.questions)
        approve(self.registry, index_ref, actor="test")


@pytest.fixture
def built(tmp_path) -> Built:
    return Built(tmp_path)


def test_scheduled_run_over_unchanged_corpus_stops(built):
    result = pull_documents(built.ctx("weekly", "scheduled"))
    assert result.unchanged and result.existing_index == built.first["index"]
    assert result.raw == built.first["raw"] and "no new versions" in result.message


def test_manual_run_over_unchanged_corpus_goes_on_while_its_index_is_not_production(built):
    result = pull_documents(built.ctx("again", "manual"))
    assert not result.unchanged
    assert result.raw == built.first["raw"]  # identical content: the existing version, not a new one
    assert len(built.registry.versions("raw-documents")) == 1


def test_manual_run_stops_once_that_index_is_production(built):
    built.approve(built.first["index"])
    stopped = pull_documents(built.ctx("after-promotion", "manual"))
    assert stopped.unchanged and "holds 'production'" in stopped.message


def test_a_reverted_corpus_is_its_old_version_whatever_the_date(built):
    """A promoted, B rejected, A back: the next scheduled run (as of another date) creates nothing."""
    built.approve(built.first["index"])
    doc = built.corpus / "a.md"
    doc.write_text(PALLETS + "\nPallets are stacked at most three high.\n")
    second = ingest(built.ctx("edit", "manual"))
    record_review(built.registry, second["index"], REJECTED, actor="reviewer", reason="wrong height")
    doc.write_text(PALLETS)
    long_ago = 1_600_000_000
    for path in built.corpus.iterdir():
        os.utime(path, (long_ago, long_ago))
    counts = {n: len(built.registry.versions(n)) for n in ("raw-documents", "processed-chunks", "vector-index")}
    weekly = pull_documents(built.ctx("weekly", "scheduled", as_of="2026-11-30T03:00:00+00:00"))
    assert weekly.unchanged and weekly.existing_index == built.first["index"] and weekly.raw == built.first["raw"]
    assert {n: len(built.registry.versions(n)) for n in counts} == counts, "no new version of anything"


def test_a_scheduled_run_over_a_rejected_corpus_does_not_ask_again(built):
    record_review(built.registry, built.first["index"], REJECTED, actor="reviewer", reason="no")
    assert pull_documents(built.ctx("weekly", "scheduled")).unchanged
    assert not pull_documents(built.ctx("by-hand", "manual")).unchanged, "a person may ask for a second review"
