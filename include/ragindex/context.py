"""The pipeline run a versioned step belongs to: its registry, id, settings, corpus, dates and run type.

Built once per run (by ``ragindex_airflow.context`` from a task context, or by the CLI) and handed to every
step; whatever task or worker asks, the same run gives the same value, so re-running a step gives the same
versions.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragindex.names import ArtifactNames
from ragindex.registry import Registry, RunInfo
from ragindex.settings import BuildSettings, DriftSettings, GateSettings, ShardSettings, ragindex_home
from ragindex.workdir import WorkDir

MANUAL, SCHEDULED, BACKFILL, CLI = "manual", "scheduled", "backfill", "cli"


def new_pipeline_run_id(prefix: str = "cli") -> str:
    """An id for a run started outside Airflow (Airflow runs use their own run_id)."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def may_promote(run_type: str) -> bool:
    """Backfill runs rebuild past corpora as versions of their own; they never move production or staging."""
    return run_type != BACKFILL


@dataclass
class IngestContext:
    """Everything a step needs to know about the pipeline run it belongs to."""

    registry: Registry
    pipeline_run_id: str
    settings: BuildSettings = field(default_factory=BuildSettings)
    source: str = ""
    as_of: str | None = None
    logical_date: str | None = None
    names: ArtifactNames = field(default_factory=ArtifactNames)
    aliases: tuple[str, ...] = ()
    work_root: Path | None = None
    run_type: str = MANUAL
    shards: ShardSettings = field(default_factory=ShardSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)

    @property
    def work(self) -> WorkDir:
        """This run's files, on storage every worker reaches (``$RAGINDEX_HOME/work`` by default)."""
        return WorkDir.for_run(self.pipeline_run_id, self.work_root or ragindex_home() / "work")

    @property
    def promotes(self) -> bool:
        """Whether this run may move governance aliases at all (see ``may_promote``)."""
        return may_promote(self.run_type)

    def run(self, job_type: str) -> RunInfo:
        """One W&B run per step, grouped by pipeline run; the same step of the same run reuses its id."""
        digest = hashlib.sha256(f"{self.pipeline_run_id}/{job_type}".encode()).hexdigest()[:12]
        return RunInfo(job_type=job_type, group=self.pipeline_run_id, run_id=f"{job_type}-{digest}",
                       name=f"{self.pipeline_run_id}/{job_type}",
                       config={"settings": self.settings.to_dict(), "source": self.source, "as_of": self.as_of,
                               "logical_date": self.logical_date, "run_type": self.run_type})

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """What every version carries for reviewers and auditors."""
        return {"pipeline_run_id": self.pipeline_run_id, "logical_date": self.logical_date, "run_type": self.run_type,
                "source": self.source, "as_of": self.as_of, **extra}

    def settings_fingerprint(self, model_identity: str) -> str:
        """Identity of everything besides the corpus that changes an index's bytes."""
        body = {"chunking": asdict(self.settings.chunking), "index": asdict(self.settings.index), "model": model_identity,
                "documents": asdict(self.settings.documents)}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
