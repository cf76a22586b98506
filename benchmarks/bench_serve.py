"""Serving figures: /search latency (k=5) of ``ragindex serve`` on an index of 100k chunks, and the time from an
alias move to the first answer from the new version (polling, and with ``POST /refresh``).

    .venv/bin/python benchmarks/bench_serve.py [--chunks 100000] [--requests 400] [--json]

The two 100k-chunk versions are made directly in the index format (random unit vectors, synthetic texts):
embedding 100k texts here would take most of an hour and measure the model, not the service. Queries are
real: encoded with the onnx backend, searched in the flat FAISS index, the hits read from the docstore.
"""

from __future__ import annotations

import argparse
import os
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


def latencies(base: str, requests: int, clients: int) -> list[float]:
    """Seconds per /search (k=5) over ``requests`` requests from ``clients`` concurrent clients."""
    import httpx

    out: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for i in range(n):
                t = time.perf_counter()
                r = http.post("/search", json={"question": QUESTIONS[i % len(QUESTIONS)], "k": 5})
                r.raise_for_status()
                with lock:
                    out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(requests // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def until_answered_by(base: str, ref: str, started: float) -> float:
    """Seconds from ``started`` until a /search answer comes from ``ref``."""
    import httpx

    with httpx.Client(base_url=base, timeout=60) as http:
        while True:
            if http.post("/search", json={"question": QUESTIONS[0], "k": 5}).json()["ref"] == ref:
                return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import httpx

    from ragindex.promotion import approve
    from ragindex.registry import open_registry

    root = Path(tempfile.mkdtemp(prefix="ragindex-serve-bench-"))
    registry = open_registry(str(root / "registry"))
    print(f"making two versions of {args.chunks} chunks ...", file=sys.stderr)
    first, second, third = (synthetic_version(registry, root, args.chunks, seed) for seed in (1, 2, 3))
    approve(registry, first, actor="bench")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "ragindex.cli", "serve", "--registry", registry.uri, "--port",
                               str(port), "--poll-seconds", str(args.poll_seconds)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        startup = time.perf_counter() - started
        latencies(base, 20, 1)  # warm-up
        one = latencies(base, args.requests, 1)
        two = latencies(base, args.requests, 2)
        moved = time.perf_counter()
        approve(registry, second, actor="bench")
        polled = until_answered_by(base, second, moved)
        approve(registry, third, actor="bench")
        moved = time.perf_counter()
        httpx.post(f"{base}/refresh", timeout=120).raise_for_status()
        refreshed = until_answered_by(base, third, moved)
    finally:
        server.terminate()
        server.wait(timeout=30)
    figures = {"chunks": args.chunks, "startup_s": round(startup, 2),
               "one_client": {"p50_ms": round(pct(one, 50), 1), "p99_ms": round(pct(one, 99), 1),
                              "requests_per_s": round(len(one) / sum(one), 1)},
               "two_clients": {"p50_ms": round(pct(two, 50), 1), "p99_ms": round(pct(two, 99), 1)},
               "alias_move_to_first_answer_s": {"polling": round(polled, 2), "poll_seconds": args.poll_seconds,
                                                "with_refresh": round(refreshed, 2)},
               **machine(),
               "mean_one_client_ms": round(statistics.mean(one) * 1000, 1)}
    alias_move = figures["alias_move_to_first_answer_s"]
    emit(figures, args.json, lambda f: [
        f"ragindex serve, flat index of {f['chunks']} chunks (onnx queries), {f['cores']} cores, "
        f"load {f['load_average']}",
        f"  start-up to first healthy answer   {f['startup_s']:.2f} s",
        f"  /search k=5, 1 client              p50 {f['one_client']['p50_ms']:.1f} ms, "
        f"p99 {f['one_client']['p99_ms']:.1f} ms ({f['one_client']['requests_per_s']} req/s)",
        f"  /search k=5, 2 clients             p50 {f['two_clients']['p50_ms']:.1f} ms, "
        f"p99 {f['two_clients']['p99_ms']:.1f} ms",
        f"  alias move -> first answer         {alias_move['polling']:.2f} s polling every {alias_move['poll_seconds']:g} s; "
        f"{alias_move['with_refresh']:.2f} s with POST /refresh"])

if __name__ == "__main__":
    main()
