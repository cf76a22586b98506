"""``ragindex serve`` on loopback, as a deployment runs it: it answers from the production version, then
follows a promotion and a rollback while two clients keep querying, with no failed request, every answer
naming the version (ref and digest) it came from and holding only that version's text, and every request sent
more than 2 s after a move answered from the new version (default poll, a load slowed by a second)."""

from __future__ import annotations

import bisect
import itertools
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from ragindex.promotion import approve
from ragindex.rollback import rollback
from ragindex.serve import TEST_LOAD_DELAY_ENV
from tests.serve.servers import (
    FIRST_TEXT,
    QUESTION,
    RAGINDEX,
    SECOND_TEXT,
    free_port,
    make_two_versions,
    running_server,
)

BOUND_S = 2.0  # after a move on a local registry, every answer comes from the new version within this
SLOW_LOAD_S = 1.0  # each load sleeps this long in the switch tests: a non-atomic swap would be seen


class Answer(NamedTuple):
    """One answer of the service, with when its request went out and came back (the happens-before order)."""

    sent: float
    answered: float
    ref: str
    digest: str


@pytest.fixture
def two_versions(tmp_path: Path):
    """vector-index v0 (production) and an approved-ready v1 whose forklift text differs."""
    return make_two_versions(tmp_path)


def version_texts(registry, ref: str) -> dict[str, str]:
    """chunk id -> text of every chunk of a version, read from its own docstore (not from the server)."""
    from ragindex.indexing import DocstoreReader

    reader = DocstoreReader.open(registry.download(ref))
    return {r["chunk_id"]: r["text"] for r in reader.get(range(len(reader.offsets)))}


def test_serve_follows_a_promotion_and_a_rollback_within_two_seconds_without_a_failed_request(
        two_versions) -> None:
    """With the default poll on a local registry and every load slowed by a second (so a swap that changed the
    label before the index, or the other way round, would show for a second), every answer to a request sent
    more than 2 s after a move completed comes from the new version, and every hit is text of the version the
    answer names."""
    registry, first, second = two_versions
    texts = {first: version_texts(registry, first), second: version_texts(registry, second)}
    assert any(FIRST_TEXT in t for t in texts[first].values())
    assert any(SECOND_TEXT in t for t in texts[second].values())
    assert not any(FIRST_TEXT in t for t in texts[second].values()), "the versions' texts tell them apart"
    answers: list[Answer] = []
    mislabelled: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    moves: list[tuple[float, str]] = []  # (when the move completed, the ref it moved to)

    with running_server(registry.uri, env={TEST_LOAD_DELAY_ENV: str(SLOW_LOAD_S)}) as (server, base):

        def client() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    try:
                        sent = time.monotonic()
                        r = http.post("/search", json={"question": QUESTION, "k": 2})
                        answered = time.monotonic()
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text}")
                            continue
                        body = r.json()
                        labelled = texts.get(body["ref"], {})
                        wrong = [h["text"] for h in body["hits"] if labelled.get(h["chunk_id"]) != h["text"]]
                        if wrong or body["hits"][0]["source"] != "forklifts.md":
                            mislabelled.append(f"{body['ref']} answered with {wrong or body['hits']}")
                        answers.append(Answer(sent, answered, body["ref"], body["digest"]))
                    except Exception as exc:  # noqa: BLE001 - every failure counts
                        failures.append(repr(exc))
                    time.sleep(0.005)  # two clients keep the server busy without starving its loader

        def settle(ref: str, moved: float, timeout: float = 90) -> None:
            """Until ten requests sent more than BOUND_S after ``moved`` were answered (by whichever version)."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if sum(a.sent > moved + BOUND_S for a in answers[-20:]) >= 10:
                    return
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                time.sleep(0.1)
            pytest.fail(f"no answers to requests sent {BOUND_S} s after the move to {ref}; failures: {failures[:3]}")

        health = httpx.get(f"{base}/healthz").json()
        assert (health["ref"], health["digest"]) == (first, registry.get(first).digest)
        assert health["poll_s"] == 0.5, "a local registry is polled every 0.5 s unless told otherwise"
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            settle(first, time.monotonic() - BOUND_S)
            approve(registry, second, actor="bob", reason="two years now")
            moves.append((time.monotonic(), second))  # the bound counts from the move's completion
            settle(second, moves[-1][0])
            rollback(registry, reason="back to the signed-off text", actor="ops")
            moves.append((time.monotonic(), first))
            settle(first, moves[-1][0])
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert failures == [], failures[:5]
    assert mislabelled == [], mislabelled[:3]
    digests = {registry.get(first).digest: first, registry.get(second).digest: second}
    assert all(digests[a.digest] == a.ref for a in answers), "every answer names the version it came from"
    for i, (moved, ref) in enumerate(moves):
        until = moves[i + 1][0] if i + 1 < len(moves) else float("inf")
        late = [a for a in answers if moved + BOUND_S < a.sent < until]
        stale = [round(a.sent - moved, 2) for a in late if a.ref != ref]
        assert late and not stale, f"requests sent {stale[:5]} s after the move to {ref} got another version"
        lag = min(a.sent for a in answers if moved < a.sent < until and a.ref == ref) - moved
        print(f"move to {ref}: the first request answered from it was sent {lag:.2f} s after the move")
    assert_one_switch_each_way(answers, first, second)


def assert_one_switch_each_way(answers: list[Answer], first: str, second: str) -> None:
    """No request sees an older state than one answered before it was sent (two clients' answers
    interleave: one sent just before the switch may come back after the other's first new answer)."""
    promoted_seen = min(a.answered for a in answers if a.ref == second)

    def phase(sent: float, ref: str) -> int:  # 0: first, 1: second (promoted), 2: first again (rolled back)
        return 1 if ref == second else (2 if sent >= promoted_seen else 0)

    phases = [(a.sent, a.answered, phase(a.sent, a.ref)) for a in answers]
    assert {p for _, _, p in phases} == {0, 1, 2}, "answers from before, between and after"
    by_answer = sorted((answered, p) for _, answered, p in phases)
    done = [answered for answered, _ in by_answer]
    latest = list(itertools.accumulate((p for _, p in by_answer), max))  # latest phase answered by then
    for sent, _, p in phases:
        before = bisect.bisect_right(done, sent)
        assert before == 0 or latest[before - 1] <= p, (
            f"a request sent at {sent:.3f} got phase {p} after phase {latest[before - 1]} was answered: back and forth")


def test_serve_refuses_a_registry_that_does_not_exist(tmp_path) -> None:
    proc = subprocess.run([RAGINDEX, "serve", "--registry", str(tmp_path / "nowhere"), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no registry at" in proc.stderr and "Traceback" not in proc.stderr


def test_a_registry_that_stops_answering_leaves_the_loaded_version_serving(two_versions) -> None:
    from fastapi.testclient import TestClient

    from ragindex.serve import IndexFollower, create_app

    registry, first, _ = two_versions
    follower = IndexFollower(registry.uri, poll_s=3600)
    app = create_app(follower)
    bare = TestClient(app)  # no lifespan: nothing loaded yet
    assert bare.get("/healthz").status_code == 503
    loading = bare.post("/search", json={"question": QUESTION})
    assert loading.status_code == 503 and "no version of vector-index:production" in loading.json()["detail"]
    with TestClient(app) as client:  # the lifespan loads production
        assert client.post("/search", json={"question": QUESTION}).json()["ref"] == first
        catalogue = Path(registry.root) / "catalog.sqlite"
        for side in catalogue.parent.glob("catalog.sqlite-*"):
            side.unlink()
        catalogue.write_bytes(b"not a database " * 512)
        refresh = client.post("/refresh")
        assert refresh.status_code == 503 and "not a database" in refresh.json()["detail"]
        answer = client.post("/search", json={"question": QUESTION})
        assert answer.status_code == 200 and answer.json()["ref"] == first, "the loaded version keeps answering"


def test_the_switch_check_tells_two_clients_interleaving_from_a_server_going_back_and_forth() -> None:
    first, second = "vector-index:v0", "vector-index:v1"

    def answers(*timed: tuple[float, float, str]) -> list[Answer]:
        return [Answer(sent, answered, ref, digest="") for sent, answered, ref in timed]

    # (sent, answered, ref): the second client's request went out before the promotion and came back
    # after the first client's first new answer; then the same around the rollback
    assert_one_switch_each_way(answers((0, 1, first), (2, 3, second), (1.5, 3.2, first), (3.3, 4, second),
                                       (5, 6, first), (5.1, 6.5, second), (6.6, 7, first)), first, second)
    with pytest.raises(AssertionError, match="back and forth"):
        assert_one_switch_each_way(answers((0, 1, first), (2, 3, second), (3, 4, first), (4, 5, second)),
                                   first, second)


def test_the_poll_default_follows_the_backend_and_a_bad_poll_or_load_delay_is_refused(
        two_versions, monkeypatch) -> None:
    from ragindex.errors import RagindexError
    from ragindex.serve import IndexFollower, default_poll_s

    registry, _, _ = two_versions
    assert default_poll_s(registry.uri) == 0.5 and default_poll_s("wandb://team/rag") == 5.0
    assert IndexFollower(registry.uri).poll_s == 0.5 and IndexFollower(registry.uri, poll_s=2).poll_s == 2.0
    for bad in (0, -1, float("nan")):
        with pytest.raises(RagindexError, match="poll seconds .*: must be more than 0"):
            IndexFollower(registry.uri, poll_s=bad)
    monkeypatch.setenv(TEST_LOAD_DELAY_ENV, "soon")
    with pytest.raises(RagindexError, match=f"{TEST_LOAD_DELAY_ENV}='soon': expected seconds"):
        IndexFollower(registry.uri)
    monkeypatch.delenv(TEST_LOAD_DELAY_ENV)
    proc = subprocess.run([RAGINDEX, "serve", "--registry", registry.uri, "--port", str(free_port()),
                           "--poll-seconds", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must be more than 0" in proc.stderr and "Traceback" not in proc.stderr
