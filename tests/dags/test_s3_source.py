"""Sources and registries through Airflow connections: ``s3://CONN_ID@BUCKET/PREFIX/`` against a real S3 API
over HTTP on 127.0.0.1 (moto's server, IAM auth on), connections from ``AIRFLOW_CONN_<ID>`` variables the way
a deployment defines them, and the real ``rag_ingest`` DAG over such a source (slow).

No AWS_* variable is set here: whatever reaches the server came from the connection.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from ragindex.errors import RegistryError, SourceError, SourceUnavailable
from tests.dags.conftest import SAMPLE_CORPUS, SAMPLE_QUESTIONS
from tests.moto_s3 import moto  # noqa: F401 - the fixture
from tests.moto_s3 import free_port, server_time, start_or_skip



@pytest.fixture
def no_aws_env(monkeypatch):
    """No ambient AWS credentials: a connection that failed to apply could not be rescued by them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return monkeypatch


def snapshot_through(source: str, dest: Path, as_of=None):
    """What pull_documents does with the rendered source Param: check it, resolve connections, snapshot it."""
    from ragindex.sources import snapshot
    from ragindex_airflow.connections import checked_location, use_connections

    use_connections()
    return snapshot(checked_location(source), dest, as_of)


def test_a_source_through_a_connection_reads_with_the_connections_credentials(moto, no_aws_env,
                                                                             tmp_path: Path) -> None:
    s3 = moto.bucket("conn-docs", versioned=True)
    s3.put_object(Bucket="conn-docs", Key="corpus/a.md", Body=b"first words")
    no_aws_env.setenv("AIRFLOW_CONN_DOCS_S3", moto.connection_json())
    snap = snapshot_through("s3://docs_s3@conn-docs/corpus/", tmp_path / "one")
    assert [(e.path, e.size) for e in snap.entries] == [("a.md", 11)]
    assert snap.snapshot_facts()["source"] == "s3://docs_s3@conn-docs/corpus/"
    then = server_time(s3, "conn-docs", "corpus/a.md")
    time.sleep(1.1)
    s3.put_object(Bucket="conn-docs", Key="corpus/a.md", Body=b"second, longer words")
    backfill = snapshot_through("s3://docs_s3@conn-docs/corpus/", tmp_path / "two", as_of=then)
    assert (backfill.root / "files" / "a.md").read_text() == "first words", "versions through the connection"


def test_a_missing_connection_is_a_permanent_error_naming_it(no_aws_env, tmp_path: Path) -> None:
    no_aws_env.delenv("AIRFLOW_CONN_NOT_DEFINED", raising=False)
    with pytest.raises(SourceError, match=r"connection 'not_defined' is not defined.*AIRFLOW_CONN_NOT_DEFINED") as err:
        snapshot_through("s3://not_defined@conn-docs/corpus/", tmp_path / "snap")
    assert err.value.retryable is False


def test_a_connection_with_a_wrong_secret_is_a_permanent_error_naming_it(moto, no_aws_env, tmp_path: Path) -> None:
    moto.bucket("guarded-conn-docs")
    no_aws_env.setenv("AIRFLOW_CONN_WRONG_S3", moto.connection_json(secret="Wr0ngSecretValue"))
    with pytest.raises(SourceError, match=r"access refused through connection 'wrong_s3'.*credentials of "
                                          r"connection 'wrong_s3'") as err:
        snapshot_through("s3://wrong_s3@guarded-conn-docs/corpus/", tmp_path / "snap")
    assert err.value.retryable is False
    assert "Wr0ngSecretValue" not in str(err.value) and moto.secret not in str(err.value)


def test_a_connection_of_another_type_is_refused_naming_it(no_aws_env, tmp_path: Path) -> None:
    no_aws_env.setenv("AIRFLOW_CONN_WAREHOUSE_DB", json.dumps({"conn_type": "postgres", "host": "127.0.0.1"}))
    with pytest.raises(SourceError, match=r"connection 'warehouse_db' is of type 'postgres'.*'aws'"):
        snapshot_through("s3://warehouse_db@bucket/corpus/", tmp_path / "snap")


def test_an_unreachable_endpoint_is_retried_by_airflow_not_failed_at_once(moto, no_aws_env, tmp_path: Path) -> None:
    from ragindex_airflow.tasks import fail_fast

    no_aws_env.setenv("AIRFLOW_CONN_DOWN_S3", moto.connection_json(endpoint=f"http://127.0.0.1:{free_port()}"))
    pull = fail_fast(lambda: snapshot_through("s3://down_s3@conn-docs/corpus/", tmp_path / "snap"))
    with pytest.raises(SourceUnavailable, match=r"did not answer through connection 'down_s3'.*retry later"):
        pull()  # AirflowFailException would mean "no retry"; this error reaches Airflow, which retries it


def test_credentials_written_into_the_source_param_are_refused_before_anything_runs() -> None:
    from ragindex_airflow.connections import checked_location

    with pytest.raises(SourceError, match=r"credentials in the URL are refused") as err:
        checked_location("s3://AKIAKEY:Sup3rSecret@bucket/corpus/")
    assert "Sup3rSecret" not in str(err.value)
    assert checked_location("/some/folder") == "/some/folder"


# ---------------------------------------------------------------- prompts through a connection

SAMPLE_PROMPTS = SAMPLE_CORPUS.parent / "prompts"


def upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())


def pull_with(params: dict, run_id: str) -> dict:
    """The real pull_documents body with the form's defaults and ``params`` (it logs the run's prompt)."""
    from types import SimpleNamespace

    from ragindex_airflow import tasks
    from ragindex_airflow.params import ingest_params

    form = {name: param.value for name, param in ingest_params().items()}
    return tasks.pull_documents({"params": form | params, "logical_date": None,
                                 "dag_run": SimpleNamespace(run_id=run_id, run_type="manual", run_after=None)})


def test_prompts_through_a_connection_are_the_version_the_same_folder_gives_locally(moto, no_aws_env, tmp_path: Path,
                                                                                   caplog, capfd) -> None:
    from ragindex.registry import open_registry

    s3 = moto.bucket("prompt-docs")
    upload(s3, "prompt-docs", SAMPLE_PROMPTS, "prompts/support")
    no_aws_env.setenv("AIRFLOW_CONN_PROMPTS_S3", moto.connection_json())
    url = "s3://prompts_s3@prompt-docs/prompts/support/"
    with caplog.at_level(logging.INFO):
        remote = pull_with({"prompts": url, "registry": str(tmp_path / "remote"), "source": str(SAMPLE_CORPUS)},
                           "manual__s3-prompt")
        local = pull_with({"prompts": str(SAMPLE_PROMPTS), "registry": str(tmp_path / "local"),
                           "source": str(SAMPLE_CORPUS)}, "manual__local-prompt")
    from_s3 = open_registry(str(tmp_path / "remote")).get(remote["prompt"])
    from_folder = open_registry(str(tmp_path / "local")).get(local["prompt"])
    assert from_s3.digest == from_folder.digest, "the same prompt, read from S3 or from a folder, is the same content"
    assert from_s3.metadata["origin"] == url, "the version says where it came from (the URL, no secret)"
    assert f"{remote['prompt']} from {url}" in caplog.text, "the prompt-template version logged, from the bucket"
    again = pull_with({"prompts": str(SAMPLE_PROMPTS), "registry": str(tmp_path / "remote"),
                       "source": str(SAMPLE_CORPUS)}, "manual__local-again")
    assert again["prompt"] == remote["prompt"], "the local folder finds the version logged from S3: unchanged"

    secrets = (moto.secret, moto.key_id)
    out, err = capfd.readouterr()
    assert not [s for s in secrets if s in caplog.text + out + err], "a credential reached the logs"
    assert not [s for s in secrets if s in json.dumps([remote, again])], "a credential in the XCom value"
    assert not secrets_in(tmp_path / "remote", secrets), "a credential reached the registry"


def test_prompts_through_a_missing_connection_fail_at_once_naming_it_and_the_prompts(no_aws_env, tmp_path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    no_aws_env.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
    with pytest.raises(AirflowFailException, match=r"^prompts 's3://no_such_conn@prompt-docs/p/': Airflow "
                                                   r"connection 'no_such_conn' is not defined"):
        pull_with({"prompts": "s3://no_such_conn@prompt-docs/p/", "registry": str(tmp_path / "registry"),
                   "source": str(SAMPLE_CORPUS)}, "manual__no-conn")


def test_prompts_from_an_unreachable_endpoint_are_retried_not_failed_at_once(moto, no_aws_env, tmp_path) -> None:
    no_aws_env.setenv("AIRFLOW_CONN_DOWN_PROMPTS", moto.connection_json(endpoint=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(SourceUnavailable, match=r"^prompts 's3://down_prompts@prompt-docs/p/': storage did not "
                                                r"answer through connection 'down_prompts'"):
        pull_with({"prompts": "s3://down_prompts@prompt-docs/p/", "registry": str(tmp_path / "registry"),
                   "source": str(SAMPLE_CORPUS)}, "manual__down")


# ---------------------------------------------------------------- W&B from a connection

WANDB_KEY = "local-0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_wandb_env(monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "AIRFLOW_CONN_WANDB_DEFAULT",
                 "RAGINDEX_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def wandb_conn(**fields) -> str:
    return json.dumps({"conn_type": "generic", **fields})


def test_wandb_default_connection_gives_key_base_url_entity_and_project(no_wandb_env, caplog) -> None:
    from ragindex.registry import open_registry
    from ragindex_airflow.connections import wandb_registry_uri

    no_wandb_env.setenv("AIRFLOW_CONN_WANDB_DEFAULT", wandb_conn(
        password=WANDB_KEY, host="wandb.internal.example", port=8080, schema="http",
        extra={"entity": "acme", "project": "rag-index"}))
    with caplog.at_level(logging.DEBUG):
        uri = wandb_registry_uri("wandb://")
        registry = open_registry(uri)
    assert uri == "wandb://acme/rag-index"
    assert os.environ["WANDB_API_KEY"] == WANDB_KEY
    assert registry.base_url == "http://wandb.internal.example:8080"
    assert (registry.entity, registry.project, registry.uri) == ("acme", "rag-index", "wandb://acme/rag-index")
    assert WANDB_KEY not in caplog.text and WANDB_KEY not in repr(registry)
    assert wandb_registry_uri("wandb://other/proj?reference=1") == "wandb://other/proj?reference=1", \
        "the URI's entity/project win over the connection's"


def test_a_named_wandb_connection_must_exist_and_the_environment_is_the_fallback(no_wandb_env) -> None:
    from ragindex_airflow.connections import wandb_registry_uri

    with pytest.raises(RegistryError, match=r"connection 'team_wandb' is not defined"):
        wandb_registry_uri("wandb://team_wandb@acme/rag")
    no_wandb_env.setenv("AIRFLOW_CONN_TEAM_WANDB", wandb_conn(password=WANDB_KEY, host="https://api.wandb.ai",
                                                              extra={"entity": "team", "project": "docs"}))
    assert wandb_registry_uri("wandb://team_wandb@") == "wandb://team/docs"
    assert os.environ["WANDB_BASE_URL"] == "https://api.wandb.ai"
    no_wandb_env.delenv("WANDB_API_KEY")
    no_wandb_env.setenv("WANDB_ENTITY", "env-entity")
    no_wandb_env.setenv("WANDB_PROJECT", "env-project")
    assert wandb_registry_uri("wandb://") == "wandb://env-entity/env-project", "no wandb_default: environment"
    assert "WANDB_API_KEY" not in os.environ
    no_wandb_env.delenv("WANDB_PROJECT")
    with pytest.raises(RegistryError, match=r"no entity/project"):
        wandb_registry_uri("wandb://")
    with pytest.raises(RegistryError, match=r"credentials in the URI are refused") as err:
        wandb_registry_uri(f"wandb://user:{WANDB_KEY}@acme/rag")
    assert WANDB_KEY not in str(err.value)
    assert wandb_registry_uri("/a/local/registry") == "/a/local/registry"


# ---------------------------------------------------------------- the real DAG over an S3 source (slow)


def secrets_in(root: Path, secrets: tuple[str, ...]) -> list[str]:
    """Files under ``root`` whose bytes hold any of ``secrets`` (SQLite catalogues included)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s[:4]}..." for s in secrets if s.encode() in data]
    return found


@pytest.mark.slow
@pytest.mark.usefixtures("airflow_db")
def test_rag_ingest_over_an_s3_source_through_a_connection(moto, no_aws_env, tmp_path: Path, capfd) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ragindex.registry import open_registry
    from tests.dags.test_dag_runs import FreshDags, corpus_documents, run_dag

    s3 = moto.bucket("dag-docs", versioned=True)
    for path in sorted(SAMPLE_CORPUS.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket="dag-docs", Key=f"corpus/{path.relative_to(SAMPLE_CORPUS).as_posix()}",
                          Body=path.read_bytes())
    upload(s3, "dag-docs", SAMPLE_PROMPTS, "prompts")
    no_aws_env.setenv("AIRFLOW_CONN_DOCS_S3", moto.connection_json())
    source, prompts = "s3://docs_s3@dag-docs/corpus/", "s3://docs_s3@dag-docs/prompts/"
    registry_path = tmp_path / "registry"
    conf = {"source": source, "prompts": prompts, "registry": str(registry_path), "require_approval": False,
            "eval_questions": str(SAMPLE_QUESTIONS)}
    dags = FreshDags()

    state, tis, dr = run_dag(dags["rag_ingest"], conf)
    assert state == "success", tis
    registry = open_registry(str(registry_path))
    raw = registry.get("raw-documents:v0")
    assert raw.metadata["source"] == source and raw.metadata["documents"] == corpus_documents(SAMPLE_CORPUS)
    index = registry.get("vector-index:v0")
    assert index.metadata["source"] == source and "production" in index.aliases
    assert registry.get("prompt-template:v0").metadata["origin"] == prompts
    assert registry.get("rag-release:production").metadata["prompt"] == "prompt-template:v0"
    before_change = max(server_time(s3, "dag-docs", o["Key"])
                        for o in s3.list_objects_v2(Bucket="dag-docs", Prefix="corpus/")["Contents"])

    # The corpus changes on the bucket; a run as of before the change sees the versions of then: no change
    time.sleep(1.1)
    s3.put_object(Bucket="dag-docs", Key="corpus/forklift_certification.md", Body=b"# Rewritten since\n\nNew.")
    state, tis, _ = run_dag(dags["rag_ingest"], {**conf, "as_of": before_change.isoformat()})
    assert state == "success" and tis["pull_documents"] == ["skipped"], tis
    assert [v.ref for v in registry.versions("raw-documents")] == ["raw-documents:v0"]

    secrets = (moto.secret, moto.key_id)
    out, err = capfd.readouterr()
    assert "raw-documents:v0" in out + err, "the runs' task logs were captured (else the check below is empty)"
    assert not [s for s in secrets if s in out + err], "a credential reached the logs"
    assert not secrets_in(registry_path, secrets), "a credential reached the registry (metadata, catalogue)"
    assert not secrets_in(Path(os.environ["AIRFLOW_HOME"]) / "logs", secrets)
    with create_session() as session:
        values = session.execute(select(XComModel.value).where(XComModel.dag_id == "rag_ingest",
                                                               XComModel.run_id == dr.run_id)).scalars().all()
    assert values and not [s for s in secrets if s in json.dumps(values, default=str)], "a credential in XCom"
