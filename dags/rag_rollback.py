"""rag_rollback: move the `production` alias of vector-index back — to a named version or to the one
that held it before the current one — and record who did it and why. Only versions that held production
before (so were approved) and were not rejected since are allowed, unless `force` is set with a reason.
Triggered by hand only; the move is announced as an event of the production-index Asset."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from ragindex_airflow import tasks
from ragindex_airflow.assets import PRODUCTION_INDEX
from ragindex_airflow.params import rollback_params
from ragindex_airflow.pools import GOVERNANCE_POOL


@dag(
    dag_id="rag_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=rollback_params(),
    tags=["ragindex", "rag"],
    doc_md=__doc__,
)
def rag_rollback():
    @task(outlets=[PRODUCTION_INDEX], pool=GOVERNANCE_POOL, pool_slots=1)  # one promotion or rollback at a time
    def rollback_production() -> dict[str, Any]:
        """Move production back (refused for a version never approved, unless forced); emit the Asset event."""
        return tasks.rollback_production(get_current_context())

    rollback_production()


rag_rollback()
