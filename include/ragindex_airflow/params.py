"""The Params forms of the DAGs: every field has a title and a description; defaults come from the core's
settings dataclasses (one source for each default) or from the deployment's environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from ragindex.settings import (
    DEFAULT_MODEL,
    INDEX_KINDS,
    ChunkingSettings,
    GateSettings,
    IndexSettings,
    ReviewSettings,
    ShardSettings,
)

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


def default_source() -> str:
    """``RAGINDEX_SOURCE`` in a deployment; the shipped sample corpus otherwise."""
    return os.environ.get("RAGINDEX_SOURCE") or str(SAMPLE_DATA / "corpus")


def default_eval_questions() -> str:
    """``RAGINDEX_EVAL_QUESTIONS`` in a deployment; the sample question set otherwise."""
    return os.environ.get("RAGINDEX_EVAL_QUESTIONS") or str(SAMPLE_DATA / "eval_questions.jsonl")


def ingest_params() -> dict[str, Param]:
    """The trigger form of ``rag_ingest``."""
    chunking, index, gate = ChunkingSettings(), IndexSettings(), GateSettings()
    review, shards = ReviewSettings(), ShardSettings()
    return {
        "source": Param(default_source(), type="string", minLength=1, title="Corpus source",
                        description="Folder or object-storage URL (file://, s3://, gs://). May contain {{ ds }} "
                                    "or {{ as_of_date }} for a dated folder, e.g. s3://bucket/corpus/{{ ds }}/."),
        "as_of": Param("", type=["null", "string"], title="Corpus as of",
                       description="Keep only documents modified at or before this ISO date-time. Blank: scheduled "
                                   "and backfill runs use the end of their data interval, manual runs use now."),
        "chunk_size": Param(chunking.chunk_size, type="integer", minimum=50, maximum=20000, title="Chunk size",
                            description="Maximum characters per chunk (recursive character splitter)."),
        "chunk_overlap": Param(chunking.chunk_overlap, type="integer", minimum=0, maximum=5000, title="Chunk overlap",
                               description="Characters shared by consecutive chunks; must be smaller than the chunk size."),
        "embedding_model": Param(DEFAULT_MODEL, type="string", minLength=1, title="Embedding model",
                                 description="sentence-transformers model name or a local model folder on the workers. "
                                             "Changing it re-embeds everything (the cache is per model)."),
        "index_kind": Param(index.kind, type="string", enum=list(INDEX_KINDS), title="FAISS index kind",
                            description="flat: exact search (default). hnsw: approximate, for large corpora."),
        "registry": Param("", type=["null", "string"], title="Artifact registry",
                          description="wandb://ENTITY/PROJECT or a folder. Blank: RAGINDEX_REGISTRY, else the "
                                      "local registry under RAGINDEX_HOME."),
        "eval_questions": Param(default_eval_questions(), type="string", minLength=1, title="Eval question set",
                                description="JSON-lines file of {question, expected_source}; logged as the "
                                            "eval-questions artifact and used as an input of the eval report."),
        "eval_k": Param(gate.k, type="integer", minimum=1, maximum=100, title="Eval k",
                        description="Hits per question for recall@k and MRR."),
        "min_recall": Param(gate.min_recall, type="number", minimum=0, maximum=1, title="Minimum recall@k",
                            description="Gate: the candidate must reach at least this recall@k."),
        "max_regression": Param(gate.max_regression, type="number", minimum=0, maximum=1, title="Tolerated regression",
                                description="Gate: the candidate may be worse than production by at most this "
                                            "much (recall@k and MRR)."),
        "require_approval": Param(review.require_approval, type="boolean", title="Require human approval",
                                  description="Wait for a reviewer in Required Actions before promoting. Off: a "
                                              "passing gate promotes directly."),
        "review_timeout_hours": Param(review.timeout_hours, type="number", minimum=0.01, title="Review timeout (hours)",
                                      description="Without an answer in this time the review counts as rejected."),
        "promote": Param(True, type="boolean", title="Promote",
                         description="Move the production alias when the gate (and review) pass. Backfill runs "
                                     "never promote, whatever this says."),
        "embed_shard_size": Param(shards.shard_size, type="integer", minimum=1, title="Texts per embedding shard",
                                  description="The texts to embed are split into shards of about this size, one "
                                              "mapped task each, so workers share the work."),
        "max_embed_shards": Param(shards.max_shards, type="integer", minimum=1, maximum=256, title="Maximum embedding shards",
                                  description="Upper bound on mapped embedding tasks per run."),
    }


def rollback_params() -> dict[str, Param]:
    """The trigger form of ``rag_rollback``."""
    return {
        "to_version": Param("", type=["null", "string"], title="Roll back to version",
                            description="A vector-index version such as v3 that held production before. "
                                        "Blank: the version that held production before the current one."),
        "reason": Param("", type=["null", "string"], title="Reason",
                        description="Why production is moved back; recorded with the rollback decision. "
                                    "Required when forcing."),
        "force": Param(False, type="boolean", title="Force",
                       description="Allow a version that never held production (never approved, or rejected). "
                                   "The rollback is recorded as forced, with the reason."),
        "registry": Param("", type=["null", "string"], title="Artifact registry",
                          description="wandb://ENTITY/PROJECT or a folder. Blank: RAGINDEX_REGISTRY, else the "
                                      "local registry under RAGINDEX_HOME."),
    }


def param_value(params: dict[str, Any], name: str, default: Any = None) -> Any:
    """A param with blanks read as 'not set'."""
    value = params.get(name, default)
    return default if value in (None, "") else value
