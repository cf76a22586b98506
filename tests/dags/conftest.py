"""Fixtures of the DAG tests: a throw-away Airflow home (SQLite metadata DB migrated once per session),
the real DAG files, the real model and real FAISS.

Airflow reads AIRFLOW_HOME (and the rest of its configuration) when ``airflow`` is first imported, so the
environment is set here at conftest import time, before any test module imports airflow; ``airflow db
migrate`` runs in a subprocess so this process imports airflow only after the database exists.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
SAMPLE_CORPUS = REPO / "include" / "sample_data" / "corpus"
SAMPLE_QUESTIONS = REPO / "include" / "sample_data" / "eval_questions.jsonl"
SAMPLE_PROMPTS = REPO / "include" / "sample_data" / "prompts"

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="ragindex-dag-tests-"))
if os.environ.get("RAGINDEX_KEEP_TEST_HOME") != "1":
    atexit.register(shutil.rmtree, _SESSION_ROOT, True)

if "airflow" not in sys.modules:
    os.environ["AIRFLOW_HOME"] = str(_SESSION_ROOT / "airflow")
    # A stale connection string from the caller's shell would point the tests at someone else's DB.
    os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
os.environ["RAGINDEX_HOME"] = str(_SESSION_ROOT / "ragindex-home")
os.environ.pop("RAGINDEX_REGISTRY", None)
os.environ.pop("RAGINDEX_SOURCE", None)
os.environ.pop("RAGINDEX_EVAL_QUESTIONS", None)
os.environ.pop("RAGINDEX_SCHEDULE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)

import pytest  # noqa: E402

AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


def governance_pool_command() -> list[str]:
    """``airflow pools set`` of the pool the DAGs' promote and rollback tasks share, as scripts/main-job.sh runs it."""
    from ragindex_airflow.pools import GOVERNANCE_POOL, GOVERNANCE_POOL_DESCRIPTION, GOVERNANCE_POOL_SLOTS

    return [str(AIRFLOW_BIN), "pools", "set", GOVERNANCE_POOL, str(GOVERNANCE_POOL_SLOTS), GOVERNANCE_POOL_DESCRIPTION]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session, in a subprocess, into the throw-away AIRFLOW_HOME, and the governance
    pool (``dags test`` runs a task whatever its pool; a scheduler never runs one whose pool is missing)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    for command in ([str(AIRFLOW_BIN), "db", "migrate"], governance_pool_command()):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ.copy())
        assert proc.returncode == 0, f"{' '.join(command[1:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return home


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


def copy_corpus(dest: Path, mtime: float | None = None) -> Path:
    """The sample corpus copied to ``dest`` (so a test may change it); every file dated ``mtime`` if given."""
    shutil.copytree(SAMPLE_CORPUS, dest)
    if mtime is not None:
        for path in dest.rglob("*"):
            os.utime(path, (mtime, mtime))
    return dest
