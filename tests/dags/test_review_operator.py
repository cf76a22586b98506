"""The review task's answer handling (``IndexReviewOperator.execute_complete``) on the real operator of the real
DAG and a real local registry; only the task instance is a stand-in (``FakeTaskInstance``: XCom in a dict), so
each governance route of a late answer is checked without a live Airflow: an approval made against a production
that has moved since is voided as ``stale`` and skips promotion; an answer to a review a newer candidate
superseded is not applied; a plain approval goes on to promote."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import DownstreamTasksSkipped

from ragindex.promotion import AGAINST, approve, stage, supersede_pending
from ragindex.review import STALE, SUPERSEDED, latest_review
from ragindex.rollback import rollback
from tests.dags.conftest import DAGS
from tests.decisions.conftest import Versions


class FakeTaskInstance:
    """What the operator asks of its task instance: XCom by task id and key, its ids and try number."""

    def __init__(self, xcoms: dict[tuple[str, str], Any]) -> None:
        self.xcoms, self.pushed = xcoms, {}
        self.dag_id, self.task_id, self.map_index, self.try_number = "rag_ingest", "review", -1, 1

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture(scope="module")
def review_task():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
    assert bag.import_errors == {}
    return bag.dags["rag_ingest"].get_task("review")


def context_for(task, registry_uri: str, run_id: str, candidate: str, against: str | None) -> dict[str, Any]:
    from ragindex_airflow.params import ingest_params
    from ragindex_airflow.review import AGAINST_XCOM

    params = {name: param.value for name, param in ingest_params().items()} | {"registry": registry_uri}
    ti = FakeTaskInstance({("evaluate_index", "return_value"): {"index": candidate, "warnings": []},
                           ("review", AGAINST_XCOM): against})
    return {"params": params, "ti": ti, "task": task, "logical_date": datetime.now(timezone.utc),
            "dag_run": SimpleNamespace(run_id=run_id, run_type="manual", run_after=datetime.now(timezone.utc))}


def answer(option: str, reason: str = "") -> dict[str, Any]:
    return {"chosen_options": [option], "params_input": {"reason": reason}, "responded_at": datetime.now(timezone.utc),
            "responded_by_user": {"id": "alice", "name": "alice"}}


def test_an_approval_against_a_production_that_moved_is_stale_and_skips_promotion(review_task, tmp_path) -> None:
    versions = Versions(tmp_path)
    v0, v1, v2 = versions.index(), versions.index(), versions.index()
    approve(versions.registry, v0, actor="ops")
    approve(versions.registry, v1, actor="ops")
    stage(versions.registry, v2, actor="dag", pipeline_run="run-3", details={AGAINST: v1})
    rollback(versions.registry, to_version="v0", reason="v1 misroutes returns", actor="ops")
    context = context_for(review_task, versions.registry.uri, "run-3", v2, against=v1)
    with pytest.raises(DownstreamTasksSkipped):
        review_task.execute_complete(context, answer("Approve", "looks right"))
    decision = latest_review(versions.registry, versions.registry.get(v2))
    assert decision.verdict == STALE and decision.actor == "alice"
    assert f"production moved from {v1} to {v0}" in decision.reason and "looks right" in decision.reason
    assert versions.registry.get("vector-index:production").ref == v0, "the rollback stands"


def test_a_late_answer_to_a_superseded_review_is_not_applied(review_task, tmp_path) -> None:
    versions = Versions(tmp_path)
    v0, older, newer = versions.index(), versions.index(), versions.index()
    approve(versions.registry, v0, actor="ops")
    stage(versions.registry, older, actor="dag", pipeline_run="run-old")
    (voided,) = supersede_pending(versions.registry, newer, pipeline_run="run-new")
    assert (voided.ref, voided.verdict, voided.pipeline_run) == (older, SUPERSEDED, "run-old")
    context = context_for(review_task, versions.registry.uri, "run-old", older, against=v0)
    with pytest.raises(DownstreamTasksSkipped):
        review_task.execute_complete(context, answer("Approve", "ok"))
    assert latest_review(versions.registry, versions.registry.get(older)).verdict == SUPERSEDED
    assert versions.registry.get("vector-index:production").ref == v0


def test_an_approval_against_the_production_that_still_serves_goes_on(review_task, tmp_path) -> None:
    versions = Versions(tmp_path)
    v0, v1 = versions.index(), versions.index()
    approve(versions.registry, v0, actor="ops")
    stage(versions.registry, v1, actor="dag", pipeline_run="run-2")
    context = context_for(review_task, versions.registry.uri, "run-2", v1, against=v0)
    result = review_task.execute_complete(context, answer("Approve", "checked"))
    assert result["chosen_options"] == ["Approve"] and result["decision"]["verdict"] == "approved"
    assert result["decision"]["details"][AGAINST] == v0


def test_the_approve_link_is_built_without_a_base_url_and_says_how_to_set_one(review_task, monkeypatch, caplog,
                                                                                capfd):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__HOST", "0.0.0.0")
    monkeypatch.setenv("AIRFLOW__API__PORT", "8123")
    ti = SimpleNamespace(dag_id="rag_ingest", run_id="manual__1", task_id="review", map_index=-1)
    with caplog.at_level("INFO"):
        link = review_task.approve_link({"task": review_task, "task_instance": ti})
    assert link.startswith("http://localhost:8123/dags/rag_ingest/runs/manual__1/tasks/review/required_actions?")
    assert link.endswith("&_options=%5B%22Approve%22%5D"), link
    out, err = capfd.readouterr()
    said = out + err + "".join(r.getMessage() for r in caplog.records)
    assert "AIRFLOW__API__BASE_URL" in said and "http://localhost:8123" in said, "the log says how to set it"
