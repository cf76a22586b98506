"""Turn an Airflow task context (run type, dates, Params) into the pipeline's IngestContext and settings.

The one place where Params are read and cast: the DAG files never touch a param.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ragindex.context import BACKFILL, MANUAL, SCHEDULED
from ragindex_airflow.params import param_value


def run_type(context: dict[str, Any]) -> str:
    """'scheduled', 'manual', 'backfill', ... as a plain string."""
    value = getattr(context["dag_run"], "run_type", MANUAL)
    return str(getattr(value, "value", value))


def corpus_as_of(context: dict[str, Any]) -> datetime | None:
    """The 'corpus as of' instant: the Param if given; else the data interval's end for scheduled and
    backfill runs (CronDataIntervalTimetable gives them a real interval); else None (now) for manual runs."""
    explicit = param_value(context["params"], "as_of")
    if explicit:
        from ragindex.sources import parse_as_of

        return parse_as_of(explicit)
    if run_type(context) in (SCHEDULED, BACKFILL):
        return context.get("data_interval_end") or context.get("logical_date")
    return None


def run_date(context: dict[str, Any]) -> datetime:
    """The date a run's versions are tagged with: logical date, else when it was due to run."""
    if context.get("logical_date"):
        return context["logical_date"]
    dag_run = context["dag_run"]
    return getattr(dag_run, "run_after", None) or datetime.now(timezone.utc)


def render_source(template: str, as_of: datetime | None, date: datetime) -> str:
    """Fill ``{{ ds }}`` / ``{{ ds_nodash }}`` / ``{{ as_of_date }}`` so a source can name a dated folder."""
    import jinja2

    as_of_date = (as_of or date).strftime("%Y-%m-%d")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(ds=date.strftime("%Y-%m-%d"), ds_nodash=date.strftime("%Y%m%d"),
                                            as_of_date=as_of_date)


def build_settings(params: dict[str, Any]):
    """The Params → BuildSettings mapping (what changes an index's bytes, and the limits of a run)."""
    from dataclasses import replace

    from ragindex.settings import (
        DEFAULT_EMBEDDING_BACKEND,
        DEFAULT_MODEL,
        BuildSettings,
        ChunkingSettings,
        CorpusLimits,
        DocumentLimits,
        IndexSettings,
    )

    documents, corpus = DocumentLimits(), CorpusLimits()
    return BuildSettings(
        chunking=ChunkingSettings(int(params["chunk_size"]), int(params["chunk_overlap"])),
        index=IndexSettings(kind=param_value(params, "index_kind", IndexSettings.kind)),
        model=param_value(params, "embedding_model", DEFAULT_MODEL),
        embedding_backend=param_value(params, "embedding_backend", DEFAULT_EMBEDDING_BACKEND),
        documents=replace(documents, max_chars=int(param_value(params, "max_document_chars", documents.max_chars)),
                          max_chunks=int(param_value(params, "max_document_chunks", documents.max_chunks))),
        corpus=replace(corpus, max_documents=int(param_value(params, "max_documents", corpus.max_documents)),
                       max_chars=int(param_value(params, "max_corpus_chars", corpus.max_chars))),
    )


def drift_settings(params: dict[str, Any]):
    """The Params → DriftSettings mapping (the data gate's thresholds)."""
    from dataclasses import fields

    from ragindex.settings import DriftSettings

    return DriftSettings(**{f.name: type(f.default)(param_value(params, f.name, f.default))
                            for f in fields(DriftSettings)})


def gate_settings(params: dict[str, Any]):
    """The Params → GateSettings mapping."""
    from ragindex.settings import GateSettings

    return GateSettings(k=int(params["eval_k"]), min_recall=float(params["min_recall"]),
                        max_regression=float(params["max_regression"]))


def shard_settings(params: dict[str, Any]):
    """The Params → ShardSettings mapping."""
    from ragindex.settings import ShardSettings

    return ShardSettings(shard_size=int(params["embed_shard_size"]), max_shards=int(params["max_embed_shards"]))


def review_settings(params: dict[str, Any]):
    """The Params → ReviewSettings mapping."""
    from ragindex.settings import ReviewSettings

    return ReviewSettings(require_approval=bool(params.get("require_approval", True)),
                          timeout_hours=float(param_value(params, "review_timeout_hours", ReviewSettings.timeout_hours)))


def ingest_context(context: dict[str, Any], *, create_registry: bool = False):
    """The IngestContext of the current task: one per DAG run, whatever task or worker asks. Only the first
    task may create a local registry; for the later ones a missing registry is an error."""
    from ragindex.context import IngestContext
    from ragindex.names import snapshot_alias
    from ragindex.registry import open_registry
    from ragindex_airflow.connections import checked_source, wandb_registry_uri

    params = context["params"]
    as_of = corpus_as_of(context)
    date = run_date(context)
    alias = snapshot_alias(date)
    return IngestContext(
        registry=open_registry(wandb_registry_uri(param_value(params, "registry") or ""), create=create_registry),
        pipeline_run_id=context["dag_run"].run_id,
        settings=build_settings(params),
        source=checked_source(render_source(str(params["source"]), as_of, date)),
        as_of=as_of.isoformat() if as_of else None,
        logical_date=date.isoformat(),
        aliases=(alias,) if alias else (),
        run_type=run_type(context),
        shards=shard_settings(params),
        gate=gate_settings(params),
        drift=drift_settings(params),
    )
