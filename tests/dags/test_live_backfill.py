"""A real Airflow backfill of rag_ingest never moves ``production``.

``airflow standalone`` as in test_live_airflow.py (its LiveAirflow, on other ports: API 18090, log servers
18091/18092, its own AIRFLOW_HOME and RAGINDEX_HOME), but with the weekly schedule ON (RAGINDEX_SCHEDULE
unset: ``0 3 * * 1`` as a CronDataIntervalTimetable), so backfills are possible.

What Airflow 3.3 does with a paused DAG: POST /api/v2/backfills accepts it and creates the backfill's runs
(state queued), but the scheduler only moves queued runs of *unpaused* DAGs to running
(``DagRun.get_queued_dag_runs_to_set_running`` joins ``DagModel.is_paused == false()``; the TI query of
``_executable_task_instances_to_queued`` also filters ``~DagModel.is_paused``). So a paused DAG's backfill
waits, queued, until the DAG is unpaused; this test checks that, then unpauses.

Unpausing a DAG with a schedule and catchup=False creates at once a scheduled run of the most recent complete
week, with no conf (the default source and registry, and a 72 h human review that would hold
max_active_runs=1). The test marks that run failed through the REST API. If it falls inside the backfill's
range, ``reprocess_behavior: completed`` makes the backfill clear it and adopt it (run_type becomes backfill,
conf becomes the backfill's ``dag_run_conf``), so it is checked like the other backfill runs.

Scenario: the corpus copy is 60 days old; a manual run (require_approval=false) makes vector-index:v0
production; then one document is rewritten (mtime now), and a backfill of the weeks between 3 and 1 weeks
ago runs. As of those dates the rewritten document did not exist yet (the filesystem has no history: a
snapshot as of a past instant leaves out files modified after it), so the first backfill run builds new
versions from the corpus without it (as_of = its data interval end, run_type backfill, its
``snapshot-YYYY-MM-DD`` alias), and the later runs find that same corpus already indexed and stop as
'unchanged' (pull_documents skipped, no new versions). In every backfill run review and promote are skipped,
and production stays on vector-index:v0.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import need
from tests.dags.conftest import REPO, SAMPLE_QUESTIONS, copy_corpus
from tests.dags.test_live_airflow import RUN_TIMEOUT_S, LiveAirflow, production_ref

pytestmark = pytest.mark.slow

PORT = 18090
DAY = 86400.0


class BackfillAirflow(LiveAirflow):
    """LiveAirflow on its own ports, with the DAG's weekly schedule left on."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, port=PORT)
        self.env.pop("RAGINDEX_SCHEDULE", None)

    def runs(self, run_type: str | None = None) -> list[dict]:
        params: dict = {"limit": 100, "order_by": "logical_date"}
        if run_type:
            params["run_type"] = run_type
        return self.api("GET", "/dags/rag_ingest/dagRuns", params=params)["dag_runs"]

    def set_paused(self, paused: bool) -> None:
        assert self.api("PATCH", "/dags/rag_ingest", json={"is_paused": paused})["is_paused"] is paused


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture()
def live(tmp_path):
    """Airflow on PostgreSQL: Airflow refuses backfill creation on SQLite under concurrent access, and the
    scheduler, dag-processor and api-server of a live instance are exactly that."""
    from tests.deployment.stack import AirflowStack, Ports, StackError, postgres_bin

    need(postgres_bin() is not None, "PostgreSQL server binaries not found (scripts/system-deps.sh installs them)")
    (tmp_path / "pg").mkdir()
    (tmp_path / "airflow").mkdir()
    database = AirflowStack(tmp_path / "pg", REPO, Ports(postgres=18095))
    airflow = BackfillAirflow(tmp_path / "airflow")
    try:
        try:
            database.start_postgres()
        except StackError as exc:
            pytest.fail(f"PostgreSQL did not start: {exc}")
        airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database.sql_alchemy_conn
        airflow.start()
        airflow.wait_ready()
        yield airflow
    finally:
        airflow.stop()
        database.processes.stop_all()


def test_backfill_never_moves_production(live, tmp_path):
    from ragindex.registry import open_registry

    now = datetime.now(timezone.utc)
    corpus = copy_corpus(tmp_path / "corpus", mtime=time.time() - 60 * DAY)
    registry_path = tmp_path / "registry"
    conf = {"source": str(corpus), "registry": str(registry_path), "require_approval": False,
            "eval_questions": str(SAMPLE_QUESTIONS)}

    dag = live.api("GET", "/dags/rag_ingest")
    assert dag["is_paused"] is True  # dags_are_paused_at_creation
    assert "0 3 * * 1" in str(dag.get("timetable_summary")), dag  # the weekly schedule is on

    # --- unpause: the scheduler at once creates the scheduled run of the latest complete week (catchup=False).
    # It has no conf (default source/registry, a 72 h review) and would hold max_active_runs=1: fail it.
    live.set_paused(False)
    deadline = time.monotonic() + 120
    while not (scheduled := live.runs("scheduled")):
        live._check_alive()
        assert time.monotonic() < deadline, f"no scheduled run after unpausing:\n{live.tail()}"
        time.sleep(2)
    assert len(scheduled) == 1, scheduled
    live.api("PATCH", f"/dags/rag_ingest/dagRuns/{scheduled[0]['dag_run_id']}", json={"state": "failed"})

    # --- a production version: one manual run, auto-approved.
    run_id = live.trigger(conf)
    run, states = live.wait_finished(run_id)
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["success"]
    assert production_ref(registry_path) == "vector-index:v0"
    before = {name: [v.ref for v in open_registry(str(registry_path)).versions(name)]
              for name in ("raw-documents", "processed-chunks", "vector-index", "eval-report")}
    assert before["vector-index"] == ["vector-index:v0"]

    # --- today's corpus differs from the past one.
    doc = corpus / "fleet_maintenance.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nTyres are replaced in pairs on the same axle.\n",
                   encoding="utf-8")

    # --- the backfill, created while the DAG is paused.
    live.set_paused(True)
    body = {"dag_id": "rag_ingest", "from_date": (now - timedelta(weeks=3)).isoformat(),
            "to_date": (now - timedelta(weeks=1)).isoformat(), "dag_run_conf": conf, "max_active_runs": 1,
            "reprocess_behavior": "completed"}
    backfill = live.api("POST", "/backfills", json=body)
    assert backfill["is_paused"] is False and backfill["completed_at"] is None, backfill
    backfill_runs = live.runs("backfill")
    assert len(backfill_runs) >= 2, backfill_runs  # two Mondays in a 14-day range
    assert all(r["conf"] == conf for r in backfill_runs), backfill_runs

    # Paused DAG: its backfill runs stay queued, no task starts, however often the scheduler looks at them.
    live.wait_scheduler_heartbeats(5)
    for r in live.runs("backfill"):
        assert r["state"] == "queued", r
        assert set(sum(live.task_states(r["dag_run_id"]).values(), [])) <= {None}, r
    assert live.api("GET", f"/backfills/{backfill['id']}")["completed_at"] is None

    # --- unpaused: the backfill runs, one run at a time.
    live.set_paused(False)
    deadline = time.monotonic() + RUN_TIMEOUT_S * len(backfill_runs)
    while True:
        live._check_alive()
        b = live.api("GET", f"/backfills/{backfill['id']}")
        runs = live.runs("backfill")
        if b["completed_at"] and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"backfill not finished: {runs}\n{live.tail()}"
        time.sleep(3)
    assert not live.runs("scheduled") or all(r["state"] == "failed" for r in live.runs("scheduled"))

    # --- the runs.
    runs = sorted(live.runs("backfill"), key=lambda r: r["logical_date"])
    assert {r["dag_run_id"] for r in runs} == {r["dag_run_id"] for r in backfill_runs}
    print("backfill runs:", [(r["dag_run_id"], r["logical_date"], r["data_interval_end"], r["state"]) for r in runs])
    reg = open_registry(str(registry_path))
    for i, r in enumerate(runs):
        assert r["run_type"] == "backfill" and r["state"] == "success", r
        assert r["conf"] == conf
        assert now - timedelta(weeks=3) <= _dt(r["logical_date"]) <= now - timedelta(weeks=1)
        states = live.task_states(r["dag_run_id"])
        assert states["review"] == ["skipped"] and states["promote"] == ["skipped"], (r, states)
        produced = {name: [v for v in reg.versions(name) if v.metadata.get("pipeline_run_id") == r["dag_run_id"]]
                    for name in ("raw-documents", "processed-chunks", "vector-index", "eval-report")}
        if i == 0:
            # As of the first backfill date the rewritten document did not exist: a new corpus, new versions.
            assert states["pull_documents"] == ["success"], states
            assert states["build_index"] == ["success"] and states["evaluate_index"] == ["success"], states
            alias = f"snapshot-{r['logical_date'][:10]}"
            for name, versions in produced.items():
                assert len(versions) == 1, (name, versions)
                v = versions[0]
                assert v.metadata["run_type"] == "backfill", v
                assert v.metadata["as_of"] is not None and _dt(v.metadata["as_of"]) == _dt(r["data_interval_end"]), v
                assert _dt(v.metadata["logical_date"]) == _dt(r["logical_date"]), v
                assert alias in v.aliases and "production" not in v.aliases, v
            assert produced["vector-index"][0].ref == "vector-index:v1"
            assert produced["raw-documents"][0].metadata["documents"] == \
                reg.get(before["raw-documents"][0]).metadata["documents"] - 1
        else:
            # The same past corpus again, already indexed: 'unchanged', nothing new.
            assert states["pull_documents"] == ["skipped"], states
            assert all(s == ["skipped"] for t, s in states.items() if t != "pull_documents"), states
            assert not any(produced.values()), produced

    assert production_ref(registry_path) == "vector-index:v0"
    assert [v.ref for v in reg.versions("vector-index")] == ["vector-index:v0", "vector-index:v1"]
    assert "production" not in reg.get("vector-index:v1").aliases
