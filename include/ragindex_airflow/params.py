"""The Params forms of the DAGs: every field has a title and a description; defaults come from the core's
settings dataclasses (one source for each default) or from the deployment's environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from ragindex.settings import (
    DEFAULT_EMBEDDING_BACKEND,
    DEFAULT_MODEL,
    EMBEDDING_BACKENDS,
    INDEX_KINDS,
    ChunkingSettings,
    CorpusLimits,
    DocumentLimits,
    DriftSettings,
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


def default_prompts() -> str:
    """``RAGINDEX_PROMPTS`` in a deployment; the shipped sample prompt folder otherwise."""
    return os.environ.get("RAGINDEX_PROMPTS") or str(SAMPLE_DATA / "prompts")


def _share(default: float, title: str, **schema: Any) -> Param:
    """A fraction between 0 and 1 (recall, a tolerance, a share of production's documents or chunks)."""
    return Param(default, type="number", minimum=0, maximum=1, title=title, **schema)


def ingest_params() -> dict[str, Param]:
    """The trigger form of ``rag_ingest``, in sections (the UI groups fields by ``section``)."""
    return {**_corpus_params(), **_build_params(), **_gate_params(), **_data_gate_params(), **_review_params(),
            **_limits_params()}


def _corpus_params() -> dict[str, Param]:
    """Where the documents come from, as of when, and where versions go."""
    section = "Corpus"
    return {
        "source": Param(default_source(), type="string", minLength=1, title="Corpus source", section=section,
                        description="Folder or object-storage URL (file://, s3://, gs://). May contain {{ ds }} "
                                    "or {{ as_of_date }} for a dated folder, e.g. s3://bucket/corpus/{{ ds }}/."),
        "prompts": Param(default_prompts(), type="string", minLength=1, title="Prompt templates", section=section,
                         description="Folder or object-storage URL of the prompt (prompt.json + Jinja2 templates). "
                                     "Logged as prompt-template:vN; the run's release pairs it with the index."),
        "as_of": Param("", type=["null", "string"], title="Corpus as of", section=section,
                       description="Keep only documents modified at or before this ISO date-time. Blank: scheduled "
                                   "and backfill runs use the end of their data interval, manual runs use now."),
        "registry": Param("", type=["null", "string"], title="Artifact registry", section=section,
                          description="wandb://ENTITY/PROJECT or a folder. Blank: RAGINDEX_REGISTRY, else the "
                                      "local registry under RAGINDEX_HOME."),
    }


def _build_params() -> dict[str, Param]:
    """How documents become chunks, vectors and an index."""
    chunking = ChunkingSettings()
    index = IndexSettings()
    section = "Chunking, model and index"
    return {
        "chunk_size": Param(chunking.chunk_size, type="integer", minimum=50, maximum=20000, title="Chunk size",
                            section=section, description="Maximum characters per chunk (recursive character splitter)."),
        "chunk_overlap": Param(chunking.chunk_overlap, type="integer", minimum=0, maximum=5000, title="Chunk overlap",
                               section=section,
                               description="Characters shared by consecutive chunks; must be smaller than the chunk size."),
        "embedding_model": Param(DEFAULT_MODEL, type="string", minLength=1, title="Embedding model", section=section,
                                 description="sentence-transformers model name or a local model folder on the workers. "
                                             "Changing it re-embeds everything (the cache is per model)."),
        "embedding_backend": Param(DEFAULT_EMBEDDING_BACKEND, type="string", enum=list(EMBEDDING_BACKENDS),
                                   title="Embedding backend", section=section,
                                   description="onnx: the model run by onnxruntime (same vectors as torch, no torch "
                                               "start-up). onnx-int8: quantised, about twice as fast, slightly less "
                                               "accurate. torch: sentence-transformers. A change re-embeds everything."),
        "index_kind": Param(index.kind, type="string", enum=list(INDEX_KINDS), title="FAISS index kind", section=section,
                            description="flat: exact search (default). hnsw: approximate, for large corpora."),
    }


def _gate_params() -> dict[str, Param]:
    """The retrieval gate a candidate must pass."""
    gate = GateSettings()
    section = "Evaluation gate"
    return {
        "eval_questions": Param(default_eval_questions(), type="string", minLength=1, title="Eval question set",
                                section=section,
                                description="JSON-lines file of {question, expected_source}; logged as the "
                                            "eval-questions artifact and used as an input of the eval report."),
        "eval_k": Param(gate.k, type="integer", minimum=1, maximum=100, title="Eval k", section=section,
                        description="Hits per question for recall@k and MRR."),
        "min_recall": _share(gate.min_recall, "Minimum recall@k", section=section,
                             description="Gate: the candidate must reach at least this recall@k."),
        "max_regression": _share(gate.max_regression, "Tolerated regression", section=section,
                                 description="Gate: the candidate may be worse than production by at most this much "
                                             "(recall@k and MRR)."),
    }


def _data_gate_params() -> dict[str, Param]:
    """Drift and PII thresholds; crossing one warns the reviewer, or fails a run nobody reviews."""
    drift = DriftSettings()
    section = "Data gate (drift and PII)"
    return {
        "max_documents_removed": _share(drift.max_documents_removed, "Documents removed (share)", section=section,
                                        description="Warn when more than this share of production's documents is "
                                                    "gone."),
        "max_chunks_changed": _share(drift.max_chunks_changed, "Chunks changed (share)", section=section,
                                     description="Warn when chunk texts added plus removed exceed this share of "
                                                 "production's."),
        "max_new_pii_documents": Param(drift.max_new_pii_documents, type="integer", minimum=0,
                                       title="Documents newly with PII", section=section,
                                       description="Warn when more documents than this newly contain e-mail "
                                                   "addresses, phone or card numbers."),
        "max_chunk_length_drop": _share(drift.max_chunk_length_drop, "Drop in mean chunk length", section=section,
                                        description="Warn when chunks are shorter on average by more than this "
                                                    "share."),
        "max_duplicate_increase": _share(drift.max_duplicate_increase, "Rise in duplicate chunks", section=section,
                                         description="Warn when duplicate chunks rise by more than this share of all "
                                                     "chunks. A warning needs a reviewer's explicit approval; "
                                                     "without a reviewer it fails the run."),
    }


def _review_params() -> dict[str, Param]:
    """Who must approve, for how long, and whether production moves."""
    review = ReviewSettings()
    section = "Review and promotion"
    return {
        "require_approval": Param(review.require_approval, type="boolean", title="Require human approval",
                                  section=section,
                                  description="Wait for a reviewer in Required Actions before promoting. Off: a "
                                              "passing gate (with no data-gate warning) promotes directly."),
        "review_timeout_hours": Param(review.timeout_hours, type="number", minimum=0.01, title="Review timeout (hours)",
                                      section=section,
                                      description="Without an answer in this time the review counts as rejected."),
        "promote": Param(True, type="boolean", title="Promote", section=section,
                         description="Move the production alias when the gate (and review) pass. Backfill runs "
                                     "never promote, whatever this says."),
    }


def _limits_params() -> dict[str, Param]:
    """Bounds that keep one hostile file or a mis-pointed source cheap, and the embedding fan-out."""
    documents = DocumentLimits()
    corpus = CorpusLimits()
    shards = ShardSettings()
    section = "Limits and sharding"
    return {
        "max_document_chars": Param(documents.max_chars, type="integer", minimum=1000, title="Characters per document",
                                    section=section,
                                    description="A document with more text is refused (named, with the rule) and "
                                                "not parsed again until it changes."),
        "max_document_chunks": Param(documents.max_chunks, type="integer", minimum=1, title="Chunks per document",
                                     section=section, description="A document that would make more chunks is refused."),
        "max_documents": Param(corpus.max_documents, type="integer", minimum=1, title="Documents per corpus",
                               section=section,
                               description="A corpus with more documents fails the run before anything is embedded "
                                           "(a mis-pointed source costs seconds)."),
        "max_corpus_chars": Param(corpus.max_chars, type="integer", minimum=1, title="Characters per corpus",
                                  section=section,
                                  description="A corpus with more text fails the run before anything is embedded."),
        "embed_shard_size": Param(shards.shard_size, type="integer", minimum=1, title="Texts per embedding shard",
                                  section=section,
                                  description="The texts to embed are split into shards of about this size, one "
                                              "mapped task each, so workers share the work."),
        "max_embed_shards": Param(shards.max_shards, type="integer", minimum=1, maximum=256,
                                  title="Maximum embedding shards", section=section,
                                  description="Upper bound on mapped embedding tasks per run."),
    }


def rollback_params() -> dict[str, Param]:
    """The trigger form of ``rag_rollback``."""
    return {
        "to_version": Param("", type=["null", "string"], title="Roll back to version",
                            description="A version such as v3 that was approved (of the release, or of the index "
                                        "when no release serves). Blank: the most recent earlier production holder "
                                        "that was approved (never one that was forced in)."),
        "name": Param("", type=["null", "string"], enum=["", "rag-release", "vector-index", None],
                      title="What to roll back",
                      description="rag-release moves the release with its index and prompt in one decision; "
                                  "vector-index the index alone. Blank: the release once one serves."),
        "reason": Param("", type=["null", "string"], title="Reason",
                        description="Why production is moved back; recorded with the rollback decision. "
                                    "Required when forcing."),
        "force": Param(False, type="boolean", title="Force",
                       description="Allow a version that is not approved (never reviewed, rejected, timed out, "
                                   "forced in). Recorded as forced, with the reason; it stays 'forced in' until a "
                                   "person approves it."),
        "registry": Param("", type=["null", "string"], title="Artifact registry",
                          description="wandb://ENTITY/PROJECT or a folder. Blank: RAGINDEX_REGISTRY, else the "
                                      "local registry under RAGINDEX_HOME."),
    }


def param_value(params: dict[str, Any], name: str, default: Any = None) -> Any:
    """A param with blanks read as 'not set'."""
    value = params.get(name, default)
    return default if value in (None, "") else value
