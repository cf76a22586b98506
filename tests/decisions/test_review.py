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
from ragindex.pipeline import read_documents
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
    by_mode = given.outcome["candidate"]["by_mode"]
    assert set(by_mode) == {"dense", "sparse", "hybrid"}
    hybrid = by_mode["hybrid"]
    assert (f"| hybrid (default) | {hybrid['recall_at_1']:.3f} | {hybrid['recall_at_5']:.3f} | "
            f"{hybrid['mrr_at_10']:.3f} | {hybrid['ndcg_at_10']:.3f} |") in text, "each mode, the default marked"
    assert "| dense |" in text and "| sparse |" in text
    assert f"- Source: `{handbook.corpus}`" in text
    assert "2 added (`pallets.md`, `shifts.txt`)" in text
    assert f"This run embedded {built['embedded']} chunk texts and reused 0" in text
    assert "> \\# Pallets Euro pallets measure 1200 by 800 millimetres\\." in text, "a sample, Markdown-escaped"
    assert "**`pallets.md`** (added, § Pallets, 1 chunk):" in text, "the sample names its section"
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


def test_an_added_document_s_sample_names_its_sections_and_pii_its_section(handbook) -> None:
    (handbook.corpus / "depot.md").write_text(
        "# Depot\n\nThe depot opens at six.\n\n## Forklifts\n\nCertificates are valid for three years.\n\n"
        "## Contacts\n\nMail the depot lead at depot.lead@example.com for keys.\n")
    _, given = handbook.run()
    text = review_summary(handbook.registry, given)
    assert "**`depot.md`** (added, § Depot, 3 chunks):" in text
    assert "Sections: Depot; Depot › Forklifts; Depot › Contacts" in text
    assert "- `depot.md` at character " in text and "(§ Depot › Contacts): email `d***@example.com`" in text


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


# ---------------------------------------------------------------- what changed, per document

NIGHT_SHIFT_SENTENCES = ["# Night shift", "Night shifts start at ten and end at six in the morning.",
                         "Breaks are 30 minutes and are taken in the canteen.", "The gate is locked at midnight."]
NIGHT_SHIFT = "# Night shift\n\n" + " ".join(NIGHT_SHIFT_SENTENCES[1:]) + "\n"
CONTACTS_SENTENCES = ["## Contacts", "Call the night lead on 0151 496 0732 or mail night.lead@example.com before you "
                      "leave the site.", "Out of hours, security answers on the same number."]
CONTACTS = "## Contacts\n\n" + " ".join(CONTACTS_SENTENCES[1:]) + "\n"


def diff_blocks(text: str) -> list[list[str]]:
    """The lines of every ```diff block of a summary."""
    blocks, current = [], None
    for line in text.splitlines():
        if current is None and line.startswith("```diff"):
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def approved_first_run(handbook: Handbook, files: dict[str, str]) -> dict:
    """A production index of ``files`` (written over the handbook's corpus)."""
    write_files(handbook.corpus, files)
    built, _ = handbook.run()
    approve(handbook.registry, built["index"], actor="alice", reason="first")
    return built


def test_an_appended_paragraph_shows_whole_with_its_pii_masked_and_placed(handbook) -> None:
    approved_first_run(handbook, {"night.md": NIGHT_SHIFT})
    new_text = NIGHT_SHIFT + "\n" + CONTACTS
    (handbook.corpus / "night.md").write_text(new_text)
    _, given = handbook.run()
    text = review_summary(handbook.registry, given)
    (block,) = [b for b in diff_blocks(text) if any("Contacts" in line for line in b)]
    added = [line for line in block if line.startswith("+ ")]
    assert added == ["+ ## Contacts",
                     "+ Call the night lead on **** *** 0732 or mail n***@example.com before you leave the site.",
                     "+ Out of hours, security answers on the same number."], "the whole paragraph, by sentence"
    assert not [line for line in block if line.startswith("- ")]
    assert "night.lead@example.com" not in text and "0151 496 0732" not in text
    phone, email = new_text.index("0151 496 0732"), new_text.index("night.lead@example.com")
    assert (f"PII in the added text (masked): phone `**** *** 0732` at character {phone}; "
            f"email `n***@example.com` at character {email}") in text
    added_chars = sum(map(len, CONTACTS_SENTENCES))
    share = added_chars / (sum(map(len, NIGHT_SHIFT_SENTENCES)) + added_chars)  # the share of the new text that is new
    assert share == pytest.approx(0.51, abs=0.01)
    assert (f"**`night.md`** — {share:.0%} of the text changed: +3 sentences, −0 (+{added_chars} / −0 characters)"
            in text)


def test_a_removed_sentence_shows_as_that_sentence_in_its_context(handbook) -> None:
    approved_first_run(handbook, {})
    (handbook.corpus / "pallets.md").write_text(CORPUS["pallets.md"].replace(" Damaged pallets go to bay 4.", ""))
    _, given = handbook.run()
    text = review_summary(handbook.registry, given)
    (block,) = diff_blocks(text)
    assert block == ["@@ character 57 of production @@", "  Euro pallets measure 1200 by 800 millimetres.",
                     "- Damaged pallets go to bay 4."]
    sentences = ["# Pallets", "Euro pallets measure 1200 by 800 millimetres.", "Damaged pallets go to bay 4."]
    share = len(sentences[2]) / sum(map(len, sentences))
    assert f"**`pallets.md`** — {share:.0%} of the text changed: +0 sentences, −1 (+0 / −28 characters)" in text
    assert CORPUS["pallets.md"].index("Damaged") == 57


def test_a_huge_change_is_cut_with_a_more_line_and_the_full_diff_is_linked(handbook) -> None:
    def manual(version: int) -> str:
        return "".join(f"Rule {i} of version {version}: keep aisle {i % 7} clear of pallet number {i}.\n\n"
                       for i in range(150))

    first = approved_first_run(handbook, {"manual.md": manual(1), "gone.txt": "Old notes about the canteen. " * 20})
    (handbook.corpus / "manual.md").write_text(manual(2) + "Questions: mail safety.desk@example.com.\n")
    (handbook.corpus / "gone.txt").unlink()
    _, given = handbook.run()
    text = review_summary(handbook.registry, given)
    (block,) = diff_blocks(text)
    shown, more = block[:-1], block[-1]
    assert re.fullmatch(r"… \d+ more lines", more), more
    assert sum(len(line) + 1 for line in shown) <= 1500, "the per-document budget"
    assert "**`manual.md`** — 100% of the text changed: +151 sentences, −150" in text
    (link,) = [line for line in text.splitlines() if line.startswith("Full diff, PII masked: ")]
    path = Path(re.search(r"`([^`]+changes\.diff)`", link).group(1))
    full = path.read_text().splitlines()
    assert path.parent == handbook.registry.download(given.outcome["report"])
    manual_lines = full[2:full.index("--- vector-index:v0/gone.txt")]
    assert len(shown) + int(more.split()[1]) == len(manual_lines), "the 'more' count is what the full diff adds"
    removed = [line for line in manual_lines if line.startswith("-")]
    assert removed[0] == "-Rule 0 of version 1: keep aisle 0 clear of pallet number 0." and len(removed) == 150
    assert "+Questions: mail s***@example.com." in full and "safety.desk@example.com" not in path.read_text()
    gone = {d["path"]: d for d in read_documents(handbook.registry.download(first["index"]))}["gone.txt"]
    assert gone["chars"] == len(("Old notes about the canteen. " * 20).strip())
    assert f"Removed: `gone.txt` ({gone['chars']} characters, {gone['chunks']} chunks)" in text


def test_many_changed_documents_stay_within_the_summary_budget(handbook) -> None:
    docs = {f"area{n:02d}.txt": "".join(f"Area {n} rule {i}: report spills on line {i}.\n" for i in range(40))
            for n in range(12)}
    approved_first_run(handbook, docs)
    write_files(handbook.corpus, {p: t.replace("report", "clean") for p, t in docs.items()})
    _, given = handbook.run()
    text = review_summary(handbook.registry, given)
    changes = text[text.index("#### What changed"):text.index("#### PII")]
    assert len(changes) < 6000 + 1000, len(changes)
    listed = re.search(r"…and (\d+) more changed documents", changes)
    assert listed and len(diff_blocks(changes)) + int(listed.group(1)) == 12


def test_a_diff_block_cannot_be_closed_by_the_text_it_quotes() -> None:
    from ragindex.review import _code_block

    assert _code_block(["+ ```sh", "+ rm -rf ````"], "diff") == ["`````diff", "+ ```sh", "+ rm -rf ````", "`````"]
    assert _code_block(["  plain"]) == ["```", "  plain", "```"]
