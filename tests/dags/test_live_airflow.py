"""rag_ingest and rag_rollback in a real Airflow, as users run them: ``airflow standalone`` (api-server,
scheduler, dag-processor, triggerer, LocalExecutor) on 127.0.0.1:18080 with its own AIRFLOW_HOME,
SimpleAuthManager with a known admin password; everything through the public REST API (unpause, trigger,
the review's Required Action answered through the HITL endpoints, a task cleared to retry it) and the review
form itself in headless Chromium; the registry read directly.

The weekly governance loop, in one scenario test of named phases: a first corpus A is approved; a retried
review task does not ask again; an edit B is rejected; a rollback to the rejected version is refused, then
forced (on record), then undone; a manual re-run over B asks again and says it was rejected; B is reverted to
A and the next *scheduled* run (Airflow restarted with a per-minute schedule) creates nothing and asks
nobody.

The schedule is off while the manual phases run (``RAGINDEX_SCHEDULE=none``): with a schedule and
catchup=False, unpausing would at once create a scheduled run of the latest interval, and with
max_active_runs=1 the triggered runs would queue behind it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, phase
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
        self.base = base
        self.log_path = root / "standalone.log"
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=base, timeout=30)
        self.token = ""
        self.answers: dict[str, tuple[str, str | None]] = {}

    # ------------------------------------------------------------- processes
    def start(self) -> None:
        import socket

        import httpx

        if self.client.is_closed:
            self.client = httpx.Client(base_url=self.base, timeout=30)

        for port in (self.port, self.port + 1, self.port + 2):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    pytest.fail(f"port {port} is already in use on 127.0.0.1")
        self.log = open(self.log_path, "ab")
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
        self.token = r.json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        self.ensure_governance_pool()
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

    def ensure_governance_pool(self) -> None:
        """The pool promote and rollback take turns in, as an operator creates it (here over the REST API; a
        restart on the same database finds it there): the scheduler never runs a task whose pool is missing."""
        from ragindex_airflow.pools import GOVERNANCE_POOL, GOVERNANCE_POOL_DESCRIPTION, GOVERNANCE_POOL_SLOTS

        r = self.client.get(f"/api/v2/pools/{GOVERNANCE_POOL}")
        if r.status_code == 404:
            self.api("POST", "/pools", json={"name": GOVERNANCE_POOL, "slots": GOVERNANCE_POOL_SLOTS,
                                             "description": GOVERNANCE_POOL_DESCRIPTION})
            r = self.client.get(f"/api/v2/pools/{GOVERNANCE_POOL}")
        assert r.status_code == 200 and r.json()["slots"] == GOVERNANCE_POOL_SLOTS, r.text

    # ------------------------------------------------------------- REST helpers
    def api(self, method: str, path: str, **kwargs):
        r = self.client.request(method, f"/api/v2{path}", **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def trigger(self, conf: dict, dag_id: str = "rag_ingest") -> str:
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})["dag_run_id"]

    def task_states(self, run_id: str, dag_id: str = "rag_ingest") -> dict[str, list[str | None]]:
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        states: dict[str, list[str | None]] = {}
        for ti in sorted(body["task_instances"], key=lambda t: (t["task_id"], t["map_index"])):
            states.setdefault(ti["task_id"], []).append(ti["state"])
        return states

    def task_log(self, run_id: str, task_id: str, dag_id: str = "rag_ingest", try_number: int = 1) -> str:
        """A task's log as the UI shows it (the structured log's events, one per line)."""
        r = self.client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                            headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        content = r.json().get("content")
        if isinstance(content, list):
            return "\n".join(json.dumps(c, ensure_ascii=False) if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def wait_for(self, run_id: str, predicate, what: str, timeout: float = RUN_TIMEOUT_S, dag_id: str = "rag_ingest"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            states = self.task_states(run_id, dag_id)
            if predicate(run, states):
                return run, states
            if run["state"] in ("success", "failed"):
                pytest.fail(f"run {run_id} ended {run['state']} before {what}: {states}\n{self.tail()}")
            time.sleep(3)
        pytest.fail(f"timed out waiting for {what} in {run_id}: {states}\n{self.tail()}")

    def hitl_details(self, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/hitlDetails")["hitl_details"]

    def review_asks(self, run_id: str) -> list[tuple[str, str | None]]:
        """Each time the run's review asked a person, as (created, answered) of its HITL detail, over every try of
        the task. The run's list shows only the current try's detail; an earlier try's is in its task-instance
        history. Airflow keeps one detail per task and carries it to each new try: a try that does not ask leaves
        it as it was (the same pair), one that asks again clears its answer (a new pair, answered anew or not)."""
        review = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review")
        asked = set()
        for try_number in range(1, (review["try_number"] or 0) + 1):
            r = self.client.get(f"/api/v2/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails/"
                                f"tries/{try_number}")
            assert r.status_code in (200, 404), r.text
            if r.status_code == 200:
                asked.add((r.json()["created_at"], r.json()["responded_at"]))
        return sorted(asked, key=str)

    def wait_for_review(self, run_id: str) -> dict:
        self.wait_for(run_id, lambda run, s: s.get("review") == ["awaiting_input"], "review awaiting input")
        pending = [d for d in self.hitl_details(run_id) if d["task_instance"]["task_id"] == "review"]
        assert len(pending) == 1, pending
        return pending[0]

    def answer_review(self, run_id: str, option: str, reason: str | None = None) -> dict:
        params = {"reason": reason} if reason is not None else {}
        self.answers[run_id] = (option, reason)
        return self.api("PATCH", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
                        json={"chosen_options": [option], "params_input": params})

    def wait_finished(self, run_id: str, dag_id: str = "rag_ingest") -> tuple[dict, dict]:
        """Wait for the run to end. A review asked AGAIN is answered again, as first, so the run ends (Airflow 3.3.2
        can race the executor's 'success' of a task that just parked in awaiting_input against that state and put
        the task up for retry, seen on SQLite + LocalExecutor; a retry whose answer is not on record asks the
        reviewer anew); the phases then check that the run asked exactly once (``review_asks``)."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        answered = {1}
        while time.monotonic() < deadline:
            self._check_alive()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run, self.task_states(run_id, dag_id)
            if run_id in self.answers:
                review = self.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review")
                if review["state"] == "awaiting_input" and review["try_number"] not in answered:
                    answered.add(review["try_number"])
                    self.answer_review(run_id, *self.answers[run_id])
            time.sleep(3)
        pytest.fail(f"run {run_id} did not finish: {self.task_states(run_id, dag_id)}\n{self.tail()}")

    def clear(self, run_id: str, task_ids: list[str]) -> None:
        """Clear finished task instances, so Airflow runs them again (a retry, as an operator would do it)."""
        self.api("POST", "/dags/rag_ingest/clearTaskInstances",
                 json={"dag_run_id": run_id, "task_ids": task_ids, "only_failed": False, "dry_run": False,
                       "include_downstream": True, "reset_dag_runs": True})

    def restart(self, **env: str) -> None:
        """Stop everything, change the environment, start again on the same metadata database."""
        self.stop()
        self.env.update(env)
        self.start()
        self.wait_ready()


@pytest.fixture
def live(tmp_path):
    (tmp_path / "live").mkdir()
    airflow = LiveAirflow(tmp_path / "live")
    try:
        airflow.start()
        airflow.wait_ready()
        airflow.api("PATCH", "/dags/rag_ingest", json={"is_paused": False})
        airflow.api("PATCH", "/dags/rag_rollback", json={"is_paused": False})
        yield airflow
    finally:
        airflow.stop()


def conf(corpus: Path, registry_path: Path) -> dict:
    return {"source": str(corpus), "registry": str(registry_path), "require_approval": True,
            "eval_questions": str(SAMPLE_QUESTIONS)}


def open_reg(registry_path: Path):
    from ragindex.registry import open_registry

    return open_registry(str(registry_path), create=False)


def production_ref(registry_path: Path) -> str | None:
    found = open_reg(registry_path).find("vector-index:production")
    return found.ref if found else None


def review_decisions(registry_path: Path, run_id: str) -> list:
    return [d for d in open_reg(registry_path).decisions("rag-release") if d.kind == "review" and d.pipeline_run == run_id]


def version_counts(registry_path: Path) -> dict[str, int]:
    reg = open_reg(registry_path)
    return {name: len(reg.versions(name)) for name in ("raw-documents", "processed-chunks", "vector-index", "eval-report",
                                                       "prompt-template", "rag-release")}


def review_link(live: LiveAirflow, run_id: str) -> str:
    """The Required Actions link the review task logs (Approve preselected)."""
    found = re.search(r"(http://\S+/required_actions\?\S+?)[\"\s]", live.task_log(run_id, "review"))
    assert found, "the review task logs the link to its form"
    return found.group(1)


def look_at_the_review_form(live: LiveAirflow, url: str, shot: str) -> dict:
    """The Required Actions form of the review in headless Chromium, opened from the link the task logs;
    returns what it shows and saves a full-page screenshot under test-artifacts/."""
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            context.add_cookies([{"name": "_token", "value": live.token, "url": live.base}])
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            approve = page.get_by_test_id("hitl-option-Approve")
            approve.wait_for(timeout=60_000)
            page.get_by_text("Gate: PASSED").first.wait_for(timeout=30_000)
            seen = {
                "headings": page.locator("h3, h4").all_inner_texts(),
                "table_rows": page.locator("table tr").count(),
                "quotes": page.locator("blockquote").all_inner_texts(),
                "list_items": page.locator("li").all_inner_texts(),
                "approve_bg": approve.evaluate("e => getComputedStyle(e).backgroundColor"),
                "reject_bg": page.get_by_test_id("hitl-option-Reject").evaluate(
                    "e => getComputedStyle(e).backgroundColor"),
                "reason_field": page.get_by_text("Reason").count(),
            }
            page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
            approve.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / shot.replace(".png", "-answer.png")))
            return seen
        finally:
            browser.close()


def fleet_doc(corpus: Path) -> Path:
    return corpus / "fleet_maintenance.md"


def approve_corpus_a(live: LiveAirflow, corpus: Path, registry_path: Path) -> str:
    run_id = live.trigger(conf(corpus, registry_path))
    review = live.wait_for_review(run_id)
    assert "rag-release:v0" in review["subject"] and "vector-index:v0" in review["subject"]
    body = review["body"] or ""
    assert "Gate: PASSED" in body and "no production index yet" in body and "vector-index:v0" in body
    assert "### Release" in body and "no production release yet" in body and "prompt-template:v0" in body
    assert review["options"] == ["Approve", "Reject"] and review["defaults"] == ["Reject"], "timeout = Reject"
    assert production_ref(registry_path) is None  # nothing moves before the answer
    assert open_reg(registry_path).get("rag-release:staging").ref == "rag-release:v0", "staged while in review"
    link = review_link(live, run_id)
    assert "_options=%5B%22Approve%22%5D" in link, link

    form = look_at_the_review_form(live, link, "review-form-first-candidate.png")
    assert any(h.startswith("Candidate") for h in form["headings"]), form["headings"]
    assert {"Corpus", "PII", "Quality", "Versions"} <= {h.split(" (")[0] for h in form["headings"]}, form
    assert form["table_rows"] >= 5, "the gate's figures are a table, not a run-on paragraph"
    assert any(item.startswith("Source:") for item in form["list_items"]), "one line per fact"
    assert form["approve_bg"] != form["reject_bg"], "Approve (preselected by the link) is drawn apart from Reject"
    assert form["reason_field"] >= 1, "the reviewer can give a reason"

    answer = live.answer_review(run_id, "Approve", reason="first handbook, checked by hand")
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == "admin"
    run, states = live.wait_finished(run_id)
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["success"]
    assert len(live.review_asks(run_id)) == 1, "exactly one HITL detail for the run"
    assert production_ref(registry_path) == "vector-index:v0"
    reg = open_reg(registry_path)
    assert "staging" not in reg.get("rag-release:v0").aliases, "approval moves production there, staging off"
    assert reg.get("rag-release:production").ref == "rag-release:v0"
    assert "production" in reg.get("prompt-template:v0").aliases, "the release's prompt moves with it"
    (review_record,) = review_decisions(registry_path, run_id)
    assert (review_record.verdict, review_record.actor, review_record.reason) == (
        "approved", "admin", "first handbook, checked by hand")
    promote = [d for d in reg.decisions("rag-release") if d.kind == "promote"]
    assert [(d.ref, d.actor) for d in promote] == [("rag-release:v0", "admin")]
    return run_id


def retried_review_does_not_ask_again(live: LiveAirflow, registry_path: Path, run_id: str) -> None:
    history_before = open_reg(registry_path).alias_history("vector-index", "production")
    live.clear(run_id, ["review"])
    run, states = live.wait_finished(run_id)
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["success"], states
    review = live.api("GET", f"/dags/rag_ingest/dagRuns/{run_id}/taskInstances/review")
    assert review["try_number"] == 2, review
    assert "on record already" in live.task_log(run_id, "review", try_number=2)
    assert len(live.review_asks(run_id)) == 1, "the retry asked nobody: still exactly one HITL detail for the run"
    assert len(review_decisions(registry_path, run_id)) == 1, "exactly one decision"
    promotions = [d for d in open_reg(registry_path).decisions("rag-release") if d.kind == "promote"]
    assert len(promotions) == 1, "the retried promote found its move on record"
    assert open_reg(registry_path).alias_history("vector-index", "production") == history_before, "one history entry"


def reject_edit_b(live: LiveAirflow, corpus: Path, registry_path: Path) -> str:
    doc = fleet_doc(corpus)
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nTyres are replaced in pairs on the same axle.\n",
                   encoding="utf-8")
    run_id = live.trigger(conf(corpus, registry_path))
    review = live.wait_for_review(run_id)
    assert "vector-index:v1" in review["subject"]
    body = review["body"] or ""
    assert "production is `vector-index:v0`" in body and "1 changed (`fleet_maintenance.md`)" in body
    assert "Tyres are replaced in pairs" in body.replace("\\", ""), "a sample of the changed text"
    assert open_reg(registry_path).get("rag-release:staging").ref == "rag-release:v1"
    assert "Changed since production: index" in body, "the release diff: the index changed, the prompt did not"
    live.answer_review(run_id, "Reject", reason="tyre rule not signed off by fleet")
    run, states = live.wait_finished(run_id)
    assert run["state"] == "success", states
    assert states["review"] == ["success"] and states["promote"] == ["skipped"]
    assert len(live.review_asks(run_id)) == 1, "exactly one HITL detail for the run"
    reg = open_reg(registry_path)
    assert production_ref(registry_path) == "vector-index:v0"
    v1 = reg.get("vector-index:v1")
    assert any(a.startswith("snapshot-") for a in v1.aliases)
    assert "staging" not in reg.get("rag-release:v1").aliases
    (decision,) = review_decisions(registry_path, run_id)
    assert (decision.verdict, decision.actor, decision.reason) == ("rejected", "admin", "tyre rule not signed off by fleet")
    assert 0 < v1.metadata["embedded"] < v1.metadata["chunks"]
    return run_id


def rollback_to_the_rejected_version(live: LiveAirflow, registry_path: Path) -> None:
    refused = live.trigger({"registry": str(registry_path), "to_version": "v1", "reason": "try it"}, "rag_rollback")
    run, _ = live.wait_finished(refused, "rag_rollback")
    assert run["state"] == "failed"
    log = live.task_log(refused, "rollback_production", "rag_rollback")
    assert "refused" in log and "rejected on" in log and "tyre rule not signed off" in log, log[-2000:]
    assert "rollback to rag-release:v1 refused" in log and "ragindex/rollback.py" not in log, "a refusal, no crash"
    assert production_ref(registry_path) == "vector-index:v0"

    forced = live.trigger({"registry": str(registry_path), "to_version": "v1", "force": True,
                           "reason": "incident drill"}, "rag_rollback")
    run, _ = live.wait_finished(forced, "rag_rollback")
    assert run["state"] == "success" and production_ref(registry_path) == "vector-index:v1"
    last = open_reg(registry_path).decisions("rag-release")[-1]
    assert (last.kind, last.verdict, last.reason, last.actor) == ("rollback", "forced_rollback", "incident drill",
                                                                   "admin via rag_rollback")
    back = live.trigger({"registry": str(registry_path), "reason": "drill over"}, "rag_rollback")
    run, _ = live.wait_finished(back, "rag_rollback")
    assert run["state"] == "success" and production_ref(registry_path) == "vector-index:v0"
    again = live.trigger({"registry": str(registry_path), "to_version": "v1", "reason": "launder it"}, "rag_rollback")
    run, _ = live.wait_finished(again, "rag_rollback")
    log = live.task_log(again, "rollback_production", "rag_rollback")
    assert run["state"] == "failed" and "rollback to rag-release:v1 refused" in log, log[-2000:]
    assert "rejected on" in log and production_ref(registry_path) == "vector-index:v0", "a forced move launders nothing"


def manual_rerun_of_the_rejected_corpus_says_so(live: LiveAirflow, corpus: Path, registry_path: Path) -> None:
    before = version_counts(registry_path)
    run_id = live.trigger(conf(corpus, registry_path))
    review = live.wait_for_review(run_id)
    body = review["body"] or ""
    assert "vector-index:v1" in review["subject"] and "rag-release:v1" in review["subject"]
    assert "**Warning:**" in body and "rejected on" in body and "tyre rule not signed off by fleet" in body, body
    form = look_at_the_review_form(live, review_link(live, run_id), "review-form-rejected-before.png")
    assert form["quotes"] and "rejected on" in form["quotes"][0], "the warning is the first thing on the form"
    assert "staging" not in open_reg(registry_path).get("rag-release:v1").aliases, "a rejected release is not staged"
    live.answer_review(run_id, "Reject", reason="still not signed off")
    run, states = live.wait_finished(run_id)
    assert run["state"] == "success" and states["promote"] == ["skipped"], states
    assert len(live.review_asks(run_id)) == 1, "exactly one HITL detail for the run"
    assert version_counts(registry_path) == before, "the same corpus: the same versions, nothing new"


def served_release(base: str, want: str, timeout: float = 60) -> dict:
    """Ask /context until the answer comes from release ``want`` (a client seeing the switch); that answer."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.post(f"{base}/context", json={"question": "How long is a forklift certificate valid?"},
                            timeout=30).json()
        if answer["release"]["ref"] == want:
            return answer
        assert time.monotonic() < deadline, f"the server still answers from {answer['release']['ref']}, not {want}"
        time.sleep(0.3)


def prompt_only_release_is_reviewed_served_and_rolled_back(live: LiveAirflow, corpus: Path, registry_path: Path,
                                                           tmp_path: Path, original: str) -> None:
    """Back on corpus A (production's), only the prompt changes."""
    import shutil

    from tests.dags.conftest import SAMPLE_PROMPTS
    from tests.serve.servers import running_server

    fleet_doc(corpus).write_text(original, encoding="utf-8")
    line = "Name the handbook section you relied on."
    before = version_counts(registry_path)
    production = open_reg(registry_path).get("rag-release:production")
    with running_server(str(registry_path), "--name", "rag-release") as (_server, base):
        first = served_release(base, production.ref)
        assert line not in json.dumps(first["prompt"]["messages"])
        prompts = tmp_path / "prompts-v2"
        shutil.copytree(SAMPLE_PROMPTS, prompts)
        user = prompts / "user.j2"
        user.write_text(user.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
        run_id = live.trigger(conf(corpus, registry_path) | {"prompts": str(prompts)})
        review = live.wait_for_review(run_id)
        states = live.task_states(run_id)
        assert all(states[t] == ["skipped"] for t in ("chunk_documents", "embed_chunks", "build_index")), states
        body = review["body"] or ""
        assert "Changed since production: prompt" in body and f"+{line}" in body, body
        assert "vector-index:v0" in review["subject"], "the same index, a new prompt"
        form = look_at_the_review_form(live, review_link(live, run_id), "review-form-prompt-only.png")
        assert "Prompt diff" in form["headings"], form["headings"]
        live.answer_review(run_id, "Approve", reason="shorter answers, signed off by support")
        run, states = live.wait_finished(run_id)
        assert run["state"] == "success" and states["promote"] == ["success"], states
        assert len(live.review_asks(run_id)) == 1, "exactly one HITL detail for the run"
        after = version_counts(registry_path)
        assert {n: after[n] - before[n] for n in after} == {
            "raw-documents": 0, "processed-chunks": 0, "vector-index": 0, "eval-report": 1, "prompt-template": 1,
            "rag-release": 1}, "a prompt-only run: a new prompt and release (and its evaluation), nothing else"
        new = open_reg(registry_path).get("rag-release:production")
        assert new.ref != production.ref and new.metadata["index"] == "vector-index:v0"
        switched = served_release(base, new.ref)
        assert switched["prompt"]["ref"] == new.metadata["prompt"] and line in json.dumps(switched["prompt"]["messages"])
        assert switched["index"]["ref"] == "vector-index:v0"

        back = live.trigger({"registry": str(registry_path), "name": "rag-release", "reason": "prompt drill"},
                            "rag_rollback")
        run, _ = live.wait_finished(back, "rag_rollback")
        assert run["state"] == "success", live.task_log(back, "rollback_production", "rag_rollback")[-2000:]
        restored = served_release(base, production.ref)
        assert restored["prompt"]["ref"] == first["prompt"]["ref"] and line not in json.dumps(
            restored["prompt"]["messages"]), "the rollback brought the old prompt back with its release"
    reg = open_reg(registry_path)
    assert "production" in reg.get(first["prompt"]["ref"]).aliases, "the prompt's own alias moved back too"
    last = reg.decisions("rag-release")[-1]
    assert (last.kind, last.ref, last.reason) == ("rollback", production.ref, "prompt drill")


def revert_then_a_scheduled_run_does_nothing(live: LiveAirflow, corpus: Path, registry_path: Path,
                                              original: str) -> None:
    doc = fleet_doc(corpus)
    doc.write_text(original, encoding="utf-8")
    an_hour_ago = time.time() - 3600
    os.utime(doc, (an_hour_ago, an_hour_ago))  # older than the interval the scheduled run will read as of
    before = version_counts(registry_path)
    live.restart(RAGINDEX_SCHEDULE="* * * * *", RAGINDEX_SOURCE=str(corpus), RAGINDEX_REGISTRY=str(registry_path),
                 RAGINDEX_EVAL_QUESTIONS=str(SAMPLE_QUESTIONS))
    deadline = time.monotonic() + 300
    while True:
        scheduled = live.api("GET", "/dags/rag_ingest/dagRuns", params={"run_type": "scheduled"})["dag_runs"]
        if scheduled:
            break
        assert time.monotonic() < deadline, f"no scheduled run after the restart:\n{live.tail()}"
        time.sleep(3)
    run_id = scheduled[0]["dag_run_id"]
    run, states = live.wait_finished(run_id)
    live.api("PATCH", "/dags/rag_ingest", json={"is_paused": True})
    assert run["state"] == "success", states
    assert states["pull_documents"] == ["skipped"]
    assert all(s == ["skipped"] for t, s in states.items() if t != "pull_documents"), states
    assert live.hitl_details(run_id) == [] and live.review_asks(run_id) == [], \
        "nobody is asked to review what is production already"
    assert version_counts(registry_path) == before, "the reverted corpus is a known version: nothing new"
    assert production_ref(registry_path) == "vector-index:v0"
    assert "corpus unchanged: vector-index:v0" in live.task_log(run_id, "pull_documents")


def test_the_governance_loop_through_the_rest_api(live, tmp_path):
    """Approve A, retry its review, reject B, roll back to B (refused, forced, undone), re-run B, revert to A."""
    corpus = copy_corpus(tmp_path / "corpus")
    registry_path = tmp_path / "registry"
    original = fleet_doc(corpus).read_text(encoding="utf-8")
    with phase("1 approve corpus A (the review form in Chromium)"):
        first_run = approve_corpus_a(live, corpus, registry_path)
    with phase("2 a retried review task does not ask again"):
        retried_review_does_not_ask_again(live, registry_path, first_run)
    with phase("3 reject edit B"):
        reject_edit_b(live, corpus, registry_path)
    with phase("4 rollback to the rejected version: refused, forced, undone"):
        rollback_to_the_rejected_version(live, registry_path)
    with phase("5 a manual re-run over the rejected corpus says it was rejected"):
        manual_rerun_of_the_rejected_corpus_says_so(live, corpus, registry_path)
    with phase("6 a prompt-only release: reviewed with its diff, served, rolled back; a client sees each switch"):
        prompt_only_release_is_reviewed_served_and_rolled_back(live, corpus, registry_path, tmp_path, original)
    with phase("7 revert to A: the next scheduled run creates nothing and asks nobody"):
        revert_then_a_scheduled_run_does_nothing(live, corpus, registry_path, original)
