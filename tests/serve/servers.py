"""What the serving tests share: two versions of a small index that tell themselves apart by their text, and a
real ``ragindex serve`` process on loopback (used by tests/serve and by the deploy DAG's tests)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tests.conftest import write_files

RAGINDEX = str(Path(sys.executable).with_name("ragindex"))
QUESTION = "How long is a forklift certificate valid?"
FIRST_TEXT, SECOND_TEXT = "valid for three years", "valid for two years now"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def evaluated_version(registry, corpus: Path, tmp_path: Path, run: str) -> str:
    """One ingest run of ``corpus`` (200-character chunks) into ``registry``, evaluated on QUESTION (answered by
    forklifts.md): the new index's ref, ready to approve."""
    from ragindex.context import IngestContext
    from ragindex.gate import evaluate_index
    from ragindex.ingest import ingest
    from ragindex.settings import BuildSettings, ChunkingSettings

    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": QUESTION, "expected_source": "forklifts.md"}) + "\n")
    ctx = IngestContext(registry, run, BuildSettings(chunking=ChunkingSettings(200, 20)), source=str(corpus),
                        work_root=tmp_path / "work")
    ref = ingest(ctx)["index"]
    evaluate_index(ctx, ref, questions)
    return ref


def make_two_versions(tmp_path: Path):
    """A registry with vector-index v0 (production; forklifts "valid for three years") and v1, evaluated and
    ready to approve, of the changed corpus ("valid for two years now")."""
    from ragindex.promotion import approve
    from ragindex.registry import open_registry

    corpus = write_files(tmp_path / "corpus", {
        "forklifts.md": f"# Forklifts\n\nA forklift certificate is {FIRST_TEXT}.\n",
        "shifts.txt": "Night shifts start at ten and end at six.\n"})
    registry = open_registry(str(tmp_path / "registry"))
    first = evaluated_version(registry, corpus, tmp_path, "run-1")
    approve(registry, first, actor="alice")
    (corpus / "forklifts.md").write_text(f"# Forklifts\n\nA forklift certificate is {SECOND_TEXT}.\n")
    second = evaluated_version(registry, corpus, tmp_path, "run-2")
    return registry, first, second


@contextmanager
def running_server(registry_uri: str, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 120) -> Iterator[tuple[subprocess.Popen, str]]:
    """``ragindex serve`` on a free loopback port, healthy (its base URL), stopped afterwards."""
    port = free_port()
    server = subprocess.Popen([RAGINDEX, "serve", "--registry", registry_uri, "--port", str(port), *args],
                              env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        yield server, base
    finally:
        server.terminate()
        server.wait(timeout=30)
