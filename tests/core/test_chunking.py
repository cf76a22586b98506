"""Chunking: stable ids, provenance on every chunk, true offsets (also for repeated text), size/overlap."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from ragindex.chunking import Chunk, chunk_document, chunk_documents
from ragindex.errors import SettingsError
from ragindex.parsing import Page, ParsedDocument, parse_document
from ragindex.settings import BuildSettings, ChunkingSettings

from .conftest import write_pdf

PROSE = (
    "Forklift operators must complete a practical test every three years. The test covers loading, "
    "stacking and parking. Operators who fail may retake it after two weeks of supervised practice.\n\n"
    "Pedestrians keep to the marked walkways. Where a walkway crosses an aisle, drivers stop and sound "
    "the horn before crossing. Mirrors at blind corners are checked every Monday by the shift lead.\n\n"
    "Damaged racking is reported at once; a rack upright with a dent deeper than five millimetres is "
    "emptied and taken out of use until the rack inspector has approved a repair or a replacement."
)
REPEATED = "\n\n".join(["The same paragraph repeats here, word for word, again."] * 14)


def doc(text: str, path: str = "doc.txt", kind: str = "text", page: int | None = None) -> ParsedDocument:
    return ParsedDocument(path, kind, (Page(page, text),))


def true_starts(text: str, size: int, overlap: int) -> list[int]:
    """Where the splitter really cuts: split a copy of ``text`` in which every non-space character is
    unique (the splitter's cuts depend only on whitespace separators and lengths), then find the pieces."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    unique = "".join(ch if ch.isspace() else chr(0x4E00 + i) for i, ch in enumerate(text))
    splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    return [unique.index(p) for p in splitter.split_text(unique) if p.strip()]


def assert_offsets_true(text: str, chunks: list[Chunk], settings: ChunkingSettings) -> None:
    for c in chunks:
        assert text[c.start:c.start + len(c.text)] == c.text, c
    starts = [c.start for c in chunks]
    assert starts == sorted(set(starts)), "starts must strictly increase"
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.start + len(c.text)))
    uncovered = [i for i, ch in enumerate(text) if not ch.isspace() and i not in covered]
    assert uncovered == [], f"{len(uncovered)} characters are in no chunk's span"
    if settings.splitter == "recursive":
        assert starts == true_starts(text, settings.chunk_size, settings.chunk_overlap)


def test_chunking_is_deterministic() -> None:
    settings = ChunkingSettings(120, 30)
    first = chunk_document(doc(PROSE), settings)
    second = chunk_document(doc(PROSE), settings)
    assert len(first) > 3
    assert first == second
    assert len({c.chunk_id for c in first}) == len(first)  # ids are unique within a document
    other_place = chunk_document(doc(PROSE, path="elsewhere.txt"), settings)
    assert {c.chunk_id for c in other_place}.isdisjoint({c.chunk_id for c in first})


def test_every_chunk_carries_source_page_start_and_sha256(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "two.pdf", ["Page one talks about pallets and shrink wrap.",
                                           "Page two talks about trucks and loading bays."])
    parsed = parse_document(pdf, "manuals/two.pdf")
    chunks = chunk_documents([parsed, doc(PROSE, path="a.txt")], ChunkingSettings(60, 10))
    assert [c.source for c in chunks] == sorted(c.source for c in chunks)  # by path
    for c in chunks:
        assert c.source in {"manuals/two.pdf", "a.txt"}
        assert c.sha256 == hashlib.sha256(c.text.encode("utf-8")).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{32}", c.chunk_id)
        assert isinstance(c.start, int) and c.start >= 0
        assert Chunk.from_json(c.to_json()) == c
    pages = {c.page for c in chunks if c.source == "manuals/two.pdf"}
    assert pages == {1, 2}
    assert {c.page for c in chunks if c.source == "a.txt"} == {None}
    for c in chunks:
        if c.source == "manuals/two.pdf":
            page_text = parsed.pages[c.page - 1].text
            assert page_text[c.start:c.start + len(c.text)] == c.text  # offsets are within the page
            assert ("pallets" in c.text) <= (c.page == 1) and ("trucks" in c.text) <= (c.page == 2)


@pytest.mark.parametrize("size,overlap", [(120, 0), (120, 40), (60, 30), (200, 150)])
def test_offsets_are_true_for_prose(size: int, overlap: int) -> None:
    settings = ChunkingSettings(size, overlap)
    assert_offsets_true(PROSE, chunk_document(doc(PROSE), settings), settings)


@pytest.mark.parametrize("size,overlap", [(60, 0), (100, 0), (100, 20), (150, 60), (57, 49)])
def test_offsets_are_true_for_repeated_identical_paragraphs(size: int, overlap: int) -> None:
    settings = ChunkingSettings(size, overlap)
    chunks = chunk_document(doc(REPEATED), settings)
    assert len({c.text for c in chunks}) < len(chunks)  # the case: several chunks with the same text
    assert_offsets_true(REPEATED, chunks, settings)
    assert chunks[-1].start + len(chunks[-1].text) == len(REPEATED)
    assert len({c.chunk_id for c in chunks}) == len(chunks)  # same text, other place: other id


@pytest.mark.parametrize("text", ["ab " * 200, "| a | b |\n" * 80, "- item\n" * 120])
def test_offsets_are_true_for_short_periodic_text_with_overlap(text: str) -> None:
    text = text.strip()
    settings = ChunkingSettings(50, 20)
    assert_offsets_true(text, chunk_document(doc(text), settings), settings)


def test_markdown_splitter_offsets_match_the_text() -> None:
    text = "\n\n".join(["# Heading\n\nSame section body, repeated.\n\n---\n\n## Sub\n\n- item one\n- item two"] * 6)
    settings = ChunkingSettings(60, 20, "markdown")
    chunks = chunk_document(doc(text, path="x.md", kind="markdown"), settings)
    assert len(chunks) > 6
    assert_offsets_true(text, chunks, settings)


def test_size_and_overlap_settings_are_respected() -> None:
    for size, overlap in [(80, 0), (80, 30), (150, 60)]:
        chunks = chunk_document(doc(PROSE), ChunkingSettings(size, overlap))
        assert all(len(c.text) <= size for c in chunks)
        ends = [c.start + len(c.text) for c in chunks]
        overlaps = [end - nxt.start for end, nxt in zip(ends, chunks[1:])]
        assert all(o <= overlap for o in overlaps), (size, overlap, overlaps)
        if overlap == 0:
            assert all(o <= 0 for o in overlaps)
        else:
            assert any(o > 0 for o in overlaps)  # overlap is actually used
    small = chunk_document(doc(PROSE), ChunkingSettings(80, 0))
    large = chunk_document(doc(PROSE), ChunkingSettings(400, 0))
    assert len(small) > len(large) >= 2


@pytest.mark.parametrize("kwargs,named", [
    (dict(chunk_size=100, chunk_overlap=100), "chunk_overlap=100"),
    (dict(chunk_size=100, chunk_overlap=150), "chunk_overlap=150"),
    (dict(chunk_size=100, chunk_overlap=-1), "chunk_overlap=-1"),
    (dict(chunk_size=10, chunk_overlap=0), "chunk_size=10"),
    (dict(chunk_size=100, chunk_overlap=10, splitter="sentences"), "splitter='sentences'"),
])
def test_invalid_chunking_settings_raise_settings_error(kwargs: dict, named: str) -> None:
    with pytest.raises(SettingsError) as exc:
        ChunkingSettings(**kwargs)
    assert named in str(exc.value)


def test_build_settings_round_trip_and_reject_unknown_keys() -> None:
    settings = BuildSettings(chunking=ChunkingSettings(300, 30, "markdown"), parse_timeout_s=8.0)
    assert BuildSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(SettingsError, match="unknown build setting"):
        BuildSettings.from_dict(settings.to_dict() | {"chunk_sise": 3})
    with pytest.raises(SettingsError, match="chunk_overlap"):
        BuildSettings.from_dict({"chunking": {"chunk_size": 100, "chunk_overlap": 200}})


def test_the_space_points_are_exactly_what_str_isspace_accepts() -> None:
    from ragindex.chunking import SPACE_POINTS

    assert list(SPACE_POINTS) == [c for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize("repeat", [1, 400])  # a short text and one long enough for numpy's other branch
def test_the_marked_copy_keeps_exactly_the_cut_characters_and_marks_each_other_by_its_position(repeat: int) -> None:
    from ragindex.chunking import MARKDOWN_CUT_CHARS, _position_marked

    text = ("ab\u00a0c#d`e*f-g_h\u3000i\tj\nk\u2028l xy" + "".join(map(chr, range(8192, 8203)))) * repeat
    marked = _position_marked(text, MARKDOWN_CUT_CHARS)
    assert len(marked) == len(text)
    for i, (a, b) in enumerate(zip(text, marked)):
        assert (b == a) if (a.isspace() or a in MARKDOWN_CUT_CHARS) else (ord(b) == 0x20000 + i), (i, a, b)
    assert _position_marked(text, frozenset())[text.index("#")] != "#"


def test_a_chunk_record_holds_every_field() -> None:
    from dataclasses import asdict

    chunk = Chunk("id", "a.md", 2, 10, "text", "sha", ("Intro", "Setup"))
    assert chunk.to_json() == {**asdict(chunk), "section": ["Intro", "Setup"]}
    assert Chunk.from_json(chunk.to_json()) == chunk
