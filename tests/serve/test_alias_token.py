"""``Registry.alias_token``, the cheap check ``ragindex serve`` polls: equal while the alias stays, different
after any move (from this process or another), and cheap: on the local registry no new SQLite connection per
check, on W&B one artifact query."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragindex.registry import RunInfo, open_registry
from ragindex.registry.base import RegistryBase
from tests.conftest import write_files

NAME = "thing"


@pytest.fixture
def local(tmp_path: Path):
    """A local registry with two versions of ``thing``; alias ``blue`` on v0."""
    registry = open_registry(str(tmp_path / "registry"))
    for i, text in enumerate(("one", "two")):
        registry.log_artifact(NAME, "data", write_files(tmp_path / f"files-{i}", {"a.txt": text}), run=RunInfo("test"))
    registry.set_alias(f"{NAME}:v0", "blue")
    return registry


def test_the_local_token_changes_with_every_move_and_only_then(local, tmp_path: Path) -> None:
    seen = [local.alias_token(NAME, "blue")]
    assert local.alias_token(NAME, "blue") == seen[0], "no move, same token"
    local.set_alias(f"{NAME}:v1", "blue")
    seen.append(local.alias_token(NAME, "blue"))
    local.set_alias(f"{NAME}:v0", "blue")  # away and back: the same holder, still a move
    seen.append(local.alias_token(NAME, "blue"))
    moved = subprocess.run([sys.executable, "-c", "import sys; from ragindex.registry import open_registry; "
                            "open_registry(sys.argv[1]).set_alias('thing:v1', 'blue')", local.uri],
                           capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0, moved.stderr[-2000:]
    seen.append(local.alias_token(NAME, "blue"))
    assert len(set(seen)) == 4, seen
    local.update_metadata(f"{NAME}:v1", {"note": "not a move"})
    assert local.alias_token(NAME, "blue") == seen[-1], "a commit that moves nothing keeps the token"


def test_the_local_token_of_an_absent_alias_and_of_latest(local, tmp_path: Path) -> None:
    absent = local.alias_token(NAME, "green")
    assert absent.startswith("absent")
    local.set_alias(f"{NAME}:v1", "green")
    assert local.alias_token(NAME, "green") not in (absent, local.alias_token(NAME, "blue"))
    latest = local.alias_token(NAME, "latest")
    local.log_artifact(NAME, "data", write_files(tmp_path / "files-new", {"a.txt": "three"}), run=RunInfo("test"))
    assert local.alias_token(NAME, "latest") != latest, "a new version moves latest"


def test_the_local_check_keeps_its_connection_and_costs_microseconds(local, monkeypatch) -> None:
    opened: list[object] = []
    real_connect = sqlite3.connect

    def counting_connect(*args, **kwargs):
        opened.append(args)
        return real_connect(*args, **kwargs)

    local.alias_token(NAME, "blue")
    monkeypatch.setattr("ragindex.registry.local.sqlite3.connect", counting_connect)
    before = local.alias_token(NAME, "blue")
    started = time.perf_counter()
    for _ in range(1000):
        local.alias_token(NAME, "blue")
    per_check_us = (time.perf_counter() - started) * 1000
    assert opened == [], "the checks reused the kept connection"
    started = time.perf_counter()
    for _ in range(200):
        local.get(f"{NAME}:blue")
    per_get_us = (time.perf_counter() - started) / 200 * 1e6
    print(f"alias_token {per_check_us:.0f} us per check; a full get {per_get_us:.0f} us")
    assert len(opened) == 200, "each get opens a connection of its own (what the check avoids)"
    other = open_registry(local.uri)
    other.set_alias(f"{NAME}:v1", "blue")
    del opened[:]
    assert local.alias_token(NAME, "blue") != before, "a commit by another connection is seen on the kept one"
    assert opened == []


def test_the_base_token_is_a_full_read_that_follows_the_holder(local) -> None:
    """What a backend without a cheaper check gets (the base class's method, on a real registry)."""
    token = RegistryBase.alias_token(local, NAME, "blue")
    assert token == f"v0:{local.get(f'{NAME}:v0').digest}"
    local.set_alias(f"{NAME}:v1", "blue")
    assert RegistryBase.alias_token(local, NAME, "blue") == f"v1:{local.get(f'{NAME}:v1').digest}"
    assert RegistryBase.alias_token(local, NAME, "green") == "absent"


def test_the_wandb_token_is_one_artifact_query_with_fake_wandb_server(tmp_path: Path, monkeypatch) -> None:
    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer

    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    server = FakeWandbServer(tmp_path / "server")
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache")
    for i, text in enumerate(("one", "two")):
        registry.log_artifact(NAME, "data", write_files(tmp_path / f"files-{i}", {"a.txt": text}), run=RunInfo("test"))
    registry.set_alias(f"{NAME}:v0", "blue")
    before = server.requests()
    token = registry.alias_token(NAME, "blue")
    after = server.requests()
    spent = {kind: n - before.get(kind, 0) for kind, n in after.items() if n != before.get(kind, 0)}
    assert spent == {"artifact_by_name": 1}, f"one artifact query, no run query: {spent}"
    assert token == registry.alias_token(NAME, "blue")
    registry.set_alias(f"{NAME}:v1", "blue")
    assert registry.alias_token(NAME, "blue") != token
    assert registry.alias_token(NAME, "green") == "absent"
