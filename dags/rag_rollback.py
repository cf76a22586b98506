"""rag_rollback: move the `production` alias of vector-index back — to a named version or to the one
that held it before the current one — and record who did it and why. Triggered by hand only."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from ragindex_airflow import tasks
from ragindex_airflow.params import rollback_params


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
    @task
    def rollback_production() -> dict[str, Any]:
        """Move production back; a version that does not exist fails the run with a clear message."""
        return tasks.rollback_production(get_current_context())

    rollback_production()


rag_rollback()
