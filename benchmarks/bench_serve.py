"""Serving figures: /search latency (k=5) of ``ragindex serve`` on an index of 100k chunks (in its default mode,
and in each mode in turn: dense, sparse, hybrid, with the hybrid/dense p50 ratio), and how long after an
alias move answers still came from the old version: over N moves (promotion, rollback, promotion, ...) with
the server's default poll while two clients keep querying, the lag to the first request answered from the new
version and to the last one answered from the old (the bound: every request sent later got the new one), as
max and p50; then one move followed by ``POST /refresh``. Moves are spaced by a random wait, so they fall
anywhere in the poll interval.

    .venv/bin/python benchmarks/bench_serve.py [--chunks 100000] [--requests 400] [--switches 10] [--json]

The two 100k-chunk versions are made directly in the index format (random unit vectors, synthetic texts):
embedding 100k texts here would take most of an hour and measure the model, not the service. Queries are
real: encoded with the onnx backend, searched in the flat FAISS index, the hits read from the docstore.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

from benchreport import emit, machine  # noqa: E402 - beside this script

QUESTIONS = ["How long is a forklift certificate valid?", "Who approves a vendor's bank details?",
             "When are inventory counts done?", "What must drivers check before leaving the yard?"]


def question(i: int) -> str:
    """The i-th query: a different text each time, so serving's query-vector memo (a repeated question is not
    encoded again) does not hide the encoding every new question costs."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (request {i})"


def synthetic_version(registry, root: Path, chunks: int, seed: int) -> str:
    """A vector-index version of ``chunks`` chunks that passed its gate (random unit vectors)."""
    from ragindex.chunking import Chunk, text_sha256
    from ragindex.embedding import model_identity
    from ragindex.indexing import write_index_dir
    from ragindex.registry import RunInfo
    from ragindex.settings import DEFAULT_MODEL, IndexSettings

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((chunks, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"Section {i} of handbook {seed}: procedures for dock {i % 97}, shift {i % 7}." for i in range(chunks)]
    records = [Chunk(f"{i:032x}", f"doc-{i // 50}.md", None, 0, t, text_sha256(t)) for i, t in enumerate(texts)]
    folder = root / f"index-{seed}"
    write_index_dir(folder, records, vectors, index_settings=IndexSettings(),
                    description={"model": DEFAULT_MODEL, "model_identity": model_identity(DEFAULT_MODEL, "onnx"),
                                 "embedding_backend": "onnx"})
    version = registry.log_artifact("vector-index", "index", folder, run=RunInfo("bench"),
                                    metadata={"eval": {"passed": True, "recall_at_k": 1.0, "mrr": 1.0, "k": 5}})
    return version.ref


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(registry_uri: str, *args: str, timeout: float = 600) -> tuple[subprocess.Popen, str, float]:
    """``ragindex serve`` on a free loopback port, once healthy: the process, its base URL and the seconds from
    its start to the first healthy answer (the caller stops it)."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "ragindex.cli", "serve", "--registry", registry_uri, "--port",
                               str(port), *args], env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return server, base, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit("ragindex serve did not become healthy")
        time.sleep(0.05)


def latencies(base: str, requests: int, clients: int, first_client: int = 0) -> list[float]:
    """Seconds per /search (k=5) over ``requests`` requests from ``clients`` concurrent clients."""
    import httpx

    out: list[float] = []
    lock = threading.Lock()

    def client(c: int, n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(n):
                t = time.perf_counter()
                r = http.post("/search", json={"question": question(c * 100_000 + i), "k": 5})
                r.raise_for_status()
                with lock:
                    out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(c, requests // clients))
               for c in range(first_client, first_client + clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


MODES = ("dense", "sparse", "hybrid")
BY_MODE_FIRST = 10_000_000  # latencies() asks question(c * 100_000 + i) for clients c < 100


def by_mode(base: str, requests: int) -> dict[str, list[float]]:
    """Seconds per /search (k=5) in each retrieval mode, one client taking the modes in turn (same questions)."""
    import httpx

    out: dict[str, list[float]] = {m: [] for m in MODES}
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(requests):
            for mode in MODES[i % 3:] + MODES[:i % 3]:  # rotate which mode goes first
                t = time.perf_counter()
                # each request a question never asked before (these are past every other phase's), so each
                # mode pays the encoding; the questions of the phase before had been memoised, which made
                # every mode look ~2x faster (2026-12-03)
                r = http.post("/search", json={"question": question(BY_MODE_FIRST + 3 * i + MODES.index(mode)),
                                               "k": 5, "mode": mode})
                r.raise_for_status()
                out[mode].append(time.perf_counter() - t)
    return out


class Watch:
    """Two clients querying until stopped, every answer kept as (sent, ref)."""

    def __init__(self, base: str, clients: int = 2) -> None:
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(base,)) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _client(self, base: str) -> None:
        import httpx

        with httpx.Client(base_url=base, timeout=60) as http:
            while not self._stop.is_set():
                sent = time.perf_counter()
                r = http.post("/search", json={"question": QUESTIONS[0], "k": 5})
                r.raise_for_status()
                self.answers.append((sent, r.json()["ref"]))

    def lags(self, moved: float, ref: str, timeout: float = 120) -> tuple[float, float]:
        """(first request answered from ``ref``, last one answered from another) in seconds after ``moved``,
        once a request sent a second after the first new answer came back (the swap is one assignment, so none
        later is old)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            after = [(sent, r) for sent, r in list(self.answers) if sent > moved]
            first_new = min((sent for sent, r in after if r == ref), default=None)
            if first_new is not None and any(sent > first_new + 1.0 for sent, _ in after):
                last_old = max((sent for sent, r in after if r != ref), default=moved)
                return first_new - moved, last_old - moved
            time.sleep(0.05)
        raise SystemExit(f"the server never answered from {ref} within {timeout} s of the move")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--poll-seconds", type=float, default=None, help="default: the server's own default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import random

    import httpx

    from ragindex.promotion import approve
    from ragindex.registry import open_registry
    from ragindex.rollback import rollback

    root = Path(tempfile.mkdtemp(prefix="ragindex-serve-bench-"))
    registry = open_registry(str(root / "registry"))
    print(f"making three versions of {args.chunks} chunks ...", file=sys.stderr)
    first, second, third = (synthetic_version(registry, root, args.chunks, seed) for seed in (1, 2, 3))
    approve(registry, first, actor="bench")
    poll = ["--poll-seconds", str(args.poll_seconds)] if args.poll_seconds else []
    server, base, startup = start_server(registry.uri, *poll)
    rng = random.Random(0)
    first_new: list[float] = []
    last_old: list[float] = []
    try:
        poll_s = httpx.get(f"{base}/healthz", timeout=10).json()["poll_s"]
        latencies(base, 20, 1, first_client=9)  # warm-up, on questions of its own
        one = latencies(base, args.requests, 1)
        two = latencies(base, args.requests, 2, first_client=1)
        modes = by_mode(base, args.requests // 2)
        watch = Watch(base)
        try:
            for i in range(args.switches):
                time.sleep(rng.uniform(0.0, 1.0))  # anywhere in the poll interval
                if i % 2 == 0:
                    approve(registry, second, actor="bench")
                    target = second
                else:
                    target = rollback(registry, reason="bench", actor="bench")["to"]
                moved = time.perf_counter()  # the move has completed
                new, old = watch.lags(moved, target)
                first_new.append(new)
                last_old.append(old)
                print(f"move {i + 1} to {target}: first new answer {new:.2f} s, last old {old:.2f} s",
                      file=sys.stderr)
            approve(registry, third, actor="bench")
            moved = time.perf_counter()
            httpx.post(f"{base}/refresh", timeout=120).raise_for_status()
            refreshed_new, refreshed_old = watch.lags(moved, third)
        finally:
            watch.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    def summary(values: list[float]) -> dict[str, float]:
        return {"max_s": round(max(values), 2), "p50_s": round(statistics.median(values), 2)}

    figures = {"chunks": args.chunks, "startup_s": round(startup, 2),
               "one_client": {"p50_ms": round(pct(one, 50), 1), "p99_ms": round(pct(one, 99), 1),
                              "requests_per_s": round(len(one) / sum(one), 1)},
               "two_clients": {"p50_ms": round(pct(two, 50), 1), "p99_ms": round(pct(two, 99), 1)},
               "by_mode": {m: {"p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)} for m, v in modes.items()},
               "hybrid_over_dense_p50": round(pct(modes["hybrid"], 50) / pct(modes["dense"], 50), 3),
               "alias_move": {"poll_seconds": poll_s, "switches": args.switches,
                              "to_first_new_answer": summary(first_new), "to_last_old_answer": summary(last_old),
                              "with_refresh": {"first_new_s": round(refreshed_new, 2),
                                               "last_old_s": round(refreshed_old, 2)}},
               **machine(),
               "mean_one_client_ms": round(statistics.mean(one) * 1000, 1)}
    move = figures["alias_move"]
    emit(figures, args.json, lambda f: [
        f"ragindex serve, flat index of {f['chunks']} chunks (onnx queries), {f['cores']} cores, "
        f"load {f['load_average']}",
        f"  start-up to first healthy answer   {f['startup_s']:.2f} s",
        f"  /search k=5, 1 client              p50 {f['one_client']['p50_ms']:.1f} ms, "
        f"p99 {f['one_client']['p99_ms']:.1f} ms ({f['one_client']['requests_per_s']} req/s)",
        f"  /search k=5, 2 clients             p50 {f['two_clients']['p50_ms']:.1f} ms, "
        f"p99 {f['two_clients']['p99_ms']:.1f} ms",
        *[f"  /search k=5, mode {m:<7}           p50 {f['by_mode'][m]['p50_ms']:.1f} ms, "
          f"p99 {f['by_mode'][m]['p99_ms']:.1f} ms" for m in MODES],
        f"  hybrid / dense p50                 {f['hybrid_over_dense_p50']:.2f}x (the modes in turn, one client)",
        f"  alias move, polling every {move['poll_seconds']:g} s, {move['switches']} moves, 2 clients querying:",
        f"    to the first new answer          max {move['to_first_new_answer']['max_s']:.2f} s, "
        f"p50 {move['to_first_new_answer']['p50_s']:.2f} s",
        f"    to the last old answer (bound)   max {move['to_last_old_answer']['max_s']:.2f} s, "
        f"p50 {move['to_last_old_answer']['p50_s']:.2f} s",
        f"  alias move + POST /refresh         first new {move['with_refresh']['first_new_s']:.2f} s, "
        f"last old {move['with_refresh']['last_old_s']:.2f} s"])


if __name__ == "__main__":
    main()
