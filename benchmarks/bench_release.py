"""A prompt-only `rag_ingest` run against a corpus run, side by side in one run, as a user runs them:
`airflow dags test rag_ingest --conf …` processes (start-up, DAG parsing and every task included), in a
throw-away AIRFLOW_HOME and registry, on a copy of the sample corpus.

1. a corpus run (everything new: parse, chunk, embed, index, evaluate, release, promote);
2. a prompt-only run (the same corpus, one template line changed): prints both wall times and their ratio.

Usage: .venv/bin/python benchmarks/bench_release.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SAMPLE = REPO / "include" / "sample_data"


def run(env: dict[str, str], conf: dict) -> float:
    """Seconds for one `airflow dags test rag_ingest` process (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run([AIRFLOW, "dags", "test", "rag_ingest", "--conf", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "state=success" not in done.stdout + done.stderr:
        raise SystemExit(f"rag_ingest failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-release-"))
    try:
        env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"), "RAGINDEX_HOME": str(root / "home"),
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "RAGINDEX_SCHEDULE": "none", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.setdefault("RAGINDEX_MODELS", str(REPO / ".ragindex" / "models"))  # the exported ONNX model, once
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
        corpus = root / "corpus"
        shutil.copytree(SAMPLE / "corpus", corpus)
        prompts = root / "prompts"
        shutil.copytree(SAMPLE / "prompts", prompts)
        conf = {"source": str(corpus), "registry": str(root / "registry"), "require_approval": False,
                "eval_questions": str(SAMPLE / "eval_questions.jsonl"), "prompts": str(prompts)}
        corpus_s = run(env, conf)
        user = prompts / "user.j2"
        user.write_text(user.read_text(encoding="utf-8") + "\nAnswer in at most three sentences.\n", encoding="utf-8")
        prompt_s = run(env, conf)
        figures = {"corpus_run_s": round(corpus_s, 2), "prompt_only_run_s": round(prompt_s, 2),
                   "ratio": round(prompt_s / corpus_s, 3)}
        if args.json:
            print(json.dumps(figures))
        else:
            print(f"corpus run      {corpus_s:7.1f} s  (airflow dags test, start-up included)")
            print(f"prompt-only run {prompt_s:7.1f} s  ({prompt_s / corpus_s:.1%} of the corpus run)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
