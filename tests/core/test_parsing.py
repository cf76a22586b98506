"""Parsing: good formats give their text (PDF pages keep numbers), bad inputs give a ParseError saying why,
and a run over a folder reports the bad files and goes on with the good ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ragindex.parsing import ParseError, parse_document, parse_pdf_isolated
from ragindex.pipeline import CHUNKS_FILE, QUALITY_FILE, chunk_snapshot, read_chunks_file
from ragindex.sources import snapshot

from .conftest import SMALL, write_encrypted_pdf, write_files, write_pdf


def parse(path: Path, **kw):
    return parse_document(path, path.name, **kw)


def test_multi_page_pdf_keeps_page_numbers_and_skips_blank_pages(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "manual.pdf", ["First page about pallets.", "", "Third page about trucks."])
    doc = parse(pdf)
    assert doc.kind == "pdf"
    assert [p.number for p in doc.pages] == [1, 3]
    assert "pallets" in doc.pages[0].text and "pallets" not in doc.pages[1].text
    assert "trucks" in doc.pages[1].text


def test_corrupt_pdf_is_a_parse_error_saying_so(tmp_path: Path) -> None:
    good = write_pdf(tmp_path / "good.pdf", ["Some page text."]).read_bytes()
    (tmp_path / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf at all\n%%EOF\n")
    for name in ("truncated.pdf", "garbage.pdf"):
        with pytest.raises(ParseError, match="corrupt or unreadable PDF"):
            parse(tmp_path / name)


def test_encrypted_pdf_is_a_parse_error_saying_a_password_is_needed(tmp_path: Path) -> None:
    pdf = write_encrypted_pdf(tmp_path / "locked.pdf", ["Confidential salaries."])
    from pypdf import PdfReader

    assert PdfReader(str(pdf)).is_encrypted  # the fixture really is encrypted
    with pytest.raises(ParseError, match="encrypted PDF"):
        parse(pdf)


def test_zero_byte_file_is_a_parse_error(tmp_path: Path) -> None:
    for name in ("empty.txt", "empty.pdf", "empty.html"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ParseError, match=r"empty file \(0 bytes\)"):
            parse(tmp_path / name)


def test_random_binary_bytes_are_refused_as_binary(tmp_path: Path) -> None:
    rng = random.Random(1234)
    (tmp_path / "blob.txt").write_bytes(rng.randbytes(4096))
    (tmp_path / "blob.dat").write_bytes(rng.randbytes(20000))
    # control characters but no NUL: still not text
    (tmp_path / "ctl.txt").write_bytes(bytes(rng.choice(list(range(1, 9)) + [65, 66]) for _ in range(3000)))
    for name in ("blob.txt", "blob.dat", "ctl.txt"):
        with pytest.raises(ParseError, match="binary content"):
            parse(tmp_path / name)


def test_whitespace_only_text_is_a_parse_error(tmp_path: Path) -> None:
    (tmp_path / "blank.md").write_text("  \n\n \t \n")
    with pytest.raises(ParseError, match="no text could be extracted"):
        parse(tmp_path / "blank.md")


def test_latin1_text_is_decoded_correctly(tmp_path: Path) -> None:
    text = "Le café est prêt. La crème brûlée, une façade naïve et Noël à Zürich."
    (tmp_path / "fr.txt").write_bytes(text.encode("latin-1"))
    assert parse(tmp_path / "fr.txt").pages[0].text == text
    (tmp_path / "short.txt").write_bytes("café".encode("latin-1"))
    assert parse(tmp_path / "short.txt").pages[0].text == "café"


def test_utf8_with_bom_loses_the_bom_and_keeps_the_text(tmp_path: Path) -> None:
    text = "Größe und Gewicht — naïve résumé ✓"
    (tmp_path / "bom.md").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    doc = parse(tmp_path / "bom.md")
    assert doc.kind == "markdown"
    assert doc.pages[0].text == text
    assert "\ufeff" not in doc.pages[0].text


def test_html_keeps_visible_text_only(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Page title</title>
    <style>.banner { color: red }</style><script>var trackingSecret = 42;</script></head>
    <body><nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
    <h1>Returns policy</h1><p>Parcels need an authorization&nbsp;number &amp; a label.</p>
    <script type="text/javascript">alert('popup');</script><noscript>Please enable JavaScript</noscript>
    <ul><li>First item</li><li>Second item</li></ul></body></html>"""
    (tmp_path / "page.html").write_text(html)
    doc = parse(tmp_path / "page.html")
    text = doc.pages[0].text
    assert doc.kind == "html" and doc.pages[0].number is None
    for visible in ("Returns policy", "Parcels need an authorization number & a label.", "First item", "Second item"):
        assert visible in text
    for hidden in ("trackingSecret", "color: red", "Home", "About us", "alert", "enable JavaScript"):
        assert hidden not in text
    assert "First item\n" in text  # list items are separate lines


def test_pdf_parse_over_the_time_limit_is_a_parse_error(tmp_path: Path, monkeypatch) -> None:
    """A parser that never finishes (as a hostile PDF can make pypdf loop) is stopped by the limit."""
    import ragindex.parsing as parsing

    pdf = write_pdf(tmp_path / "slow.pdf", ["A perfectly fine page."])
    monkeypatch.setattr(parsing, "_PDF_WORKER", "import time\nwhile True:\n    time.sleep(1)\n")
    with pytest.raises(ParseError, match="exceeded the time limit of 2 s"):
        parse_pdf_isolated(pdf, timeout_s=2, memory_mb=1536)
    with pytest.raises(ParseError, match="time limit"):
        parse_document(pdf, "slow.pdf", timeout_s=2)
    monkeypatch.undo()
    # the real parser, same limit: the same file parses
    assert parse_document(pdf, "slow.pdf", timeout_s=2).pages[0].text == "A perfectly fine page."


def test_folder_with_good_and_bad_files_reports_failures_by_path_and_keeps_the_rest(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {
        "good.md": "# Good\n\nA readable markdown document about loading docks.",
        "sub/good.txt": "A readable text document about pallet jacks.",
        "empty.txt": b"",
        "blob.bin": random.Random(7).randbytes(2048),
        "broken.pdf": b"%PDF-1.7\n1 0 obj << >>\nnonsense",
    })
    write_pdf(corpus / "report.pdf", ["A readable PDF about cold storage."])
    write_encrypted_pdf(corpus / "locked.pdf", ["hidden"])
    snapshot(str(corpus), tmp_path / "raw")

    result = chunk_snapshot(tmp_path / "raw", tmp_path / "chunks", SMALL)

    reasons = {f["path"]: f["reason"] for f in result.failed}
    assert set(reasons) == {"empty.txt", "blob.bin", "broken.pdf", "locked.pdf"}
    assert "empty file" in reasons["empty.txt"]
    assert "binary content" in reasons["blob.bin"]
    assert "corrupt or unreadable PDF" in reasons["broken.pdf"]
    assert "encrypted PDF" in reasons["locked.pdf"]
    assert result.documents == 3
    chunks = read_chunks_file(tmp_path / "chunks")
    assert {c.source for c in chunks} == {"good.md", "sub/good.txt", "report.pdf"}
    assert result.chunks == len(chunks) == len((tmp_path / "chunks" / CHUNKS_FILE).read_text().splitlines())
    quality = json.loads((tmp_path / "chunks" / QUALITY_FILE).read_text())
    assert quality["parse_failures"] == result.failed
    assert quality["documents"] == 3


@pytest.mark.parametrize("text, encoding", [
    ("Привет, как дела? Это проверка кодировки текста на русском языке.", "cp1251"),
    ("Καλημέρα κόσμε. Αυτό είναι ένα ελληνικό κείμενο για τον έλεγχο της κωδικοποίησης. Η αποθήκη ανοίγει "
     "στις οκτώ το πρωί και κλείνει στις πέντε το απόγευμα. Οι οδηγοί παραλαμβάνουν τα δέματα από την πύλη δύο.",
     "cp1253"),
    ("Smart “quotes” – a dash and 20 € in an ordinary English cp1252 text.", "cp1252"),
    ("Zürich, café, naïve, Renée: a Latin-1 text with a few accents.", "latin-1"),
])
def test_legacy_encodings_decode_to_the_original_text(text, encoding):
    from ragindex.parsing import decode_text

    assert decode_text(text.encode(encoding)) == text
