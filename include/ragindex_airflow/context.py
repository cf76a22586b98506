"""Turn an Airflow task context (run type, dates, Params) into the pipeline's IngestContext."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ragindex_airflow.params import param_value

BACKFILL = "backfill"


def run_type(context: dict[str, Any]) -> str:
    """'scheduled', 'manual', 'backfill', ... as a plain string."""
    value = getattr(context["dag_run"], "run_type", "manual")
    return str(getattr(value, "value", value))


def is_backfill(context: dict[str, Any]) -> bool:
    """Backfill runs rebuild past corpora as versions of their own and never move production."""
    return run_type(context) == BACKFILL


def corpus_as_of(context: dict[str, Any]) -> datetime | None:
    """The 'corpus as of' instant: the Param if given; else the data interval's end for scheduled and
    backfill runs (CronDataIntervalTimetable gives them a real interval); else None (now) for manual runs."""
    explicit = param_value(context["params"], "as_of")
    if explicit:
        from ragindex.sources import parse_as_of

        return parse_as_of(explicit)
    if run_type(context) in ("scheduled", BACKFILL):
        end = context.get("data_interval_end") or context.get("logical_date")
        return end
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


def ingest_context(context: dict[str, Any]):
    """The IngestContext of the current task: one per DAG run, whatever task or worker asks."""
    from ragindex.ingest import IngestContext, snapshot_alias
    from ragindex.registry import open_registry
    from ragindex.settings import BuildSettings, ChunkingSettings, IndexSettings

    params = context["params"]
    as_of = corpus_as_of(context)
    date = run_date(context)
    settings = BuildSettings(
        chunking=ChunkingSettings(int(params["chunk_size"]), int(params["chunk_overlap"])),
        index=IndexSettings(kind=param_value(params, "index_kind", "flat")),
        model=param_value(params, "embedding_model", "sentence-transformers/all-MiniLM-L6-v2"),
    )
    alias = snapshot_alias(date)
    return IngestContext(
        registry=open_registry(param_value(params, "registry")),
        pipeline_run_id=context["dag_run"].run_id,
        settings=settings,
        source=render_source(str(params["source"]), as_of, date),
        as_of=as_of.isoformat() if as_of else None,
        logical_date=date.isoformat(),
        aliases=(alias,) if alias else (),
        run_type=run_type(context),
    )
