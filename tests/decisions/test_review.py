"""The review: verdicts on record (the same function for the DAG and the CLI), and the summary a reviewer reads,
written from real versions (a real ingest and evaluation of a small corpus in a local registry)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ragindex.context import IngestContext
from ragindex.gate import evaluate_index
from ragindex.ingest import ingest
from ragindex.promotion import approve
from ragindex.registry import open_registry
from ragindex.review import (
    REJECTED,
    ReviewInput,
    describe,
    prior_review_of_corpus,
    record_review,
    review_needed,
    review_summary,
)
from ragindex.settings import BuildSettings, ChunkingSettings, GateSettings
from tests.conftest import write_files

CORPUS = {
    "pallets.md": "# Pallets\n\nEuro pallets measure 1200 by 800 millimetres. Damaged pallets go to bay 4.\n",
    "shifts.txt": "Night shifts start at ten and end at six in the morning. Breaks are 30 minutes.\n",
}
QUESTIONS = [{"question": "How big is a euro pallet?", "expected_source": "pallets.md"},
             {"question": "When do night shifts start?", "expected_source": "shifts.txt"}]


class Handbook:
    """A corpus, a registry, and ingest + evaluate as the DAG runs them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = write_files(root / "corpus", CORPUS)
        self.questions = root / "questions.jsonl"
        self.questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
        self.registry = open_registry(str(root / "registry"))
        self.runs = 0

    def context(self, run_id: str) -> IngestContext:
        return IngestContext(self.registry, run_id, BuildSettings(chunking=ChunkingSettings(200, 20)),
                             source=str(self.corpus), run_type="manual", work_root=self.root / "work",
                             gate=GateSettings(min_recall=0.5))

    def run(self) -> tuple[dict, ReviewInput]:
        self.runs += 1
        ctx = self.context(f"run-{self.runs}")
        built = ingest(ctx)
        outcome = evaluate_index(ctx, built["index"], self.questions)
        return built, ReviewInput(raw_ref=built["raw"], chunks_ref=built["chunks"], index_ref=built["index"],
                                  outcome=outcome.to_json(), embedded=built["embedded"], reused=built["reused"],
                                  source=str(self.corpus), pipeline_run=ctx.pipeline_run_id)


@pytest.fixture
def handbook(tmp_path) -> Handbook:
    return Handbook(tmp_path)


def test_the_first_candidate_s_summary(handbook) -> None:
    built, given = handbook.run()
    text = review_summary(handbook.registry, given)
    assert text.startswith(f"### Candidate `{built['index']}` — no production index yet")
    assert "**Gate: PASSED**" in text and "| recall@5 |" in text
    assert f"- Source: `{handbook.corpus}`" in text
    assert "2 added (`pallets.md`, `shifts.txt`)" in text
    assert f"This run embedded {built['embedded']} chunk texts and reused 0" in text
    assert "> \\# Pallets Euro pallets measure 1200 by 800 millimetres\\." in text, "a sample, Markdown-escaped"
    assert "None found" in text and "Warning" not in text
    for line in text.splitlines():  # paragraphs and list items, never lines that Markdown would run together
        assert not re.match(r"^\*\*[A-Z][a-z]+:\*\*", line), line


def test_a_changed_document_shows_its_new_text_and_where_pii_appeared(handbook) -> None:
    built, _ = handbook.run()
    approve(handbook.registry, built["index"], actor="alice", reason="first")
    (handbook.corpus / "shifts.txt").write_text(CORPUS["shifts.txt"] + "Call the night lead on 0151 496 0732 or "
                                                "mail night.lead@example.com before you leave the site.\n")
    (handbook.corpus / "forklifts.md").write_text("# Forklifts\n\nCertificates are valid for three years.\n")
    changed, given = handbook.run()
    text = review_summary(handbook.registry, given)
    assert f"production is `{built['index']}`" in text
    assert "1 added (`forklifts.md`)" in text and "1 changed (`shifts.txt`)" in text
    assert "> \\# Forklifts Certificates are valid for three years\\." in text
    assert "night lead" in text, "the changed document's new text is sampled"
    assert "night.lead@example.com" not in text and "0151 496 0732" not in text, "PII is never shown whole"
    assert "email `n***@example.com` — **new since production**" in text
    assert "phone `**** *** 0732`" in text
    assert f"reused {changed['reused']}" in text and changed["reused"] > 0


def test_a_rejected_corpus_is_said_so_at_the_top_of_its_next_review(handbook) -> None:
    built, given = handbook.run()
    decision = record_review(handbook.registry, built["index"], REJECTED, actor="bob", reason="bay 4 is closed",
                             pipeline_run="run-1")
    assert describe(decision).startswith("rejected on ") and describe(decision).endswith("by bob: “bay 4 is closed”")
    again, given = handbook.run()  # same corpus, a manual run: the same versions, a second review
    assert again["index"] == built["index"]
    prior = prior_review_of_corpus(handbook.registry, handbook.registry.get(built["index"]))
    assert prior == decision
    text = review_summary(handbook.registry, given)
    warning = text.splitlines()[2]
    assert warning.startswith("> **Warning:**") and "rejected on" in warning and "bay 4 is closed" in warning
    assert f"identical to `{built['index']}`, built earlier by run `run-1`" in text
    assert review_needed(handbook.registry, built["index"]) is None


def test_production_needs_no_review(handbook) -> None:
    built, _ = handbook.run()
    approve(handbook.registry, built["index"], actor="alice")
    assert "already holds production" in review_needed(handbook.registry, built["index"])
    with pytest.raises(ValueError, match="verdict"):
        record_review(handbook.registry, built["index"], "maybe", actor="x")
