"""The W&B adapter without a server: real ``wandb.Artifact`` objects, recording fakes for run and Api.

The fakes only record calls and keep a minimal in-memory store (dedup by digest, exclusive
aliases) so that the adapter's reads after a write have something to read; they are not a W&B model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import wandb  # noqa: F401 - pinned in requirements.txt: the adapter is tested against the real SDK classes
from wandb.errors import CommError

from ragindex.registry import ArtifactNotFound, RegistryError, RunInfo  # noqa: E402
from ragindex.registry.digest import dir_digest  # noqa: E402
from ragindex.registry.wandb import ALIAS_MOVES_KEY, WandbRegistry  # noqa: E402

ENTITY, PROJECT = "fake-team", "fake-project"


class FakeApiRun:
    """What ``artifact.logged_by()`` returns: an id and the artifacts the run used."""

    def __init__(self, run_id: str, used: list[Any]) -> None:
        self.id = run_id
        self._used = used

    def used_artifacts(self) -> list[Any]:
        return list(self._used)


class FakeApiArtifact:
    """A stored version as the public Api shows it; ``save()`` is recorded and applied."""

    def __init__(self, store: "RecordingFakeWandbApi", name: str, index: int, source: Any, producer: FakeApiRun):
        self._store = store
        self.name = f"{name}:v{index}"
        self.version = f"v{index}"
        self.type = source.type
        self.digest = source.digest
        self.metadata = dict(source.metadata)
        self.aliases: list[str] = []
        self.created_at = f"2024-01-01T00:00:{index:02d}Z"
        self.entity, self.project = ENTITY, PROJECT
        self.url = f"https://wandb.example/{ENTITY}/{PROJECT}/artifacts/{self.type}/{name}/v{index}"
        self._files = {path: entry.local_path for path, entry in source.manifest.entries.items()}
        self._producer = producer
        self.saves = 0

    def logged_by(self) -> FakeApiRun:
        return self._producer

    def save(self) -> None:
        self.saves += 1
        self._store.calls.append(("save", self.name, list(self.aliases), dict(self.metadata)))
        self._store.make_exclusive(self)

    def download(self, root: str) -> str:
        for rel, local in self._files.items():
            target = Path(root) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        return root


class RecordingFakeWandbApi:
    """Stand-in for ``wandb.Api()``: records queries, serves versions from memory."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.collections: dict[str, list[FakeApiArtifact]] = {}

    def commit(self, source: Any, aliases: list[str], producer: FakeApiRun) -> FakeApiArtifact:
        """What the server does on log: dedup by digest, else a new version; aliases + latest."""
        name = source.name
        versions = self.collections.setdefault(name, [])
        stored = next((v for v in versions if v.digest == source.digest), None)
        if stored is None:
            stored = FakeApiArtifact(self, name, len(versions), source, producer)
            versions.append(stored)
        stored.aliases = list(dict.fromkeys([*stored.aliases, *aliases, "latest"]))
        self.make_exclusive(stored)
        return stored

    def make_exclusive(self, holder: FakeApiArtifact) -> None:
        """Aliases are unique within a collection."""
        for other in self.collections[holder.name.split(":")[0]]:
            if other is not holder:
                other.aliases = [a for a in other.aliases if a not in holder.aliases]

    def artifact(self, path: str) -> FakeApiArtifact:
        self.calls.append(("artifact", path))
        prefix = f"{ENTITY}/{PROJECT}/"
        assert path.startswith(prefix), path
        name, tag = path[len(prefix) :].split(":")
        for version in self.collections.get(name, []):
            if version.version == tag or tag in version.aliases:
                return version
        raise CommError(f"artifact '{name}:{tag}' not found in '{ENTITY}/{PROJECT}'")

    def artifacts(self, type_name: str, name: str) -> list[FakeApiArtifact]:
        self.calls.append(("artifacts", type_name, name))
        return [v for v in self.collections.get(name.split("/")[-1], []) if v.type == type_name]


class FakeLoggedHandle:
    """What ``run.log_artifact`` returns in the fake; ``wait()`` is recorded."""

    def __init__(self, run: "RecordingFakeWandbRun", stored: FakeApiArtifact) -> None:
        self._run = run
        self.version = stored.version

    def wait(self) -> "FakeLoggedHandle":
        self._run.calls.append(("wait",))
        return self


class RecordingFakeWandbRun:
    """Stand-in for the run ``wandb.init`` returns: records every call in order."""

    def __init__(self, api: RecordingFakeWandbApi, init_kwargs: dict[str, Any]) -> None:
        self.api = api
        self.init_kwargs = init_kwargs
        self.id = init_kwargs.get("id") or f"fake-run-{len(api.calls)}"
        self.calls: list[tuple] = []
        self.used: list[FakeApiArtifact] = []

    def use_artifact(self, path: str) -> FakeApiArtifact:
        self.calls.append(("use_artifact", path))
        used = self.api.artifact(path)
        self.used.append(used)
        return used

    def log_artifact(self, artifact: Any, aliases: list[str]) -> FakeLoggedHandle:
        self.calls.append(("log_artifact", artifact, list(aliases)))
        stored = self.api.commit(artifact, list(aliases), FakeApiRun(self.id, self.used))
        return FakeLoggedHandle(self, stored)

    def finish(self, exit_code: int | None = None) -> None:
        self.calls.append(("finish", exit_code))


class RecordingFakeWandbModule:
    """Stand-in for the ``wandb`` module: real ``Artifact`` class, recorded ``init``."""

    Artifact = wandb.Artifact

    def __init__(self, api: RecordingFakeWandbApi) -> None:
        self.api = api
        self.runs: list[RecordingFakeWandbRun] = []

    def init(self, **kwargs: Any) -> RecordingFakeWandbRun:
        run = RecordingFakeWandbRun(self.api, kwargs)
        self.runs.append(run)
        return run

    def Api(self) -> RecordingFakeWandbApi:  # noqa: N802 - mirrors wandb.Api
        return self.api


@pytest.fixture
def fake_api() -> RecordingFakeWandbApi:
    return RecordingFakeWandbApi()


@pytest.fixture
def fake_wandb(fake_api: RecordingFakeWandbApi) -> RecordingFakeWandbModule:
    return RecordingFakeWandbModule(fake_api)


@pytest.fixture
def registry(fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path) -> WandbRegistry:
    return WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, cache_dir=tmp_path / "cache")


def files(root: Path, content: dict[str, str]) -> Path:
    """A directory holding ``content``."""
    for rel, text in content.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_log_artifact_is_one_run_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path
) -> None:
    raw = registry.log_artifact("raw", "raw", files(tmp_path / "raw", {"doc.txt": "d"}), run=RunInfo("ingest"))
    source = files(tmp_path / "chunks", {"c.jsonl": '{"t": 1}\n', "sub/meta.json": "{}"})
    run = RunInfo("chunk", group="dag-run-7", config={"size": 512}, run_id="step-chunk-7")
    version = registry.log_artifact(
        "chunks", "chunks", source, run=run, metadata={"n": 1}, aliases=["candidate"], uses=["raw:latest"]
    )

    assert len(fake_wandb.runs) == 2
    wb_run = fake_wandb.runs[1]
    init = wb_run.init_kwargs
    assert (init["entity"], init["project"], init["job_type"], init["group"]) == (ENTITY, PROJECT, "chunk", "dag-run-7")
    assert init["config"] == {"size": 512} and init["id"] == "step-chunk-7"
    assert init["reinit"] == "create_new"

    kinds = [call[0] for call in wb_run.calls]
    assert kinds == ["use_artifact", "log_artifact", "wait", "finish"]
    assert wb_run.calls[0] == ("use_artifact", f"{ENTITY}/{PROJECT}/{raw.ref}")
    _, artifact, aliases = wb_run.calls[1]
    assert isinstance(artifact, wandb.Artifact)
    assert (artifact.name, artifact.type, artifact.metadata) == ("chunks", "chunks", {"n": 1})
    assert sorted(artifact.manifest.entries) == ["c.jsonl", "sub/meta.json"]
    assert artifact.digest == dir_digest(source), "local digest algorithm equals W&B's"
    assert aliases == ["candidate"]
    assert wb_run.calls[-1] == ("finish", 0)

    assert version.ref == "chunks:v0" and version.digest == artifact.digest
    assert version.producer_run == "step-chunk-7" and version.consumed == ("raw:v0",)
    assert version.metadata == {"n": 1}, "the alias-move bookkeeping key is hidden"
    assert set(version.aliases) == {"latest", "candidate"}
    assert version.url and version.url.endswith("/chunks/v0")


def test_dedup_returns_existing_version_and_keeps_latest_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path
) -> None:
    first = registry.log_artifact("d", "t", files(tmp_path / "a", {"f": "A"}), run=RunInfo("j"))
    registry.log_artifact("d", "t", files(tmp_path / "b", {"f": "B"}), run=RunInfo("j"))
    runs_before = len(fake_wandb.runs)
    again = registry.log_artifact("d", "t", files(tmp_path / "c", {"f": "A"}), run=RunInfo("j"), aliases=["prod"])
    assert again.ref == first.ref == "d:v0"
    assert len(fake_wandb.runs) == runs_before, "an identical older version is answered without a new run"
    assert registry.get("d").ref == "d:v1"
    assert registry.get("d:prod").ref == "d:v0"


def test_alias_moves_go_through_api_aliases_and_save_with_recording_fake_wandb(
    registry: WandbRegistry, fake_api: RecordingFakeWandbApi, tmp_path: Path
) -> None:
    for i in range(3):
        registry.log_artifact("idx", "index", files(tmp_path / str(i), {"f": str(i)}), run=RunInfo("j"))
    fake_api.calls.clear()
    moved = registry.set_alias("idx:v1", "prod", actor="alice", reason="eval ok")
    saves = [c for c in fake_api.calls if c[0] == "save"]
    assert len(saves) == 1
    _, saved_name, saved_aliases, saved_meta = saves[0]
    assert saved_name == "idx:v1" and "prod" in saved_aliases
    assert saved_meta[ALIAS_MOVES_KEY][-1]["to_version"] == "v1"
    assert moved.ref == "idx:v1" and "prod" in moved.aliases and ALIAS_MOVES_KEY not in moved.metadata

    registry.set_alias("idx:v2", "prod", actor="bob", reason="newer")
    assert [v.ref for v in registry.versions("idx") if "prod" in v.aliases] == ["idx:v2"]
    history = registry.alias_history("idx", "prod")
    assert [(m.from_version, m.to_version, m.actor, m.reason) for m in history] == [
        (None, "v1", "alice", "eval ok"),
        ("v1", "v2", "bob", "newer"),
    ]
    with pytest.raises(RegistryError, match="latest"):
        registry.set_alias("idx:v0", "latest")


def test_metadata_update_and_not_found_with_recording_fake_wandb(registry: WandbRegistry, tmp_path: Path) -> None:
    registry.log_artifact("m", "t", files(tmp_path / "a", {"f": "1"}), run=RunInfo("j"), metadata={"a": 1, "b": 2})
    registry.set_alias("m:v0", "prod")
    updated = registry.update_metadata("m:v0", {"b": 3, "c": 4})
    assert updated.metadata == {"a": 1, "b": 3, "c": 4}
    assert len(registry.alias_history("m", "prod")) == 1, "metadata merges keep the alias history"
    with pytest.raises(ArtifactNotFound, match="m:v9"):
        registry.get("m:v9")
    with pytest.raises(ArtifactNotFound, match="nothing:latest"):
        registry.get("nothing")
    assert registry.versions("nothing") == []


def test_download_and_lineage_with_recording_fake_wandb(registry: WandbRegistry, tmp_path: Path) -> None:
    a = registry.log_artifact("a", "t", files(tmp_path / "a", {"x/y.txt": "why"}), run=RunInfo("j"))
    b = registry.log_artifact("b", "t", files(tmp_path / "b", {"f": "b"}), run=RunInfo("j"), uses=["a"])
    c = registry.log_artifact("c", "t", files(tmp_path / "c", {"f": "c"}), run=RunInfo("j"), uses=["b:v0"])
    target = registry.download("a:latest", tmp_path / "out")
    assert (target / "x" / "y.txt").read_text() == "why"
    cached = registry.download("a:v0")
    assert cached.parent.name == "a" and cached.name == a.digest and dir_digest(cached) == a.digest
    graph = registry.lineage("c")
    assert graph["root"] == c.ref
    assert set(graph["nodes"]) == {a.ref, b.ref, c.ref}
    assert sorted(map(tuple, graph["edges"])) == [(a.ref, b.ref), (b.ref, c.ref)]


def test_failed_log_finishes_run_with_error_code_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    def broken(self, artifact, aliases):
        raise RuntimeError("upload failed")

    monkeypatch.setattr(RecordingFakeWandbRun, "log_artifact", broken)
    with pytest.raises(RegistryError, match="'z'.*upload failed"):
        registry.log_artifact("z", "t", files(tmp_path / "z", {"f": "1"}), run=RunInfo("j"))
    assert fake_wandb.runs[-1].calls[-1] == ("finish", 1)


def test_references_added_when_enabled_with_recording_fake_wandb(
    fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path, monkeypatch
) -> None:
    added: list[tuple[str, str | None]] = []
    monkeypatch.setattr(wandb.Artifact, "add_reference", lambda self, uri, name=None, **kw: added.append((uri, name)))
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, by_reference=True)
    meta = {"references": {"index.faiss": "s3://bucket/idx/index.faiss"}}
    registry.log_artifact("r", "index", files(tmp_path / "r", {"manifest.json": "{}"}), run=RunInfo("j"), metadata=meta)
    assert added == [("s3://bucket/idx/index.faiss", "index.faiss")]
    assert registry.uri.endswith("?reference=1")
