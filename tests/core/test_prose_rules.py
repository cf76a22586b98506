"""The prose rules on both sides: no real document is refused (every PDF of Debian's texlive-latex-base-doc,
TeX Live's symbol list amssymb.pdf, every reST source of python3.11-doc, the sample corpus), parsed and chunked
the way a build does (PDFs in the limited workers, the default limits); while base64, hex dumps, number tables
and minified code stay refused, each by a rule that names what it saw."""

from __future__ import annotations

import base64
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragindex.parsing import ParseError, PdfWorkers, parse_document, prose_problem, word_share
from ragindex.pipeline import bounded_chunks
from ragindex.settings import BuildSettings
from tests.conftest import need

from .conftest import REPO

TEXLIVE_LIST = Path("/var/lib/dpkg/info/texlive-latex-base-doc.list")  # dpkg's list of the package's files
AMSSYMB = Path("/usr/share/doc/texlive-doc/fonts/amsfonts/amssymb.pdf")  # texlive-base, a dependency of it
PYDOC = Path("/usr/share/doc/python3.11/html/_sources")


def refusals(files: list[tuple[Path, str]], settings: BuildSettings = BuildSettings()) -> dict[str, str]:
    """path -> why, for every file a build with ``settings`` would refuse (parsing or chunking)."""
    with PdfWorkers(2, timeout_s=settings.parse_timeout_s, memory_mb=settings.parse_memory_mb) as workers:

        def one(item: tuple[Path, str]) -> tuple[str, str | None]:
            file, rel = item
            try:
                doc = parse_document(file, rel, timeout_s=settings.parse_timeout_s,
                                     memory_mb=settings.parse_memory_mb, limits=settings.documents, pdf=workers)
            except ParseError as exc:
                return rel, str(exc)
            return rel, bounded_chunks(doc, settings)[1]

        with ThreadPoolExecutor(max_workers=2) as pool:
            return {rel: why for rel, why in pool.map(one, files) if why}


@pytest.mark.slow
def test_no_pdf_of_texlive_latex_base_doc_is_refused() -> None:
    """270 real PDFs, from one-page notes to the 1,611 pages of source3.pdf, with the default limits."""
    need(TEXLIVE_LIST.is_file() and AMSSYMB.is_file(),
         "texlive-latex-base-doc is not installed (apt-get install texlive-latex-base-doc; scripts/system-deps.sh)")
    pdfs = sorted({Path(line.strip()) for line in TEXLIVE_LIST.read_text().splitlines()
                   if line.strip().endswith(".pdf")} | {AMSSYMB})
    assert len(pdfs) >= 200, f"{TEXLIVE_LIST} lists only {len(pdfs)} PDFs"
    assert refusals([(p, str(p)) for p in pdfs]) == {}


def test_no_source_of_python_doc_nor_of_the_sample_corpus_is_refused() -> None:
    need(PYDOC.is_dir(), "python3.11-doc is not installed (apt-get install python3.11-doc; scripts/system-deps.sh)")
    sources = sorted(PYDOC.rglob("*.txt"))
    assert len(sources) >= 400, f"{PYDOC} has only {len(sources)} sources"
    sample = sorted(p for p in (REPO / "include/sample_data/corpus").rglob("*") if p.is_file())
    assert refusals([(p, str(p)) for p in [*sources, *sample]]) == {}


def test_tokens_of_technical_text_are_words_and_encoded_tokens_are_not() -> None:
    words = ["\\alpha", "\\leftarrow", "\\let\\square\\relax", "\\usepackage{amssymb}", "foo_bar()", "x.y",
             "os.path.join", "std::vector", "__init__", "sha256", "--verbose", "(don't", "well-known,", "`x.y`"]
    assert [w for w in words if word_share([w]) != 1.0] == []
    not_words = ["a3f4c2d1", "c3", "7f45", "0x7f", "42", "3.14", "1,2,3", "QUJDRE4=ZmdoaWpr", "a=function(b,c){return"]
    assert [w for w in not_words if word_share([w]) != 0.0] == []
    assert word_share(["\\alpha", ".", ".", ".", "109"]) == 0.5, "leader dots count for neither side"


def test_a_symbol_list_passes_and_the_old_rule_would_have_refused_it() -> None:
    """The shape of amssymb.pdf's index: control sequences, leader dots and page numbers."""
    rng = random.Random(3)
    names = ["alpha", "leftarrow", "nleqslant", "measuredangle", "ntriangleright", "Rrightarrow", "square"]
    index = "\n".join(f"\\{rng.choice(names)} . . . . . . . . {rng.randint(1, 240)}" for _ in range(400))
    assert prose_problem(index) is None
    old_words = sum(1 for t in index.split() if t.isalpha()) / len(index.split())
    assert old_words < 0.15, "letters-only tokens were the old rule's words: it refused this"


def hex_dump(rng: random.Random, lines: int) -> str:
    """``xxd`` output: offset, eight groups of four hex digits, the bytes as ASCII."""
    out = []
    for i in range(lines):
        data = rng.randbytes(16)
        ascii_ = "".join(chr(b) if 33 <= b < 127 else "." for b in data)
        out.append(f"{i * 16:08x}: " + " ".join(data[j:j + 2].hex() for j in range(0, 16, 2)) + f"  {ascii_}")
    return "\n".join(out)


def byte_dump(rng: random.Random, lines: int) -> str:
    """``hexdump -C`` output: offset, sixteen two-digit bytes, the bytes between bars."""
    out = []
    for i in range(lines):
        data = rng.randbytes(16)
        ascii_ = "".join(chr(b) if 33 <= b < 127 else "." for b in data)
        out.append(f"{i * 16:08x}  " + " ".join(f"{b:02x}" for b in data) + f"  |{ascii_}|")
    return "\n".join(out)


@pytest.mark.parametrize("kind, make, rule", [
    ("base64 (76-character lines)", lambda rng: base64.encodebytes(rng.randbytes(60_000)).decode(), "words"),
    ("base64 (one line)", lambda rng: base64.b64encode(rng.randbytes(60_000)).decode(), "runs of 100+"),
    ("hex dump (xxd)", lambda rng: hex_dump(rng, 3000), "words"),
    ("hex dump (hexdump -C)", lambda rng: byte_dump(rng, 3000), "words"),
    ("hex words", lambda rng: "\n".join(" ".join(rng.randbytes(4).hex() for _ in range(8)) for _ in range(2000)),
     "words"),
    ("number table (CSV)", lambda rng: "\n".join(",".join(str(rng.randint(0, 99999)) for _ in range(10))
                                                 for _ in range(3000)), "words"),
    ("number table (columns)", lambda rng: "\n".join("  ".join(f"{rng.random() * 1000:8.2f}" for _ in range(8))
                                                     for _ in range(3000)), "words"),
    ("minified JavaScript", lambda rng: "function(a,b){return a.map(function(c){return c*b+1})};var x=1;" * 400,
     "lines of 5,000+"),
    ("minified CSS", lambda rng: "".join(f".c{i}{{color:#{rng.randbytes(3).hex()};margin:0 auto}} "
                                         for i in range(4000)), "lines of 5,000+"),
])
def test_encoded_data_dumps_numbers_and_minified_code_stay_refused(kind: str, make, rule: str) -> None:
    why = prose_problem(make(random.Random(7)))
    assert why is not None and why.startswith("not prose") and rule in why, (kind, why)
