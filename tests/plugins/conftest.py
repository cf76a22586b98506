"""Fixtures of the UI plugin tests: a local registry filled by a real pipeline run.

``ragindex ingest`` on the sample corpus (raw-documents → processed-chunks → vector-index), then
``ragindex evaluate`` (eval-questions, eval-report, ``metadata.eval`` on the index), then
``ragindex approve vector-index:v0`` (the review decision on record, then production) — all in subprocesses,
like an operator would run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
VENV_BIN = Path(sys.executable).parent
RAGINDEX_BIN = VENV_BIN / "ragindex"
CORPUS = REPO / "include" / "sample_data" / "corpus"
QUESTIONS = REPO / "include" / "sample_data" / "eval_questions.jsonl"

# Importing Airflow writes a default config into AIRFLOW_HOME: never into the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ragindex-ui-tests-airflow-"))

if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

def pipeline_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAGINDEX_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RAGINDEX_REGISTRY", None)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


@pytest.fixture(scope="session")
def filled_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real local registry: one ingest, its evaluation, and vector-index:v0 as production; then a changed
    corpus's index vector-index:v1, evaluated and rejected (as a reviewer would with `ragindex reject`)."""
    root = tmp_path_factory.mktemp("ui-registry")
    registry, home = root / "registry", root / "home"
    env = pipeline_env(home)
    ingested = json.loads(_run([str(RAGINDEX_BIN), "ingest", str(CORPUS), "--registry", str(registry), "--json"], env))
    evaluated = json.loads(_run([str(RAGINDEX_BIN), "evaluate", ingested["index"], "--questions", str(QUESTIONS),
                                 "--registry", str(registry), "--json"], env))
    _run([str(RAGINDEX_BIN), "approve", ingested["index"], "--reason", "sample corpus", "--registry", str(registry)],
         env)
    changed = root / "corpus-changed"
    shutil.copytree(CORPUS, changed)
    (changed / "returns_policy.md").write_text((CORPUS / "returns_policy.md").read_text() + "\nRefunds take 90 days.\n")
    rejected = json.loads(_run([str(RAGINDEX_BIN), "ingest", str(changed), "--registry", str(registry), "--json"], env))
    _run([str(RAGINDEX_BIN), "evaluate", rejected["index"], "--questions", str(QUESTIONS), "--registry", str(registry)],
         env)
    _run([str(RAGINDEX_BIN), "reject", rejected["index"], "--reason", "refunds take 14 days, not 90",
          "--registry", str(registry)], env)
    return {"uri": str(registry), "home": home, "ingest": ingested, "eval": evaluated, "rejected": rejected["index"]}
