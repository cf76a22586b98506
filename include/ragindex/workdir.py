"""A run's work folder and the embedding plan: the one place that names the files steps hand to each other.

Steps of one pipeline run may execute on different workers; they meet in a folder on shared storage
(``$RAGINDEX_HOME/work/<run id>`` for DAG runs, a temp folder for ``ragindex build``)::

    raw/                  the snapshot (manifest + files) of ``sources.snapshot``
    chunks/               parsed + chunked documents (the ``processed-chunks`` version's files)
    embed/plan.json       which texts each embedding shard encodes (``EmbedPlan``)
    embed/reused.npz      the vectors taken over from the previous index
    embed/shard-NNNN.npz  one shard's new vectors
    index/                the FAISS index folder (the ``vector-index`` version's files)
    eval-questions/, eval-report/, raw-manifest/
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ragindex.atomic import replace_file_atomically


@dataclass(frozen=True)
class WorkDir:
    """Paths inside one run's work folder."""

    root: Path

    @classmethod
    def for_run(cls, run_id: str, work_root: Path) -> "WorkDir":
        """The folder of pipeline run ``run_id`` under ``work_root`` (run ids made safe as folder names)."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
        return cls(Path(work_root) / safe)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def raw_manifest_only(self) -> Path:
        return self.root / "raw-manifest"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    @property
    def embed(self) -> Path:
        return self.root / "embed"

    @property
    def plan(self) -> Path:
        return self.embed / "plan.json"

    @property
    def reused(self) -> Path:
        return self.embed / "reused.npz"

    def shard(self, i: int) -> Path:
        """Where shard ``i``'s vectors go."""
        return self.embed / f"shard-{i:04d}.npz"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def eval_questions(self) -> Path:
        return self.root / "eval-questions"

    @property
    def eval_report(self) -> Path:
        return self.root / "eval-report"

    def remove(self) -> None:
        """Drop the whole folder (the CLI's ingest cleans up after itself)."""
        shutil.rmtree(self.root, ignore_errors=True)


def prune_work_dirs(work_root: Path, keep: Path, older_than_days: float = 7.0) -> int:
    """Remove the work folders of runs idle for a week (longer than any review waits), so disk use stays flat."""
    if not work_root.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_days * 86400, 0
    for entry in work_root.iterdir():
        if entry.is_dir() and entry != keep and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class EmbedPlan:
    """Which new texts (by the sha256 of the indexed text) each shard embeds, with which model; what the cache
    already covers."""

    model: str
    model_identity: str
    reused: int
    total_chunks: int
    shards: tuple[tuple[str, ...], ...]
    backend: str = "torch"
    section_path: bool = False  # the texts embedded are the chunks' section paths and texts (indexed_text)

    @property
    def to_embed(self) -> int:
        """Distinct new texts over all shards."""
        return sum(len(s) for s in self.shards)

    def write(self, path: Path) -> None:
        """Write-then-rename, so a mapped task on another worker never reads half a plan."""
        body = asdict(self) | {"shards": [list(s) for s in self.shards]}
        replace_file_atomically(path, lambda tmp: tmp.write_text(json.dumps(body)))

    @classmethod
    def read(cls, path: Path) -> "EmbedPlan":
        """The plan a chunk step wrote."""
        body = json.loads(Path(path).read_text())
        return cls(body["model"], body["model_identity"], body["reused"], body["total_chunks"],
                   tuple(tuple(s) for s in body["shards"]), body.get("backend", "torch"),
                   body.get("section_path", False))
