"""Cut parsed documents into chunks with stable ids, true start offsets and the section each lies in."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from ragindex.parsing import Page, ParsedDocument
from ragindex.sections import Section
from ragindex.settings import ChunkingSettings

log = logging.getLogger(__name__)


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


# The separators LangChain's RecursiveCharacterTextSplitter tries, in order: its default (plain text) and its
# ``Language.MARKDOWN`` list (regular expressions: headings, end of a code block, horizontal rules first).
PLAIN_SEPARATORS = ("\n\n", "\n", " ", "")
MARKDOWN_SEPARATORS = ("\n#{1,6} ", "```\n", "\n\\*\\*\\*+\n", "\n---+\n", "\n___+\n", "\n\n", "\n", " ", "")


@dataclass(frozen=True)
class RecursiveSplitter:
    """LangChain's ``RecursiveCharacterTextSplitter`` (langchain-text-splitters 1.1.3) as ragindex configures it:
    lengths in characters, each separator kept at the start of the piece after it, pieces stripped. A copy of
    its algorithm, because importing the library costs a fresh process ~0.5 s (its base class comes from
    langchain_core, whose import pulls pydantic and the runnables), more than an update's whole embedding; and
    so that a library upgrade cannot change the chunks of an unchanged document under the same settings
    (tests/core/test_chunking.py checks the copy against the installed library, piece for piece)."""

    chunk_size: int
    chunk_overlap: int
    separators: tuple[str, ...] = PLAIN_SEPARATORS
    regex: bool = False  # whether the separators are regular expressions (the Markdown ones are)

    def split_text(self, text: str) -> list[str]:
        """The pieces of a text, in order."""
        return self._split(text, self.separators)

    def _split(self, text: str, separators: tuple[str, ...]) -> list[str]:
        """Split on the first separator the text contains; pieces still too long are split on the next ones."""
        separator, finer = separators[-1], ()
        for i, candidate in enumerate(separators):
            if not candidate:
                separator = candidate
                break
            if re.search(candidate if self.regex else re.escape(candidate), text):
                separator, finer = candidate, separators[i + 1:]
                break
        out: list[str] = []
        short: list[str] = []
        for piece in _split_keeping_separator(text, separator if self.regex else re.escape(separator)):
            if len(piece) < self.chunk_size:
                short.append(piece)
                continue
            if short:
                out.extend(self._merge(short))
                short = []
            out.extend(self._split(piece, finer) if finer else [piece])
        if short:
            out.extend(self._merge(short))
        return out

    def _merge(self, splits: list[str]) -> list[str]:
        """Join consecutive splits into chunks of at most ``chunk_size``, each starting with up to
        ``chunk_overlap`` characters of the splits that ended the chunk before it."""
        chunks: list[str] = []
        current: list[str] = []
        total = 0
        for split in splits:
            length = len(split)
            if total + length > self.chunk_size:
                if total > self.chunk_size:
                    log.warning("Created a chunk of size %d, which is longer than the specified %d", total,
                                self.chunk_size)
                if current:
                    if chunk := "".join(current).strip():
                        chunks.append(chunk)
                    while total > self.chunk_overlap or (total + length > self.chunk_size and total > 0):
                        total -= len(current[0])
                        current = current[1:]
            current.append(split)
            total += length
        if chunk := "".join(current).strip():
            chunks.append(chunk)
        return chunks


def _split_keeping_separator(text: str, pattern: str) -> list[str]:
    """The text cut before every match of ``pattern`` (each match starts the piece after it); empty pieces
    dropped; every character when the pattern is empty."""
    if not pattern:
        return list(text)
    parts = re.split(f"({pattern})", text)
    pieces = [parts[0], *(parts[i] + parts[i + 1] for i in range(1, len(parts) - 1, 2))]
    if len(parts) % 2 == 0:
        pieces.append(parts[-1])
    return [p for p in pieces if p]


@lru_cache(maxsize=16)
def make_splitter(settings: ChunkingSettings, kind: str) -> RecursiveSplitter:
    """The splitter for a document kind (Markdown may split on headers first)."""
    if settings.splitter == "markdown" and kind == "markdown":
        return RecursiveSplitter(settings.chunk_size, settings.chunk_overlap, MARKDOWN_SEPARATORS, regex=True)
    return RecursiveSplitter(settings.chunk_size, settings.chunk_overlap)


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
    kept = np.isin(points, np.array([*SPACE_POINTS, *(ord(c) for c in keep)], dtype=np.uint32))
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
