"""A rag_ingest task's ``RunSettings`` (its Params and run, read once by ``ragindex_airflow.params``) → the
pipeline's IngestContext: the registry opened, connection ids made resolvable. Reads no Params itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragindex_airflow.params import RunSettings

if TYPE_CHECKING:
    from ragindex.context import IngestContext


def ingest_context(settings: RunSettings, *, create_registry: bool = False) -> IngestContext:
    """The IngestContext of the current task: one per DAG run, whatever task or worker asks. Only the first
    task may create a local registry; for the later ones a missing registry is an error."""
    from ragindex.context import IngestContext
    from ragindex.names import snapshot_alias
    from ragindex.registry import open_registry
    from ragindex_airflow.connections import use_connections, wandb_registry_uri

    use_connections()  # CONN_ID@ in the source or the prompts resolves through Airflow's connections
    alias = snapshot_alias(settings.date)
    return IngestContext(
        registry=open_registry(wandb_registry_uri(settings.registry), create=create_registry),
        pipeline_run_id=settings.run_id,
        settings=settings.build,
        source=settings.source,
        as_of=settings.as_of.isoformat() if settings.as_of else None,
        logical_date=settings.date.isoformat(),
        aliases=(alias,) if alias else (),
        run_type=settings.run_type,
        shards=settings.shards,
        gate=settings.gate,
        drift=settings.drift,
    )
