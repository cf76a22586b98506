#!/usr/bin/env python
"""Generate the PDF documents of the shipped sample corpus.

Sources live in ``include/sample_data/pdf_sources/*.txt`` and use a tiny
markup:

* ``# Title``            - document title (first line)
* ``## Heading``         - section heading
* ``- item``             - bullet item
* ``=== PAGE BREAK ===`` - forces a new page
* blank line             - paragraph separator; other lines are joined

Each source becomes ``include/sample_data/corpus/<name>.pdf``. Output is
byte-for-byte deterministic (reportlab ``invariant=1``: fixed timestamps and
document ID), so rerunning the script leaves committed PDFs unchanged.

Usage::

    .venv/bin/python scripts/make_sample_pdfs.py            # (re)write PDFs
    .venv/bin/python scripts/make_sample_pdfs.py --check    # verify only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import inch
from reportlab.platypus import (
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "include" / "sample_data"
SOURCE_DIR = SAMPLE_DIR / "pdf_sources"
CORPUS_DIR = SAMPLE_DIR / "corpus"

PAGE_BREAK = "=== PAGE BREAK ==="

_styles = getSampleStyleSheet()
TITLE = ParagraphStyle("NWTitle", parent=_styles["Title"], fontSize=18, alignment=TA_LEFT)
H2 = ParagraphStyle("NWHeading", parent=_styles["Heading2"], spaceBefore=6)
BODY = ParagraphStyle("NWBody", parent=_styles["BodyText"], fontSize=10, leading=13.5)
BULLET = ParagraphStyle("NWBullet", parent=BODY, leftIndent=0)


def _flush_paragraph(lines: list[str], story: list) -> None:
    if lines:
        story.append(Paragraph(escape(" ".join(lines)), BODY))
        lines.clear()


def _flush_bullets(items: list[str], story: list) -> None:
    if items:
        story.append(
            ListFlowable(
                [ListItem(Paragraph(escape(i), BULLET), leftIndent=14) for i in items],
                bulletType="bullet",
                start="\u2022",
                leftIndent=14,
            )
        )
        items.clear()


def parse_source(text: str) -> tuple[str, list]:
    """Turn the markup into (title, story of flowables)."""
    title = ""
    story: list = []
    para: list[str] = []
    bullets: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# ") and not title:
            title = line[2:].strip()
            story.append(Paragraph(escape(title), TITLE))
            continue
        if not line or line == PAGE_BREAK or line.startswith("## ") or line.startswith("- "):
            _flush_paragraph(para, story)
        if not line.startswith("- "):
            _flush_bullets(bullets, story)
        if not line:
            continue
        if line == PAGE_BREAK:
            story.append(PageBreak())
        elif line.startswith("## "):
            story.append(Paragraph(escape(line[3:].strip()), H2))
        elif line.startswith("- "):
            bullets.append(line[2:].strip())
        else:
            para.append(line)
    _flush_paragraph(para, story)
    _flush_bullets(bullets, story)
    story.insert(1, Spacer(1, 4))
    return title, story


def _footer(title: str):
    def draw(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.drawString(inch, 0.6 * inch, f"Northwind Logistics - {title}")
        canvas.drawRightString(LETTER[0] - inch, 0.6 * inch, f"Page {doc.page}")
        canvas.restoreState()

    return draw


def build_pdf(source: Path, target: Path) -> int:
    """Render one source file; returns the number of page-break markers + 1."""
    text = source.read_text(encoding="utf-8")
    title, story = parse_source(text)
    doc = SimpleDocTemplate(
        str(target),
        pagesize=LETTER,
        leftMargin=inch,
        rightMargin=inch,
        topMargin=inch,
        bottomMargin=inch,
        title=title,
        author="Northwind Logistics (synthetic sample)",
        subject="ragindex sample corpus",
        creator="scripts/make_sample_pdfs.py",
        invariant=1,
    )
    on_page = _footer(title)
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return text.count(PAGE_BREAK) + 1


def check_pdf(path: Path, expected_pages: int) -> list[str]:
    """Verify page count and that every page has extractable text."""
    from pypdf import PdfReader

    problems = []
    reader = PdfReader(str(path))
    if len(reader.pages) != expected_pages:
        problems.append(f"{path.name}: {len(reader.pages)} pages, expected {expected_pages}")
    for i, page in enumerate(reader.pages, start=1):
        words = len((page.extract_text() or "").split())
        if words < 50:
            problems.append(f"{path.name}: page {i} has only {words} extractable words")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify existing PDFs")
    args = parser.parse_args(argv)

    sources = sorted(SOURCE_DIR.glob("*.txt"))
    if not sources:
        print(f"no sources in {SOURCE_DIR}", file=sys.stderr)
        return 1
    problems: list[str] = []
    for src in sources:
        target = CORPUS_DIR / f"{src.stem}.pdf"
        expected = src.read_text(encoding="utf-8").count(PAGE_BREAK) + 1
        if not args.check:
            build_pdf(src, target)
        problems += check_pdf(target, expected)
        print(f"{target.relative_to(ROOT)}: {expected} page(s)")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
