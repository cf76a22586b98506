"""One contract for every registry backend: the local catalogue always, real W&B when configured."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from ragindex.registry import (
    AliasChange,
    ArtifactNotFound,
    ArtifactVersion,
    ConcurrentMove,
    Decision,
    Registry,
    RegistryError,
    RunInfo,
    open_registry,
)
from ragindex.errors import GovernanceError
from ragindex.registry.digest import dir_digest
from tests.conftest import write_files

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent.parent / "include"
WORKER = HERE / "registry_worker.py"


def wandb_uri_or_skip() -> str:
    """The real W&B project to test against, or skip when none is configured."""
    if not os.environ.get("WANDB_API_KEY") or not os.environ.get("RAGINDEX_TEST_WANDB_PROJECT"):
        pytest.skip(
            "real W&B contract needs WANDB_API_KEY and RAGINDEX_TEST_WANDB_PROJECT=ENTITY/PROJECT "
            "(and network access); the W&B adapter is covered without a server in test_wandb_adapter.py"
        )
    return "wandb://" + os.environ["RAGINDEX_TEST_WANDB_PROJECT"].strip("/")


BACKENDS = ["local", "wandb-recording-fake", "wandb"]
SHARED_BACKENDS = ["local", "wandb"]  # what several processes can share (the fake lives in this process)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend's kind: the local catalogue; the W&B adapter over the recording fakes of
    test_wandb_adapter.py (no server is reachable here); real W&B when credentials are configured."""
    return request.param


@pytest.fixture
def registry_uri(backend: str, tmp_path: Path) -> str:
    """A registry URI for the backend under test (a fresh folder for local)."""
    if backend == "wandb":
        return wandb_uri_or_skip()
    assert backend == "local", "only the local and the real W&B backends have a URI other processes can open"
    return f"file://{tmp_path / 'registry'}"


@pytest.fixture
def registry(backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The registry under test, opened through the public entry point (the fake: built around its fakes)."""
    if backend == "wandb-recording-fake":
        from ragindex.registry.wandb import WandbRegistry
        from tests.registry.test_wandb_adapter import ENTITY, PROJECT, RecordingFakeWandbApi, RecordingFakeWandbModule

        monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
        api = RecordingFakeWandbApi()
        opened = WandbRegistry(ENTITY, PROJECT, wandb_module=RecordingFakeWandbModule(api), api=api,
                               cache_dir=tmp_path / "cache")
    else:
        opened = open_registry(request.getfixturevalue("registry_uri"))
    assert isinstance(opened, Registry)
    return opened


@pytest.fixture
def name() -> str:
    """A fresh artifact name, so runs against a shared W&B project never collide."""
    return f"ct-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_dir(tmp_path: Path) -> Callable[..., Path]:
    """Build a directory of files from a {relative path: text} mapping."""
    counter = iter(range(10_000))

    def build(files: dict[str, str | bytes]) -> Path:
        return write_files(tmp_path / "inputs" / f"d{next(counter)}", files)

    return build


def run_info(job: str = "test") -> RunInfo:
    """A RunInfo for a test step."""
    return RunInfo(job_type=job, group="contract-tests", config={"job": job})


def worker(*args: str, barrier: tuple[Path, int] | None = None) -> subprocess.Popen[str]:
    """Start the worker script in its own process with ragindex importable (``barrier``: a folder and the number
    of workers that wait for each other there before they start their work)."""
    env = dict(os.environ)
    env.pop("REGISTRY_WORKER_BARRIER", None)
    if barrier is not None:
        barrier[0].mkdir(parents=True, exist_ok=True)
        env["REGISTRY_WORKER_BARRIER"] = f"{barrier[0]}:{barrier[1]}"
    env["PYTHONPATH"] = os.pathsep.join([str(INCLUDE), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    """Wait for a worker and return (returncode, stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def assert_overlapped(reports: list[dict]) -> None:
    """The workers' work really ran at the same time: each began before every other one ended (a run in which
    they happened one after the other must not pass as a concurrency test; the workers' barrier after their
    first operation makes that so, and this checks it)."""
    last_began, first_ended = max(r["began"] for r in reports), min(r["ended"] for r in reports)
    assert last_began < first_ended, f"the workers did not overlap: {reports}"


def holders(registry: Registry, name: str, alias: str) -> list[ArtifactVersion]:
    """Every version of ``name`` that currently holds ``alias``."""
    return [v for v in registry.versions(name) if alias in v.aliases]


# -- versioning and dedup ------------------------------------------------------------------------


def test_versions_are_numbered_per_name(registry: Registry, name: str, make_dir) -> None:
    first = registry.log_artifact(name, "dataset", make_dir({"a.txt": "one"}), run=run_info())
    second = registry.log_artifact(name, "dataset", make_dir({"a.txt": "two"}), run=run_info())
    other = registry.log_artifact(name + "-other", "dataset", make_dir({"a.txt": "three"}), run=run_info())
    assert (first.ref, second.ref) == (f"{name}:v0", f"{name}:v1")
    assert other.version == "v0"
    assert [v.version for v in registry.versions(name)] == ["v0", "v1"]
    assert first.digest != second.digest
    assert registry.versions(f"{name}-never-logged") == []


def test_digest_is_content_based_and_order_independent(registry: Registry, name: str, make_dir) -> None:
    forward = make_dir({"a.txt": "A", "sub/b.txt": "B"})
    backward = make_dir({"sub/b.txt": "B", "a.txt": "A"})
    version = registry.log_artifact(name, "dataset", forward, run=run_info())
    assert version.digest == dir_digest(forward) == dir_digest(backward)
    again = registry.log_artifact(name, "dataset", backward, run=run_info())
    assert again.ref == version.ref
    renamed = registry.log_artifact(name, "dataset", make_dir({"a2.txt": "A", "sub/b.txt": "B"}), run=run_info())
    assert renamed.ref == f"{name}:v1", "a renamed file is different content"


def test_identical_content_returns_existing_version_even_an_older_one(
    registry: Registry, name: str, make_dir
) -> None:
    v0 = registry.log_artifact(name, "dataset", make_dir({"x": "alpha"}), run=run_info())
    v1 = registry.log_artifact(name, "dataset", make_dir({"x": "beta"}), run=run_info())
    again0 = registry.log_artifact(name, "dataset", make_dir({"x": "alpha"}), run=run_info(), aliases=["old"])
    again1 = registry.log_artifact(name, "dataset", make_dir({"x": "beta"}), run=run_info())
    assert again0.ref == v0.ref and again0.digest == v0.digest
    assert again1.ref == v1.ref
    assert len(registry.versions(name)) == 2
    assert "old" in registry.get(f"{name}:v0").aliases, "aliases requested on a dedup still apply"
    assert registry.get(name).ref == v1.ref, "latest stays on the newest version"


def test_latest_follows_newest_version(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info())
    assert registry.get(f"{name}:latest").version == "v0"
    registry.log_artifact(name, "dataset", make_dir({"f": "2"}), run=run_info())
    assert registry.get(name).version == "v1"
    assert registry.get(f"{name}:latest").version == "v1"
    assert "latest" in registry.get(f"{name}:v1").aliases
    assert "latest" not in registry.get(f"{name}:v0").aliases
    with pytest.raises(RegistryError, match="latest"):
        registry.set_alias(f"{name}:v0", "latest")


# -- aliases -------------------------------------------------------------------------------------


def test_aliases_are_exclusive_and_their_moves_are_recorded(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info(), aliases=["prod"])
    registry.log_artifact(name, "dataset", make_dir({"f": "2"}), run=run_info())
    registry.log_artifact(name, "dataset", make_dir({"f": "3"}), run=run_info())
    moved = registry.set_alias(f"{name}:v2", "prod", actor="alice", reason="eval passed")
    assert moved.ref == f"{name}:v2" and "prod" in moved.aliases
    assert registry.get(f"{name}:prod").ref == f"{name}:v2"
    assert [v.ref for v in holders(registry, name, "prod")] == [f"{name}:v2"]
    registry.set_alias(f"{name}:v1", "prod", actor="bob", reason="rollback")
    assert [v.ref for v in holders(registry, name, "prod")] == [f"{name}:v1"]

    history = registry.alias_history(name, "prod")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "v0"), ("v0", "v2"), ("v2", "v1")]
    assert [(m.actor, m.reason) for m in history[1:]] == [("alice", "eval passed"), ("bob", "rollback")]
    assert all(m.name == name and m.alias == "prod" for m in history)
    assert [m.at for m in history] == sorted(m.at for m in history)
    assert registry.alias_history(name, "staging") == []


def test_set_alias_by_alias_ref_and_invalid_aliases(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info(), aliases=["candidate"])
    registry.log_artifact(name, "dataset", make_dir({"f": "2"}), run=run_info())
    promoted = registry.set_alias(f"{name}:candidate", "prod")
    assert promoted.ref == f"{name}:v0"
    with pytest.raises(RegistryError, match="v7"):
        registry.set_alias(f"{name}:v0", "v7")
    with pytest.raises(ArtifactNotFound, match=f"{name}:v9"):
        registry.set_alias(f"{name}:v9", "prod")
    assert registry.get(f"{name}:prod").ref == f"{name}:v0"


@pytest.mark.parametrize("alias", ["production", "staging"])
def test_a_governance_alias_is_not_moved_by_set_alias(registry: Registry, name: str, make_dir, alias: str) -> None:
    registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info())
    with pytest.raises(GovernanceError, match=f"'{alias}' is moved by decisions only"):
        registry.set_alias(f"{name}:v0", alias)
    assert alias not in registry.get(f"{name}:v0").aliases and registry.alias_history(name, alias) == []


@pytest.mark.parametrize("alias", ["production", "staging"])
def test_a_governance_alias_is_not_set_by_log_artifact(registry: Registry, name: str, make_dir, alias: str) -> None:
    with pytest.raises(GovernanceError, match=f"'{alias}' is moved by decisions only: use `ragindex approve`"):
        registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info(), aliases=["candidate", alias])
    assert registry.versions(name) == [], "a refused log stores nothing"
    first = registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info())
    with pytest.raises(GovernanceError, match=f"'{alias}' is moved by decisions only"):
        registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info(), aliases=[alias])  # same content
    assert alias not in registry.get(first.ref).aliases and registry.alias_history(name, alias) == []


# -- metadata ------------------------------------------------------------------------------------


def test_metadata_round_trip_and_merge(registry: Registry, name: str, make_dir) -> None:
    meta = {"chunk_size": 512, "model": "all-MiniLM-L6-v2", "nested": {"k": [1, 2.5, None, "s"]}, "ok": True}
    version = registry.log_artifact(name, "index", make_dir({"f": "x"}), run=run_info(), metadata=meta)
    assert version.metadata == meta
    assert registry.get(version.ref).metadata == meta
    assert version.type == "index"
    updated = registry.update_metadata(version.ref, {"recall@5": 0.91, "chunk_size": 256})
    expected = {**meta, "recall@5": 0.91, "chunk_size": 256}
    assert updated.metadata == expected
    assert registry.get(version.ref).metadata == expected
    assert registry.get(version.ref).digest == version.digest, "metadata updates leave content alone"


# -- lineage and runs ----------------------------------------------------------------------------


def test_lineage_across_three_levels(registry: Registry, name: str, make_dir) -> None:
    raw, chunks, index = f"{name}-raw", f"{name}-chunks", f"{name}-index"
    raw_v = registry.log_artifact(raw, "raw", make_dir({"doc.txt": "text"}), run=run_info("ingest"), aliases=["prod"])
    chunks_v = registry.log_artifact(
        chunks, "chunks", make_dir({"c.jsonl": "{}"}), run=run_info("chunk"), uses=[f"{raw}:prod"]
    )
    cfg = registry.log_artifact(f"{name}-cfg", "config", make_dir({"cfg.json": "{}"}), run=run_info("config"))
    index_v = registry.log_artifact(
        index, "index", make_dir({"i.faiss": b"\x00\x01"}), run=run_info("embed"), uses=[chunks, f"{cfg.ref}"]
    )
    assert chunks_v.consumed == (f"{raw}:v0",), "uses are resolved to concrete versions"
    assert set(index_v.consumed) == {f"{chunks}:v0", cfg.ref}
    assert index_v.producer_run and chunks_v.producer_run and index_v.producer_run != chunks_v.producer_run

    graph = registry.lineage(f"{index}:latest")
    assert graph["root"] == index_v.ref
    assert set(graph["nodes"]) == {raw_v.ref, chunks_v.ref, cfg.ref, index_v.ref}
    assert sorted(map(tuple, graph["edges"])) == sorted(
        [(raw_v.ref, chunks_v.ref), (chunks_v.ref, index_v.ref), (cfg.ref, index_v.ref)]
    )
    node = graph["nodes"][raw_v.ref]
    assert node["name"] == raw and node["type"] == "raw" and node["version"] == "v0"
    assert node["digest"] == raw_v.digest and "prod" in node["aliases"]
    assert registry.lineage(raw_v.ref) == {"root": raw_v.ref, "nodes": {raw_v.ref: node}, "edges": []}


def test_uses_of_unknown_ref_is_refused(registry: Registry, name: str, make_dir) -> None:
    with pytest.raises(ArtifactNotFound, match=f"{name}-missing"):
        registry.log_artifact(name, "x", make_dir({"f": "1"}), run=run_info(), uses=[f"{name}-missing:v0"])
    assert registry.versions(name) == []


# -- download ------------------------------------------------------------------------------------


def test_download_round_trip_is_byte_identical(registry: Registry, name: str, make_dir, tmp_path: Path) -> None:
    payload = {"a.txt": "hello\n", "deep/er/b.bin": bytes(range(256)) * 50, "empty": ""}
    source = make_dir(payload)
    version = registry.log_artifact(name, "dataset", source, run=run_info())
    for target in (registry.download(version.ref), registry.download(f"{name}:latest", tmp_path / "out")):
        found = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert found == {k: v if isinstance(v, bytes) else v.encode() for k, v in payload.items()}
        assert dir_digest(target) == version.digest
    again = registry.download(version.ref, tmp_path / "out")
    assert again == (tmp_path / "out").resolve()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "no temp dirs left behind"


# -- not found -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [":v0", ":v5", ":no-such-alias", ""])
def test_not_found_errors_name_the_ref(registry: Registry, name: str, make_dir, suffix: str) -> None:
    if suffix != ":v0":
        registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info())
        missing = f"{name}{suffix}" if suffix else f"{name}-unknown"
    else:
        missing = f"{name}-unknown:v0"
    with pytest.raises(ArtifactNotFound) as err:
        registry.get(missing)
    assert missing.split(":")[0] in str(err.value)
    if ":" in missing:
        assert missing.split(":")[1] in str(err.value)
    assert isinstance(err.value, KeyError) and isinstance(err.value, RegistryError)
    with pytest.raises(ArtifactNotFound):
        registry.download(missing)


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
def test_concurrent_writers_get_distinct_versions(registry_uri: str, registry: Registry, name: str,
                                                  tmp_path: Path) -> None:
    procs = [worker("log", registry_uri, name, tag, "5", barrier=(tmp_path / "barrier", 2)) for tag in ("p1", "p2")]
    results = [finish(p) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for _code, out, _err in results]
    assert_overlapped(reports)
    refs = [ref for report in reports for ref in report["refs"]]
    assert sorted(refs, key=lambda r: int(r.split(":v")[1])) == [f"{name}:v{i}" for i in range(10)]
    versions = registry.versions(name)
    assert [v.version for v in versions] == [f"v{i}" for i in range(10)]
    assert len({v.digest for v in versions}) == 10
    assert registry.get(name).version == "v9"


@pytest.mark.parametrize("backend", SHARED_BACKENDS, indirect=True)
def test_concurrent_alias_moves_never_lose_the_alias(
    backend: str, registry_uri: str, registry: Registry, name: str, make_dir, tmp_path: Path
) -> None:
    for i in range(4):
        registry.log_artifact(name, "dataset", make_dir({"f": str(i)}), run=run_info())
    refs_a = [f"{name}:v0", f"{name}:v1"]
    refs_b = [f"{name}:v2", f"{name}:v3"]
    count = "3" if backend == "wandb" else "15"
    procs = [worker("alias", registry_uri, name, "prod", count, *refs, barrier=(tmp_path / "barrier", 2))
             for refs in (refs_a, refs_b)]
    results = [finish(p) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
    assert_overlapped([json.loads(out.strip().splitlines()[-1]) for _code, out, _err in results])
    holding = holders(registry, name, "prod")
    assert len(holding) == 1, [v.ref for v in holding]
    assert registry.get(f"{name}:prod").ref == holding[0].ref
    history = registry.alias_history(name, "prod")
    assert history and history[-1].to_version == holding[0].version
    if backend == "local":  # serialised writers: every move starts where the previous one ended
        assert len(history) == 30
        assert history[0].from_version is None
        assert all(prev.to_version == nxt.from_version for prev, nxt in zip(history, history[1:]))


# -- crash safety of the local backend's storage (W&B's is the server's, so these are not contract tests) --


@pytest.fixture
def local_uri(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'registry'}"


@pytest.mark.parametrize("crash_point", ["crash-copy", "crash-commit"])
def test_killed_local_writer_leaves_no_version_and_registry_keeps_working(
    local_uri: str, name: str, make_dir, crash_point: str
) -> None:
    registry_uri, registry = local_uri, open_registry(local_uri)
    code, _out, err = finish(worker(crash_point, registry_uri, name))
    assert code == -9, f"worker should have been killed mid-log, got {code}: {err}"

    root = Path(registry_uri[len("file://") :])
    assert registry.versions(name) == []
    with pytest.raises(ArtifactNotFound):
        registry.get(name)
    with pytest.raises(ArtifactNotFound):
        registry.get(f"{name}:prod")
    assert registry.alias_history(name, "prod") == [], "the alias move rolled back with its version"
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 0
    if crash_point == "crash-copy":
        leftovers = list((root / ".staging").iterdir())
        assert leftovers, "the killed writer left its partial copy in staging"
        assert registry.clean_staging(older_than_s=0) == len(leftovers)
        assert list((root / ".staging").iterdir()) == []

    later = registry.log_artifact(name, "dataset", make_dir({"f": "after crash"}), run=run_info(), aliases=["prod"])
    assert later.ref == f"{name}:v0" and registry.get(f"{name}:prod").ref == later.ref
    assert registry.download(later.ref).joinpath("f").read_text() == "after crash"


def test_failed_local_copy_is_not_visible(local_uri: str, name: str, make_dir, monkeypatch) -> None:
    import ragindex.registry.local as local

    registry = open_registry(local_uri)

    calls = []
    real_copy = local.copy_hashing

    def copy_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_copy(src, dst)

    monkeypatch.setattr(local, "copy_hashing", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        registry.log_artifact(name, "dataset", make_dir({"a": "1", "b": "2", "c": "3"}), run=run_info())
    monkeypatch.undo()
    assert registry.versions(name) == []
    assert list((registry.root / ".staging").iterdir()) == [], "a failed copy cleans its staging dir"
    assert [p for p in (registry.root / "blobs").rglob("*") if p.is_file()] == [], "nothing half-stored"
    assert registry.log_artifact(name, "dataset", make_dir({"a": "1"}), run=run_info()).ref == f"{name}:v0"


def test_only_contents_not_yet_stored_are_copied(local_uri: str, name: str, make_dir, monkeypatch) -> None:
    import ragindex.registry.local as local

    registry = open_registry(local_uri)
    registry.log_artifact(name, "dataset", make_dir({"a": "1", "b": "2", "c": "3"}), run=run_info())
    copied = []
    real_copy = local.copy_hashing

    def counting_copy(src, dst):
        copied.append(Path(src).name)
        return real_copy(src, dst)

    monkeypatch.setattr(local, "copy_hashing", counting_copy)
    files = {"a": "1", "b": "changed", "c": "3", "d": "1", "e": "changed"}
    second = registry.log_artifact(name, "dataset", make_dir(files), run=run_info())
    assert copied == ["b"], "a, c and d (a's content) are in blobs/ already: hashed, not copied; e is b's content"
    folder = registry.download(second.ref)
    assert {p.name: p.read_text() for p in folder.iterdir()} == files


# -- misc ----------------------------------------------------------------------------------------


def test_type_is_fixed_per_name_and_files_must_be_a_directory(
    registry: Registry, name: str, make_dir, tmp_path: Path
) -> None:
    registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info())
    with pytest.raises(RegistryError, match=name):
        registry.log_artifact(name, "model", make_dir({"f": "2"}), run=run_info())
    with pytest.raises(RegistryError, match="not a directory"):
        registry.log_artifact(name, "dataset", tmp_path / "nope", run=run_info())


def test_web_url(backend: str, registry: Registry, name: str, make_dir) -> None:
    version = registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info())
    url = registry.web_url(version.ref)
    if backend == "local":
        assert url is None
    else:
        assert url and url.startswith("http") and url.endswith(f"/{name}/v0")


# -- decisions -----------------------------------------------------------------------------------


def test_a_decision_is_recorded_once_per_key_with_its_alias_moves(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info())
    registry.log_artifact(name, "index", make_dir({"f": "2"}), run=run_info())
    staged = registry.record_decision(Decision(kind="stage", verdict="staged", ref=f"{name}:v0", actor="dag",
                                               changes=(AliasChange(f"{name}:v0", "staging"),)))
    decision = Decision(kind="review", verdict="rejected", ref=f"{name}:v0", actor="alice", reason="PII",
                        pipeline_run="run-1", key=f"review/run-1/{name}:v0",
                        changes=(AliasChange(f"{name}:v0", "staging", remove=True),), details={"try": 1})
    first = registry.record_decision(decision)
    again = registry.record_decision(decision)
    assert again == first, "recording the same key again returns the record and changes nothing"
    assert (first.kind, first.verdict, first.ref, first.actor, first.reason) == ("review", "rejected", f"{name}:v0",
                                                                                 "alice", "PII")
    assert first.at and first.record_id and first.details == {"try": 1}
    assert [(m.alias, m.from_version, m.to_version) for m in first.moves] == [("staging", "v0", None)]
    assert "staging" not in registry.get(f"{name}:v0").aliases
    assert [d.key for d in registry.decisions(name)] == [staged.key, decision.key]
    assert registry.decision(decision.key) == first
    history = registry.alias_history(name, "staging")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "v0"), ("v0", None)]


def test_decisions_keep_their_order_and_resolve_refs(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info())
    registry.log_artifact(name, "index", make_dir({"f": "2"}), run=run_info())
    promote = registry.record_decision(Decision(kind="promote", verdict="promoted", ref=f"{name}:v0", actor="a",
                                                changes=(AliasChange(f"{name}:v0", "production"),)))
    rollback = registry.record_decision(Decision(kind="rollback", verdict="rolled_back", ref=f"{name}:latest",
                                                 actor="b", changes=(AliasChange(f"{name}:latest", "production"),)))
    assert rollback.ref == f"{name}:v1", "refs are resolved to the version decided on"
    assert [d.record_id for d in registry.decisions(name)] == [promote.record_id, rollback.record_id]
    assert [(m.from_version, m.to_version) for m in registry.alias_history(name, "production")] == [
        (None, "v0"), ("v0", "v1")]
    with pytest.raises(ArtifactNotFound):
        registry.record_decision(Decision(kind="review", verdict="approved", ref=f"{name}:v9", actor="a"))
    with pytest.raises(RegistryError, match="kind"):
        registry.record_decision(Decision(kind="vote", verdict="yes", ref=f"{name}:v0", actor="a"))


def test_one_alias_rule_on_every_backend(registry: Registry, name: str, make_dir) -> None:
    registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info())
    for bad, why in (("Prod", "lower case"), ("v3", "version tag"), ("a:b", "lower-case letters"),
                     ("", "lower-case letters")):
        with pytest.raises(RegistryError, match=why):
            registry.set_alias(f"{name}:v0", bad)
        with pytest.raises(RegistryError, match=why):
            registry.log_artifact(name, "dataset", make_dir({"f": "1"}), run=run_info(), aliases=[bad])
    assert registry.get(f"{name}:v0").aliases == ("latest",)


def test_a_decision_moves_only_while_the_holder_it_expects_holds(registry: Registry, name: str, make_dir) -> None:
    """The compare-and-set of governance moves: a decision whose checks found another holder than the one there
    now is refused with ConcurrentMove, moves nothing and leaves no record (nor an interrupted try); with the
    holder found now it is recorded, and its move starts from that holder."""
    for i in range(3):
        registry.log_artifact(name, "index", make_dir({"f": str(i)}), run=run_info())
    production = f"{name}:production"
    first = registry.record_decision(Decision(kind="promote", verdict="promoted", ref=f"{name}:v0", actor="a",
                                              changes=(AliasChange(f"{name}:v0", "production"),),
                                              expect={production: None}))
    assert [(m.from_version, m.to_version) for m in first.moves] == [(None, "v0")]
    assert first.expect == {production: None}, "the record says what its move was checked against"
    late = Decision(kind="rollback", verdict="rolled_back", ref=f"{name}:v1", actor="b", key=f"late/{name}",
                    changes=(AliasChange(f"{name}:v1", "production"),), expect={production: None})
    with pytest.raises(ConcurrentMove, match=rf"{production} is held by v0, not no version") as refused:
        registry.record_decision(late)
    assert refused.value.retryable, "a conflict is worth a retry: the step checks again"
    assert registry.get(production).ref == f"{name}:v0", "nothing moved"
    assert registry.decision(late.key) is None and not registry.interrupted(late.key), "no record, no open try"
    assert [(m.from_version, m.to_version) for m in registry.alias_history(name, "production")] == [(None, "v0")]
    recorded = registry.record_decision(replace(late, expect={production: "v0"}))
    assert [(m.from_version, m.to_version) for m in recorded.moves] == [("v0", "v1")]
    assert [d.key for d in registry.decisions(name)] == [first.key, late.key], "one record per key"
    assert [(m.from_version, m.to_version) for m in registry.alias_history(name, "production")] == [
        (None, "v0"), ("v0", "v1")]
    with pytest.raises(RegistryError, match="version tag"):
        registry.record_decision(replace(late, key="", expect={production: "latest"}))
    with pytest.raises(RegistryError, match="latest"):
        registry.record_decision(replace(late, key="", expect={name: None}))


def test_the_governance_lock_is_one_holder_at_a_time_and_reentrant(registry: Registry) -> None:
    """Held around a promotion or rollback: another process waits for it (here: a second registry object for the
    same registry, whose lock is another open file, as another process's is); the holder may take it again."""
    import copy
    import threading

    other = copy.copy(registry)  # before either takes the lock: each opens the lock file itself
    order: list[str] = []

    def other_mover() -> None:
        with other.governance_lock():
            order.append("other")

    with registry.governance_lock():
        with registry.governance_lock():  # approve holds it around promote
            waiter = threading.Thread(target=other_mover)
            waiter.start()
            waiter.join(timeout=1.0)
            order.append("holder done")
    waiter.join(timeout=30)
    assert order == ["holder done", "other"], "the other waited until the holder let go"


def test_a_file_system_without_locks_leaves_the_compare_and_set(
    registry: Registry, name: str, make_dir, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Some mounts refuse file locks (ENOLCK): a governance move then goes on, saying so, guarded by its record's
    compare-and-set alone."""
    import errno

    import filelock

    def no_locks_here(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_locks_here)
    registry.log_artifact(name, "index", make_dir({"f": "1"}), run=run_info())
    with caplog.at_level("WARNING"), registry.governance_lock():
        moved = registry.record_decision(Decision(kind="promote", verdict="promoted", ref=f"{name}:v0", actor="a",
                                                  changes=(AliasChange(f"{name}:v0", "production"),),
                                                  expect={f"{name}:production": None}))
    assert [(m.from_version, m.to_version) for m in moved.moves] == [(None, "v0")]
    assert "relies on its compare-and-set alone" in caplog.text and "No locks available" in caplog.text
