"""Where a document's sections start: the headings of Markdown (ATX and setext), reST (underlined, optionally
overlined titles), HTML (h1-h6) and a PDF's outline (bookmarks), as ``Section`` marks on a page's text.

A section path is the titles of the headings a position is under, outermost first (``("Install", "On
Linux")``). Marks are found in the text as parsed (so offsets are true offsets into a page's text); the
chunker cuts at every mark, so a chunk lies in one section and carries its path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

SectionPath = tuple[str, ...]
MAX_TITLE_CHARS = 200  # a "title" longer than this is a paragraph that happens to be underlined


@dataclass(frozen=True)
class Section:
    """From ``start`` (a character offset into a page's text) to the next mark, the text is under ``path``."""

    start: int
    path: SectionPath


class _Outline:
    """The open headings, by level: a heading closes every open one of its level or deeper."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> SectionPath:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title))
        return self.path

    @property
    def path(self) -> SectionPath:
        return tuple(title for _, title in self.stack)


_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)*:`([^`]*)`")  # :mod:`smtplib` -> smtplib
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) -> text
_MARKUP = re.compile(r"`+|\*\*|__")


def clean_title(raw: str) -> str:
    """A heading's text without its inline markup (roles, links, code ticks, bold), spaces collapsed."""
    text = _MARKUP.sub("", _LINK.sub(r"\1", _ROLE.sub(r"\1", raw)))
    return " ".join(text.split())[:MAX_TITLE_CHARS]


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) of every line of the text, without its line break."""
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_NOT_PARAGRAPH = re.compile(r"^(?: {4,}|\t| {0,3}(?:[-*+>|#]|\d+[.)])(?:\s|$))")


def markdown_sections(text: str) -> list[Section]:
    """Marks at Markdown's ATX (``## Title``) and setext (``Title`` over ``===`` or ``---``) headings, outside
    fenced code blocks."""
    outline, marks, fence = _Outline(), [], None
    lines = _lines(text)
    for i, (offset, line) in enumerate(lines):
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        atx = _ATX.match(line)
        if atx and clean_title(atx.group(2)):
            marks.append(Section(offset, outline.enter(len(atx.group(1)), clean_title(atx.group(2)))))
            continue
        setext = _SETEXT.match(line)
        if setext and i > 0:
            title_offset, title = lines[i - 1]
            before_blank = i == 1 or not lines[i - 2][1].strip()
            if title.strip() and before_blank and not _NOT_PARAGRAPH.match(title) and clean_title(title):
                level = 1 if setext.group(1)[0] == "=" else 2
                marks.append(Section(title_offset, outline.enter(level, clean_title(title))))
    return marks


_ADORNMENT = re.compile(r"""^([!-/:-@\[-`{-~])\1{2,}[ \t]*$""")  # one punctuation character, repeated


def rest_sections(text: str) -> list[Section]:
    """Marks at reST section titles: a title line under an adornment line (and optionally over one alike) of
    at least its length, after a blank line. Levels follow the order adornment styles first appear in, as in
    docutils."""
    outline, marks, styles = _Outline(), [], {}
    lines = _lines(text)
    i = 0
    while i + 1 < len(lines):
        offset, line = lines[i]
        over = _ADORNMENT.match(line)
        blank_before = i == 0 or not lines[i - 1][1].strip()
        if over and blank_before and i + 2 < len(lines):  # overline, title (may be inset), underline
            title, under = lines[i + 1][1], lines[i + 2][1]
            if (title.strip() and under.rstrip() == line.rstrip() and len(line.rstrip()) >= len(title.strip())
                    and clean_title(title)):
                style = (over.group(1), True)
                level = styles.setdefault(style, len(styles) + 1)
                marks.append(Section(offset, outline.enter(level, clean_title(title))))
                i += 3
                continue
        under = _ADORNMENT.match(lines[i + 1][1])
        if (under and blank_before and line.strip() and not line[0].isspace() and not _ADORNMENT.match(line)
                and len(lines[i + 1][1].rstrip()) >= len(line.rstrip()) and clean_title(line)):
            style = (under.group(1), False)
            level = styles.setdefault(style, len(styles) + 1)
            marks.append(Section(offset, outline.enter(level, clean_title(line))))
            i += 2
            continue
        i += 1
    return marks


_LIGATURES = (("ffi", "\ufb03"), ("ffl", "\ufb04"), ("ff", "\ufb00"), ("fi", "\ufb01"), ("fl", "\ufb02"))


def _pdf_word(word: str) -> str:
    """A pattern for a word as a PDF's text may give it: ligatures (``ﬁ`` for ``fi``), a hyphenated line break."""
    parts, i = [], 0
    while i < len(word):
        lig = next(((seq, char) for seq, char in _LIGATURES if word.startswith(seq, i)), None)
        parts.append(f"(?:{lig[0]}|{lig[1]})" if lig else re.escape(word[i]))
        i += len(lig[0]) if lig else 1
    return "(?:-?\n)?".join(parts)


def _find_line(text: str, title: str, start: int, *, pdf: bool = False) -> tuple[int, int] | None:
    """Where ``title`` (spaces matched loosely) first begins a line at or after ``start`` (in a PDF's text:
    after a section number such as ``2.1`` or ``Chapter 3:`` at most, its words as ``_pdf_word`` allows):
    the start of that line, and the end of the match (where to look for the next title)."""
    words = title.split()
    if not words:
        return None
    lead = _NUMBERED if pdf else ""
    body = r"\s+".join(_pdf_word(w) if pdf else re.escape(w) for w in words)
    found = re.compile(rf"(?m)^[ \t]*{lead}{body}").search(text, start)
    return (found.start(), found.end()) if found else None


def located_headings(text: str, headings: Iterable[tuple[int, str]]) -> list[Section]:
    """Marks for headings known by (level, title) in document order (HTML's h1-h6), each found as a line of
    the text after the previous one; one that cannot be found is left out."""
    outline, marks, pos = _Outline(), [], 0
    for level, raw in headings:
        title = clean_title(raw)
        found = _find_line(text, title, pos)
        if found is None:
            continue
        marks.append(Section(found[0], outline.enter(level, title)))
        pos = found[1]
    return marks


_NUMBERED = r"(?:[^\n]{0,16}?[ \t.:])?"  # "1.2 ", "Chapter 3: ", "A.1 " before a heading in a PDF's text


def outline_sections(pages: Sequence[tuple[int, str]], entries: Sequence[tuple[int, str, int]]
                     ) -> dict[int, list[Section]]:
    """Each PDF page's marks from the outline's (depth, title, page) entries in outline order: an entry starts
    at the line of its page where its title is; one whose title is not found there (set another way in the
    text) marks nothing, but is in the path from the next page's top, where the path in force carries over."""
    on_page: dict[int, list[tuple[int, str]]] = {}
    for depth, title, page in entries:
        if clean_title(title):
            on_page.setdefault(page, []).append((depth, clean_title(title)))
    outline, out = _Outline(), {}
    for number, text in pages:
        marks = [Section(0, outline.path)] if outline.path else []
        search_from = 0
        for depth, title in on_page.get(number, ()):
            path = outline.enter(depth + 1, title)
            found = _find_line(text, title, search_from, pdf=True)
            if found is None:
                continue
            marks = [m for m in marks if m.start != found[0]]  # two headings on one line: the later one holds
            marks.append(Section(found[0], path))
            search_from = found[1]
        out[number] = marks
    return out
