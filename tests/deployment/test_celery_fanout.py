"""The production topology, for real, without Docker: PostgreSQL + Redis + api-server, scheduler,
dag-processor, triggerer and TWO Celery workers sharing one RAGINDEX_HOME (the compose file's shared
volume), all on loopback. rag_ingest is triggered over the REST API; its embedding shards must be spread
over both workers, and the index they build must be byte-identical (same digest) to a single-process
``ragindex ingest`` of the same corpus.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import need

from .stack import AirflowStack, Ports, port_free, postgres_bin

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "include" / "sample_data" / "corpus"
WORKERS = ("w1", "w2")
RUN_TIMEOUT_S = 600
SHARD_SIZE = 15  # the sample corpus has ~73 chunks: 5 shards


def _missing() -> str | None:
    if postgres_bin() is None:
        return "PostgreSQL server not installed (scripts/system-deps.sh installs it)"
    if shutil.which("redis-server") is None:
        return "redis-server not installed (scripts/system-deps.sh installs it)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb/postgres as"
    try:
        import celery  # noqa: F401
        import psycopg2  # noqa: F401
        import airflow.providers.celery  # noqa: F401
    except ImportError as exc:
        return f"CeleryExecutor dependencies missing: {exc}"
    busy = [p for p in (Ports().postgres, Ports().redis, Ports().api) if not port_free(p)]
    if busy:
        return f"loopback ports {busy} are in use (another run of this test?)"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    reason = _missing()
    need(reason is None, reason or "")
    root = tmp_path_factory.mktemp("celery-stack")
    s = AirflowStack(root, REPO)
    # A broken celery/provider pair is a deployment bug, not a reason to skip: fail with the import error.
    probe = subprocess.run([sys.executable, "-c", "import celery, airflow.providers.celery.executors.celery_executor"],
                           env=s.airflow_env(), capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        version = subprocess.run([sys.executable, "-c", "import celery; print(celery.__version__)"],
                                 capture_output=True, text=True).stdout.strip()
        pytest.fail(f"the CeleryExecutor cannot load (celery {version} vs apache-airflow-providers-celery): "
                    f"{probe.stderr.strip().splitlines()[-1]}", pytrace=False)
    started = time.monotonic()
    try:
        s.start_postgres()
        s.start_redis()
        s.migrate()
        s.start_services(WORKERS, concurrency=1)
        s.wait_workers_ready(WORKERS)
    except Exception:
        print(s.tails(60), file=sys.stderr)
        s.stop()
        raise
    print(f"stack up in {time.monotonic() - started:.0f}s under {root}", file=sys.stderr)
    yield s
    killed = s.stop()
    if killed:
        print("teardown had to SIGKILL: " + "; ".join(killed), file=sys.stderr)


def _wait_for_dag(s: AirflowStack, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            dag = s.get(f"/api/v2/dags/{dag_id}")
            if dag:
                return
        except Exception as exc:  # noqa: BLE001 - not parsed yet (404)
            last = exc
        time.sleep(2)
    errors = s.get("/api/v2/importErrors")
    raise AssertionError(f"{dag_id} never appeared in the API ({last}); import errors: {errors}\n{s.tails()}")


def _wait_for_run(s: AirflowStack, dag_id: str, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        run = s.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(3)
    return run


def _task_instances(s: AirflowStack, dag_id: str, run_id: str) -> list[dict]:
    return s.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


def _index_digest(registry: Path, env: dict[str, str]) -> str:
    out = subprocess.run([str(Path(sys.executable).parent / "ragindex"), "versions", "vector-index", "--json",
                          "--registry", str(registry)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    versions = json.loads(out.stdout)
    assert len(versions) == 1, versions
    return versions[0]["digest"]


def test_embedding_fans_out_over_two_celery_workers(stack: AirflowStack, tmp_path: Path) -> None:
    s = stack
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    registry = s.ragindex_home / "registry-under-test"

    _wait_for_dag(s, "rag_ingest")
    s.request("PATCH", "/api/v2/dags/rag_ingest", {"is_paused": False})
    conf = {"source": str(corpus), "registry": str(registry), "require_approval": False,
            "embed_shard_size": SHARD_SIZE, "max_embed_shards": 8}
    started = time.monotonic()
    run = s.request("POST", "/api/v2/dags/rag_ingest/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    run = _wait_for_run(s, "rag_ingest", run_id, RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    tis = _task_instances(s, "rag_ingest", run_id)
    summary = "\n".join(f"  {ti['task_id']}[{ti.get('map_index')}] {ti['state']} on {ti.get('hostname')} "
                        f"try {ti.get('try_number')}" for ti in sorted(tis, key=lambda t: (t["task_id"], t["map_index"])))
    print(f"rag_ingest {run_id}: {run.get('state')} in {elapsed:.0f}s\n{summary}", file=sys.stderr)
    assert run.get("state") == "success", f"run {run_id} is {run.get('state')} after {elapsed:.0f}s\n{summary}\n{s.tails(60)}"

    # the embedding fanned out over >= 4 shards, and both workers embedded some of them
    shards = [ti for ti in tis if ti["task_id"] == "embed_chunks" and ti["map_index"] >= 0]
    assert len(shards) >= 4, summary
    assert all(ti["state"] == "success" for ti in shards), summary
    hosts = {ti["hostname"] for ti in shards}
    assert hosts == set(WORKERS), f"embedding shards ran on {hosts}, expected both of {WORKERS}\n{summary}"
    # ... at the same time: a shard on one worker ran while one on the other did, not one worker after the other
    spans = {name: [(datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
                    for ti in shards if ti["hostname"] == name] for name in WORKERS}
    assert any(a0 < b1 and b0 < a1 for a0, a1 in spans[WORKERS[0]] for b0, b1 in spans[WORKERS[1]]), \
        f"the two workers' shards never overlapped in time: {spans}\n{summary}"
    for name in WORKERS:  # and each worker's own Celery log shows it executing rag_ingest work
        log = (s.processes.log_dir / f"worker-{name}.log").read_text(errors="replace")
        assert "rag_ingest" in log, f"worker {name} log shows no rag_ingest task\n{log[-3000:]}"

    # same corpus, one process, another registry: the very same index bytes
    cli_registry = tmp_path / "cli-registry"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAGINDEX_"))}
    env |= {"RAGINDEX_HOME": str(tmp_path / "cli-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cli = subprocess.run([str(Path(sys.executable).parent / "ragindex"), "ingest", str(corpus), "--registry",
                          str(cli_registry), "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert _index_digest(registry, env) == _index_digest(cli_registry, env)
