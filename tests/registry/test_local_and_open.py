"""The local backend's locking and layout details, and how ``open_registry`` picks a backend."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ragindex.registry import RegistryError, RunInfo, default_registry_uri, open_registry
from ragindex.registry.local import LocalRegistry
from tests.conftest import write_files

INCLUDE = Path(__file__).resolve().parent.parent.parent / "include"


class ObservedConnection:
    """A catalogue connection that reports when ``BEGIN IMMEDIATE`` was sent and when it returned."""

    def __init__(self, conn: sqlite3.Connection, sent: threading.Event, returned: threading.Event) -> None:
        self._conn, self._sent, self._returned = conn, sent, returned

    def execute(self, sql: str, *args: object):
        if sql == "BEGIN IMMEDIATE":
            self._sent.set()
            result = self._conn.execute(sql, *args)
            self._returned.set()
            return result
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_writer_waits_for_another_writers_transaction_and_takes_the_next_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    other = sqlite3.connect(registry.root / "catalog.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is half-way through logging docs:v0
    sent, returned = threading.Event(), threading.Event()
    connect = registry._connect
    monkeypatch.setattr(registry, "_connect", lambda: ObservedConnection(connect(), sent, returned))
    result: dict[str, object] = {}

    def log() -> None:
        try:
            result["ref"] = registry.log_artifact(
                "docs", "dataset", write_files(tmp_path / "in", {"f": "mine"}), run=RunInfo("t")
            ).ref
        except Exception as exc:  # noqa: BLE001 - reported to the test thread
            result["error"] = exc

    thread = threading.Thread(target=log)
    thread.start()
    assert sent.wait(timeout=60), "the second writer never asked for the write lock"
    # While `other` holds the write lock, BEGIN IMMEDIATE cannot return: the writer queues, it does not fail.
    assert not returned.is_set() and "error" not in result
    other.execute(
        "INSERT INTO versions (name, idx, type, digest, manifest, metadata, created_at, producer_run, consumed) "
        "VALUES ('docs', 0, 'dataset', 'd0', '{}', '{}', '2024-01-01T00:00:00+00:00', 'r', '[]')"
    )
    other.execute("COMMIT")
    thread.join(timeout=60)
    assert returned.is_set()
    assert "error" not in result, result.get("error")
    assert result["ref"] == "docs:v1"


def test_catalogue_uses_wal_and_each_distinct_file_is_stored_once(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    version = registry.log_artifact("docs", "dataset", write_files(tmp_path / "in", {"a/b.txt": "x"}), run=RunInfo("t"))
    with sqlite3.connect(registry.root / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    blob = registry.root / "blobs" / hashlib.sha256(b"x").hexdigest()[:2] / hashlib.sha256(b"x").hexdigest()
    assert blob.read_text() == "x" and stat.S_IMODE(blob.stat().st_mode) & 0o222 == 0, "blobs are read-only"
    view = registry.download(version.ref)
    assert view == registry.root / "views" / version.digest and (view / "a" / "b.txt").read_text() == "x"
    assert (view / "a" / "b.txt").stat().st_ino == blob.stat().st_ino, "a view links the blobs, it copies nothing"
    again = registry.log_artifact("other", "dataset", write_files(tmp_path / "in2", {"elsewhere.txt": "x"}),
                                  run=RunInfo("t"))
    assert again.digest != version.digest
    assert [p for p in (registry.root / "blobs").rglob("*") if p.is_file()] == [blob], "the same bytes, once"


def test_runs_are_recorded_with_generated_or_given_ids(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    first = registry.log_artifact(
        "a", "t", write_files(tmp_path / "1", {"f": "1"}), run=RunInfo("ingest", group="g1", config={"k": [1, 2]})
    )
    assert first.producer_run and len(first.producer_run) == 32
    recorded = registry.run_info(first.producer_run)
    assert recorded == RunInfo("ingest", group="g1", config={"k": [1, 2]}, run_id=first.producer_run)
    second = registry.log_artifact("b", "t", write_files(tmp_path / "2", {"f": "2"}), run=RunInfo("embed", run_id="run-42"))
    assert second.producer_run == "run-42"
    assert registry.run_info("run-42").job_type == "embed"
    assert registry.run_info("nope") is None


def test_metadata_must_be_json(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="docs"):
        registry.log_artifact("docs", "t", write_files(tmp_path / "in", {"f": "1"}), run=RunInfo("t"), metadata={"x": object()})
    assert registry.versions("docs") == []


def test_a_corrupt_catalogue_is_a_registry_error_naming_it(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    registry.log_artifact("docs", "t", write_files(tmp_path / "in", {"f": "1"}), run=RunInfo("t"))
    catalogue = registry.root / "catalog.sqlite"
    for side in catalogue.parent.glob("catalog.sqlite-*"):  # WAL and shared memory: the catalogue is the file
        side.unlink()
    catalogue.write_bytes(b"not a database " * 512)
    for read in (lambda: registry.get("docs:latest"), lambda: registry.versions("docs")):
        with pytest.raises(RegistryError, match=r"catalog\.sqlite .*not a database") as caught:
            read()
        assert str(registry.root) in str(caught.value) and not isinstance(caught.value, sqlite3.Error)
    with pytest.raises(RegistryError, match="cannot open catalogue"):
        LocalRegistry(registry.root)


# -- open_registry -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No registry settings from the developer's shell; RAGINDEX_HOME in tmp."""
    monkeypatch.delenv("RAGINDEX_REGISTRY", raising=False)
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_default_is_local_folder_under_ragindex_home(clean_env: Path) -> None:
    registry = open_registry()
    assert isinstance(registry, LocalRegistry)
    assert registry.root == (clean_env / "registry").resolve()
    assert (clean_env / "registry" / "catalog.sqlite").is_file()
    assert open_registry("").root == registry.root


def test_ragindex_home_defaults_to_dot_ragindex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGINDEX_REGISTRY", raising=False)
    monkeypatch.delenv("RAGINDEX_HOME", raising=False)
    assert default_registry_uri() == str(Path("~/.ragindex/registry").expanduser())


def test_env_registry_wins_over_home(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGINDEX_REGISTRY", f"file://{tmp_path / 'from-env'}")
    assert open_registry().root == (tmp_path / "from-env").resolve()
    assert open_registry(str(tmp_path / "explicit")).root == (tmp_path / "explicit").resolve()


def test_file_uri_round_trips(clean_env: Path, tmp_path: Path) -> None:
    registry = open_registry(f"file://{tmp_path / 'r'}")
    assert registry.uri == f"file://{(tmp_path / 'r').resolve()}"
    assert open_registry(registry.uri).root == registry.root


def test_unknown_scheme_names_the_uri(clean_env: Path) -> None:
    with pytest.raises(RegistryError, match=r"s3://bucket/reg"):
        open_registry("s3://bucket/reg")
    with pytest.raises(RegistryError, match="wandb://only-entity"):
        open_registry("wandb://only-entity")


def test_wandb_uri_builds_wandb_backend_without_importing_wandb() -> None:
    code = (
        "import sys; from ragindex.registry import open_registry; "
        "r = open_registry('wandb://my-team/rag?reference=1'); "
        "import json; print(json.dumps([type(r).__name__, r.entity, r.project, r.by_reference, r.uri, "
        "'wandb' in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(INCLUDE)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    kind, entity, project, by_ref, uri, imported = json.loads(out)
    assert (kind, entity, project, by_ref) == ("WandbRegistry", "my-team", "rag", True)
    assert uri == "wandb://my-team/rag?reference=1"
    assert imported is False, "wandb must be imported lazily"


def test_a_cache_folder_another_writer_put_first_is_kept_and_a_callers_folder_is_replaced(tmp_path: Path) -> None:
    """Two processes filling one digest-named cache folder: the second keeps the first's (a reader may hold it)."""
    from ragindex.registry.rules import fill_atomically

    def writes(text: str):
        return lambda tmp: (tmp / "f").write_text(text)

    cache = fill_atomically(tmp_path / "cache" / "digest", writes("first"), "docs:v0", keep_existing=True)
    held = (cache / "f").stat().st_ino
    assert fill_atomically(cache, writes("second"), "docs:v0", keep_existing=True) == cache
    assert (cache / "f").read_text() == "first" and (cache / "f").stat().st_ino == held, "the held folder never moved"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["digest"], "the losing copy is gone"
    mine = fill_atomically(tmp_path / "mine", writes("old"), "docs:v0")
    assert (fill_atomically(mine, writes("new"), "docs:v0") / "f").read_text() == "new", "a caller's root is replaced"
