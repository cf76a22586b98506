"""Content guards: hostile files beside good documents. Each hostile kind is refused with the file and the rule,
every good document is kept, and the build stays within a time and memory bound (stated below) however big
the hostile file is; a mis-pointed source fails in seconds, before any embedding."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ragindex.errors import SourceError
from ragindex.parsing import prose_problem
from ragindex.pipeline import build
from ragindex.settings import CorpusLimits, DocumentLimits

from .conftest import SMALL, write_files

GOOD = {
    "returns.md": "# Returns\n\nCustomers may return unused items within 30 days with the receipt. Damaged goods "
                  "are collected by the carrier at no cost to the customer.\n",
    "shifts.txt": "Night shifts start at ten and end at six. Every shift begins with a five-minute safety talk.\n",
    "faq.html": "<html><body><h1>FAQ</h1><p>Parcels are insured up to 500 euros. Larger values need a "
                "declared-value form.</p></body></html>",
}
BOUND_S, BOUND_MB = 120.0, 1500  # the stated bound for the hostile build below (the 24 MB file is never read)
# The build's own peak: VmHWM belongs to the process's memory since its exec. ru_maxrss would not do: Linux
# carries it across fork and exec, so a child of a pytest that has grown to 1.5 GB starts out "peaking" there.
PEAK_MB = r"""
def peak_mb():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]) / 1024
"""

BUILD = PEAK_MB + r"""
import json, sys, time
from pathlib import Path
from dataclasses import replace
from ragindex.pipeline import build
from ragindex.settings import BuildSettings, ChunkingSettings, DocumentLimits
settings = BuildSettings(chunking=ChunkingSettings(200, 20), documents=replace(DocumentLimits(), max_chunks=40))
started = time.monotonic()
result = build(sys.argv[1], Path(sys.argv[2]), settings)
print(json.dumps({"seconds": time.monotonic() - started, "peak_mb": peak_mb(),
                  "failed": result.failed + result.refused, "documents": result.documents, "chunks": result.chunks}))
"""


def hostile_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """The good documents, and each hostile kind with the rule that must refuse it."""
    rng = random.Random(7)
    corpus = write_files(root / "corpus", GOOD)
    with open(corpus / "attachment.txt", "wb") as fh:  # 24 MB of base64 without whitespace
        for _ in range(24):
            fh.write(base64.b64encode(rng.randbytes(3 * 2**18)))
    (corpus / "encoded.txt").write_text(base64.encodebytes(rng.randbytes(60_000)).decode())
    js = "function(a,b){return a.map(function(c){return c*b+1})};var x=" * 400
    (corpus / "bundle.min.js").write_text(js)
    (corpus / "dump.txt").write_text(" ".join(rng.randbytes(40_000).hex()[i:i + 8] for i in range(0, 80_000, 8)))
    (corpus / "readings.csv").write_text("\n".join(",".join(str(rng.randint(0, 99999)) for _ in range(10))
                                                 for _ in range(3000)))
    (corpus / "manual.md").write_text("# Manual\n\n" + "\n\n".join(
        f"Step {i}: check the pallet labels, scan the parcel and confirm the route on the handheld." for i in range(400)))
    expected = {"attachment.txt": "too large", "encoded.txt": "tokens are words", "bundle.min.js": "minified code",
                "dump.txt": "lines of 5,000+", "readings.csv": "tokens are words", "manual.md": "too many chunks"}
    return corpus, expected


def test_hostile_files_are_refused_by_rule_and_good_documents_kept_within_bounds(tmp_path: Path) -> None:
    corpus, expected = hostile_corpus(tmp_path)
    proc = subprocess.run([sys.executable, "-c", BUILD, str(corpus), str(tmp_path / "index")], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = {f["path"]: f["reason"] for f in report["failed"]}
    assert set(refused) == set(expected), refused
    for path, rule in expected.items():
        assert rule in refused[path], (path, refused[path])
    assert report["documents"] == len(GOOD), "every good document is kept"
    print(f"hostile build: {report['seconds']:.1f} s, peak RSS {report['peak_mb']:.0f} MB (bound {BOUND_S:.0f} s, "
          f"{BOUND_MB} MB)")
    assert report["seconds"] < BOUND_S and report["peak_mb"] < BOUND_MB


SPARSE_BUILD = PEAK_MB + r"""
import json, resource, sys
from pathlib import Path
from ragindex.embedding import encode_texts
from ragindex.pipeline import build
from ragindex.settings import DEFAULT_MODEL, BuildSettings, ChunkingSettings
# No file this build writes may pass 64 MB: a snapshot that copied the sparse files would fail at once
# (EFBIG) instead of filling the disk with their holes.
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))
encode_texts(DEFAULT_MODEL, ["load the model before counting"])  # the model's own bytes are not the build's

def read_so_far():
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])

before = read_so_far()
result = build(sys.argv[1], Path(sys.argv[2]), BuildSettings(chunking=ChunkingSettings(200, 20)))
print(json.dumps({"read_mb": (read_so_far() - before) / 2**20, "documents": result.documents,
                  "refused": result.failed + result.refused,
                  "peak_mb": peak_mb()}))
"""


def test_multi_gb_sparse_files_are_refused_unread_and_good_documents_kept(tmp_path: Path) -> None:
    """An 8 GiB text file and a 3 GiB PDF beside the good documents: each is refused by its size with the file
    and the rule, and the build reads a few MB, not gigabytes (its read bytes are counted by the kernel)."""
    from .conftest import write_sparse_pdf

    corpus = write_files(tmp_path / "corpus", GOOD)
    with open(corpus / "export.txt", "wb") as fh:
        fh.write(b"Order export of 2024, one line per parcel.\n")
        fh.truncate(8 * 2**30)
    write_sparse_pdf(corpus / "scan.pdf", 3 * 2**30, "Scanned delivery notes of March.")
    assert sum(f.stat().st_blocks * 512 for f in corpus.iterdir()) < 2**20, "the test itself costs no disk"
    proc = subprocess.run([sys.executable, "-c", SPARSE_BUILD, str(corpus), str(tmp_path / "index")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["refused"] == [
        {"path": "export.txt", "reason": "too large: 8,589.9 MB of text is more than "
                                         f"max_document_chars={DocumentLimits().max_chars:,} characters"},
        {"path": "scan.pdf", "reason": f"too large: a {(corpus / 'scan.pdf').stat().st_size / 1e6:,.1f} MB PDF is more "
                                       "than the PDF parser's memory limit of 1,536 MB (parse_memory_mb; the parser "
                                       "reads the whole file into memory)"},
    ]
    assert report["documents"] == len(GOOD), "every good document is kept"
    print(f"sparse build: {report['read_mb']:.1f} MB read of 11 GiB offered, peak RSS {report['peak_mb']:.0f} MB")
    assert report["read_mb"] < 64 and report["peak_mb"] < BOUND_MB


def test_a_pdf_past_the_parsers_memory_limit_is_refused_and_the_other_documents_kept(tmp_path: Path) -> None:
    """The PDF worker runs under RLIMIT_AS (``parse_memory_mb``, 256 here): a 250 MB PDF, under the size rule
    but over the limit once read (pypdf reads the whole file), is refused naming the limit; a small PDF of the
    same form and the text documents are kept."""
    from ragindex.pipeline import read_documents

    from .conftest import write_sparse_pdf

    corpus = write_files(tmp_path / "corpus", GOOD)
    write_sparse_pdf(corpus / "scan.pdf", 250 * 2**20, "Scanned delivery notes of March.")
    write_sparse_pdf(corpus / "note.pdf", 10_000, "Delivery note 4471: twelve pallets, signed at gate three.")
    result = build(str(corpus), tmp_path / "index", replace(SMALL, parse_memory_mb=256))
    assert result.refused == []
    assert result.failed == [{"path": "scan.pdf", "reason": "PDF needs more memory than the parser's limit of 256 MB "
                              "(parse_memory_mb): a decompression bomb, or a file too big to parse?"}]
    kept = {d["path"] for d in read_documents(tmp_path / "index") if not d.get("failed")}
    assert kept == {*GOOD, "note.pdf"}


def test_a_refused_document_is_not_parsed_again_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    import ragindex.pipeline as pipeline

    corpus = write_files(tmp_path / "c", {**GOOD, "readings.csv": "1,2,3\n" * 2000})
    first = build(str(corpus), tmp_path / "i1", SMALL)
    assert {f["path"] for f in first.failed} == {"readings.csv"}
    parsed: list[str] = []
    real = pipeline.parse_document
    monkeypatch.setattr(pipeline, "parse_document", lambda file, rel, **kw: parsed.append(rel) or real(file, rel, **kw))
    again = build(str(corpus), tmp_path / "i2", SMALL, previous=tmp_path / "i1")
    assert parsed == [] and [f["path"] for f in again.failed] == ["readings.csv"]
    (corpus / "readings.csv").write_text("Readings are taken every morning by the shift lead.\n")
    third = build(str(corpus), tmp_path / "i3", SMALL, previous=tmp_path / "i2")
    assert parsed == ["readings.csv"] and third.failed == [] and third.documents == len(GOOD) + 1


def test_a_mis_pointed_source_fails_before_anything_is_embedded(tmp_path: Path, monkeypatch) -> None:
    import ragindex.embedding as embedding

    def must_not_embed(*args, **kwargs):
        raise AssertionError("nothing may be embedded for a corpus over its limits")

    monkeypatch.setattr(embedding, "encode_texts", must_not_embed)
    drive = tmp_path / "drive"
    for i in range(300):
        write_files(drive / f"dir{i % 7}", {f"log-{i}.txt": f"line {i}: service started\n"})
    too_many = replace(SMALL, corpus=CorpusLimits(max_documents=100))
    with pytest.raises(SourceError, match=r"'.*drive': more than max_documents=100 documents"):
        build(str(drive), tmp_path / "index", too_many, work_root=tmp_path)
    too_much_text = replace(SMALL, corpus=CorpusLimits(max_chars=2_000))
    with pytest.raises(SourceError, match=r"characters of text, more than max_corpus_chars=2,000"):
        build(str(drive), tmp_path / "index", too_much_text)


def test_limits_are_checked_settings() -> None:
    with pytest.raises(Exception, match="max_document_chars"):
        DocumentLimits(max_chars=10)
    assert re.search(r"\d", prose_problem("0 1 2 3 4 5 6 7 8 9 " * 100) or "")
