"""``ragindex serve`` following a release: /context renders the release's own prompt over its own index, every
answer names release, index and prompt with digests and is a line of the trace log (question hashed), a release
switch replaces prompt and index together, and ``ragindex trace`` reads an answer back with its decision."""

from __future__ import annotations

import json
import subprocess
import time

import httpx

from ragindex.registry import RunInfo
from tests.conftest import write_files
from tests.serve.servers import FIRST_TEXT, QUESTION, RAGINDEX, SECOND_TEXT, make_two_versions, running_server

PROMPT_META = {"templates": {"system": "system.j2", "user": "user.j2"}, "input_variables": ["question", "chunks"],
               "model": "small-model", "temperature": 0.2, "context_budget": 4000}


def log_prompt(registry, folder, marker: str) -> str:
    from ragindex.prompts import check_budget, load_prompt, log_prompt as log, placeholder_retriever

    write_files(folder, {"prompt.json": json.dumps(PROMPT_META), "system.j2": f"{marker}: answer from sources.\n",
                         "user.j2": "{% for c in chunks %}[{{ loop.index }}] {{ c.text }}\n{% endfor %}Q: {{ question }}\n"})
    prompt = load_prompt(folder)
    return log(registry, prompt, check_budget(prompt, [QUESTION], placeholder_retriever(100), 2),
               run=RunInfo("log_prompt", group="t")).ref


def release(registry, index: str, prompt: str, run: str) -> str:
    from ragindex.context import IngestContext
    from ragindex.gate import evaluate_release
    from ragindex.release import assemble_release, log_release

    ref = log_release(registry, assemble_release(registry, index, prompt, k=2), run=RunInfo("r", group=run)).ref
    assert evaluate_release(IngestContext(registry, f"eval-{run}"), ref).passed
    return ref


def wait_for(base: str, release_ref: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.post(f"{base}/context", json={"question": QUESTION}, timeout=10).json()
        if answer["release"]["ref"] == release_ref:
            return answer
        assert time.monotonic() < deadline, f"still {answer['release']['ref']}"
        time.sleep(0.2)


def test_a_release_is_served_as_one_and_every_answer_is_traced(tmp_path) -> None:
    from ragindex.promotion import approve

    registry, first_index, second_index = make_two_versions(tmp_path)
    first = release(registry, first_index, log_prompt(registry, tmp_path / "p1", "PROMPT-ONE"), "run-r1")
    approve(registry, first, actor="alice", reason="first release")
    trace_log = tmp_path / "trace.jsonl"
    with running_server(registry.uri, "--trace-log", str(trace_log)) as (_server, base):
        health = httpx.get(f"{base}/healthz").json()
        assert health["alias"] == "rag-release:production", "a release holds production: it is what is served"
        answer = httpx.post(f"{base}/context", json={"question": QUESTION, "key": "user-7"}).json()
        assert answer["release"]["ref"] == first and answer["index"]["ref"] == first_index
        assert answer["prompt"]["ref"] == "prompt-template:v0" and len(answer["hits"]) == 2, "the release's k"
        system, user = (m["content"] for m in answer["prompt"]["messages"])
        assert system.startswith("PROMPT-ONE") and FIRST_TEXT in user and QUESTION in user
        searched = httpx.post(f"{base}/search", json={"question": QUESTION}).json()
        assert len(searched["hits"]) == 2 and searched["release"]["ref"] == first

        second = release(registry, second_index, log_prompt(registry, tmp_path / "p2", "PROMPT-TWO"), "run-r2")
        approve(registry, second, actor="bob", reason="second release")
        switched = wait_for(base, second)
        system, user = (m["content"] for m in switched["prompt"]["messages"])
        assert system.startswith("PROMPT-TWO") and SECOND_TEXT in user, "prompt and index switched together"
        assert switched["index"]["ref"] == second_index and switched["prompt"]["ref"] == "prompt-template:v1"
        assert httpx.get(f"{base}/healthz").json()["trace_dropped"] == 0
    lines = [json.loads(line) for line in trace_log.read_text().splitlines()]
    mine = next(e for e in lines if e["trace_id"] == answer["trace_id"])
    assert mine["release"]["ref"] == first and mine["key"] == "user-7" and mine["endpoint"] == "context"
    assert QUESTION not in json.dumps(lines), "questions are kept as a hash and a length by default"
    assert mine["question_chars"] == len(QUESTION) and len(mine["question_sha256"]) == 64
    assert [h["chunk_id"] for h in mine["hits"]] == [h["chunk_id"] for h in answer["hits"]]
    for entry in lines:  # never a mix: each answer's index and prompt are the release's own
        pair = (entry["index"]["ref"], entry["prompt"]["ref"])
        assert pair == {first: (first_index, "prompt-template:v0"), second: (second_index, "prompt-template:v1")}[
            entry["release"]["ref"]], entry
    traced = subprocess.run([RAGINDEX, "trace", answer["trace_id"], "--log", str(trace_log), "--registry",
                             registry.uri], capture_output=True, text=True, timeout=120)
    assert traced.returncode == 0, traced.stderr
    assert first in traced.stdout and first_index in traced.stdout and "prompt-template:v0" in traced.stdout
    assert "serving since promote (promoted on" in traced.stdout and "by alice" in traced.stdout


def test_the_trace_log_drops_rather_than_blocks_and_rotates(tmp_path) -> None:
    from ragindex.tracelog import TraceLog, read_entries

    log = TraceLog(tmp_path / "t.jsonl", max_bytes=2000, backups=2, queue_size=100_000)
    for n in range(200):
        log.write({"trace_id": f"t{n}", "pad": "x" * 50})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["t.jsonl", "t.jsonl.1", "t.jsonl.2"], "bounded: two rotated files kept"
    kept = [e["trace_id"] for e in read_entries(tmp_path / "t.jsonl")]
    assert kept and kept == sorted(kept, key=lambda t: int(t[1:])) and kept[-1] == "t199", "oldest file first"
    tiny = TraceLog(tmp_path / "q.jsonl", queue_size=1)
    tiny._listener.stop()  # the writer is stalled: a request must not wait for it
    started = time.perf_counter()
    for n in range(50):
        tiny.write({"trace_id": f"q{n}"})
    assert time.perf_counter() - started < 1.0 and tiny.dropped == 49, "a full queue drops and counts"


def test_a_canary_answers_a_deterministic_share_from_staging_and_the_report_compares_the_arms(tmp_path) -> None:
    from ragindex.canary import in_canary
    from ragindex.promotion import approve, stage

    registry, first_index, second_index = make_two_versions(tmp_path)
    first = release(registry, first_index, log_prompt(registry, tmp_path / "p1", "PROMPT-ONE"), "run-r1")
    approve(registry, first, actor="alice")
    second = release(registry, second_index, log_prompt(registry, tmp_path / "p2", "PROMPT-TWO"), "run-r2")
    stage(registry, second, actor="dag", pipeline_run="run-r2")
    trace_log = tmp_path / "canary.jsonl"
    keys = [f"user-{n}" for n in range(60)]
    with running_server(registry.uri, "--canary", "staging:30", "--trace-log", str(trace_log)) as (_s, base):
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/healthz").json()["canary"]["ref"] != second:
            assert time.monotonic() < deadline, "the canary arm never loaded staging"
            time.sleep(0.2)
        answers = {key: httpx.post(f"{base}/context", json={"question": QUESTION, "key": key}).json() for key in keys}
        again = httpx.post(f"{base}/context", json={"question": QUESTION, "key": keys[0]}).json()
        for key, answer in answers.items():
            expected = ("canary", second, second_index) if in_canary(key, 30) else ("production", first, first_index)
            assert (answer["arm"], answer["release"]["ref"], answer["index"]["ref"]) == expected, key
        assert again["arm"] == answers[keys[0]]["arm"], "a key stays in its arm"
        rated = [a["trace_id"] for a in answers.values() if a["arm"] == "canary"][:3]
        for trace_id in rated:
            assert httpx.post(f"{base}/feedback", json={"trace_id": trace_id, "rating": 1}).json()["recorded"]
    canaries = sum(in_canary(k, 30) for k in keys)
    assert 0 < canaries < len(keys)
    done = subprocess.run([RAGINDEX, "canary", "report", str(trace_log), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    arms = json.loads(done.stdout)
    assert arms["canary"]["requests"] == canaries + (1 if in_canary(keys[0], 30) else 0)
    assert arms["production"]["requests"] == len(keys) + 1 - arms["canary"]["requests"]
    assert arms["canary"]["releases"] == [second] and arms["production"]["releases"] == [first]
    assert arms["canary"]["feedback"] == len(rated) and arms["canary"]["mean_rating"] == 1.0
    assert arms["production"]["feedback"] == 0 and arms["canary"]["p50_ms"] > 0
