"""Cut parsed documents into chunks with stable ids, true start offsets and the section each lies in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from ragindex.parsing import Page, ParsedDocument
from ragindex.sections import Section
from ragindex.settings import ChunkingSettings


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: what is embedded, plus where it came from (``section``: the titles of the
    headings it is under, outermost first; empty where the document marks none)."""

    chunk_id: str
    source: str
    page: int | None
    start: int
    text: str
    sha256: str
    section: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """One docstore / chunks.jsonl record (built field by field: ``asdict`` deep-copies, several times slower)."""
        return {"chunk_id": self.chunk_id, "source": self.source, "page": self.page, "start": self.start,
                "text": self.text, "sha256": self.sha256, "section": list(self.section)}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Chunk":
        """Inverse of ``to_json``; extra keys (e.g. a row number) are ignored, and records written before
        chunks knew their section have none."""
        return cls(**{k: record[k] for k in ("chunk_id", "source", "page", "start", "text", "sha256")},
                   section=tuple(record.get("section") or ()))


SECTION_SEPARATOR = " › "


def section_label(section: Sequence[str]) -> str:
    """How a section path is shown to people: ``Install › On Linux``."""
    return SECTION_SEPARATOR.join(section)


def text_sha256(text: str) -> str:
    """The embedding cache key's content part."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def indexed_text(chunk: Chunk, with_section: bool) -> str:
    """What is embedded and BM25-indexed for a chunk: its text, after its section path when ``with_section``
    (``IndexSettings.section_path_in_text``: measured to help retrieval, see the README)."""
    return f"{section_label(chunk.section)}\n\n{chunk.text}" if with_section and chunk.section else chunk.text


def indexed_key(chunk: Chunk, with_section: bool) -> str:
    """What the vector and term caches know a chunk's indexed text by: its sha256 (the chunk's own when the
    indexed text is the chunk's text), so the same indexed text is never embedded or tokenised twice."""
    return text_sha256(indexed_text(chunk, True)) if with_section and chunk.section else chunk.sha256


@lru_cache(maxsize=16)
def make_splitter(settings: ChunkingSettings, kind: str):
    """The langchain splitter for a document kind (Markdown may split on headers first)."""
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    common = dict(chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
    if settings.splitter == "markdown" and kind == "markdown":
        return RecursiveCharacterTextSplitter.from_language(Language.MARKDOWN, **common)
    return RecursiveCharacterTextSplitter(**common)


# Offsets: the splitter's ``start_index`` uses ``text.find`` and gets repeated text wrong, and searching
# forward from the previous piece is still wrong for periodic text (a repeated line, a table row) when
# chunks overlap: the piece also matches a period before its true place and the error grows chunk after
# chunk. So the splitter runs on a copy of the text in which every character it can cut on (whitespace,
# and the characters of the Markdown separators) is kept and every other one is replaced by a character
# that encodes its position. The splitter cuts the copy exactly where it would cut the text (its
# decisions depend only on separator matches and lengths), and each piece of the copy occurs once, at its
# true offset; the chunk is the text at that offset.
_MARK_BASE, _MARK_SPAN = 0x20000, 0x20000  # Unicode planes 2-3: one code unit each, never whitespace
MARKDOWN_CUT_CHARS = frozenset("#`*-_")  # what Markdown's separators match besides whitespace


# Every code point ``str.isspace`` accepts, for the vectorised marking below (tests/core/test_chunking.py
# checks the list against ``str.isspace``).
SPACE_POINTS = (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, *range(8192, 8203), 8232, 8233, 8239, 8287,
                12288)


def _position_marked(text: str, keep: frozenset[str]) -> str:
    """The text with every character but whitespace and ``keep`` replaced by one encoding its position (in
    C, with numpy: a per-character Python loop dominated the cost of chunking many small files)."""
    import numpy as np

    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    kept = np.zeros(len(points), dtype=bool)
    for point in (*SPACE_POINTS, *(ord(c) for c in keep)):  # np.isin's own loop for small sets; its sorting
        kept |= points == point  # branch (short texts) imports numpy.ma, ~10 ms of a small update
    marks = (_MARK_BASE + np.arange(len(points), dtype=np.uint32) % _MARK_SPAN).astype(np.uint32)
    return np.where(kept, points, marks).astype("<u4").tobytes().decode("utf-32-le")


def split_with_offsets(splitter, text: str, keep: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(start, piece) for every non-blank piece the splitter makes of ``text``, with true start offsets;
    ``keep``: the non-space characters the splitter's separators match."""
    marked = _position_marked(text, keep)
    out: list[tuple[int, str]] = []
    prev = -1
    for piece in splitter.split_text(marked):
        if not piece.strip():
            continue
        pos = marked.find(piece, prev + 1)
        if pos < 0:  # cannot happen (the splitter never rewrites text); never lose a chunk over an offset
            pos = marked.find(piece)
        out.append((pos, text[pos:pos + len(piece)]))
        prev = pos
    return out


def chunk_id(source: str, section: Sequence[str], sha: str, occurrence: int) -> str:
    """Stable across runs and edits elsewhere: the same text in the same section of the same document has the
    same id wherever the section moves (neither page nor offset is part of it; ``occurrence`` tells apart
    copies of one text within a section, in order)."""
    key = "\0".join([source, *section, "", sha, str(occurrence)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def section_spans(page: Page) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, path) of the page's stretches between section marks, covering all its text."""
    marks = [m for m in page.sections if 0 <= m.start < len(page.text)]
    if not marks or marks[0].start > 0:
        marks.insert(0, Section(0, ()))
    ends = [m.start for m in marks[1:]] + [len(page.text)]
    return [(m.start, end, m.path) for m, end in zip(marks, ends) if end > m.start]


def chunk_document(doc: ParsedDocument, settings: ChunkingSettings) -> list[Chunk]:
    """Chunks of one document, page by page so every chunk keeps its PDF page, and section by section so
    every chunk lies in one section (a section's text is split on its own; sections never share a chunk)."""
    splitter = make_splitter(settings, doc.kind)
    keep = MARKDOWN_CUT_CHARS if settings.splitter == "markdown" and doc.kind == "markdown" else frozenset()
    chunks: list[Chunk] = []
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    for page in doc.pages:
        for begin, end, path in section_spans(page):
            for start, piece in split_with_offsets(splitter, page.text[begin:end], keep):
                sha = text_sha256(piece)
                occurrence = seen[path, sha] = seen.get((path, sha), -1) + 1
                chunks.append(Chunk(chunk_id(doc.path, path, sha, occurrence), doc.path, page.number,
                                    begin + start, piece, sha, path))
    return chunks


def chunk_documents(docs: Iterable[ParsedDocument], settings: ChunkingSettings) -> list[Chunk]:
    """All chunks of a corpus in a deterministic order (by path, then position)."""
    out: list[Chunk] = []
    for doc in sorted(docs, key=lambda d: d.path):
        out.extend(chunk_document(doc, settings))
    return out
