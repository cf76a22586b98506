"""A task's Params are read once, at its entry, into one checked settings object (``params.run_settings``,
``params.rollback_settings``): each Param with a value it cannot take fails at once (AirflowFailException: not
retried) naming it and the reason; valid values map to the core's settings as before; the real task bodies
(pull, review, rollback) parse once and never read a Param after that."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from ragindex.settings import BuildSettings, DriftSettings, GateSettings, ReviewSettings, ShardSettings
from tests.dags.conftest import SAMPLE_CORPUS, SAMPLE_QUESTIONS
from tests.dags.test_review_operator import answer, context_for, review_task  # noqa: F401 - the fixture
from tests.decisions.conftest import Versions

SAMPLE_PROMPTS = SAMPLE_CORPUS.parent / "prompts"
MONDAY = datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)

# Every Param of rag_ingest with a value it cannot take, and what the message must say about it
INVALID_INGEST = [
    ("source", "", r"should be non-empty"),
    ("source", "s3://AKIAKEY:Sup3rSecret@bucket/corpus/", r"credentials in the URL are refused"),
    ("source", "s3://bucket/{{ tomorrow }}/", r"'tomorrow' is undefined.*\{\{ ds \}\}"),
    ("prompts", "", r"should be non-empty"),
    ("prompts", "s3://AKIAKEY:Sup3rSecret@bucket/prompts/", r"prompts .*credentials in the URL are refused"),
    ("as_of", "last tuesday", r"not an ISO date"),
    ("registry", 7, r"7 is not of type 'null', 'string'"),
    ("chunk_size", 10, r"10 is less than the minimum of 50"),
    ("chunk_overlap", 1000, r"chunk_overlap=1000: must be >= 0 and smaller than chunk_size=1000"),
    ("embedding_model", "   ", r"must name a sentence-transformers model"),
    ("embedding_backend", "gpu", r"'gpu' is not one of"),
    ("index_kind", "ivf", r"'ivf' is not one of"),
    ("eval_questions", "", r"should be non-empty"),
    ("eval_k", 0, r"0 is less than the minimum of 1"),
    ("min_recall", 1.5, r"1.5 is greater than the maximum of 1"),
    ("max_regression", -0.1, r"-0.1 is less than the minimum of 0"),
    ("max_documents_removed", 2, r"greater than the maximum"),
    ("max_chunks_changed", "half", r"'half' is not of type 'number'"),
    ("max_new_pii_documents", -1, r"less than the minimum of 0"),
    ("max_chunk_length_drop", 1.01, r"greater than the maximum"),
    ("max_duplicate_increase", None, r"None is not of type 'number'"),
    ("require_approval", "yes", r"'yes' is not of type 'boolean'"),
    ("review_timeout_hours", 0, r"less than the minimum of 0.01"),
    ("promote", "no", r"'no' is not of type 'boolean'"),
    ("max_document_chars", 999, r"less than the minimum of 1000"),
    ("max_document_chunks", 0, r"less than the minimum of 1"),
    ("max_documents", 0, r"less than the minimum of 1"),
    ("max_corpus_chars", 2.5, r"2.5 is not of type 'integer'"),
    ("embed_shard_size", 0, r"less than the minimum of 1"),
    ("max_embed_shards", 257, r"greater than the maximum of 256"),
]
INVALID_ROLLBACK = [
    ("to_version", 3, r"3 is not of type 'null', 'string'"),
    ("name", "processed-chunks", r"'processed-chunks' is not one of"),
    ("reason", ["why"], r"is not of type 'null', 'string'"),
    ("force", "yes", r"'yes' is not of type 'boolean'"),
    ("registry", 7, r"7 is not of type 'null', 'string'"),
]


def defaults(form) -> dict[str, Any]:
    return {name: param.value for name, param in form.items()}


def ingest_context_of(params: dict[str, Any], *, run_type: str = "manual", run_id: str = "manual__1",
                      logical_date: datetime | None = MONDAY, **extra: Any) -> dict[str, Any]:
    """The parts of an Airflow task context the settings are read from (and that the task bodies use)."""
    return {"params": params, "logical_date": logical_date, **extra,
            "dag_run": SimpleNamespace(run_id=run_id, run_type=run_type, run_after=MONDAY)}


class TrackedParams(dict):
    """``context["params"]`` that records each read of a value, and whether it came while the settings were
    being parsed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parsing, self.inside, self.outside = False, [], []

    def _seen(self, name: str) -> None:
        (self.inside if self.parsing else self.outside).append(name)

    def __getitem__(self, name: str) -> Any:
        self._seen(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self._seen(name)
        return super().get(name, default)


def count_parses(monkeypatch, module: Any, name: str) -> list[str]:
    """Wrap ``module.name`` (the parser a task calls) so each call is counted and marks its reads as parsing."""
    real, calls = getattr(module, name), []

    def parse(context: dict[str, Any]) -> Any:
        calls.append(context["dag_run"].run_id)
        context["params"].parsing = True
        try:
            return real(context)
        finally:
            context["params"].parsing = False

    monkeypatch.setattr(module, name, parse)
    return calls


# ---------------------------------------------------------------- each Param that cannot be used

def test_the_table_covers_every_param_of_both_forms() -> None:
    from ragindex_airflow.params import ingest_params, rollback_params

    assert {name for name, _, _ in INVALID_INGEST} == set(ingest_params())
    assert {name for name, _, _ in INVALID_ROLLBACK} == set(rollback_params())


@pytest.mark.parametrize("name, value, reason", INVALID_INGEST, ids=[f"{n}={v!r}" for n, v, _ in INVALID_INGEST])
def test_an_ingest_param_that_cannot_be_used_fails_at_once_naming_it(name, value, reason) -> None:
    from ragindex_airflow.params import InvalidParam, ingest_params, run_settings

    with pytest.raises(AirflowFailException) as err:
        run_settings(ingest_context_of(defaults(ingest_params()) | {name: value}))
    assert isinstance(err.value, InvalidParam) and name in err.value.params
    message = str(err.value)
    assert message.startswith("Param") and repr(name) in message.split(":", 1)[0], message
    assert re.search(reason, message), message
    assert "Sup3rSecret" not in message


@pytest.mark.parametrize("name, value, reason", INVALID_ROLLBACK, ids=[f"{n}={v!r}" for n, v, _ in INVALID_ROLLBACK])
def test_a_rollback_param_that_cannot_be_used_fails_at_once_naming_it(name, value, reason) -> None:
    from ragindex_airflow.params import InvalidParam, rollback_params, rollback_settings

    with pytest.raises(InvalidParam, match=rf"^Param '{name}': .*{reason}"):
        rollback_settings(ingest_context_of(defaults(rollback_params()) | {name: value}))


def test_a_task_with_a_bad_param_fails_before_it_touches_anything(tmp_path: Path, caplog) -> None:
    from ragindex_airflow import tasks
    from ragindex_airflow.params import ingest_params

    registry = tmp_path / "registry"
    params = defaults(ingest_params()) | {"registry": str(registry), "chunk_overlap": 1500, "chunk_size": 1200}
    with caplog.at_level(logging.ERROR, logger="ragindex_airflow.tasks"), \
            pytest.raises(AirflowFailException) as err:
        tasks.pull_documents(ingest_context_of(params))
    assert str(err.value).startswith("Params 'chunk_size', 'chunk_overlap': chunk_overlap=1500")
    assert [r.getMessage() for r in caplog.records] == [f"failed: {err.value}"], "one line in the task log"
    assert not registry.exists(), "nothing was created: the registry is opened only after the Params passed"


# ---------------------------------------------------------------- valid values, as the core takes them

def test_valid_params_map_to_the_cores_settings_and_the_runs_facts() -> None:
    from ragindex_airflow.params import ingest_params, run_settings

    form = defaults(ingest_params())
    settings = run_settings(ingest_context_of(form))
    assert settings.build == BuildSettings() and settings.shards == ShardSettings()
    assert (settings.gate, settings.drift, settings.review) == (GateSettings(), DriftSettings(), ReviewSettings())
    assert (settings.run_id, settings.run_type, settings.date, settings.as_of) == ("manual__1", "manual", MONDAY, None)
    assert (settings.registry, settings.promote) == ("", True)
    assert settings.eval_questions == SAMPLE_QUESTIONS and settings.prompts == str(SAMPLE_PROMPTS)

    changed = run_settings(ingest_context_of(form | {
        "chunk_size": 500, "chunk_overlap": 50, "index_kind": "hnsw", "embedding_backend": "torch",
        "max_document_chars": 5000, "max_document_chunks": 7, "max_documents": 9, "max_corpus_chars": 11,
        "embed_shard_size": 3, "max_embed_shards": 4, "eval_k": 2, "min_recall": 0.5, "max_regression": 0.1,
        "max_new_pii_documents": 2, "max_duplicate_increase": 0.2, "require_approval": False,
        "review_timeout_hours": 1.5, "promote": False, "registry": "/reg", "source": "s3://docs@bucket/{{ ds }}/"}))
    build = changed.build
    assert (build.chunking.chunk_size, build.chunking.chunk_overlap, build.index.kind, build.embedding_backend) == (
        500, 50, "hnsw", "torch")
    assert (build.documents.max_chars, build.documents.max_chunks) == (5000, 7)
    assert (build.corpus.max_documents, build.corpus.max_chars) == (9, 11)
    assert changed.shards == ShardSettings(3, 4) and changed.gate == GateSettings(2, 0.5, 0.1)
    assert (changed.drift.max_new_pii_documents, changed.drift.max_duplicate_increase) == (2, 0.2)
    assert changed.review == ReviewSettings(False, 1.5) and changed.promote is False
    assert changed.registry == "/reg" and changed.source == "s3://docs@bucket/2026-03-02/"


def test_what_a_date_sees_scheduled_manual_and_explicit() -> None:
    from ragindex_airflow.params import ingest_params, run_settings

    form = defaults(ingest_params()) | {"source": "/corpus/{{ as_of_date }}"}
    end = datetime(2026, 3, 9, 3, 0, tzinfo=timezone.utc)
    scheduled = run_settings(ingest_context_of(form, run_type="scheduled", data_interval_end=end))
    assert scheduled.as_of == end and scheduled.source == "/corpus/2026-03-09"
    manual = run_settings(ingest_context_of(form, data_interval_end=end))
    assert manual.as_of is None and manual.source == "/corpus/2026-03-02", "manual: now, tagged by its date"
    explicit = run_settings(ingest_context_of(form | {"as_of": "2026-01-31"}, run_type="backfill",
                                              data_interval_end=end))
    assert explicit.as_of == datetime(2026, 1, 31, tzinfo=timezone.utc) and explicit.source == "/corpus/2026-01-31"
    no_date = run_settings(ingest_context_of(form, logical_date=None))
    assert no_date.date == MONDAY, "a run without a logical date is tagged with when it was due"


def test_rollback_settings_read_blanks_as_not_set_and_name_the_user() -> None:
    from ragindex_airflow.params import rollback_params, rollback_settings

    context = ingest_context_of(defaults(rollback_params()) | {"reason": None, "name": ""})
    context["dag_run"].triggering_user_name = "carol"
    settings = rollback_settings(context)
    assert (settings.to_version, settings.name, settings.reason, settings.force) == (None, None, "", False)
    assert settings.actor == "carol via rag_rollback" and settings.run_id == "manual__1"


# ---------------------------------------------------------------- once per task, on the real bodies

def test_pull_documents_reads_its_params_once_at_entry(tmp_path: Path, monkeypatch) -> None:
    from ragindex_airflow import tasks
    from ragindex_airflow.params import ingest_params

    params = TrackedParams(defaults(ingest_params()) | {"registry": str(tmp_path / "registry"),
                                                        "source": str(SAMPLE_CORPUS)})
    calls = count_parses(monkeypatch, tasks, "run_settings")
    pulled = tasks.pull_documents(ingest_context_of(params, run_id="manual__once"))
    assert pulled["raw"] == "raw-documents:v0" and pulled["prompt"] == "prompt-template:v0"
    assert calls == ["manual__once"], "parsed once"
    assert sorted(params.inside) == sorted(ingest_params()), "each Param read once, while parsing"
    assert params.outside == [], "no Param read after the parse"


def test_the_review_task_reads_its_params_once_at_entry(review_task, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    from ragindex.promotion import approve, stage
    from ragindex_airflow import review
    from ragindex_airflow.params import ingest_params

    versions = Versions(tmp_path)
    v0, v1 = versions.index(), versions.index()
    approve(versions.registry, v0, actor="ops")
    stage(versions.registry, v1, actor="dag", pipeline_run="run-2")
    context = context_for(review_task, versions.registry.uri, "run-2", v1, against=v0)
    context["params"] = TrackedParams(context["params"])
    calls = count_parses(monkeypatch, review, "run_settings")
    result = review_task.execute_complete(context, answer("Approve", "checked"))
    assert result["decision"]["verdict"] == "approved"
    assert calls == ["run-2"] and params_read_once(context["params"], ingest_params())


def test_the_rollback_task_reads_its_params_once_at_entry(tmp_path: Path, monkeypatch) -> None:
    from ragindex.promotion import approve
    from ragindex_airflow import tasks
    from ragindex_airflow.params import rollback_params

    versions = Versions(tmp_path)
    v0, v1 = versions.index(), versions.index()
    approve(versions.registry, v0, actor="ops")
    approve(versions.registry, v1, actor="ops")
    params = TrackedParams(defaults(rollback_params()) | {"registry": versions.registry.uri, "reason": "v1 misroutes"})
    context = ingest_context_of(params, run_id="manual__rollback",
                                outlet_events=defaultdict(lambda: SimpleNamespace(extra=None)))
    calls = count_parses(monkeypatch, tasks, "rollback_settings")
    outcome = tasks.rollback_production(context)
    assert (outcome["from"], outcome["to"]) == (v1, v0)
    assert calls == ["manual__rollback"] and params_read_once(params, rollback_params())


def params_read_once(params: TrackedParams, form) -> bool:
    assert sorted(params.inside) == sorted(form), "each Param read once, while parsing"
    assert params.outside == [], f"read after the parse: {params.outside}"
    return True
