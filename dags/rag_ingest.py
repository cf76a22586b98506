"""rag_ingest: corpus → raw-documents → processed-chunks → (embedding shards) → vector-index → eval-report
→ human review → the `production` alias. Weekly, from the UI's trigger form, or as a backfill of past dates.

Wiring only: every step is a function of ``ragindex.ingest``; heavy imports happen inside the tasks.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ragindex_airflow.params import ingest_params
from ragindex_airflow.review import IndexReviewOperator

log = logging.getLogger(__name__)

# A data-interval timetable (not a bare cron string, which means CronTriggerTimetable in Airflow 3 and gives
# empty intervals): each scheduled or backfill run snapshots the corpus as of its interval's end.
SCHEDULE = os.environ.get("RAGINDEX_SCHEDULE", "0 3 * * 1")


def _timetable(expression: str):
    return None if expression.strip().lower() in ("", "none", "@none") else CronDataIntervalTimetable(expression, timezone="UTC")


def _ctx():
    from ragindex_airflow.context import ingest_context

    return ingest_context(get_current_context())


@dag(
    dag_id="rag_ingest",
    schedule=_timetable(SCHEDULE),
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=ingest_params(),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["ragindex", "rag"],
    doc_md=__doc__,
)
def rag_ingest():
    @task
    def pull_documents() -> dict[str, Any]:
        """Snapshot the corpus and log raw-documents; skip the rest when nothing changed."""
        from ragindex.ingest import pull_documents as pull

        result = pull(_ctx())
        if result.unchanged:
            raise AirflowSkipException(f"corpus unchanged since {result.raw} and {result.existing_index} was built "
                                       "from it with these settings: no new versions")
        return result.to_json()

    @task
    def chunk_documents(pulled: dict[str, Any]) -> list[dict[str, Any]]:
        """Parse + chunk, log processed-chunks, and plan the embedding: one small work order per shard."""
        from ragindex.ingest import chunk_documents as chunk

        params = get_current_context()["params"]
        result = chunk(_ctx(), pulled["raw"], shard_size=int(params["embed_shard_size"]),
                       max_shards=int(params["max_embed_shards"]))
        return [result.to_json() | {"shard": i} for i in range(result.shards)]

    @task(map_index_template="shard {{ task.op_kwargs['order']['shard'] }}")
    def embed_chunks(order: dict[str, Any]) -> int:
        """Embed one shard of new texts (cached texts are never embedded again)."""
        from ragindex.ingest import embed_chunks as embed

        return embed(_ctx(), int(order["shard"]))

    @task
    def build_index(pulled: dict[str, Any], orders: list[dict[str, Any]], embedded: list[int]) -> dict[str, Any]:
        """Build the FAISS index + docstore from all shards and log vector-index."""
        from ragindex.ingest import build_index as build

        return build(_ctx(), pulled["raw"], orders[0]["chunks"]).to_json()

    @task
    def evaluate_index(pulled: dict[str, Any], orders: list[dict[str, Any]], built: dict[str, Any]) -> dict[str, Any]:
        """Score candidate vs production on eval-questions, log eval-report, apply the gate."""
        from ragindex.ingest import evaluate_index as evaluate, review_summary
        from ragindex_airflow.context import is_backfill

        ctx = _ctx()
        params = get_current_context()["params"]
        outcome = evaluate(ctx, built["index"], params["eval_questions"], k=int(params["eval_k"]),
                           min_recall=float(params["min_recall"]), max_regression=float(params["max_regression"]))
        summary = review_summary(ctx.registry, raw_ref=pulled["raw"], chunks_ref=orders[0]["chunks"], index_ref=built["index"],
                                 outcome=outcome)
        if not outcome.passed:
            message = f"evaluation gate failed for {built['index']}: {outcome.reason} (report {outcome.report})"
            if not is_backfill(get_current_context()):
                raise AirflowFailException(f"{message}; not promoted")
            # A backfill rebuilds a past corpus, which may well score below today's production; it never
            # promotes (review and promote skip themselves), so the gate is recorded, not a run failure.
            log.warning("%s; backfill run: recorded, never promoted", message)
        return outcome.to_json() | {"index": built["index"], "review_markdown": summary}

    review = IndexReviewOperator(
        task_id="review",
        subject="Promote {{ ti.xcom_pull(task_ids='evaluate_index')['index'] }} to production?",
        body="{{ ti.xcom_pull(task_ids='evaluate_index')['review_markdown'] }}",
    )

    @task
    def promote(evaluated: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        """Move production to the approved index (and mark the versions it came from)."""
        from ragindex.ingest import promote as move
        from ragindex_airflow.context import is_backfill

        context = get_current_context()
        if is_backfill(context):
            raise AirflowSkipException("backfill runs never move production")
        who = (decision or {}).get("responded_by_user") or {}
        actor = f"{who.get('name') or who.get('id') or 'unknown'} (review of {context['dag_run'].run_id})"
        ctx = _ctx()
        return move(ctx.registry, evaluated["index"], actor=actor, reason=evaluated["reason"],
                    names=ctx.names, report_ref=evaluated["report"])

    pulled = pull_documents()
    orders = chunk_documents(pulled)
    embedded = embed_chunks.expand(order=orders)
    built = build_index(pulled, orders, embedded)
    evaluated = evaluate_index(pulled, orders, built)
    evaluated >> review
    promote(evaluated, review.output)


rag_ingest()
