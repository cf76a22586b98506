"""rag_ingest in a real Airflow, as users run it: ``airflow standalone`` (api-server, scheduler, dag-processor,
triggerer, LocalExecutor) on 127.0.0.1:18080 with its own AIRFLOW_HOME, SimpleAuthManager with a known admin
password; everything through the public REST API: unpause, trigger, the review's Required Action answered
(approve, then reject) through the HITL endpoints; the registry read directly.

The weekly schedule is switched off here (``RAGINDEX_SCHEDULE=none``): with a schedule and catchup=False,
unpausing would at once create a scheduled run of the most recent week, and with max_active_runs=1 the
triggered runs would queue behind it (it waits up to 72 h for its own review).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import phase
from tests.dags.conftest import DAGS, SAMPLE_QUESTIONS, copy_corpus

pytestmark = pytest.mark.slow

PORT = 18080
BASE = f"http://127.0.0.1:{PORT}"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
RUN_TIMEOUT_S = float(os.environ.get("RAGINDEX_LIVE_RUN_TIMEOUT_S", "900"))


class LiveAirflow:
    def __init__(self, root: Path, port: int = PORT) -> None:
        import httpx

        self.port, base = port, f"http://127.0.0.1:{port}"
        self.root = root
        self.home = root / "airflow-home"
        self.home.mkdir()
        self.password = secrets.token_urlsafe(12)
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        self.env.update({
            "AIRFLOW_HOME": str(self.home),
            "PATH": f"{AIRFLOW_BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow ...`
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__WORKERS": "1",
            # The log servers of scheduler and triggerer default to 8793/8794: keep off shared ports.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "RAGINDEX_HOME": str(root / "ragindex-home"),
            "RAGINDEX_SCHEDULE": "none",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        })
        self.log_path = root / "standalone.log"
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=base, timeout=30)

    # ------------------------------------------------------------- processes
    def start(self) -> None:
        import socket

        for port in (self.port, self.port + 1, self.port + 2):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    pytest.fail(f"port {port} is already in use on 127.0.0.1")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(AIRFLOW_BIN), "standalone"], env=self.env, cwd=self.root,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """Stop what this test started: the standalone process group, then any descendant left over."""
        if self.proc is None:
            return
        import psutil

        try:
            leftovers = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            leftovers = []
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(leftovers, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()
        self.client.close()

    def tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"airflow standalone exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = self.client.get("/api/v2/monitor/health")
                last = r.text
                if r.status_code == 200:
                    body = r.json()
                    if all(body.get(c, {}).get("status") == "healthy"
                           for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")):
                        break
            except Exception as exc:  # noqa: BLE001 - not listening yet
                last = repr(exc)
            time.sleep(2)
        else:
            pytest.fail(f"Airflow not healthy after {timeout}s: {last}\n{self.tail()}")
        r = self.client.post("/auth/token", json={"username": "admin", "password": self.password})
        assert r.status_code == 201, r.text
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        while time.monotonic() < deadline:
            if self.client.get("/api/v2/dags/rag_ingest").status_code == 200:
                return
            time.sleep(2)
        pytest.fail(f"rag_ingest never showed up:\n{self.tail()}")

    def wait_scheduler_heartbeats(self, count: int, timeout: float = 300) -> None:
        """Wait until the scheduler has heartbeated ``count`` more times: it had that many loops to act."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while len(seen) <= count:
            self._check_alive()
            assert time.monotonic() < deadline, f"scheduler heartbeats stalled at {sorted(seen)}\n{self.tail()}"
            beat = self.client.get("/api/v2/monitor/health").json()["scheduler"]["latest_scheduler_heartbeat"]
            seen.add(beat)
            time.sleep(1)

    # ------------------------------------------------------------- REST helpers
    def api(self, method: str, path: str, **kwargs):
        r = self.client.request(method, f"/api/v2{path}", **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def trigger(self, conf: dict) -> str:
        return self.api("POST", "/dags/rag_ingest/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]

    def task_states(self, run_id: str) -> dict[str, list[str | None]]:
        body = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        states: dict[str, list[str | None]] = {}
        for ti in sorted(body["task_instances"], key=lambda t: (t["task_id"], t["map_index"])):
            states.setdefault(ti["task_id"], []).append(ti["state"])
        return states

    def wait_for(self, run_id: str, predicate, what: str, timeout: float = RUN_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            run = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}")
            states = self.task_states(run_id)
            if predicate(run, states):
                return run, states
            if run["state"] in ("success", "failed"):
                pytest.fail(f"run {run_id} ended {run['state']} before {what}: {states}\n{self.tail()}")
            time.sleep(3)
        pytest.fail(f"timed out waiting for {what} in {run_id}: {states}\n{self.tail()}")

    def wait_for_review(self, run_id: str) -> dict:
        self.wait_for(run_id, lambda run, s: s.get("review") == ["awaiting_input"], "review awaiting input")
        details = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/hitlDetails")
        pending = [d for d in details["hitl_details"] if d["task_instance"]["task_id"] == "review"]
        assert len(pending) == 1, details
        return pending[0]

    def answer_review(self, run_id: str, option: str) -> dict:
        return self.api("PATCH", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                        json={"chosen_options": [option], "params_input": {}})

    def wait_finished(self, run_id: str, answer: str | None = None) -> tuple[dict, dict]:
        """Wait for the run to end. With ``answer``, a review asked AGAIN is answered again: Airflow 3.3.2 can
        race the executor's 'success' of a task that just parked in awaiting_input against that state and put
        the task up for retry (seen on SQLite + LocalExecutor), and the retry asks the reviewer anew."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        answered = {1}
        while time.monotonic() < deadline:
            self._check_alive()
            run = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run, self.task_states(run_id)
            if answer:
                review = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review")
                if review["state"] == "awaiting_input" and review["try_number"] not in answered:
                    answered.add(review["try_number"])
                    self.answer_review(run_id, answer)
            time.sleep(3)
        pytest.fail(f"run {run_id} did not finish: {self.task_states(run_id)}\n{self.tail()}")


@pytest.fixture
def live(tmp_path):
    (tmp_path / "live").mkdir()
    airflow = LiveAirflow(tmp_path / "live")
    try:
        airflow.start()
        airflow.wait_ready()
        airflow.api("PATCH", "/dags/rag_ingest", json={"is_paused": False})
        yield airflow
    finally:
        airflow.stop()


def conf(corpus: Path, registry_path: Path) -> dict:
    return {"source": str(corpus), "registry": str(registry_path), "require_approval": True,
            "eval_questions": str(SAMPLE_QUESTIONS)}


def production_ref(registry_path: Path) -> str | None:
    from ragindex.registry import open_registry

    found = open_registry(str(registry_path)).find("vector-index:production")
    return found.ref if found else None


def approved_review_moves_production(live, corpus, registry_path):
    assert live.api("GET", "/dags/rag_ingest")["is_paused"] is False
    run_id = live.trigger(conf(corpus, registry_path))
    review = live.wait_for_review(run_id)
    assert "vector-index:v0" in review["subject"]
    assert "Gate: PASSED" in (review["body"] or "")
    assert review["options"] == ["Approve", "Reject"]
    assert production_ref(registry_path) is None  # nothing moves before the answer

    answer = live.answer_review(run_id, "Approve")
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == "admin"
    run, states = live.wait_finished(run_id, answer="Approve")
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["success"]
    assert production_ref(registry_path) == "vector-index:v0"

    from ragindex.registry import open_registry

    promotion = open_registry(str(registry_path)).get("vector-index:v0").metadata["promotion"]
    assert promotion["by"].startswith("admin")


def rejected_review_keeps_production(live, corpus, registry_path):
    doc = corpus / "fleet_maintenance.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nTyres are replaced in pairs on the same axle.\n",
                   encoding="utf-8")
    run_id = live.trigger(conf(corpus, registry_path))
    review = live.wait_for_review(run_id)
    assert "vector-index:v1" in review["subject"]
    live.answer_review(run_id, "Reject")
    run, states = live.wait_finished(run_id, answer="Reject")
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["skipped"]
    assert production_ref(registry_path) == "vector-index:v0"
    from ragindex.registry import open_registry

    reg = open_registry(str(registry_path))
    assert reg.get("vector-index:latest").ref == "vector-index:v1"
    assert 0 < reg.get("vector-index:v1").metadata["embedded"] < reg.get("vector-index:v1").metadata["chunks"]


def test_reviews_through_the_rest_api(live, tmp_path):
    """Approve a first candidate, then reject a changed one, answering in Required Actions over REST."""
    corpus = copy_corpus(tmp_path / "corpus")
    registry_path = tmp_path / "registry"
    with phase("approve the first candidate"):
        approved_review_moves_production(live, corpus, registry_path)
    with phase("reject a changed corpus"):
        rejected_review_keeps_production(live, corpus, registry_path)
