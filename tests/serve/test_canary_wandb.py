"""`ragindex canary report --log-to-wandb`: the arms' comparison as a W&B run with a table that uses the
releases compared, logged once per trace-log content, and never counted when its end did not reach W&B.
W&B's servers cannot be reached here: the run goes to the file-backed stand-in (tests/registry/fake_wandb_server.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from ragindex.canary import REPORT_COLUMNS, log_report, report
from ragindex.errors import RagindexError, RegistryUnavailable
from ragindex.registry import RunInfo
from ragindex.registry.wandb import WandbRegistry
from tests.conftest import write_files
from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer, api_failure
from tests.serve.servers import RAGINDEX


def trace_lines(first: str, second: str) -> list[dict]:
    """What `ragindex serve --canary staging:30 --trace-log` writes: answers of both arms and a feedback line."""
    lines = [{"trace_id": f"t{i}", "endpoint": "context", "arm": "canary" if i % 3 == 0 else "production",
              "release": {"ref": second if i % 3 == 0 else first}, "latency_ms": 10.0 + i,
              "hits": [{"score": 0.5 + i / 100}] if i != 4 else []} for i in range(9)]
    return lines + [{"endpoint": "feedback", "trace_id": "t3", "rating": 1.0}]


@pytest.fixture
def wandb_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    server = FakeWandbServer(tmp_path / "fake-wandb-server")
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache")
    refs = [registry.log_artifact("rag-release", "release", write_files(tmp_path / f"r{i}", {"release.json": f"{i}"}),
                                  run=RunInfo("release")).ref for i in (1, 2)]
    return registry, server, refs


def report_runs(server: FakeWandbServer) -> list[dict]:
    return [r for r in server.runs() if r["job_type"] == "canary-report"]


def test_the_report_is_one_wandb_run_with_a_table_using_both_releases(wandb_registry) -> None:
    registry, server, (first, second) = wandb_registry
    arms = report(trace_lines(first, second))
    url = log_report(registry, arms, log_digest="abc", log_name="canary.jsonl")
    (run,) = report_runs(server)
    assert url.endswith(f"/{ENTITY}/{PROJECT}/runs/{run['id']}") and run["state"] == "finished"
    (row,) = run["history"]
    table = row["canary"]
    assert table["columns"] == list(REPORT_COLUMNS)
    by_arm = {r[0]: dict(zip(REPORT_COLUMNS, r)) for r in table["data"]}
    assert by_arm["canary"]["requests"] == 3 and by_arm["production"]["requests"] == 6
    assert by_arm["canary"]["releases"] == second and by_arm["production"]["releases"] == first
    assert by_arm["canary"]["feedback"] == 1 and by_arm["production"]["empty_share"] == pytest.approx(1 / 6)
    assert sorted(run["used"]) == sorted([first, second]), "the report sits in both releases' lineage"
    assert run["summary"]["canary/p50_ms"] == arms["canary"]["p50_ms"]
    assert run["config"]["ragindex_key"] == "canary-report:abc"

    again = log_report(registry, arms, log_digest="abc", log_name="canary.jsonl")
    assert again == url and len(report_runs(server)) == 1, "the same log reported twice is logged once"
    log_report(registry, arms, log_digest="def", log_name="canary.jsonl")
    assert len(report_runs(server)) == 2, "another log content is another report"


def test_a_run_whose_end_never_reached_wandb_is_not_a_report_and_a_retry_logs_one(wandb_registry) -> None:
    registry, server, (first, second) = wandb_registry
    arms = report(trace_lines(first, second))
    server.fail("file_stream", api_failure("the request failed: connection reset by peer"))
    with pytest.raises(RegistryUnavailable, match="no complete report run"):
        log_report(registry, arms, log_digest="abc", log_name="canary.jsonl")
    url = log_report(registry, arms, log_digest="abc", log_name="canary.jsonl")
    complete = [r for r in report_runs(server) if r["summary"].get("ragindex.report", {}).get("complete")]
    assert len(complete) == 1 and url.endswith(complete[0]["id"])


def test_a_local_registry_is_refused_naming_it(tmp_path) -> None:
    from ragindex.registry import open_registry

    registry = open_registry(str(tmp_path / "registry"))
    with pytest.raises(RagindexError, match="is not a W&B registry"):
        log_report(registry, report(trace_lines("rag-release:v0", "rag-release:v1")), log_digest="x", log_name="l")
    log = tmp_path / "trace.jsonl"
    log.write_text("".join(json.dumps(line) + "\n" for line in trace_lines("rag-release:v0", "rag-release:v1")))
    done = subprocess.run([RAGINDEX, "canary", "report", str(log), "--log-to-wandb", "--registry", registry.uri],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "is not a W&B registry" in done.stderr, done.stderr
