"""What versions are called: artifact names and types, the governance aliases, the snapshot alias.

One owner for these names, so the pipeline, the CLI, the DAGs and the UI plugin never spell them twice.
Light on purpose (standard library only): the plugin imports it in every Airflow process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PRODUCTION = "production"
STAGING = "staging"
# Aliases that say "a person (or the gate) decided this version may serve": moved only by promotion,
# review and rollback, never onto a rejected version, never by a plain `ragindex alias`.
GOVERNANCE_ALIASES = (PRODUCTION, STAGING)
SNAPSHOT_PREFIX = "snapshot-"


@dataclass(frozen=True)
class ArtifactNames:
    """Artifact names are settings; these defaults match the W&B project layout in the README."""

    raw: str = "raw-documents"
    chunks: str = "processed-chunks"
    index: str = "vector-index"
    questions: str = "eval-questions"
    report: str = "eval-report"
    prompt: str = "prompt-template"
    release: str = "rag-release"

    def in_pipeline_order(self) -> tuple[str, ...]:
        """raw → chunks → index → questions → report → prompt → release, the order listings show them in (a
        release uses an index, a prompt and a question set, so it comes after all three)."""
        return (self.raw, self.chunks, self.index, self.questions, self.report, self.prompt, self.release)


DEFAULT_NAMES = ArtifactNames()

# The W&B artifact type of each kind of version (fixed per name, as W&B requires).
ARTIFACT_TYPES = {"raw": "raw_dataset", "chunks": "dataset", "index": "index", "questions": "eval_dataset",
                  "report": "evaluation", "prompt": "prompt", "release": "release"}


def snapshot_alias(date: str | datetime | None) -> str | None:
    """``snapshot-YYYY-MM-DD`` of a run's logical date (None when the run has none)."""
    if not date:
        return None
    text = date.isoformat() if isinstance(date, datetime) else str(date)
    return f"{SNAPSHOT_PREFIX}{text[:10]}"
