"""rag_ingest: corpus → raw-documents → processed-chunks → (embedding shards) → vector-index, paired with the
prompt-template as a rag-release → eval-report → human review of the release (it holds `staging` meanwhile) →
the `production` alias of the release, its index and its prompt, announced as an Asset event. A prompt-only
change reuses the index: nothing is parsed or embedded.
Weekly, from the UI's trigger form, or as a backfill of past dates (which never promote).

Wiring only: every task body is a function of ``ragindex_airflow.tasks``; heavy imports happen inside them.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from ragindex_airflow import tasks
from ragindex_airflow.assets import PRODUCTION_INDEX
from ragindex_airflow.params import ingest_params
from ragindex_airflow.pools import GOVERNANCE_POOL
from ragindex_airflow.review import IndexReviewOperator

# A data-interval timetable (not a bare cron string, which means CronTriggerTimetable in Airflow 3 and gives
# empty intervals): each scheduled or backfill run snapshots the corpus as of its interval's end.
SCHEDULE = os.environ.get("RAGINDEX_SCHEDULE", "0 3 * * 1").strip()
# A run waiting for its review (up to review_timeout_hours) must not hold back the next ingestion: several runs
# may be active; a newer candidate's review supersedes an older one still waiting (on record as `superseded`).
MAX_ACTIVE_RUNS = int(os.environ.get("RAGINDEX_MAX_ACTIVE_RUNS", "4"))


@dag(
    dag_id="rag_ingest",
    schedule=None if SCHEDULE.lower() in ("", "none", "@none") else CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    params=ingest_params(),
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["ragindex", "rag"],
    doc_md=__doc__,
)
def rag_ingest():
    @task.branch
    def pull_documents() -> list[str]:
        """Snapshot the corpus and log raw-documents (XCom ``pulled``); a prompt-only run branches straight to the
        gate; everything is skipped when nothing changed."""
        context = get_current_context()
        return tasks.route(context, tasks.pull_documents(context))

    @task
    def chunk_documents(pulled: dict[str, Any]) -> list[dict[str, Any]]:
        """Parse + chunk, log processed-chunks, plan the embedding: one work order per shard."""
        return tasks.chunk_documents(get_current_context(), pulled)

    @task(map_index_template="shard {{ task.op_kwargs['order']['shard'] }}")
    def embed_chunks(order: dict[str, Any]) -> int:
        """Embed one shard of new texts."""
        return tasks.embed_chunks(get_current_context(), order)

    @task
    def build_index(pulled: dict[str, Any], orders: list[dict[str, Any]], embedded: list[int]) -> dict[str, Any]:
        """Build the FAISS index + docstore from all shards and log vector-index."""
        return tasks.build_index(get_current_context(), pulled, orders)

    @task(trigger_rule="none_failed_min_one_success")  # a prompt-only run skips chunk/embed/build
    def evaluate_index(pulled: dict[str, Any], orders: list[dict[str, Any]] | None,
                       built: dict[str, Any] | None) -> dict[str, Any]:
        """Score candidate vs production on eval-questions, log eval-report, apply the gate."""
        return tasks.evaluate_index(get_current_context(), pulled, orders, built)

    review = IndexReviewOperator(
        task_id="review",
        subject="Promote {{ ti.xcom_pull(task_ids='evaluate_index')['release'] }} "
                "({{ ti.xcom_pull(task_ids='evaluate_index')['index'] }} + "
                "{{ ti.xcom_pull(task_ids='evaluate_index')['prompt'] }}) to production?",
        body="The summary is written when the review starts.",  # against the production serving then
    )

    @task(outlets=[PRODUCTION_INDEX], pool=GOVERNANCE_POOL, pool_slots=1)  # one promotion or rollback at a time
    def promote(evaluated: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        """Move production to the approved index (and the versions it came from); emit the Asset event."""
        return tasks.promote(get_current_context(), evaluated, decision)

    pulled = pull_documents()["pulled"]
    orders = chunk_documents(pulled)
    built = build_index(pulled, orders, embed_chunks.expand(order=orders))
    evaluated = evaluate_index(pulled, orders, built)
    evaluated >> review
    promote(evaluated, review.output)


rag_ingest()
