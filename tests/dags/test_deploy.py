"""rag_deploy's body against a real ``ragindex serve`` process on loopback that polls only hourly, so any switch
seen here was made by the POST /refresh the body sent: it tells every endpoint, logs what each serves, and fails
naming an endpoint that never answered (after telling the others). Then one real ``dag.test()`` run."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from ragindex.promotion import approve
from ragindex.rollback import rollback
from ragindex_airflow import deploy
from ragindex_airflow.assets import PRODUCTION_INDEX
from tests.dags.conftest import DAGS
from tests.serve.servers import QUESTION, free_port, make_two_versions, running_server

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def served(tmp_path: Path):
    """Two versions (v0 production) and a server following production that would not poll within the test."""
    registry, first, second = make_two_versions(tmp_path)
    with running_server(registry.uri, "--poll-seconds", "3600") as (_server, base):
        yield registry, first, second, base


def answered_from(base: str) -> str:
    return httpx.post(f"{base}/search", json={"question": QUESTION, "k": 1}, timeout=30).json()["ref"]


def context_of_move(registry, ref: str) -> dict:
    """A task context holding what the promote/rollback task put on the Asset event (the accessor's shape: a
    mapping of asset to its events, each with ``extra``)."""
    version = registry.get(ref)
    event = SimpleNamespace(extra={"kind": "promotion", "ref": version.ref, "digest": version.digest})
    return {"triggering_asset_events": {PRODUCTION_INDEX: [event]}}


def test_the_deploy_body_tells_a_real_server_of_a_promotion_at_once(served, monkeypatch, caplog) -> None:
    registry, first, second, base = served
    monkeypatch.setenv(deploy.ENDPOINTS_ENV, f" {base}/ ,{base}")  # a repeat and a trailing slash count once
    approve(registry, second, actor="bob", reason="two years now")
    assert answered_from(base) == first, "the server has not polled: only /refresh can switch it"
    with caplog.at_level(logging.INFO, logger=deploy.__name__):
        answers = deploy.refresh_serving(context_of_move(registry, second))
    assert [(a["endpoint"], a["changed"], a["ref"]) for a in answers] == [(base, True, second)]
    assert answered_from(base) == second, "switched before /refresh answered"
    assert f"{base}: switched to {second}" in caplog.text
    assert "not that production moved to" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=deploy.__name__):
        again = deploy.refresh_serving(context_of_move(registry, first))  # an event naming another version
    assert again[0]["changed"] is False and f"{base}: already serving {second}" in caplog.text
    assert f"not {registry.get(first).digest} that production moved to" in caplog.text


def test_an_endpoint_that_does_not_answer_fails_the_task_by_name_after_the_others_were_told(
        served, monkeypatch, caplog) -> None:
    registry, first, second, base = served
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(deploy.ENDPOINTS_ENV, f"{dead},{base}")
    monkeypatch.setattr(deploy, "RETRY_WAIT_S", 0.05)
    approve(registry, second, actor="bob", reason="two years now")
    with caplog.at_level(logging.INFO, logger=deploy.__name__), \
            pytest.raises(deploy.EndpointsDidNotAnswer, match="1 of 2 serving endpoints did not answer") as failed:
        deploy.refresh_serving(context_of_move(registry, second))
    assert dead in str(failed.value) and base not in str(failed.value)
    assert [f"try {n} of 3 failed" in caplog.text for n in (1, 2, 3)] == [True] * 3
    assert answered_from(base) == second, "the endpoint after the dead one was told all the same"


def test_endpoints_come_from_the_environment_and_the_variable_and_bad_ones_are_refused(monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    monkeypatch.delenv(deploy.ENDPOINTS_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_RAGINDEX_SERVE_ENDPOINTS", raising=False)
    with pytest.raises(AirflowSkipException, match=f"set {deploy.ENDPOINTS_ENV} or the Airflow Variable"):
        deploy.refresh_serving({})
    monkeypatch.setenv(deploy.ENDPOINTS_ENV, "http://serve-a:8000, https://serve-b")
    # an Airflow Variable given the Airflow way in the environment (its secrets backends are what Variable.get reads)
    monkeypatch.setenv("AIRFLOW_VAR_RAGINDEX_SERVE_ENDPOINTS", "https://serve-b/,http://serve-c:9000")
    assert deploy.configured_endpoints() == ["http://serve-a:8000", "https://serve-b", "http://serve-c:9000"]
    for bad in ("serve-a:8000", "ftp://serve-a", "http://serve-a:8000/?x=1"):
        monkeypatch.setenv(deploy.ENDPOINTS_ENV, bad)
        with pytest.raises(AirflowFailException, match=f"environment variable {deploy.ENDPOINTS_ENV}: '.*' is not a"):
            deploy.configured_endpoints()


def test_a_real_rag_deploy_run_refreshes_the_server(served, monkeypatch) -> None:
    """``dag.test()``: the task as Airflow runs it (a manual run: no event, so nothing to compare with)."""
    from airflow.dag_processing.dagbag import DagBag

    registry, first, second, base = served
    monkeypatch.setenv(deploy.ENDPOINTS_ENV, base)
    approve(registry, second, actor="bob", reason="two years now")
    rollback(registry, reason="back again", actor="ops")
    approve(registry, second, actor="bob", reason="and forward")
    assert answered_from(base) == first
    bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
    run = bag.dags["rag_deploy"].test()
    assert str(getattr(run.state, "value", run.state)) == "success"
    assert answered_from(base) == second
