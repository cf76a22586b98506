"""How a task body's expected failures reach Airflow (``tasks.fail_fast``): a governance refusal or an input
error is one log line and an AirflowFailException (no retry) whose traceback does not run through the core;
a registry that did not answer is re-raised as it is, for Airflow's retries."""

from __future__ import annotations

import logging
import traceback

import pytest
from airflow.sdk.exceptions import AirflowFailException

from ragindex.errors import GovernanceError, RegistryUnavailable, SettingsError
from ragindex_airflow.tasks import fail_fast


def core_refusal() -> None:
    raise GovernanceError("rollback to rag-release:v1 refused: it was rejected on 2026-12-01 by carol")


def test_a_refusal_is_one_line_and_fails_without_the_cores_traceback(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="ragindex_airflow.tasks"), pytest.raises(AirflowFailException) as got:
        fail_fast(core_refusal)()
    assert str(got.value) == "rollback to rag-release:v1 refused: it was rejected on 2026-12-01 by carol"
    frames = [f.name for f in traceback.extract_tb(got.value.__traceback__)]
    assert "core_refusal" not in frames, frames
    assert got.value.__cause__ is None and got.value.__suppress_context__
    assert [r.getMessage() for r in caplog.records] == [
        "refused: rollback to rag-release:v1 refused: it was rejected on 2026-12-01 by carol"]


def test_an_input_error_fails_at_once_and_a_registry_outage_is_retried() -> None:
    def bad_setting() -> None:
        raise SettingsError("chunk_overlap 600 >= chunk_size 500")

    def outage() -> None:
        raise RegistryUnavailable("wandb://team/project: 503 from the server")

    with pytest.raises(AirflowFailException, match="chunk_overlap 600"):
        fail_fast(bad_setting)()
    with pytest.raises(RegistryUnavailable):
        fail_fast(outage)()
