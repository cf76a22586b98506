"""Per-document changes: texts rebuilt from real chunks, sentence units, and a diff in bounded time that
agrees with difflib's."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from difflib import SequenceMatcher

from ragindex.changes import (
    CorpusText,
    compare_document,
    corpus_changes,
    document_units,
    grouped,
    opcodes,
    page_texts,
    split_units,
    unified_diff,
)
from ragindex.chunking import chunk_document
from ragindex.parsing import Page, ParsedDocument
from ragindex.settings import ChunkingSettings

# Repeated lines and a table: where the splitter's text.find offsets used to be wrong.
HANDBOOK = "".join(
    f"## Bay {n}\n\n| item | count |\n|---|---|\n| pallets | {n} |\n\nCheck the bay every morning. Report damage "
    f"to the shift lead, e.g. a broken slat. Keep the aisle clear.\n\n- gloves\n- boots\n\n" for n in range(40))


def chunks_of(text: str, size: int = 200, overlap: int = 40, kind: str = "markdown", page: int | None = None):
    doc = ParsedDocument("handbook.md", kind, (Page(page, text),))
    return chunk_document(doc, ChunkingSettings(size, overlap, "markdown" if kind == "markdown" else "recursive"))


def test_a_document_is_rebuilt_from_its_overlapping_chunks_at_its_true_offsets() -> None:
    for size, overlap in ((200, 40), (120, 0), (1000, 150)):
        chunks = chunks_of(HANDBOOK, size, overlap)
        assert len(chunks) > 3
        ((page, rebuilt),) = page_texts(chunks)
        assert page is None and rebuilt.split() == HANDBOOK.split()
        assert all(rebuilt[i] == HANDBOOK[i] for i in range(len(rebuilt)) if not rebuilt[i].isspace())


def test_chunks_with_wrong_offsets_are_joined_on_their_overlap() -> None:
    text = HANDBOOK * 3
    chunks = chunks_of(text)
    wrong = [replace(c, start=text.find(c.text)) for c in chunks]  # what text.find gave older indexes
    assert [c.start for c in wrong] != [c.start for c in chunks]
    ((_, rebuilt),) = page_texts(wrong)
    assert rebuilt.split() == text.split()


def test_units_are_sentences_headings_list_items_and_table_rows() -> None:
    units = split_units("# Pallets\n\nEuro pallets are 1200 by 800 mm, e.g. the blue ones. Damaged ones go\nto bay 4."
                        "\n\n- gloves\n- boots\n| a | b |\n")
    assert [u.folded for u in units] == ["# Pallets", "Euro pallets are 1200 by 800 mm, e.g. the blue ones.",
                                         "Damaged ones go to bay 4.", "- gloves", "- boots", "| a | b |"]
    text = "# Pallets\n\nEuro pallets"
    assert [text[u.start:u.start + 4] for u in split_units(text)] == ["# Pa", "Euro"]


def test_pages_keep_their_numbers_and_offsets() -> None:
    chunks = chunks_of("Intro line.\n\nCall 0151 496 0732 now.", kind="pdf", page=3)
    change = compare_document("manual.pdf", [], chunks, "added")
    assert change.added_pii() == [("phone", "**** *** 0732", "page 3, character 18")]


def test_an_edit_in_the_middle_of_a_long_document_is_one_small_hunk() -> None:
    edited = HANDBOOK.replace("| pallets | 17 |", "| pallets | 71 |").replace(
        "## Bay 30\n\n", "## Bay 30\n\nBay 30 is closed for repairs until May.\n\n")
    change = compare_document("handbook.md", chunks_of(HANDBOOK), chunks_of(edited))
    assert [[(m, u.folded) for m, u in h.lines if m != " "] for h in change.hunks] == [
        [("-", "| pallets | 17 |"), ("+", "| pallets | 71 |")],
        [("+", "Bay 30 is closed for repairs until May.")]]
    assert (change.added_units, change.removed_units) == (2, 1)
    assert 0 < change.share < 0.01
    diff = unified_diff([change], "vector-index:v0", "vector-index:v1").splitlines()
    assert diff[:2] == ["--- vector-index:v0/handbook.md", "+++ vector-index:v1/handbook.md"]
    assert "+Bay 30 is closed for repairs until May." in diff
    assert sum(1 for line in diff if line.startswith("@@")) == 2


def test_the_grouping_is_difflib_s() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcdex") if rng.random() < 0.2 else ch for ch in a] + ["y"] * rng.randint(0, 2)
        matcher = SequenceMatcher(None, a, b, autojunk=False)
        for context in (0, 1, 3):
            theirs = [[c for c in g if c[0] != "equal" or c[1] < c[2]] for g in matcher.get_grouped_opcodes(context)]
            assert grouped(matcher.get_opcodes(), context) == [g for g in theirs if any(c[0] != "equal" for c in g)]


def test_repeated_sentences_cannot_make_the_diff_quadratic() -> None:
    rows = ["| - | - |"] * 20000
    a, b = rows + ["total 5"] + rows, rows[:5000] + ["total 6"] + rows
    started = time.monotonic()
    codes = opcodes(a, b)
    assert time.monotonic() - started < 2.0  # difflib alone: minutes (quadratic in the repeated rows)
    rebuilt = [x for tag, _, _, j1, j2 in codes for x in b[j1:j2]]
    assert rebuilt == b and all(a[i1:i2] == b[j1:j2] for tag, i1, i2, j1, j2 in codes if tag == "equal")
    assert sum(i2 - i1 for tag, i1, i2, _, _ in codes if tag == "equal") >= 20000


def test_a_long_document_s_units_are_quick() -> None:
    text = HANDBOOK * 25  # about 400,000 characters
    chunks = chunks_of(text, 1000, 150)
    started = time.monotonic()
    units = document_units(chunks)
    assert time.monotonic() - started < 2.0 and len(units) == 9000


def test_a_document_that_no_longer_parses_is_changed_with_all_its_text_removed() -> None:
    old = CorpusText({"handbook.md": chunks_of(HANDBOOK)}, {"handbook.md": {"path": "handbook.md", "sha256": "a"}})
    new = CorpusText({}, {"handbook.md": {"path": "handbook.md", "sha256": "b", "failed": "timed out after 30 s"}})
    (change,) = corpus_changes(old, new)
    assert (change.status, change.share, change.added_units) == ("changed", 1.0, 0)
    assert change.removed_units == len(document_units(chunks_of(HANDBOOK)))
    assert change.note == "the candidate could not parse it: timed out after 30 s"
    assert corpus_changes(old, old) == [], "same sha256, nothing to show"
