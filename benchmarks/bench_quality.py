"""Retrieval quality per mode (dense, sparse, hybrid and fusion variants) on real question sets.

Usage::

    .venv/bin/python benchmarks/bench_quality.py [--sets sample,pydoc] [--work /tmp/ragindex-bench-quality]
                                                 [--pydoc-ranks 90:210] [--without-section-path] [--json]

Sets:

sample  the shipped sample corpus (include/sample_data/corpus, 16 documents) and its 24 hand-written
        questions (eval_questions.jsonl).
pydoc   Python 3.11's library reference as Debian's python3.11-doc ships it (reST sources,
        /usr/share/doc/python3.11/html/_sources/library): the pages ranked ``--pydoc-ranks`` by size,
        largest first (default 90..210: 121 mid-sized pages, ~1,700 chunks). Questions: one per page, the
        page's first ``:synopsis:`` line (the one-line summary the docs' authors wrote for the module index,
        e.g. "A SMTP server implementation in Python."), and that line is REMOVED from the copy that is
        indexed, so no question occurs verbatim in the corpus. Pages without a synopsis get no question.
        Limits: synopses are short and keyword-like, often share words with the page title (which stays),
        and there is exactly one relevant page per question (an overview page may answer it too and counts
        as a miss); they are a proxy for users' questions, not a sample of them.

Each index is built once with the default settings into ``--work`` and reused while the corpus is the
same (``--without-section-path``: a second index per set, built with ``section_path_in_text=False``, so the
chunks' section paths are not embedded nor BM25-indexed; its modes are reported as ``… (no section path)``); a changed corpus is rebuilt with the old index as ``previous`` (its embeddings are reused). Query
vectors are computed once per question and reused across modes.

Figures per mode: recall@1 and recall@5 (the expected page is the source of one of the top 1 / 5 chunk
hits), MRR and nDCG@10 over the top 10 hits (rank of the first chunk of the expected page; one relevant
page, so nDCG = 1 / log2(rank + 1)), and milliseconds per query.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

from ragindex.evaluation import EvalQuestion, load_questions  # noqa: E402
from ragindex.settings import BuildSettings  # noqa: E402

PYDOC = Path("/usr/share/doc/python3.11/html/_sources/library")
SYNOPSIS = re.compile(r"^\s*:synopsis:\s*(.+?)\s*$", re.MULTILINE)
DEPTH = 10

# (label, mode, RetrievalSettings overrides): the modes and the fusion variants the default was chosen from
VARIANTS = [
    ("dense", "dense", {}),
    ("sparse", "sparse", {}),
    ("hybrid rrf k=60", "hybrid", {"fusion": "rrf", "rrf_k": 60}),
    ("hybrid rrf k=10", "hybrid", {"fusion": "rrf", "rrf_k": 10}),
    ("hybrid weighted 0.3", "hybrid", {"fusion": "weighted", "dense_weight": 0.3}),
    ("hybrid weighted 0.5", "hybrid", {"fusion": "weighted", "dense_weight": 0.5}),
    ("hybrid weighted 0.7", "hybrid", {"fusion": "weighted", "dense_weight": 0.7}),
]


def pydoc_set(work: Path, ranks: tuple[int, int]) -> tuple[Path, list[EvalQuestion]]:
    """Copy the chosen pages without their synopsis lines; one question per page from its synopsis."""
    if not PYDOC.is_dir():
        raise SystemExit(f"{PYDOC}: missing; apt-get install python3.11-doc")
    pages = sorted(PYDOC.glob("*.rst.txt"), key=lambda p: (-p.stat().st_size, p.name))[ranks[0] - 1:ranks[1]]
    corpus = work / "pydoc-corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    questions = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        found = SYNOPSIS.search(text)
        (corpus / page.name).write_text(SYNOPSIS.sub("", text), encoding="utf-8")
        if found:
            questions.append(EvalQuestion(found.group(1), page.name))
    return corpus, questions


def built_index(corpus: Path, out: Path, settings: BuildSettings = BuildSettings()) -> Path:
    """The corpus's index with ``settings`` (the defaults), rebuilt (reusing embeddings) only when the corpus
    changed."""
    from ragindex.indexing import read_index_settings
    from ragindex.pipeline import build

    previous = out if (out / "index.json").is_file() else None
    fresh = out.with_name(out.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    result = build(str(corpus), fresh, settings, previous=previous)
    same = previous is not None and read_index_settings(previous) == read_index_settings(fresh)
    print(f"  {corpus.name}: {result.documents} documents, {result.chunks} chunks ({result.embedded} embedded, "
          f"{result.reused} reused){' (unchanged)' if same else ''}", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(fresh, out)
    return out


def score(retriever, questions: list[EvalQuestion], mode: str) -> dict[str, float]:
    """recall@1, recall@5, MRR@10, nDCG@10 and ms/query of one mode."""
    r1 = r5 = rr = ndcg = 0.0
    started = time.perf_counter()
    for q in questions:
        sources = [h.source for h in retriever.search(q.question, k=DEPTH, mode=mode)]
        rank = sources.index(q.expected_source) + 1 if q.expected_source in sources else None
        if rank:
            r1 += rank == 1
            r5 += rank <= 5
            rr += 1 / rank
            ndcg += 1 / math.log2(rank + 1)
    n = len(questions)
    return {"recall@1": round(r1 / n, 3), "recall@5": round(r5 / n, 3), "mrr": round(rr / n, 3),
            "ndcg@10": round(ndcg / n, 3), "ms_per_query": round(1000 * (time.perf_counter() - started) / n, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="sample,pydoc")
    parser.add_argument("--work", default="/tmp/ragindex-bench-quality")
    parser.add_argument("--pydoc-ranks", default="90:210")
    parser.add_argument("--without-section-path", action="store_true",
                        help="also measure an index whose section paths are not part of the indexed text")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ragindex.embedding as embedding
    from ragindex.retrieval import Retriever

    embedding.encode_query = functools.lru_cache(maxsize=None)(embedding.encode_query)  # one vector per question
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    for name in args.sets.split(","):
        if name == "sample":
            corpus, questions = REPO / "include/sample_data/corpus", load_questions(
                REPO / "include/sample_data/eval_questions.jsonl")
        elif name == "pydoc":
            lo, hi = (int(x) for x in args.pydoc_ranks.split(":"))
            corpus, questions = pydoc_set(work, (lo, hi))
        else:
            raise SystemExit(f"--sets: unknown set {name!r} (sample, pydoc)")
        index = built_index(corpus, work / f"{name}-index")
        retriever = Retriever(index)
        for q in questions:  # warm the query cache, so ms/query compares search, not the encoder
            embedding.encode_query(retriever.model, q.question, retriever.backend)
        rows = {}
        default = retriever.retrieval
        for label, mode, overrides in VARIANTS:
            retriever.retrieval = replace(default, **overrides) if overrides else default
            rows[label] = score(retriever, questions, mode)
        retriever.retrieval = default
        if args.without_section_path:
            plain = BuildSettings(index=replace(BuildSettings().index, section_path_in_text=False))
            bare = Retriever(built_index(corpus, work / f"{name}-index-no-section-path", plain))
            for mode in ("dense", "sparse", "hybrid"):
                rows[f"{mode} (no section path)"] = score(bare, questions, mode)
        report[name] = {"questions": len(questions), "chunks": retriever.index.ntotal, "modes": rows,
                        "default": {"mode": default.mode, "fusion": default.fusion, "rrf_k": default.rrf_k}}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    for name, body in report.items():
        print(f"\n{name}: {body['questions']} questions, {body['chunks']} chunks (default: {body['default']})")
        print(f"  {'mode':26} {'R@1':>6} {'R@5':>6} {'MRR':>6} {'nDCG@10':>8} {'ms/q':>6}")
        for label, m in body["modes"].items():
            print(f"  {label:26} {m['recall@1']:6.3f} {m['recall@5']:6.3f} {m['mrr']:6.3f} {m['ndcg@10']:8.3f} "
                  f"{m['ms_per_query']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
