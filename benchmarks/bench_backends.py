"""Retrieval quality by embedding backend, on a real retrieval set: the shipped sample corpus (16 documents)
and its 24 questions with the document that answers each. recall@k and MRR per backend, each index built by
``ragindex build`` as a fresh process.

    .venv/bin/python benchmarks/bench_backends.py [--k 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
SAMPLE = REPO / "include" / "sample_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from ragindex.evaluation import evaluate, load_questions
    from ragindex.retrieval import Retriever

    questions = load_questions(SAMPLE / "eval_questions.jsonl")
    ragindex = str(Path(sys.executable).with_name("ragindex"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("torch", "onnx", "onnx-int8"):
            out = Path(tmp) / backend
            started = time.perf_counter()
            subprocess.run([ragindex, "build", str(SAMPLE / "corpus"), "--out", str(out), "--embedding-backend", backend,
                            "--json"], check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            seconds = time.perf_counter() - started
            scores = evaluate(Retriever(out), questions, args.k)
            rows.append({"backend": backend, "build_s": round(seconds, 2), "recall_at_k": scores["recall_at_k"],
                         "mrr": scores["mrr"],
                         "missed": [r["question"] for r in scores["results"] if r["rank"] is None]})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"sample corpus, {len(questions)} questions, k={args.k}")
    for r in rows:
        print(f"  {r['backend']:10} recall@{args.k} {r['recall_at_k']:.3f}  MRR {r['mrr']:.3f}  "
              f"(build {r['build_s']:.1f} s, whole process){'  missed: ' + '; '.join(r['missed']) if r['missed'] else ''}")


if __name__ == "__main__":
    main()
