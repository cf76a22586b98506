"""Turn documents into text (keeping PDF page numbers); a document that cannot be parsed, or that breaks one of
the per-document limits (size, or text that is not prose), is reported with the rule, never fatal.

Bounded work: a text file too large to be within ``max_document_chars``, or a PDF larger than the PDF parser's
memory limit (pypdf holds the whole file), is refused by its size, unread (``size_problem``; the snapshot
applies it before copying or hashing a byte); PDFs are parsed by a few long-lived worker processes under a
time and a memory limit (``PdfWorkers``), and a worker that hit a limit is replaced.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Sequence

from ragindex.sections import Section, located_headings, markdown_sections, outline_sections, rest_sections
from ragindex.settings import PARSE_TIMEOUT_S, DocumentLimits

# Part of the parse cache's key: bump it whenever a change here changes the text a document parses to,
# so unchanged documents are parsed again instead of reusing text made by the old parser.
PARSER_VERSION = 4  # 4: section marks (headings, PDF outline) on every page
DEFAULT_LIMITS = DocumentLimits()

DEFAULT_PDF_MEMORY_MB = 1536
PDF_SUFFIXES = {".pdf"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


class ParseError(Exception):
    """Why one document could not be parsed; the run goes on without it."""


@dataclass(frozen=True)
class Page:
    """Text of one page (PDF) or of a whole document (``number`` None), with where its sections start (in
    order of ``start``; ``ragindex.sections``)."""

    number: int | None
    text: str
    sections: tuple[Section, ...] = ()


@dataclass(frozen=True)
class ParsedDocument:
    """A document's text, in pages, with the format it was read as."""

    path: str
    kind: str
    pages: tuple[Page, ...]

    @property
    def text_length(self) -> int:
        """Characters of text, for the quality report."""
        return sum(len(p.text) for p in self.pages)


def document_kind(path: str) -> str:
    """The parser a file gets, by suffix; unknown suffixes are tried as text."""
    suffix = Path(path).suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    return "text"


def size_problem(rel_path: str, size: int, limits: DocumentLimits = DEFAULT_LIMITS,
                 memory_mb: int = DEFAULT_PDF_MEMORY_MB) -> str | None:
    """Why a file cannot be a document by its size alone, or None: such a file is refused unread, so a
    multi-GB file costs a ``stat``, not a copy and a hash."""
    if document_kind(rel_path) == "pdf":
        if size > memory_mb * 2**20:
            return (f"too large: a {_size(size)} PDF is more than the PDF parser's memory limit of "
                    f"{memory_mb:,} MB (parse_memory_mb; the parser reads the whole file into memory)")
        return None
    if size > 4 * limits.max_chars:  # a character is at most 4 bytes
        return f"too large: {_size(size)} of text is more than max_document_chars={limits.max_chars:,} characters"
    return None


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n:,} bytes"


def parse_document(file: Path, rel_path: str, *, timeout_s: float = PARSE_TIMEOUT_S,
                   memory_mb: int = DEFAULT_PDF_MEMORY_MB,
                   limits: DocumentLimits = DEFAULT_LIMITS, pdf: "PdfWorkers | None" = None) -> ParsedDocument:
    """Parse one file; raise ParseError with a reason a person can act on (the rule it broke)."""
    kind = document_kind(rel_path)
    size = file.stat().st_size
    if size == 0:
        raise ParseError("empty file (0 bytes)")
    too_large = size_problem(rel_path, size, limits, memory_mb)
    if too_large:
        raise ParseError(too_large)
    if kind == "pdf":
        if pdf is not None:
            pages = pdf.parse(file, limits.max_chars)
        else:
            pages = parse_pdf_isolated(file, timeout_s=timeout_s, memory_mb=memory_mb, max_chars=limits.max_chars)
    else:
        pages = (text_page(decode_text(file.read_bytes()), kind),)
    pages = tuple(p for p in pages if p.text.strip())
    if not pages:
        raise ParseError("no text could be extracted (empty or image-only document)")
    document = ParsedDocument(rel_path, kind, pages)
    if document.text_length > limits.max_chars:
        raise ParseError(f"too large: {document.text_length:,} characters of text, more than "
                         f"max_document_chars={limits.max_chars:,}")
    problem = prose_problem("\n".join(p.text for p in pages), limits)
    if problem:
        raise ParseError(problem)
    return document


# A word of prose or of technical text, with the punctuation around it: a natural word (``don't``,
# ``utf-eight``), a TeX control sequence with its arguments (``\alpha``, ``\let\x\relax``,
# ``\usepackage{url}``) or a name of code (``foo_bar()``, ``x.y``, ``std::vector``, ``sha256``, ``--verbose``). Not
# words: numbers, and tokens mixing letters and digits as encoded data does (``a3f4``, ``c3``, base64).
_LETTERS = r"[^\W\d_]"
_NATURAL = rf"{_LETTERS}+(?:[-'’]{_LETTERS}+)*"
_TEX = r"\\[A-Za-z@]+\*?(?:\\[A-Za-z@]+\*?|\{[^\s{}]*\}|\[[^\s\[\]]*\])*"
_NAME = rf"_*(?:{_LETTERS}{{2,}}\d+|{_LETTERS}+)(?:_+(?:{_LETTERS}+\d*|\d+))*_*"  # each run after a ``_`` is non-empty
_CODE = rf"{_NAME}(?:(?:\.|::|->){_NAME}|\.\d+)*(?:\(\))?"
_WORD = re.compile(rf"""[-@$#%"'(\[{{<`*]*(?:{_NATURAL}|{_TEX}|{_CODE})["')\]}}>`*.,;:!?%]*""")
# Punctuation alone (leader dots of a table of contents or an index, rules, bullets) is neither.
_PUNCTUATION = re.compile(r"[^\w\\]+")


def word_share(tokens: Sequence[str]) -> float:
    """The share of words among the tokens that are not punctuation alone (0 when there are none)."""
    counted = [token for token in tokens if not _PUNCTUATION.fullmatch(token)]
    return sum(1 for token in counted if _WORD.fullmatch(token)) / len(counted) if counted else 0.0


def prose_problem(text: str, limits: DocumentLimits = DEFAULT_LIMITS) -> str | None:
    """Why a text is not prose to index (encoded data, minified code, a dump, numbers), or None; the rules
    and their calibration are in ``DocumentLimits``."""
    tokens = text.split()  # one pass: the non-space characters, the long runs and the words all come from it
    non_space = sum(map(len, tokens))
    if non_space == 0:
        return None
    runs = sum(len(t) for t in tokens if len(t) >= limits.long_run and len(set(t)) >= 10)
    if runs / non_space > limits.max_long_run_share:
        return (f"not prose: {runs / non_space:.0%} of its characters are in runs of {limits.long_run}+ characters "
                f"without a space (limit {limits.max_long_run_share:.0%}): encoded data, minified code or a dump?")
    in_long_lines = sum(len(line) for line in text.splitlines() if len(line) >= limits.long_line)
    if in_long_lines / len(text) > limits.max_long_line_share:
        return (f"not prose: {in_long_lines / len(text):.0%} of it is in lines of {limits.long_line:,}+ characters "
                f"(limit {limits.max_long_line_share:.0%}): minified code or a dump?")
    words = word_share(tokens)
    if words < limits.min_word_share:
        return (f"not prose: only {words:.0%} of its tokens are words of prose or technical text (limit "
                f"{limits.min_word_share:.0%}): encoded or binary data, a hex dump or numbers?")
    return None


def text_page(text: str, kind: str) -> Page:
    """A whole text document as one page, with its sections: HTML's h1-h6, Markdown's headings, reST's titles
    (for plain text: underlined titles are how reST and much plain text mark sections)."""
    if kind == "html":
        body, headings = html_text_and_headings(text)
        body = normalise_whitespace(body)
        return Page(None, body, tuple(located_headings(body, headings)))
    text = normalise_whitespace(text)
    return Page(None, text, tuple(markdown_sections(text) if kind == "markdown" else rest_sections(text)))


def normalise_whitespace(text: str) -> str:
    """Unify line endings and trim trailing spaces so equal content gives equal chunks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_LOW_BYTES = bytes(range(0x80))
_BLANK_BYTES = bytes(range(0x21))
_NOT_C1_BYTES = bytes(range(0x80)) + bytes(range(0xA0, 0x100))


def decode_text(data: bytes) -> str:
    """Decode any encoding with fallbacks; binary junk is refused rather than indexed as noise."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    sample = data[:8192]
    if b"\x00" in sample and not (sample.startswith((b"\xff\xfe", b"\xfe\xff"))):
        raise ParseError("binary content (NUL bytes), not a text document")
    for encoding in ("utf-8", "utf-16") if sample.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8",):
        try:
            return _refuse_control_noise(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    # Not UTF-8. Western legacy text (accents here and there) is the commonest case, and detectors guess
    # it badly for mostly-ASCII files (cp775 for Latin-1), so read it as Latin-1, or cp1252 when bytes
    # 0x80-0x9F (its printable characters) occur. Text whose letters are mostly high bytes (Cyrillic,
    # Greek, ...) goes to the detector.
    high = len(data.translate(None, _LOW_BYTES))
    if high <= 0.3 * max(1, len(data.translate(None, _BLANK_BYTES))):
        if not data.translate(None, _NOT_C1_BYTES):
            return _refuse_control_noise(data.decode("latin-1"))
        try:
            return _refuse_control_noise(data.decode("cp1252"))
        except UnicodeDecodeError:
            pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            return _refuse_control_noise(str(best))
    except ImportError:  # pragma: no cover - charset_normalizer ships with requests
        pass
    return _refuse_control_noise(data.decode("latin-1"))


def _refuse_control_noise(text: str) -> str:
    """Random bytes decode 'successfully' as Latin-1; many control characters give them away."""
    sample = text[:8192]
    if not sample:
        return text
    controls = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\n\r\t\f") or 0x7F <= ord(ch) < 0xA0)
    if controls / len(sample) > 0.05:
        raise ParseError("binary content (control characters), not a text document")
    return text


class _TextExtractor(HTMLParser):
    """Collect visible text only; scripts, styles and other non-content elements are dropped. The text of
    each h1-h6 is kept aside too, with its level, for the section marks."""

    SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "nav"}
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
             "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dt", "dd", "hr", "title"}
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.headings: list[tuple[int, str]] = []
        self._heading: tuple[int, list[str]] | None = None
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip_depth += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")
            if tag in self.HEADINGS and not self._skip_depth:
                self._heading = (self.HEADINGS[tag], [])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")
            if tag in self.HEADINGS and self._heading is not None:
                level, texts = self._heading
                self.headings.append((level, " ".join("".join(texts).split())))
                self._heading = None

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)
            if self._heading is not None:
                self._heading[1].append(data)


def html_text_and_headings(html: str) -> tuple[str, list[tuple[int, str]]]:
    """Visible text of an HTML page, one block per paragraph, and its h1-h6 as (level, text) in order."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)), [h for h in parser.headings if h[1]]


# PDF workers are child processes: hostile PDFs (pypdf CVEs: infinite loops, decompression bombs) can only
# burn their time and memory, which are capped. A worker answers one JSON line per request (a file path and
# the most characters wanted) and is replaced after a file that hit a limit.
_PDF_WORKER = r"""
import json, resource, sys
limit_mb = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 1024 * 1024, limit_mb * 1024 * 1024))

def parse(path, max_chars):
    from pypdf import PdfReader
    reader = PdfReader(path, strict=False)
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except Exception:
            ok = 0
        if not ok:
            return {"error": "encrypted PDF (a password is required)"}
    pages, total = [], 0
    for i, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        total += len(text)
        if total > max_chars:
            return {"error": f"too large: more than max_document_chars={max_chars:,} characters of text by page {i}"}
        pages.append([i, text])
    return {"pages": pages, "outline": outline(reader)}

def outline(reader):
    entries = []
    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:
                continue
            if page is not None and page >= 0:
                entries.append([depth, str(item.title or ""), page + 1])
    try:
        walk(reader.outline, 0)
    except Exception:  # a broken outline costs the sections, never the text
        return entries
    return entries

for line in sys.stdin:
    request = json.loads(line)
    try:
        result = parse(request["path"], request["max_chars"])
    except MemoryError:
        result = {"error": f"PDF needs more memory than the parser's limit of {limit_mb:,} MB (parse_memory_mb): "
                           "a decompression bomb, or a file too big to parse?", "recycle": True}
    except Exception as exc:
        name = type(exc).__name__
        if name == "FileNotDecryptedError":
            result = {"error": "encrypted PDF (a password is required)"}
        else:
            result = {"error": f"corrupt or unreadable PDF ({name}: {str(exc)[:200]})"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    if result.get("recycle"):
        break
"""


def pdf_pages(pages: list[list], outline: list[list]) -> tuple[Page, ...]:
    """A PDF's pages as a worker extracted them, with the sections its outline (bookmarks) marks."""
    texts = [(number, normalise_whitespace(text)) for number, text in pages]
    marks = outline_sections(texts, [(int(d), str(t), int(p)) for d, t, p in outline])
    return tuple(Page(number, text, tuple(marks.get(number, ()))) for number, text in texts)


class PdfWorkers:
    """Up to ``size`` long-lived PDF parser processes under a time and a memory limit, shared by threads.

    Starting a Python process per PDF costs more than parsing a small PDF; these start once per run. A
    worker that runs past the time limit is killed, one that hits the memory limit exits; either way a new
    one takes its place for the next file, so one hostile file never slows the others down.
    """

    def __init__(self, size: int, *, timeout_s: float, memory_mb: int) -> None:
        self.size, self.timeout_s, self.memory_mb = max(1, size), timeout_s, memory_mb
        self._idle: queue.Queue[subprocess.Popen | None] = queue.Queue()
        for _ in range(self.size):
            self._idle.put(None)  # started on first use
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _PDF_WORKER, str(self.memory_mb)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        with self._lock:
            self._live.add(proc)
        return proc

    def _retire(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._live.discard(proc)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()

    def _answer(self, proc: subprocess.Popen) -> bytes | None:
        """The worker's reply line, or None if it sent none in time (or died)."""
        deadline = time.monotonic() + self.timeout_s
        fd = proc.stdout.fileno()
        buffer = b""
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            buffer += chunk
        return buffer

    def parse(self, file: Path, max_chars: int = DEFAULT_LIMITS.max_chars) -> tuple[Page, ...]:
        """Extract a PDF's pages with one of the workers; a ParseError says which limit it hit."""
        proc = self._idle.get() or self._spawn()
        keep = False
        try:
            try:
                proc.stdin.write((json.dumps({"path": str(file), "max_chars": max_chars}) + "\n").encode())
                proc.stdin.flush()
                line = self._answer(proc)
            except (BrokenPipeError, OSError):
                line = b""
            if line is None:
                raise ParseError(f"PDF parsing exceeded the time limit of {self.timeout_s:g} s")
            if not line:
                code = proc.poll()
                reason = "killed" if code is None or code < 0 else f"exit code {code}"
                raise ParseError(f"PDF parser crashed ({reason}; memory limit {self.memory_mb} MB)")
            result = json.loads(line)
            keep = not result.get("recycle")
            if "error" in result:
                raise ParseError(result["error"])
            return pdf_pages(result["pages"], result.get("outline") or [])
        finally:
            if keep:
                self._idle.put(proc)
            else:
                self._retire(proc)
                self._idle.put(None)

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            self._retire(proc)

    def __enter__(self) -> "PdfWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_pdf_isolated(file: Path, *, timeout_s: float, memory_mb: int,
                       max_chars: int = DEFAULT_LIMITS.max_chars) -> tuple[Page, ...]:
    """Extract one PDF's pages in a child process under a time and memory limit."""
    with PdfWorkers(1, timeout_s=timeout_s, memory_mb=memory_mb) as workers:
        return workers.parse(file, max_chars)
