"""A prompt-only `rag_ingest` run against a corpus run, side by side in one run, as a user runs them, in a
throw-away AIRFLOW_HOME and registry, on a copy of the sample corpus, two ways:

- `airflow dags test rag_ingest --conf …` processes (start-up, DAG parsing and every task included);
- under a live scheduler (`airflow standalone`, LocalExecutor: every task its own process, as in production):
  the DAG runs' durations as Airflow records them, and each task's.

Each way: 1. a corpus run (everything new: parse, chunk, embed, index, evaluate, release, promote);
2. a prompt-only run (the same corpus, one template line changed). Prints the times and their ratio, and a
floor: the same scheduler's run of a DAG whose four tasks (the prompt-only path's count) do nothing.

Usage: .venv/bin/python benchmarks/bench_release.py [--json] [--skip-live]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SAMPLE = REPO / "include" / "sample_data"


def run(env: dict[str, str], conf: dict) -> float:
    """Seconds for one `airflow dags test rag_ingest` process (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run([AIRFLOW, "dags", "test", "rag_ingest", "--conf", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "state=success" not in done.stdout + done.stderr:
        raise SystemExit(f"rag_ingest failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds


FLOOR_DAG = '''
import pendulum
from airflow.sdk import dag, task


@dag(dag_id="bench_floor", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def bench_floor():
    @task
    def one() -> int:
        return 1

    @task
    def two(x: int) -> int:
        return x

    two(two(two(one())))


bench_floor()
'''


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds between two ISO times the REST API gives (0 when one is missing)."""
    from datetime import datetime

    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def live_runs(root: Path, conf: dict, prompts: Path) -> dict:
    """The corpus run, the prompt-only run and the floor DAG under `airflow standalone`: run and task durations."""
    sys.path.insert(0, str(REPO))
    from tests.dags.test_live_airflow import LiveAirflow

    dags = root / "live-dags"
    dags.mkdir()
    for dag_file in (REPO / "dags").glob("*.py"):
        shutil.copy(dag_file, dags / dag_file.name)
    (dags / "bench_floor.py").write_text(FLOOR_DAG)
    (root / "live").mkdir()
    airflow = LiveAirflow(root / "live", port=18180)  # off the live tests' port
    airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    airflow.env["RAGINDEX_MODELS"] = os.environ.get("RAGINDEX_MODELS", str(REPO / ".ragindex" / "models"))
    figures: dict = {}
    try:
        airflow.start()
        airflow.wait_ready()
        while airflow.client.get("/api/v2/dags/bench_floor").status_code != 200:
            time.sleep(2)
        for dag_id in ("rag_ingest", "bench_floor"):
            airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

        def one(label: str, dag_id: str, run_conf: dict) -> None:
            run_id = airflow.trigger(run_conf, dag_id=dag_id)
            run, _states = airflow.wait_finished(run_id, dag_id=dag_id)
            if run["state"] != "success":
                raise SystemExit(f"{dag_id} {label} ended {run['state']}:\n{airflow.tail()}")
            tis = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
            tasks: dict[str, float] = {}
            for ti in tis["task_instances"]:
                if ti["state"] == "success":
                    tasks[ti["task_id"]] = round(tasks.get(ti["task_id"], 0.0)
                                                 + seconds_between(ti["start_date"], ti["end_date"]), 2)
            figures[label] = {"run_s": round(seconds_between(run["start_date"], run["end_date"]), 2),
                              "tasks_run": sorted(tasks), "task_s": tasks}

        live_conf = {**conf, "registry": str(root / "live-registry")}
        user = prompts / "user.j2"
        original = user.read_text(encoding="utf-8")
        user.write_text(original.replace("\nAnswer in at most three sentences.\n", ""), encoding="utf-8")
        one("corpus", "rag_ingest", live_conf)
        user.write_text(original, encoding="utf-8")
        one("prompt_only", "rag_ingest", live_conf)
        one("floor", "bench_floor", {})  # last: the same warm scheduler as the prompt-only run
    finally:
        airflow.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-live", action="store_true", help="only the `airflow dags test` figures")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-release-"))
    try:
        env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"), "RAGINDEX_HOME": str(root / "home"),
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "RAGINDEX_SCHEDULE": "none", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.setdefault("RAGINDEX_MODELS", str(REPO / ".ragindex" / "models"))  # the exported ONNX model, once
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
        corpus = root / "corpus"
        shutil.copytree(SAMPLE / "corpus", corpus)
        prompts = root / "prompts"
        shutil.copytree(SAMPLE / "prompts", prompts)
        conf = {"source": str(corpus), "registry": str(root / "registry"), "require_approval": False,
                "eval_questions": str(SAMPLE / "eval_questions.jsonl"), "prompts": str(prompts)}
        corpus_s = run(env, conf)
        user = prompts / "user.j2"
        user.write_text(user.read_text(encoding="utf-8") + "\nAnswer in at most three sentences.\n", encoding="utf-8")
        prompt_s = run(env, conf)
        figures = {"dags_test": {"corpus_run_s": round(corpus_s, 2), "prompt_only_run_s": round(prompt_s, 2),
                                 "ratio": round(prompt_s / corpus_s, 3)}}
        if not args.skip_live:
            live = live_runs(root, conf, prompts)
            live["ratio"] = round(live["prompt_only"]["run_s"] / live["corpus"]["run_s"], 3)
            figures["scheduler"] = live
        if args.json:
            print(json.dumps(figures))
            return
        print("airflow dags test (one process each, start-up and DAG parsing included)")
        print(f"  corpus run      {corpus_s:7.1f} s")
        print(f"  prompt-only run {prompt_s:7.1f} s  ({prompt_s / corpus_s:.1%} of the corpus run)")
        if args.skip_live:
            return
        print("live scheduler (airflow standalone, LocalExecutor: a process per task; DAG run start to end)")
        for label in ("corpus", "prompt_only", "floor"):
            figure = live[label]
            tasks = ", ".join(f"{t} {s:.1f}" for t, s in sorted(figure["task_s"].items()))
            print(f"  {label:<16}{figure['run_s']:7.1f} s  tasks run: {tasks}")
        print(f"  prompt-only / corpus: {live['ratio']:.1%}; the floor (4 tasks that do nothing) is "
              f"{live['floor']['run_s'] / live['corpus']['run_s']:.1%} of the corpus run")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
