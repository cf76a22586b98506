"""The Params forms of the DAGs, and the one place their values are read: every field has a title and a
description; defaults come from the core's settings dataclasses (one source for each default) or from the
deployment's environment.

At task entry, ``run_settings`` (``rollback_settings`` for rag_rollback) reads the Params of the run once, checks
each against its field's schema and the core's rules, and gives one frozen settings object that the task body
passes down; nothing reads Params after it. A Param that cannot be used fails the task at once
(``InvalidParam``, an AirflowFailException: not retried), naming the Param and the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from ragindex.context import BACKFILL, MANUAL, SCHEDULED
from ragindex.errors import RagindexError
from ragindex.settings import (
    DEFAULT_EMBEDDING_BACKEND,
    DEFAULT_MODEL,
    EMBEDDING_BACKENDS,
    INDEX_KINDS,
    BuildSettings,
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
                                   description="onnx-int8 (default): the model run by onnxruntime, quantised, its "
                                               "one-text passes side by side on every core (retrieval figures within "
                                               "one question per hundred of fp32). onnx: fp32, the vectors torch "
                                               "gives. torch: sentence-transformers. A change re-embeds everything."),
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
                                                   "addresses, phone or card numbers (or more of them than "
                                                   "production's copy)."),
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


# ---------------------------------------------------------------- the values of a run, read once

T = TypeVar("T")


class InvalidParam(AirflowFailException):
    """A Param whose value cannot be used: the same value fails again, so the task fails without retries."""

    def __init__(self, names: str | tuple[str, ...], reason: str) -> None:
        self.params = (names,) if isinstance(names, str) else tuple(names)
        quoted = ", ".join(repr(n) for n in self.params)
        super().__init__(f"Param{'s' if len(self.params) > 1 else ''} {quoted}: {reason}")


@dataclass(frozen=True)
class RunSettings:
    """One rag_ingest task's view of its run: the Params typed and checked, with the run's id, kind and dates,
    read from the Airflow context once at task entry. Task bodies pass it down; nothing reads Params again."""

    run_id: str
    run_type: str  # scheduled, manual, backfill, ...
    date: datetime  # what the run's versions are tagged with
    as_of: datetime | None  # the corpus as of then; None: now
    source: str  # rendered ({{ ds }} filled in) and free of credentials
    prompts: str
    eval_questions: Path
    registry: str  # "": the deployment's default
    build: BuildSettings
    shards: ShardSettings
    gate: GateSettings
    drift: DriftSettings
    review: ReviewSettings
    promote: bool


@dataclass(frozen=True)
class RollbackSettings:
    """rag_rollback's Params, read once at task entry, with the run's id and who triggered it."""

    run_id: str
    actor: str
    to_version: str | None
    name: str | None
    reason: str
    force: bool
    registry: str


def run_settings(context: Mapping[str, Any]) -> RunSettings:
    """The settings of a rag_ingest task, from its Airflow context: every Param read here, once."""
    values = _checked_values(context["params"], ingest_params())
    kind, date = _run_type(context), _run_date(context)
    as_of = _corpus_as_of(values["as_of"], kind, context)
    template = _checked_location(str(values["source"]), "source")  # before rendering: no message shows a password
    chunking = _made(("chunk_size", "chunk_overlap"), lambda: ChunkingSettings(
        int(values["chunk_size"]), int(values["chunk_overlap"])))
    index = _made("index_kind", lambda: IndexSettings(kind=values["index_kind"]))
    documents = _made(("max_document_chars", "max_document_chunks"), lambda: replace(
        DocumentLimits(), max_chars=int(values["max_document_chars"]), max_chunks=int(values["max_document_chunks"])))
    corpus = _made(("max_documents", "max_corpus_chars"), lambda: replace(
        CorpusLimits(), max_documents=int(values["max_documents"]), max_chars=int(values["max_corpus_chars"])))
    build = _made(("embedding_model", "embedding_backend"), lambda: BuildSettings(
        chunking=chunking, index=index, model=str(values["embedding_model"]),
        embedding_backend=values["embedding_backend"], documents=documents, corpus=corpus))
    drift_names = tuple(f.name for f in fields(DriftSettings))
    return RunSettings(
        run_id=context["dag_run"].run_id, run_type=kind, date=date, as_of=as_of,
        source=_checked_location(_render_source(template, as_of, date), "source"),
        prompts=_checked_location(str(values["prompts"]), "prompts"),
        eval_questions=Path(str(values["eval_questions"])),
        registry=values["registry"] or "",
        build=build,
        shards=_made(("embed_shard_size", "max_embed_shards"), lambda: ShardSettings(
            shard_size=int(values["embed_shard_size"]), max_shards=int(values["max_embed_shards"]))),
        gate=_made(("eval_k", "min_recall", "max_regression"), lambda: GateSettings(
            k=int(values["eval_k"]), min_recall=float(values["min_recall"]),
            max_regression=float(values["max_regression"]))),
        drift=_made(drift_names, lambda: DriftSettings(**{f.name: type(f.default)(values[f.name])
                                                          for f in fields(DriftSettings)})),
        review=_made("review_timeout_hours", lambda: ReviewSettings(
            require_approval=bool(values["require_approval"]), timeout_hours=float(values["review_timeout_hours"]))),
        promote=bool(values["promote"]),
    )


def rollback_settings(context: Mapping[str, Any]) -> RollbackSettings:
    """The settings of a rag_rollback task, from its Airflow context: every Param read here, once."""
    values = _checked_values(context["params"], rollback_params())
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None) or "airflow"
    return RollbackSettings(run_id=dag_run.run_id, actor=f"{user} via rag_rollback",
                            to_version=values["to_version"] or None, name=values["name"] or None,
                            reason=values["reason"] or "", force=bool(values["force"]),
                            registry=values["registry"] or "")


def _checked_values(params: Mapping[str, Any], form: Mapping[str, Param]) -> dict[str, Any]:
    """Each field of ``form`` read from ``params`` once (its default where the run gives none), checked against
    the field's schema: Airflow checks them too when it starts a task, this names the Param wherever the
    values come from. A blank in a field that may be blank is None."""
    from jsonschema import FormatChecker, ValidationError, validate

    values: dict[str, Any] = {}
    for name, param in form.items():
        value = params[name] if name in params else param.value
        try:
            validate(value, param.schema, format_checker=FormatChecker())
        except ValidationError as exc:
            raise InvalidParam(name, exc.message) from None
        values[name] = None if value == "" and "null" in _types(param) else value
    return values


def _types(param: Param) -> tuple[str, ...]:
    kind = param.schema.get("type", ())
    return (kind,) if isinstance(kind, str) else tuple(kind)


def _made(names: str | tuple[str, ...], make: Callable[[], T]) -> T:
    """A core settings object from Param values; a rule of the core it breaks names those Params."""
    try:
        return make()
    except RagindexError as exc:
        raise InvalidParam(names, str(exc)) from None


def _checked_location(location: str, name: str) -> str:
    """A source or prompts location free of credentials (``user:password@`` is refused, the password hidden)."""
    from ragindex_airflow.connections import checked_location

    try:
        return checked_location(location, name)
    except RagindexError as exc:
        raise InvalidParam(name, str(exc)) from None


def _run_type(context: Mapping[str, Any]) -> str:
    """'scheduled', 'manual', 'backfill', ... as a plain string."""
    value = getattr(context["dag_run"], "run_type", MANUAL)
    return str(getattr(value, "value", value))


def _run_date(context: Mapping[str, Any]) -> datetime:
    """The date a run's versions are tagged with: logical date, else when it was due to run."""
    if context.get("logical_date"):
        return context["logical_date"]
    return getattr(context["dag_run"], "run_after", None) or datetime.now(timezone.utc)


def _corpus_as_of(explicit: str | None, kind: str, context: Mapping[str, Any]) -> datetime | None:
    """The 'corpus as of' instant: the Param if given; else the data interval's end for scheduled and
    backfill runs (CronDataIntervalTimetable gives them a real interval); else None (now) for manual runs."""
    if explicit:
        from ragindex.sources import parse_as_of

        try:
            return parse_as_of(explicit)
        except RagindexError as exc:
            raise InvalidParam("as_of", str(exc)) from None
    if kind in (SCHEDULED, BACKFILL):
        return context.get("data_interval_end") or context.get("logical_date")
    return None


def _render_source(template: str, as_of: datetime | None, date: datetime) -> str:
    """Fill ``{{ ds }}`` / ``{{ ds_nodash }}`` / ``{{ as_of_date }}`` so a source can name a dated folder."""
    import jinja2

    as_of_date = (as_of or date).strftime("%Y-%m-%d")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    try:
        return env.from_string(template).render(ds=date.strftime("%Y-%m-%d"), ds_nodash=date.strftime("%Y%m%d"),
                                                as_of_date=as_of_date)
    except jinja2.TemplateError as exc:
        raise InvalidParam("source", f"{template!r} is not a template this field renders ({exc}); it may use "
                                     "{{ ds }}, {{ ds_nodash }} and {{ as_of_date }}") from None
