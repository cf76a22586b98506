"""rag_deploy: tell the serving endpoints that production moved. Scheduled on the production-index Asset
(every promotion and rollback is an event of it), it POSTs /refresh to each `ragindex serve` endpoint named
in RAGINDEX_SERVE_ENDPOINTS or the Airflow Variable ragindex_serve_endpoints (comma-separated base URLs), logs
the version each now serves, and fails naming every endpoint that did not answer (retried). Without it a
server still follows the move at its next poll."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from ragindex_airflow import deploy
from ragindex_airflow.assets import PRODUCTION_INDEX


@dag(
    dag_id="rag_deploy",
    schedule=[PRODUCTION_INDEX],
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ragindex", "rag"],
    doc_md=__doc__,
)
def rag_deploy():
    @task(retries=2, retry_delay=timedelta(seconds=30))
    def refresh_serving() -> list[dict[str, Any]]:
        """POST /refresh to every configured endpoint; fail naming those that never answered."""
        return deploy.refresh_serving(get_current_context())

    refresh_serving()


rag_deploy()
