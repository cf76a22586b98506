"""rag_rollback: move the `production` alias of vector-index back — to a named version or to the one
that held it before the current one — and record who did it and why. Triggered by hand only."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from ragindex_airflow.params import param_value, rollback_params


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
        from ragindex.errors import RagindexError
        from ragindex.ingest import rollback
        from ragindex.registry import RegistryError, open_registry

        context = get_current_context()
        params = context["params"]
        user = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
        try:
            outcome = rollback(open_registry(param_value(params, "registry")),
                               to_version=param_value(params, "to_version"),
                               reason=param_value(params, "reason", ""), actor=f"{user} via rag_rollback")
        except (RagindexError, RegistryError) as exc:
            raise AirflowFailException(str(exc)) from None
        print(f"production moved {outcome['from']} -> {outcome['to']} (digest {outcome['digest']})")
        return outcome

    rollback_production()


rag_rollback()
