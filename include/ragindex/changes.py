"""What changed in each document between production and a candidate index, for the person who reviews it.

A document's text is rebuilt from its chunks (they overlap; each starts at its true offset in its page),
cut into sentences (and headings, list items, table rows: the blocks of a page), and the two versions'
sentences are compared with difflib. A sentence is the unit so that an appended paragraph shows whole and a
removal shows the sentences it took, never a fragment of a chunk. Comparison is on whitespace-folded text:
a chunk boundary that moved does not count as a change.

The full diff (``changes.diff``, unified format, PII masked) is written into the eval-report version by the
gate; the review summary shows a bounded part of it and links the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from ragindex.chunking import Chunk

CHANGES_FILE = "changes.diff"
CONTEXT_UNITS = 1  # unchanged sentences shown around each change
ADDED, REMOVED, CHANGED = "added", "removed", "changed"
Opcode = tuple[str, int, int, int, int]  # difflib's (tag, i1, i2, j1, j2)
SEARCH_WORK = 2_000_000  # above this (pairs of equal sentences to look at), repeated sentences are junk to difflib
LONG_UNIT = 1000  # a "sentence" longer than this (no sentence punctuation) is also cut at its line breaks

# A new block starts at a line that is a heading, a list item, a quote or a table row.
_BLOCK_START = re.compile(r"[ \t]*(?:#{1,6}[ \t]|[-*+>|][ \t]|\|\S|\d{1,3}[.)][ \t])")
_HEADING = re.compile(r"[ \t]*#{1,6}[ \t]")
# A sentence ends at . ! ? (perhaps closed by a quote or bracket) before a space and a character that is
# not a lower-case letter ("e.g. the" stays one sentence).
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]”’]))\s+(?=[^\sa-z])")


@dataclass(frozen=True)
class Unit:
    """One sentence (or heading, list item, table row) of a document, where it starts in its page."""

    page: int | None
    start: int
    text: str

    @cached_property
    def folded(self) -> str:
        """What is compared and shown: whitespace runs folded to one space."""
        return " ".join(self.text.split())

    def where(self, offset: int = 0) -> str:
        """``page 3, character 120`` or ``character 120``: how the review names a position."""
        at = f"character {self.start + offset}"
        return f"page {self.page}, {at}" if self.page is not None else at


# ---------------------------------------------------------------- a document's text from its chunks

def page_texts(chunks: Iterable[Chunk]) -> list[tuple[int | None, str]]:
    """Each page's text rebuilt from the document's chunks (in their order), with character offsets as in the
    parsed text: overlaps are written once, and a gap between chunks (whitespace the splitter dropped) is
    filled with line breaks of its length. Chunks whose offsets disagree with their text (indexes built before
    offsets were exact) are joined on their longest overlap instead."""
    pages: dict[int | None, list[str]] = {}
    last: dict[int | None, Chunk] = {}  # per page, the chunk that reaches furthest
    for chunk in chunks:
        parts, prev = pages.setdefault(chunk.page, []), last.get(chunk.page)
        overlap = prev.start + len(prev.text) - chunk.start if prev is not None else -chunk.start
        if overlap <= 0:
            parts += ["\n" * min(-overlap, 2) + " " * max(0, -overlap - 2), chunk.text]
        elif prev.start <= chunk.start and (prev.text[chunk.start - prev.start:][:len(chunk.text)]
                                            == chunk.text[:overlap]):
            if overlap >= len(chunk.text):
                continue  # inside what is written already
            parts.append(chunk.text[overlap:])
        else:
            parts.append(_joined(prev.text, chunk.text))
        last[chunk.page] = chunk
    return [(page, "".join(parts)) for page, parts in pages.items()]


def _joined(tail: str, text: str) -> str:
    """What ``text`` adds after ``tail`` when the offsets cannot be trusted: the part after its longest
    beginning that ``tail`` ends with (a prefix function, linear in their lengths), else all of it after a
    paragraph break."""
    s = text + "\0" + tail
    pi = [0] * len(s)
    for i in range(1, len(s)):
        k = pi[i - 1]
        while k and s[i] != s[k]:
            k = pi[k - 1]
        pi[i] = k + (s[i] == s[k])
    overlap = pi[-1] if tail else 0
    return text[overlap:] if overlap else "\n\n" + text


def split_units(text: str, page: int | None = None) -> list[Unit]:
    """The sentences and blocks of a page's text, each with its start offset."""
    units: list[Unit] = []
    for start, block in _blocks(text):
        pos = 0
        for m in _SENTENCE_END.finditer(block):
            units.extend(_unit(page, start + pos, block[pos:m.start()]))
            pos = m.end()
        units.extend(_unit(page, start + pos, block[pos:]))
    return units


def _blocks(text: str) -> Iterator[tuple[int, str]]:
    """(offset, block) for the paragraphs, headings, list items and table rows of a text."""
    block_start, lines, pos = 0, [], 0
    for line in text.splitlines(keepends=True):
        blank = not line.strip()
        if blank or _BLOCK_START.match(line) or (lines and _HEADING.match(lines[0])):
            if lines:
                yield block_start, "".join(lines)
            lines, block_start = [], pos
        if not blank:
            if not lines:
                block_start = pos
            lines.append(line)
        pos += len(line)
    if lines:
        yield block_start, "".join(lines)


def _unit(page: int | None, start: int, piece: str) -> list[Unit]:
    """The piece as a unit (stripped, at its true start), cut at line breaks when it is very long."""
    stripped = piece.strip()
    if not stripped:
        return []
    start += len(piece) - len(piece.lstrip())
    if len(stripped) <= LONG_UNIT or "\n" not in stripped:
        return [Unit(page, start, stripped)]
    out, pos = [], 0
    for line in stripped.splitlines(keepends=True):
        if line.strip():
            out.append(Unit(page, start + pos + len(line) - len(line.lstrip()), line.strip()))
        pos += len(line)
    return out


def document_units(chunks: Iterable[Chunk]) -> list[Unit]:
    """A document's sentences, page by page."""
    return [u for page, text in page_texts(chunks) for u in split_units(text, page)]


# ---------------------------------------------------------------- the comparison

@dataclass(frozen=True)
class Hunk:
    """A run of changed sentences with unchanged ones around it: (mark, unit) lines, mark one of ' ', '-',
    '+', and where it starts in each version (sentence numbers, for the unified diff's header)."""

    lines: tuple[tuple[str, Unit], ...]
    old_start: int
    old_count: int
    new_start: int
    new_count: int

    def where(self) -> str:
        """Where the change is: its first added sentence in the candidate, else its first removed one in production."""
        added = next((u for m, u in self.lines if m == "+"), None)
        if added is not None:
            return f"{added.where()} of the candidate"
        return f"{next(u for m, u in self.lines if m == '-').where()} of production"

    def header(self) -> str:
        """``@@ -4,2 +4,3 @@ character 120 of the candidate``: sentence ranges, then where the change starts."""
        return (f"@@ -{self.old_start + (self.old_count > 0)},{self.old_count} "
                f"+{self.new_start + (self.new_count > 0)},{self.new_count} @@ {self.where()}")


@dataclass(frozen=True)
class DocumentChange:
    """How one document's text differs between production and the candidate."""

    path: str
    status: str
    old_chars: int
    new_chars: int
    added_chars: int
    removed_chars: int
    added_units: int
    removed_units: int
    hunks: tuple[Hunk, ...] = ()
    note: str = ""

    @property
    def share(self) -> float:
        """The share of the longer version that is not found unchanged in the other (0 to 1): an appended
        third is 33%, a removed tenth 10%, a rewrite 100%."""
        longer = max(self.old_chars, self.new_chars)
        unchanged = self.new_chars - self.added_chars
        return 1 - unchanged / longer if longer else 0.0

    def added_pii(self) -> list[tuple[str, str, str]]:
        """(kind, masked value, position) of every PII finding in the added sentences."""
        from ragindex.quality import mask_pii, pii_matches

        return [(kind, mask_pii(kind, unit.text[a:b]), unit.where(a))
                for hunk in self.hunks for mark, unit in hunk.lines if mark == "+"
                for kind, a, b in pii_matches(unit.text)]


def opcodes(a: Sequence[str], b: Sequence[str]) -> list[Opcode]:
    """difflib's opcodes turning ``a`` into ``b``, in bounded time: the common beginning and end are matched
    first, and where the middle's repeated sentences (table rows, blank list items) would make difflib's
    search quadratic, they are junk to it (``autojunk``) rather than anchors."""
    from collections import Counter

    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    mid_a, mid_b = a[head:len(a) - tail], b[head:len(b) - tail]
    in_b = Counter(mid_b)
    work = sum(in_b[x] for x in mid_a)  # what one longest-match search over the middle looks at
    middle = SequenceMatcher(None, mid_a, mid_b, autojunk=work > SEARCH_WORK).get_opcodes() if mid_a or mid_b else []
    codes = [("equal", 0, head, 0, head)] if head else []
    codes += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle]
    if tail:
        codes.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    merged: list[Opcode] = []
    for code in codes:
        if code[0] == "equal" and code[1] == code[2]:
            continue
        if merged and merged[-1][0] == code[0] == "equal":
            code = ("equal", merged[-1][1], code[2], merged[-1][3], code[4])
            merged.pop()
        merged.append(code)
    return merged


def grouped(codes: Sequence[Opcode], context: int) -> list[list[Opcode]]:
    """Opcodes in hunks with ``context`` equal items around each change (difflib's ``get_grouped_opcodes``,
    for opcodes computed above)."""
    groups: list[list[Opcode]] = []
    group: list[Opcode] = []
    last = len(codes) - 1
    for n, (tag, i1, i2, j1, j2) in enumerate(codes):
        if tag != "equal":
            group.append((tag, i1, i2, j1, j2))
            continue
        if group:  # the context after the change, and a new hunk if the gap is wide
            if n == last or i2 - i1 > 2 * context:
                group.append(("equal", i1, min(i2, i1 + context), j1, min(j2, j1 + context)))
                groups.append(group)
                group = []
            else:
                group.append((tag, i1, i2, j1, j2))
                continue
        if n < last:  # the context before the next change
            group.append(("equal", max(i1, i2 - context), i2, max(j1, j2 - context), j2))
    if group:
        groups.append(group)
    return [[code for code in g if code[0] != "equal" or code[1] < code[2]] for g in groups]


def compare_document(path: str, old: Sequence[Chunk], new: Sequence[Chunk], status: str = CHANGED,
                     note: str = "", context: int = CONTEXT_UNITS) -> DocumentChange:
    """The sentence diff of one document's two versions (either may have no chunks: added, removed, failed)."""
    old_units, new_units = document_units(old), document_units(new)
    codes = opcodes([u.folded for u in old_units], [u.folded for u in new_units])
    hunks = []
    for group in grouped(codes, context):
        lines: list[tuple[str, Unit]] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [(" ", u) for u in new_units[j1:j2]]
                continue
            lines += [("-", u) for u in old_units[i1:i2]] + [("+", u) for u in new_units[j1:j2]]
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        hunks.append(Hunk(tuple(lines), i1, i2 - i1, j1, j2 - j1))
    equal = [(j1, j2) for tag, _, _, j1, j2 in codes if tag == "equal"]
    matched = sum(len(u.folded) for j1, j2 in equal for u in new_units[j1:j2])
    kept_units = sum(j2 - j1 for j1, j2 in equal)
    old_chars, new_chars = (sum(len(u.folded) for u in units) for units in (old_units, new_units))
    return DocumentChange(path, status, old_chars, new_chars, new_chars - matched, old_chars - matched,
                          len(new_units) - kept_units, len(old_units) - kept_units, tuple(hunks), note)


@dataclass(frozen=True)
class CorpusText:
    """What the comparison reads of one version: its chunks by document and its document summaries
    (``documents.jsonl``: sha256, size, failure) by path."""

    chunks: Mapping[str, Sequence[Chunk]]
    documents: Mapping[str, dict] = field(default_factory=dict)

    @classmethod
    def of_folder(cls, folder: Path) -> "CorpusText":
        """An index folder's (docstore) or a chunks folder's (chunks.jsonl) text."""
        from ragindex.indexing import DOCSTORE_FILE, read_chunks
        from ragindex.pipeline import chunks_by_source, read_chunks_file, read_documents

        chunks = read_chunks(folder) if (Path(folder) / DOCSTORE_FILE).is_file() else read_chunks_file(folder)
        return cls(chunks_by_source(chunks), {d["path"]: d for d in read_documents(folder)})


def corpus_changes(old: CorpusText, new: CorpusText) -> list[DocumentChange]:
    """Every document whose content differs (by sha256), changed ones first, then added, then removed, each
    by path. A document that now fails to parse is changed, with all its text removed and the reason noted."""
    paths = sorted(set(old.documents) | set(new.documents))
    out = []
    for path in paths:
        before, after = old.documents.get(path), new.documents.get(path)
        if before is not None and after is not None and before.get("sha256") == after.get("sha256"):
            continue
        note = ""
        if after is not None and after.get("failed"):
            note = f"the candidate could not parse it: {after['failed']}"
        elif before is not None and before.get("failed"):
            note = "production could not parse it"
        status = ADDED if before is None else REMOVED if after is None else CHANGED
        out.append(compare_document(path, old.chunks.get(path, ()), new.chunks.get(path, ()), status, note))
    order = {CHANGED: 0, ADDED: 1, REMOVED: 2}
    return sorted(out, key=lambda c: (order[c.status], c.path))


def changes_between(candidate_dir: Path, production_dir: Path) -> list[DocumentChange]:
    """The per-document changes from a production index folder to a candidate's (index or chunks folder)."""
    return corpus_changes(CorpusText.of_folder(production_dir), CorpusText.of_folder(candidate_dir))


# ---------------------------------------------------------------- the full diff

def unified_diff(changes: Sequence[DocumentChange], old_label: str = "production",
                 new_label: str = "candidate") -> str:
    """Every change as a unified diff, one sentence a line, PII masked: the file the review links."""
    from ragindex.quality import mask_text

    out: list[str] = []
    for change in changes:
        note = f" ({change.note})" if change.note else ""
        out += [f"--- {old_label}/{change.path}" if change.status != ADDED else "--- /dev/null",
                f"+++ {new_label}/{change.path}{note}" if change.status != REMOVED else f"+++ /dev/null{note}"]
        if not change.hunks:
            out.append(f"# content changed, text unchanged{note}")
        for hunk in change.hunks:
            out.append(hunk.header())
            out += [mark + mask_text(unit.folded) for mark, unit in hunk.lines]
    return "\n".join(out) + ("\n" if out else "")


def write_changes(folder: Path, changes: Sequence[DocumentChange], old_label: str = "production",
                  new_label: str = "candidate") -> Path:
    """``changes.diff`` in ``folder`` (a report folder being written)."""
    target = Path(folder) / CHANGES_FILE
    target.write_text(unified_diff(changes, old_label, new_label), encoding="utf-8")
    return target
