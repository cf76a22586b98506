"""Turn documents into text (keeping PDF page numbers); a document that cannot be parsed is reported, never fatal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

# Part of the parse cache's key: bump it whenever a change here changes the text a document parses to,
# so unchanged documents are parsed again instead of reusing text made by the old parser.
PARSER_VERSION = 2

PDF_SUFFIXES = {".pdf"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


class ParseError(Exception):
    """Why one document could not be parsed; the run goes on without it."""


@dataclass(frozen=True)
class Page:
    """Text of one page (PDF) or of a whole document (``number`` None)."""

    number: int | None
    text: str


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


def parse_document(file: Path, rel_path: str, *, timeout_s: float = 60.0, memory_mb: int = 1536) -> ParsedDocument:
    """Parse one file; raise ParseError with a reason a person can act on."""
    kind = document_kind(rel_path)
    if file.stat().st_size == 0:
        raise ParseError("empty file (0 bytes)")
    if kind == "pdf":
        pages = parse_pdf_isolated(file, timeout_s=timeout_s, memory_mb=memory_mb)
    else:
        text = decode_text(file.read_bytes())
        if kind == "html":
            text = html_to_text(text)
        pages = (Page(None, normalise_whitespace(text)),)
    pages = tuple(p for p in pages if p.text.strip())
    if not pages:
        raise ParseError("no text could be extracted (empty or image-only document)")
    return ParsedDocument(rel_path, kind, pages)


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
    """Collect visible text only; scripts, styles and other non-content elements are dropped."""

    SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "nav"}
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
             "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dt", "dd", "hr", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip_depth += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one block per paragraph."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


# The PDF worker runs in a child process: hostile PDFs (pypdf CVEs: infinite loops, decompression bombs)
# can only burn its time and memory, which are capped; the parent reads one JSON line back.
_PDF_WORKER = r"""
import json, resource, sys
limit = int(sys.argv[2]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError
    reader = PdfReader(sys.argv[1], strict=False)
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except Exception:
            ok = 0
        if not ok:
            print(json.dumps({"error": "encrypted PDF (a password is required)"})); sys.exit(0)
    pages = []
    for i, page in enumerate(reader.pages, start=1):
        pages.append([i, page.extract_text() or ""])
    print(json.dumps({"pages": pages}))
except MemoryError:
    print(json.dumps({"error": "PDF needs more memory than allowed (decompression bomb?)"}))
except FileNotDecryptedError:
    print(json.dumps({"error": "encrypted PDF (a password is required)"}))
except Exception as exc:
    print(json.dumps({"error": f"corrupt or unreadable PDF ({type(exc).__name__}: {str(exc)[:200]})"}))
"""


def parse_pdf_isolated(file: Path, *, timeout_s: float, memory_mb: int) -> tuple[Page, ...]:
    """Extract PDF pages in a child process under a time and memory limit."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PDF_WORKER, str(file), str(memory_mb)],
            capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise ParseError(f"PDF parsing exceeded the time limit of {timeout_s:g} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        reason = "killed" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise ParseError(f"PDF parser crashed ({reason}; memory limit {memory_mb} MB)")
    result = json.loads(lines[-1])
    if "error" in result:
        raise ParseError(result["error"])
    return tuple(Page(number, normalise_whitespace(text)) for number, text in result["pages"])
