"""Fixtures of the core tests: real files (PDFs made with reportlab), the real model, real FAISS.

The model is loaded once per process (``ragindex.embedding.load_model`` caches it), so every in-process
build shares it; a tiny index is built once per session for the tests that only read one.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Builds and caches of these tests never touch the user's ~/.ragindex.
os.environ["RAGINDEX_HOME"] = tempfile.mkdtemp(prefix="ragindex-core-tests-home-")

import pytest  # noqa: E402

from ragindex.settings import BuildSettings, ChunkingSettings  # noqa: E402
from tests.conftest import write_files  # noqa: E402,F401 - re-exported to the core tests

REPO = Path(__file__).resolve().parents[2]
RAGINDEX_BIN = Path(sys.executable).with_name("ragindex")

# Small chunks keep the number of texts the model must encode low (it runs at ~20 texts/s on 2 cores).
SMALL = BuildSettings(chunking=ChunkingSettings(chunk_size=200, chunk_overlap=20))

TINY_CORPUS = {
    "warehouse.md": (
        "# Forklift rules\n\n"
        "Forklift operators must wear a high-visibility vest and keep the forks lowered while driving.\n\n"
        "Pedestrians have right of way in every aisle of the warehouse."
    ),
    "notes/returns.txt": (
        "Returned parcels need a return authorization number printed on the label.\n"
        "Parcels that arrive without one are sent back to the customer unopened."
    ),
}
TINY_PDF_PAGES = [
    "Refrigerated trucks keep vaccines between two and eight degrees Celsius.",
    "Customs invoices are archived for five years after the export date.",
]


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF, one text line per page (an empty string makes a blank page)."""
    from reportlab.pdfgen import canvas

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path))
    for text in pages:
        y = 720
        for line in text.split("\n"):
            if line:
                pdf.drawString(72, y, line)
            y -= 16
        pdf.showPage()
    pdf.save()
    return path


def write_sparse_pdf(path: Path, image_bytes: int, text: str) -> Path:
    """A valid one-page PDF: a line of text and an uncompressed grey image of about ``image_bytes`` bytes whose
    data is a hole in the file (sparse: however big, it costs no disk)."""
    side = int(image_bytes ** 0.5)
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>", None]
    offsets = []
    with open(path, "wb") as fh:
        fh.write(b"%PDF-1.4\n")
        for number, body in enumerate(objects, start=1):
            offsets.append(fh.tell())
            if body is None:
                fh.write(b"%d 0 obj\n<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                         b"/BitsPerComponent 8 /Length %d >>\nstream\n" % (number, side, side, side * side))
                fh.seek(side * side, os.SEEK_CUR)
                fh.write(b"\nendstream\nendobj\n")
            else:
                fh.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
        xref = fh.tell()
        fh.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
        fh.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
        fh.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return path


def write_encrypted_pdf(path: Path, pages: list[str], password: str = "secret") -> Path:
    """A PDF that needs a user password to open."""
    from pypdf import PdfWriter

    plain = write_pdf(path.with_name(path.stem + "-plain.tmp"), pages)
    writer = PdfWriter(clone_from=str(plain))
    writer.encrypt(password)
    with open(path, "wb") as fh:
        writer.write(fh)
    plain.unlink()
    return path


def make_tiny_corpus(root: Path) -> Path:
    """Two text documents and a two-page PDF."""
    write_files(root, TINY_CORPUS)
    write_pdf(root / "cold_chain.pdf", TINY_PDF_PAGES)
    return root


@pytest.fixture(scope="session")
def pdf_writer() -> Callable[[Path, list[str]], Path]:
    return write_pdf


@pytest.fixture(scope="session")
def encrypted_pdf_writer() -> Callable[..., Path]:
    return write_encrypted_pdf


@pytest.fixture(scope="session")
def files_writer() -> Callable[[Path, dict], Path]:
    return write_files


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corpus that no test modifies (copy it before changing anything)."""
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny") / "corpus")


@pytest.fixture(scope="session")
def tiny_index(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """(index folder, BuildResult) of the tiny corpus, built once with SMALL settings; read-only for tests."""
    from ragindex.pipeline import build

    out = tmp_path_factory.mktemp("tiny-index") / "index"
    result = build(str(tiny_corpus), out, SMALL)
    return out, result


@pytest.fixture(scope="session")
def model():
    """The default model, loaded once for the process."""
    from ragindex.embedding import load_model

    return load_model(SMALL.model)
