"""Serving a release: `/context` against `/search` on an index of 100k chunks, and release switches under a
bounded load, as `ragindex serve --name rag-release` runs them (its own process, loopback HTTP).

1. Latency: one client alternates `/search` and `/context` (the same questions, k=5); p50 and p99 of each and
   the ratio of the p50s (target: `/context` at most 1.2x `/search`).
2. Switches: two clients send `/context` at a bounded rate while production moves N times (promotion of
   release B, rollback to A, ...). Every answer is checked against the registry: the index and prompt it names
   are the ones its release's manifest names (never a mix), and its release held production at some instant
   between (request sent - the follow bound) and (answer received), so no answer comes from a release that
   stopped serving earlier (a flip back, a stale arm). The follow bound is measured: the largest time from a
   move to the first answer from the new release (one poll interval plus loading the release). Failed
   requests must be 0. Also
   printed: the share of answers from the release that held production when the answer came back, and how
   long after a move the last answer from the old one was sent.

The two 100k-chunk indexes are made directly in the index format (random unit vectors, synthetic texts, as in
bench_serve.py); their releases are marked as having passed the gate (the synthetic questions cannot be scored)
and approved through the real promotion, so every move is a real decision on record.

    .venv/bin/python benchmarks/bench_release_serve.py [--chunks 100000] [--requests 300] [--switches 6]
        [--rate 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

from bench_serve import QUESTIONS, pct, question, start_server, synthetic_version  # noqa: E402 - beside this script
from benchreport import emit, machine  # noqa: E402

PROMPT = {"templates": {"system": "system.j2", "user": "user.j2"}, "input_variables": ["question", "chunks"],
          "model": "bench-model", "temperature": 0.0, "context_budget": 20000}


def log_prompt(registry, folder: Path, marker: str) -> str:
    """A prompt-template version whose system message names ``marker`` (so an answer shows which prompt)."""
    from ragindex.prompts import check_budget, load_prompt, log_prompt as log, placeholder_retriever
    from ragindex.registry import RunInfo

    folder.mkdir(parents=True)
    (folder / "prompt.json").write_text(json.dumps(PROMPT))
    (folder / "system.j2").write_text(f"{marker}: answer only from the numbered sources.\n")
    (folder / "user.j2").write_text("{% for c in chunks %}[{{ loop.index }}] {{ c.text }}\n{% endfor %}"
                                    "Question: {{ question }}\n")
    prompt = load_prompt(folder)
    return log(registry, prompt, check_budget(prompt, QUESTIONS, placeholder_retriever(200), 5),
               run=RunInfo("bench_prompt", group="bench")).ref


def make_release(registry, root: Path, index: str, prompt: str, questions: str) -> str:
    """A release of ``index`` + ``prompt`` with k=5, marked as having passed its gate."""
    from ragindex.registry import RunInfo
    from ragindex.release import assemble_release, log_release

    ref = log_release(registry, assemble_release(registry, index, prompt, questions_ref=questions, k=5),
                      run=RunInfo("bench_release", group="bench")).ref
    registry.update_metadata(ref, {"eval": {"passed": True, "reason": "benchmark: synthetic index, not scored",
                                            "recall_at_k": 1.0, "mrr": 1.0, "k": 5}})
    return ref


def log_questions(registry, root: Path) -> str:
    """The benchmark's questions as an eval-questions version (a release names one)."""
    from ragindex.context import IngestContext
    from ragindex.gate import log_eval_questions

    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": q, "expected_source": "doc-0.md"}) + "\n" for q in QUESTIONS))
    ctx = IngestContext(registry, "bench-questions")
    try:
        return log_eval_questions(ctx, path)[0].ref
    finally:
        ctx.work.remove()


def alternate(base: str, requests: int, first: int = 0) -> tuple[list[float], list[float]]:
    """Seconds per /search and per /context, one client alternating them; every request a new question (the
    server remembers query vectors: a repeated one would hide the encoding a new question costs)."""
    import httpx

    search, context = [], []
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(first, first + requests):
            for j, (path, out) in enumerate((("/search", search), ("/context", context)) if i % 2 else (
                    ("/context", context), ("/search", search))):
                t = time.perf_counter()
                http.post(path, json={"question": question(2 * i + j)}).raise_for_status()
                out.append(time.perf_counter() - t)
    return search, context


class Load:
    """Clients sending /context at a bounded rate each; every answer kept with its send and receive times."""

    def __init__(self, base: str, clients: int, rate: float) -> None:
        self.answers: list[dict] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._interval = 1.0 / rate
        self._threads = [threading.Thread(target=self._client, args=(base, n)) for n in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self, base: str, n: int) -> None:
        import httpx

        with httpx.Client(base_url=base, timeout=60) as http:
            i = 0
            while not self._stop.is_set():
                sent = time.time()
                try:
                    r = http.post("/context", json={"question": question((n + 1) * 1_000_000 + i),
                                                    "key": f"c{n}-{i}"})
                    r.raise_for_status()
                    body = r.json()
                    self.answers.append({"sent": sent, "received": time.time(), "release": body["release"],
                                         "index": body["index"], "prompt": body["prompt"]["ref"],
                                         "prompt_digest": body["prompt"].get("digest"),
                                         "system": body["prompt"]["messages"][0]["content"]})
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none may happen
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                i += 1
                self._stop.wait(max(0.0, self._interval - (time.time() - sent)))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def holders(moves: list[tuple[float, float, str]], first: str):
    """Which releases may have held production at some instant in [a, b]: a move is known only to lie between
    the moment its call began and the moment it returned."""
    def during(a: float, b: float) -> set[str]:
        held, out = first, set()
        for began, ended, to in moves:
            if ended < a:
                held = to
            elif began <= b:
                out.add(held)
                out.add(to)
                held = to
        out.add(held)
        return out
    return during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="of each kind, for the latency figures")
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per client, at most")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import httpx

    from ragindex.promotion import approve
    from ragindex.registry import open_registry
    from ragindex.release import read_release
    from ragindex.rollback import rollback

    root = Path(tempfile.mkdtemp(prefix="ragindex-release-serve-bench-"))
    registry = open_registry(str(root / "registry"))
    print(f"making two indexes of {args.chunks} chunks and two releases ...", file=sys.stderr)
    questions = log_questions(registry, root)
    index_a, index_b = (synthetic_version(registry, root, args.chunks, seed) for seed in (1, 2))
    release_a = make_release(registry, root, index_a, log_prompt(registry, root / "prompt-a", "PROMPT-A"), questions)
    release_b = make_release(registry, root, index_b, log_prompt(registry, root / "prompt-b", "PROMPT-B"), questions)
    manifests = {ref: read_release(registry, ref).manifest for ref in (release_a, release_b)}
    approve(registry, release_a, actor="bench", reason="first release")
    server, base, _startup = start_server(registry.uri, "--name", "rag-release")
    moves: list[tuple[float, float, str]] = []
    try:
        poll_s = float(httpx.get(f"{base}/healthz", timeout=10).json()["poll_s"])
        alternate(base, 10, first=900_000)  # warm-up, on questions of its own
        search, context = alternate(base, args.requests)
        load = Load(base, args.clients, args.rate)
        try:
            time.sleep(2.0)
            for i in range(args.switches):
                began = time.time()
                if i % 2 == 0:
                    approve(registry, release_b, actor="bench", reason=f"switch {i + 1}")
                    target = release_b
                else:
                    target = rollback(registry, reason=f"switch {i + 1}", actor="bench", name="rag-release")["to"]
                moves.append((began, time.time(), target))
                print(f"move {i + 1}: production -> {target}", file=sys.stderr)
                time.sleep(4.0)  # longer than the follow bound: every move is served before the next
        finally:
            load.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    mixed = [a for a in load.answers
             if a["index"]["ref"] != manifests[a["release"]["ref"]].index.ref
             or a["prompt"] != manifests[a["release"]["ref"]].prompt.ref
             or not a["system"].startswith("PROMPT-A" if manifests[a["release"]["ref"]].index.ref == index_a
                                           else "PROMPT-B")]
    first_new = []
    for began, ended, to in moves:
        after = [a["received"] for a in load.answers if a["sent"] >= ended and a["release"]["ref"] == to]
        first_new.append(min(after) - ended if after else float("inf"))
    bound = max(first_new)  # measured: from a move's end to the first answer from the new release
    during = holders(moves, release_a)
    disagree = [a for a in load.answers if a["release"]["ref"] not in during(a["sent"] - bound, a["received"])]
    at_answer = holders(moves, release_a)
    strict = sum(1 for a in load.answers if at_answer(a["received"], a["received"]) == {a["release"]["ref"]})
    last_old = []
    for began, ended, to in moves:
        old = [a["sent"] - ended for a in load.answers if a["sent"] >= ended and a["release"]["ref"] != to
               and a["sent"] < ended + 4.0]
        last_old.append(max(old, default=0.0))
    figures = {
        "chunks": args.chunks,
        "search": {"p50_ms": round(pct(search, 50), 1), "p99_ms": round(pct(search, 99), 1)},
        "context": {"p50_ms": round(pct(context, 50), 1), "p99_ms": round(pct(context, 99), 1)},
        "context_over_search_p50": round(pct(context, 50) / pct(search, 50), 3),
        "switch": {"moves": len(moves), "answers": len(load.answers), "failed_requests": len(load.failures),
                   "mixed_answers": len(mixed), "poll_s": poll_s, "follow_bound_s": round(bound, 2),
                   "disagreeing_answers": len(disagree),
                   "answered_by_the_holder_at_answer_time": round(strict / max(1, len(load.answers)), 4),
                   "last_old_answer_sent_after_move_max_s": round(max(last_old, default=0.0), 2),
                   "clients": args.clients, "rate_per_client": args.rate},
        **machine(),
    }
    if load.failures:
        figures["switch"]["first_failures"] = load.failures[:3]
    emit(figures, args.json, lambda f: [
        f"ragindex serve --name rag-release, flat index of {f['chunks']} chunks (onnx queries), {f['cores']} cores, "
        f"load {f['load_average']}",
        f"  /search  k=5   p50 {f['search']['p50_ms']:.1f} ms, p99 {f['search']['p99_ms']:.1f} ms",
        f"  /context k=5   p50 {f['context']['p50_ms']:.1f} ms, p99 {f['context']['p99_ms']:.1f} ms  "
        f"({f['context_over_search_p50']:.2f}x /search p50)",
        f"  {f['switch']['moves']} release switches under {f['switch']['clients']} clients x "
        f"{f['switch']['rate_per_client']:g} req/s: {f['switch']['answers']} answers, "
        f"{f['switch']['failed_requests']} failed, {f['switch']['mixed_answers']} mixing two releases",
        f"    every answer's release held production within the follow bound ({f['switch']['follow_bound_s']:.2f} s, "
        f"polling every {f['switch']['poll_s']:g} s): {f['switch']['disagreeing_answers']} disagree",
        f"    answered by the release holding production when the answer came back: "
        f"{f['switch']['answered_by_the_holder_at_answer_time']:.1%}; last old answer sent "
        f"{f['switch']['last_old_answer_sent_after_move_max_s']:.2f} s after a move"])
    if load.failures or mixed or disagree:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
