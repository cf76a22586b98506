"""Fixtures of the release tests: a real local registry, prompt folders written per test, and two real
index versions (built by the pipeline with the real model from two small corpora that differ by one
document added, one removed and one changed), built once per module."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragindex.registry import RunInfo, open_registry  # noqa: E402
from ragindex.settings import BuildSettings, ChunkingSettings  # noqa: E402
from tests.conftest import write_files  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE_PROMPT = REPO / "include" / "sample_data" / "prompts"
SMALL = BuildSettings(chunking=ChunkingSettings(chunk_size=200, chunk_overlap=20))

CORPUS_A = {
    "forklifts.md": "# Forklift rules\n\nForklift operators must wear a high-visibility vest and keep the forks "
                    "lowered while driving. The operator card stays valid for three years.\n",
    "returns.txt": "Returned parcels need a return authorization number printed on the label. Parcels that "
                   "arrive without one are sent back to the customer unopened.\n",
    "fleet.md": "# Fleet\n\nThe box trucks get an oil and filter change every ten thousand miles.\n",
}
CORPUS_B = {
    "forklifts.md": CORPUS_A["forklifts.md"],  # unchanged
    "returns.txt": CORPUS_A["returns.txt"] + "Gifts can be returned for store credit within sixty days.\n",  # changed
    # added
    "cold_chain.md": "# Cold chain\n\nRefrigerated trucks keep vaccines between two and eight degrees Celsius.\n",
}  # fleet.md removed
QUESTIONS = [
    {"question": "How long does a forklift operator card stay valid?", "expected_source": "forklifts.md"},
    {"question": "What happens to a parcel without a return authorization number?", "expected_source": "returns.txt"},
]

PROMPT_META = {"templates": {"system": "system.j2", "user": "user.j2"}, "input_variables": ["question", "chunks"],
               "model": "small-model", "temperature": 0.2, "context_budget": 4000}
PROMPT_TEMPLATES = {
    "system.j2": "Answer from the sources only; cite them as [n].\n",
    "user.j2": "{% for c in chunks %}[{{ loop.index }}] {{ c.source }}: {{ c.text }}\n{% endfor %}Q: {{ question }}\n",
}


def write_prompt(folder: Path, meta: dict[str, Any] | None = None, files: dict[str, str] | None = None,
                 **changes: Any) -> Path:
    """A prompt folder: ``prompt.json`` (``meta``, else PROMPT_META, with ``changes``) and its template files."""
    body = dict(meta if meta is not None else PROMPT_META) | changes
    return write_files(folder, {"prompt.json": json.dumps(body), **(PROMPT_TEMPLATES if files is None else files)})


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's RAGINDEX_HOME (work folders, the default registry) in its own temporary folder."""
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAGINDEX_REGISTRY", raising=False)
    return tmp_path / "home"


@pytest.fixture
def registry(tmp_path: Path):
    return open_registry(str(tmp_path / "registry"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Two real index folders (corpus A, corpus B) and a question file, built once per module."""
    from ragindex.pipeline import build

    root = tmp_path_factory.mktemp("built")
    out = {}
    for label, corpus in (("a", CORPUS_A), ("b", CORPUS_B)):
        source = write_files(root / f"corpus_{label}", corpus)
        build(str(source), root / f"index_{label}", SMALL, work_root=root)
        out[label] = root / f"index_{label}"
    out["questions"] = root / "questions.jsonl"
    out["questions"].write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return out


def log_index(registry, folder: Path) -> str:
    """Log a built index folder as a vector-index version (what ingest's build_index logs, without the chain)."""
    return registry.log_artifact("vector-index", "index", folder, run=RunInfo("build_index")).ref
