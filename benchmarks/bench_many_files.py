"""Many small files: how fast a corpus of N small documents is snapshotted, parsed and chunked (files/s),
and what the PDF worker pool saves over one process per PDF, side by side in one run.

    .venv/bin/python benchmarks/bench_many_files.py [--files 20000] [--pdfs 200] [--json]

The corpus is generated (Markdown, text and HTML of a few paragraphs each, from sentences of the sample
corpus, so the prose rules see real prose); the PDFs are small reportlab documents. Nothing is embedded:
this measures the stages before the model. Figures go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

from benchreport import emit, machine  # noqa: E402 - beside this script


def sentences() -> list[str]:
    """Real sentences to build documents from (the sample corpus's Markdown and text)."""
    corpus = REPO / "include" / "sample_data" / "corpus"
    text = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in [*corpus.rglob("*.md"), *corpus.rglob("*.txt")])
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"[#*|`_-]+", " ", text)) if len(s.split()) > 5]


def make_corpus(root: Path, files: int, pdfs: int, seed: int = 11) -> Path:
    """``files`` small text-like documents in 100 folders, and ``pdfs`` small PDFs."""
    from reportlab.pdfgen import canvas

    rng, pool = random.Random(seed), sentences()
    for i in range(files):
        body = "\n\n".join(" ".join(rng.sample(pool, 4)) for _ in range(rng.randint(2, 5)))
        kind = i % 3
        folder = root / f"team-{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if kind == 0:
            (folder / f"note-{i}.md").write_text(f"# Note {i}\n\n{body}\n")
        elif kind == 1:
            (folder / f"memo-{i}.txt").write_text(body + "\n")
        else:
            (folder / f"page-{i}.html").write_text(f"<html><body><h1>Page {i}</h1><p>{body}</p></body></html>")
    for i in range(pdfs):
        pdf = canvas.Canvas(str(root / f"sheet-{i}.pdf"))
        pdf.drawString(72, 720, " ".join(rng.sample(pool, 2))[:90])
        pdf.save()
    return root


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--pdfs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from ragindex.parsing import PdfWorkers, parse_pdf_isolated
    from ragindex.pipeline import chunk_snapshot
    from ragindex.settings import BuildSettings
    from ragindex.sources import snapshot

    settings = BuildSettings()
    work = Path(tempfile.mkdtemp(prefix="ragindex-many-"))
    try:
        log(f"generating {args.files} documents and {args.pdfs} PDFs ...")
        corpus = make_corpus(work / "corpus", args.files, args.pdfs)
        total = args.files + args.pdfs
        t0 = time.perf_counter()
        snapshot(str(corpus), work / "raw")
        t1 = time.perf_counter()
        result = chunk_snapshot(work / "raw", work / "chunks", settings)
        t2 = time.perf_counter()
        log(f"snapshot {t1 - t0:.1f} s, parse + chunk {t2 - t1:.1f} s ({result.chunks} chunks)")

        pdf_files = sorted((work / "raw" / "files").glob("sheet-*.pdf"))
        t3 = time.perf_counter()
        for pdf in pdf_files:
            parse_pdf_isolated(pdf, timeout_s=60, memory_mb=1536)
        t4 = time.perf_counter()
        with PdfWorkers(2, timeout_s=60, memory_mb=1536) as workers:
            for pdf in pdf_files:
                workers.parse(pdf)
        t5 = time.perf_counter()
        figures = {
            "files": total, "documents": result.documents, "chunks": result.chunks, "failed": len(result.failed),
            "snapshot_s": round(t1 - t0, 2), "parse_chunk_s": round(t2 - t1, 2),
            "snapshot_files_per_s": round(total / (t1 - t0)), "parse_chunk_files_per_s": round(total / (t2 - t1)),
            "end_to_end_files_per_s": round(total / (t2 - t0)),
            "pdfs": len(pdf_files), "pdf_one_process_each_s": round(t4 - t3, 2), "pdf_pool_of_2_s": round(t5 - t4, 2),
            "pdf_pool_speedup": round((t4 - t3) / max(1e-9, t5 - t4), 1),
            **machine(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(figures, args.json, lambda f: [
        f"{f['files']} files ({f['documents']} parsed, {f['failed']} refused, {f['chunks']} chunks) on "
        f"{f['cores']} cores, load {f['load_average']}",
        f"  snapshot       {f['snapshot_s']:7.1f} s  {f['snapshot_files_per_s']:6d} files/s",
        f"  parse + chunk  {f['parse_chunk_s']:7.1f} s  {f['parse_chunk_files_per_s']:6d} files/s",
        f"  together                  {f['end_to_end_files_per_s']:6d} files/s",
        f"  {f['pdfs']} PDFs: one process each {f['pdf_one_process_each_s']:.1f} s, pool of 2 workers "
        f"{f['pdf_pool_of_2_s']:.1f} s ({f['pdf_pool_speedup']}x)"])

if __name__ == "__main__":
    main()
