"""The W&B adapter without a server: real ``wandb.Artifact``/``wandb.Settings`` objects, recording fakes for the
run, the public Api and the server's answers.

No W&B server is reachable here. The fakes record every call and keep a minimal in-memory store (dedup by
digest, exclusive aliases, ``save()`` adding and removing aliases by difference, runs with config and summary,
server-side ``created_at``), modelled on what the wandb 0.31 SDK source says those calls do; they are not a
W&B model. Errors are raised the way the SDK raises them (a ``CommError`` wrapping the cause in ``.exc``).
"""

from __future__ import annotations

import itertools
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

import wandb  # pinned in requirements.txt: the adapter is tested against the real SDK classes
from wandb.errors import AuthenticationError, CommError

from ragindex.errors import GovernanceError
from ragindex.registry import AliasChange, ArtifactNotFound, Decision, RegistryError, RegistryUnavailable, RunInfo
from ragindex.registry.digest import dir_digest
from ragindex.registry.wandb import LINEAGE_KEY, WandbRegistry
from tests.conftest import write_files

ENTITY, PROJECT = "fake-team", "fake-project"
CLOCK = itertools.count(1)


def server_time() -> str:
    """A strictly increasing server timestamp (the fake server's clock)."""
    return f"2026-01-01T00:{next(CLOCK) // 60:02d}:{next(CLOCK) % 60:02d}Z"


class WandbApiFailedError(Exception):
    """Named like the SDK's transport error (wandb.sdk.lib.service.service_connection)."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.response = type("Response", (), {"http_status": http_status})()


class FakeApiArtifact:
    """A stored version as the public Api shows it; ``save()`` is recorded and applied."""

    def __init__(self, store: "RecordingFakeWandbApi", name: str, index: int, source: Any, producer: "FakeApiRun"):
        self._store = store
        self.name = f"{name}:v{index}"
        self.version = f"v{index}"
        self.type = source.type
        self.digest = source.digest
        self.metadata = dict(source.metadata)
        self.aliases: list[str] = []
        self.created_at = server_time()
        self.entity, self.project = ENTITY, PROJECT
        self._files = {path: entry.local_path for path, entry in source.manifest.entries.items()}
        self._producer = producer

    def logged_by(self) -> "FakeApiRun":
        self._store.calls.append(("logged_by", self.name))
        return self._producer

    def save(self) -> None:
        self._store.calls.append(("save", self.name, list(self.aliases), dict(self.metadata)))
        if self._store.fail_saves:
            raise CommError("save failed", WandbApiFailedError("connection reset"))
        self._store.make_exclusive(self)

    def download(self, root: str) -> str:
        for rel, local in self._files.items():
            target = Path(root) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        return root


class FakeApiRun:
    """A finished run as ``Api().runs()`` returns it: id, created_at (server time), config, summary."""

    def __init__(self, run_id: str, job_type: str, config: dict[str, Any], summary: dict[str, Any],
                 used: list[Any], group: str | None = None, name: str | None = None) -> None:
        self.id = run_id
        self.job_type = job_type
        self.group, self.name = group, name
        self.config = dict(config)
        self.summary_metrics = dict(summary)
        self.created_at = server_time()
        self._used = used

    def used_artifacts(self) -> list[Any]:
        return list(self._used)


def _matches(run: FakeApiRun, filters: dict[str, Any]) -> bool:
    """The subset of the server's Mongo-style run filters the adapter uses: equality and $regex on config."""
    for key, wanted in filters.items():
        assert key.startswith("config."), key
        value = run.config.get(key[len("config."):])
        if isinstance(wanted, dict):
            if not (isinstance(value, str) and re.search(wanted["$regex"], value)):
                return False
        elif value != wanted:
            return False
    return True


class FakeProject:
    def __init__(self, api: "RecordingFakeWandbApi", name: str, entity: str) -> None:
        self._api, self._name, self._entity = api, name, entity

    @property
    def id(self) -> str:
        self._api.calls.append(("project", self._entity, self._name))
        if (self._entity, self._name) not in self._api.projects:
            raise ValueError(f"Project {self._name} not found")
        return f"project-{self._name}"


class RecordingFakeWandbApi:
    """Stand-in for ``wandb.Api()``: records queries, serves versions and runs from memory."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.collections: dict[str, list[FakeApiArtifact]] = {}
        self.runs_store: list[FakeApiRun] = []
        self.projects = {(ENTITY, PROJECT)}
        self.fail_saves = False
        self._runs: dict[str, Any] = {}  # the SDK's per-query cache, which the adapter must not trust

    def commit(self, source: Any, aliases: list[str], producer: FakeApiRun) -> FakeApiArtifact:
        """What the server does on log: dedup by digest, else a new version; aliases + latest."""
        versions = self.collections.setdefault(source.name, [])
        stored = next((v for v in versions if v.digest == source.digest), None)
        if stored is None:
            stored = FakeApiArtifact(self, source.name, len(versions), source, producer)
            versions.append(stored)
        for other in versions:
            if other is not stored:
                other.aliases = [a for a in other.aliases if a != "latest"]
        stored.aliases = list(dict.fromkeys([*stored.aliases, *aliases, "latest"]))
        self.make_exclusive(stored)
        return stored

    def make_exclusive(self, holder: FakeApiArtifact) -> None:
        """Aliases are unique within a collection."""
        for other in self.collections[holder.name.split(":")[0]]:
            if other is not holder:
                other.aliases = [a for a in other.aliases if a not in holder.aliases]

    def project(self, name: str, entity: str | None = None) -> FakeProject:
        return FakeProject(self, name, entity or ENTITY)

    def create_project(self, name: str, entity: str) -> None:
        self.calls.append(("create_project", entity, name))
        self.projects.add((entity, name))

    def artifact(self, path: str) -> FakeApiArtifact:
        self.calls.append(("artifact", path))
        entity, project, rest = path.split("/", 2)
        if (entity, project) not in self.projects:
            raise CommError(f"project '{project}' not found under entity '{entity}'",
                            ValueError(f"project '{project}' not found under entity '{entity}'"))
        name, tag = rest.split(":")
        for version in self.collections.get(name, []):
            if version.version == tag or tag in version.aliases:
                return version
        message = f"artifact membership '{name}:{tag}' not found in '{entity}/{project}'"
        raise CommError(message, ValueError(message))

    def artifacts(self, type_name: str, name: str, per_page: int = 50) -> list[FakeApiArtifact]:
        self.calls.append(("artifacts", type_name, name))
        return [v for v in self.collections.get(name.split("/")[-1], []) if v.type == type_name]

    def run(self, path: str) -> FakeApiRun:
        self.calls.append(("run", path))
        run_id = path.rsplit("/", 1)[-1]
        return next(r for r in reversed(self.runs_store) if r.id == run_id)

    def runs(self, path: str, filters: dict[str, Any] | None = None, order: str = "+created_at", per_page: int = 50,
             lazy: bool = True) -> list[FakeApiRun]:
        self.calls.append(("runs", path, dict(filters or {}), lazy))
        assert order == "+created_at" and lazy is False
        return [r for r in self.runs_store if _matches(r, filters or {})]


class FakeLoggedHandle:
    """What ``run.log_artifact`` returns in the fake; ``wait()`` is recorded."""

    def __init__(self, run: "RecordingFakeWandbRun", stored: FakeApiArtifact) -> None:
        self._run = run
        self.version = stored.version

    def wait(self) -> "FakeLoggedHandle":
        self._run.calls.append(("wait",))
        return self


class RecordingFakeWandbRun:
    """Stand-in for the run ``wandb.init`` returns: records every call in order; on ``finish`` the server
    keeps it (config, summary), as ``Api().runs()`` would then list it."""

    def __init__(self, api: RecordingFakeWandbApi, init_kwargs: dict[str, Any]) -> None:
        self.api = api
        self.init_kwargs = init_kwargs
        self.id = uuid.uuid4().hex[:8]
        self.calls: list[tuple] = []
        self.used: list[FakeApiArtifact] = []
        self.summary: dict[str, Any] = {}

    def use_artifact(self, path: str) -> FakeApiArtifact:
        self.calls.append(("use_artifact", path))
        used = self.api.artifact(path)
        self.used.append(used)
        return used

    def log_artifact(self, artifact: Any, aliases: list[str]) -> FakeLoggedHandle:
        self.calls.append(("log_artifact", artifact, list(aliases)))
        producer = FakeApiRun(self.id, self.init_kwargs["job_type"], self.init_kwargs["config"], {}, self.used,
                              self.init_kwargs.get("group"), self.init_kwargs.get("name"))
        return FakeLoggedHandle(self, self.api.commit(artifact, list(aliases), producer))

    def finish(self, exit_code: int | None = None) -> None:
        self.calls.append(("finish", exit_code))
        self.api.runs_store.append(FakeApiRun(self.id, self.init_kwargs["job_type"], self.init_kwargs["config"],
                                              self.summary, self.used, self.init_kwargs.get("group"),
                                              self.init_kwargs.get("name")))


class RecordingFakeWandbModule:
    """Stand-in for the ``wandb`` module: real ``Artifact`` and ``Settings`` classes, recorded ``init``."""

    Artifact = wandb.Artifact
    Settings = wandb.Settings

    def __init__(self, api: RecordingFakeWandbApi) -> None:
        self.api = api
        self.runs: list[RecordingFakeWandbRun] = []
        self.fail_init: Exception | None = None

    def init(self, **kwargs: Any) -> RecordingFakeWandbRun:
        if self.fail_init is not None:
            raise self.fail_init
        run = RecordingFakeWandbRun(self.api, kwargs)
        self.runs.append(run)
        return run

    def Api(self, **kwargs: Any) -> RecordingFakeWandbApi:  # noqa: N802 - mirrors wandb.Api
        return self.api


@pytest.fixture
def fake_api() -> RecordingFakeWandbApi:
    return RecordingFakeWandbApi()


@pytest.fixture
def fake_wandb(fake_api: RecordingFakeWandbApi) -> RecordingFakeWandbModule:
    return RecordingFakeWandbModule(fake_api)


@pytest.fixture
def registry(fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> WandbRegistry:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    return WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, cache_dir=tmp_path / "cache")


def files(root: Path, content: dict[str, str]) -> Path:
    return write_files(root, content)


# -- logging ------------------------------------------------------------------------------------------


def test_log_artifact_is_one_named_run_with_files_in_place_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path
) -> None:
    raw = registry.log_artifact("raw", "raw", files(tmp_path / "raw", {"doc.txt": "d"}), run=RunInfo("ingest"))
    source = files(tmp_path / "chunks", {"c.jsonl": '{"t": 1}\n', "sub/meta.json": "{}"})
    run = RunInfo("chunk", group="dag-run-7", config={"size": 512}, run_id="step-chunk-7", name="dag-run-7/chunk")
    version = registry.log_artifact(
        "chunks", "chunks", source, run=run, metadata={"n": 1}, aliases=["candidate"], uses=["raw:latest"]
    )

    assert len(fake_wandb.runs) == 2
    wb_run = fake_wandb.runs[1]
    init = wb_run.init_kwargs
    assert (init["entity"], init["project"], init["job_type"], init["group"]) == (ENTITY, PROJECT, "chunk", "dag-run-7")
    assert init["name"] == "dag-run-7/chunk", "runs are named after the pipeline run and step"
    assert "id" not in init and "resume" not in init, "a fresh run each time: no fixed id to resume"
    assert init["reinit"] == "create_new"
    assert Path(init["dir"]) == tmp_path / "home" / "wandb", "the run folder is under RAGINDEX_HOME, not ./wandb"
    assert init["settings"].console == "off", "task logs are not uploaded unless asked"
    assert init["config"]["size"] == 512 and init["config"]["ragindex_artifact"] == "chunks"

    kinds = [call[0] for call in wb_run.calls]
    assert kinds == ["use_artifact", "log_artifact", "wait", "finish"]
    assert wb_run.calls[0] == ("use_artifact", f"{ENTITY}/{PROJECT}/{raw.ref}")
    _, artifact, aliases = wb_run.calls[1]
    assert isinstance(artifact, wandb.Artifact)
    assert (artifact.name, artifact.type) == ("chunks", "chunks")
    assert artifact.metadata == {"n": 1, LINEAGE_KEY: {"run": wb_run.id, "consumed": ["raw:v0"]}}
    assert {p: Path(e.local_path) for p, e in artifact.manifest.entries.items()} == {
        "c.jsonl": source / "c.jsonl", "sub/meta.json": source / "sub" / "meta.json"
    }, "files are uploaded from where they are (immutable policy): no copy in W&B's staging area"
    assert artifact.digest == dir_digest(source), "local digest algorithm equals W&B's"
    assert aliases == ["candidate"]
    assert wb_run.calls[-1] == ("finish", 0)

    assert version.ref == "chunks:v0" and version.digest == artifact.digest
    assert version.producer_run == wb_run.id and version.consumed == ("raw:v0",)
    assert version.metadata == {"n": 1}, "the registry's bookkeeping key is hidden"
    assert set(version.aliases) == {"latest", "candidate"}
    assert version.url and version.url.endswith(f"/{ENTITY}/{PROJECT}/artifacts/chunks/chunks/v0")
    assert not [c for c in fake_api.calls if c[0] == "logged_by"], "lineage came from the version's own metadata"


def test_dedup_answers_before_any_run_or_staging_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    first = registry.log_artifact("d", "t", files(tmp_path / "a", {"f": "A"}), run=RunInfo("j"))
    registry.log_artifact("d", "t", files(tmp_path / "b", {"f": "B"}), run=RunInfo("j"))
    runs_before = len(fake_wandb.runs)
    built: list[str] = []
    monkeypatch.setattr(wandb.Artifact, "add_dir", lambda self, *a, **k: built.append(a[0]))
    again = registry.log_artifact("d", "t", files(tmp_path / "c", {"f": "A"}), run=RunInfo("j"))
    assert again.ref == first.ref == "d:v0"
    assert len(fake_wandb.runs) == runs_before and built == [], "no run and no artifact (so no staging) on a dedup"
    assert registry.get("d").ref == "d:v1", "latest stays on the newest version"


def test_a_retried_log_records_only_the_retry_s_inputs_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    registry.log_artifact("raw", "raw", files(tmp_path / "r0", {"doc": "0"}), run=RunInfo("pull"))
    real_log = RecordingFakeWandbRun.log_artifact

    def upload_fails(self, artifact, aliases):
        raise CommError("upload failed", WandbApiFailedError("connection reset"))

    monkeypatch.setattr(RecordingFakeWandbRun, "log_artifact", upload_fails)
    with pytest.raises(RegistryUnavailable, match="'idx'.*connection reset"):
        registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "x"}), run=RunInfo("build"), uses=["raw:v0"])
    assert fake_wandb.runs[-1].calls[-1] == ("finish", 1)
    monkeypatch.setattr(RecordingFakeWandbRun, "log_artifact", real_log)
    registry.log_artifact("raw", "raw", files(tmp_path / "r1", {"doc": "1"}), run=RunInfo("pull"))
    retried = registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "x"}), run=RunInfo("build"),
                                    uses=["raw:latest"])
    assert retried.consumed == ("raw:v1",), "the failed try's input is not part of the version's lineage"
    assert fake_wandb.runs[-1].id != fake_wandb.runs[-3].id


def test_metadata_w_and_b_would_refuse_is_refused_before_any_run_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path
) -> None:
    source = files(tmp_path / "m", {"f": "1"})
    with pytest.raises(RegistryError, match="'m'.*101 keys"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={f"k{i}": i for i in range(101)})
    with pytest.raises(RegistryError, match="'m'.*finite"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={"recall": float("nan")})
    with pytest.raises(RegistryError, match="reserved"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={LINEAGE_KEY: {}})
    assert fake_wandb.runs == []


def test_sdk_failures_become_registry_errors_without_the_api_key_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path,
    monkeypatch
) -> None:
    secret = "sk-" + "7" * 40
    monkeypatch.setenv("WANDB_API_KEY", secret)
    fake_wandb.fail_init = AuthenticationError(f"Failed to verify credentials for key {secret}")
    with pytest.raises(RegistryError) as refused:
        registry.log_artifact("a", "t", files(tmp_path / "a", {"f": "1"}), run=RunInfo("pull"))
    assert registry.uri in str(refused.value) and "credentials" in str(refused.value)
    assert secret not in str(refused.value)
    fake_wandb.fail_init = None

    registry.log_artifact("a", "t", files(tmp_path / "b", {"f": "2"}), run=RunInfo("pull"))
    fake_api.fail_saves = True
    with pytest.raises(RegistryUnavailable, match="alias 'prod' of a:v0"):
        registry.set_alias("a:v0", "prod")


def test_missing_project_is_an_error_not_an_empty_registry_with_recording_fake_wandb(
    fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi
) -> None:
    typo = WandbRegistry(ENTITY, "fake-projetc", wandb_module=fake_wandb, api=fake_api)
    for read in (lambda: typo.versions("vector-index"), lambda: typo.get("vector-index:production"),
                 lambda: typo.decisions("vector-index")):
        with pytest.raises(RegistryError, match="wandb://fake-team/fake-projetc: no such W&B project") as err:
            read()
        assert not isinstance(err.value, ArtifactNotFound)
    typo.create_project()
    assert typo.versions("vector-index") == [], "an existing, readable project with no versions is empty"


def test_only_a_missing_artifact_is_not_found_with_recording_fake_wandb(
    registry: WandbRegistry, fake_api: RecordingFakeWandbApi, monkeypatch
) -> None:
    def network_down(path: str):
        raise CommError("artifact not found? the request failed: connection refused",
                        WandbApiFailedError("connection refused"))

    monkeypatch.setattr(fake_api, "artifact", network_down)
    with pytest.raises(RegistryUnavailable) as err:
        registry.get("vector-index:production")
    assert not isinstance(err.value, ArtifactNotFound), "'not found' in a transport failure's text is no answer"
    monkeypatch.undo()
    with pytest.raises(ArtifactNotFound, match="vector-index:production"):
        registry.get("vector-index:production")


def test_references_need_their_storage_client_with_recording_fake_wandb(
    fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path, monkeypatch
) -> None:
    import importlib.util

    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, by_reference=True)
    meta = {"references": {"index.faiss": "s3://bucket/idx/index.faiss"}}
    source = files(tmp_path / "r", {"manifest.json": "{}"})
    if importlib.util.find_spec("boto3") is None:
        with pytest.raises(RegistryError, match="needs the package 'boto3'.*ragindex\\[s3\\]"):
            registry.log_artifact("r", "index", source, run=RunInfo("j"), metadata=meta)
    added: list[tuple[str, str | None]] = []
    monkeypatch.setattr("ragindex.registry.wandb.require_reference_client", lambda url: None)
    monkeypatch.setattr(wandb.Artifact, "add_reference", lambda self, uri, name=None, **kw: added.append((uri, name)))
    registry.log_artifact("r", "index", source, run=RunInfo("j"), metadata=meta)
    assert added == [("s3://bucket/idx/index.faiss", "index.faiss")]
    assert registry.uri.endswith("?reference=1")


def test_web_links_follow_the_configured_server_with_recording_fake_wandb(
    fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("WANDB_APP_URL", raising=False)
    server = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, base_url="https://api.acme.example")
    version = server.log_artifact("w", "t", files(tmp_path / "w", {"f": "1"}), run=RunInfo("j"))
    assert server.web_url(version.ref) == f"https://app.acme.example/{ENTITY}/{PROJECT}/artifacts/t/w/v0"
    local_server = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, api=fake_api, base_url="http://localhost:8080")
    assert local_server.get("w:v0").url.startswith("http://localhost:8080/fake-team/")


def test_listing_versions_costs_one_paged_query_with_recording_fake_wandb(
    registry: WandbRegistry, fake_api: RecordingFakeWandbApi, tmp_path: Path
) -> None:
    for i in range(5):
        registry.log_artifact("n", "t", files(tmp_path / str(i), {"f": str(i)}), run=RunInfo("j"))
    fake_api.calls.clear()
    versions = registry.versions("n")
    assert [v.version for v in versions] == [f"v{i}" for i in range(5)]
    assert [c[0] for c in fake_api.calls] == ["artifact", "artifacts"], fake_api.calls


# -- aliases and decisions: W&B runs ------------------------------------------------------------------


def test_alias_moves_are_runs_and_history_is_read_from_them_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path
) -> None:
    for i in range(3):
        registry.log_artifact("idx", "index", files(tmp_path / str(i), {"f": str(i)}), run=RunInfo("j"))
    fake_api.calls.clear()
    moved = registry.set_alias("idx:v1", "prod", actor="alice", reason="eval ok")
    saves = [c for c in fake_api.calls if c[0] == "save"]
    assert len(saves) == 1 and saves[0][1] == "idx:v1" and "prod" in saves[0][2]
    alias_run = fake_wandb.runs[-1]
    assert alias_run.init_kwargs["job_type"] == "alias"
    assert alias_run.calls[0] == ("use_artifact", f"{ENTITY}/{PROJECT}/idx:v1"), "the run uses what it decided on"
    assert moved.ref == "idx:v1" and "prod" in moved.aliases

    registry.set_alias("idx:v2", "prod", actor="bob", reason="newer")
    assert [v.ref for v in registry.versions("idx") if "prod" in v.aliases] == ["idx:v2"]
    history = registry.alias_history("idx", "prod")
    assert [(m.from_version, m.to_version, m.actor, m.reason) for m in history] == [
        (None, "v1", "alice", "eval ok"),
        ("v1", "v2", "bob", "newer"),
    ]
    assert [m.at for m in history] == [r.created_at for r in fake_api.runs_store[-2:]], "server time, not a worker's"
    with pytest.raises(RegistryError, match="latest"):
        registry.set_alias("idx:v0", "latest")
    runs = len(fake_wandb.runs)
    with pytest.raises(GovernanceError, match="'production' is moved by decisions only"):
        registry.set_alias("idx:v0", "production")
    assert len(fake_wandb.runs) == runs and "production" not in registry.get("idx:v0").aliases, "no run, no move"


def test_a_decision_is_one_run_and_a_retry_finds_it_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, fake_api: RecordingFakeWandbApi, tmp_path: Path
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"), aliases=["staging"])
    decision = Decision(kind="review", verdict="rejected", ref="idx:latest", actor="admin", reason="PII",
                        pipeline_run="manual__1", key="review/manual__1/idx:v0",
                        changes=(AliasChange("idx:v0", "staging", remove=True),))
    first = registry.record_decision(decision)
    runs = len(fake_wandb.runs)
    again = registry.record_decision(decision)
    assert len(fake_wandb.runs) == runs, "the retry found the record: no second run"
    assert again == first and first.ref == "idx:v0" and first.at == fake_api.runs_store[-1].created_at
    assert [(m.alias, m.from_version, m.to_version) for m in first.moves] == [("staging", "v0", None)]
    assert "staging" not in registry.get("idx:v0").aliases
    assert [d.key for d in registry.decisions("idx")] == [decision.key]
    assert fake_wandb.runs[-1].init_kwargs["group"] == "manual__1"


def test_an_interrupted_decision_run_is_not_a_record_and_the_retry_makes_one_with_recording_fake_wandb(
    registry: WandbRegistry, fake_wandb: RecordingFakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    decision = Decision(kind="promote", verdict="promoted", ref="idx:v0", actor="admin", pipeline_run="manual__2",
                        key="promote/manual__2/idx:v0", changes=(AliasChange("idx:v0", "production"),))
    real_write = WandbRegistry._write_record

    def killed_after_the_move(self, run, moves, *, complete=True):
        if complete:
            raise RegistryUnavailable("worker killed after the alias moved, before the record was complete")
        real_write(self, run, moves, complete=complete)

    monkeypatch.setattr(WandbRegistry, "_write_record", killed_after_the_move)
    with pytest.raises(RegistryUnavailable):
        registry.record_decision(decision)
    monkeypatch.undo()
    assert registry.get("idx:production").ref == "idx:v0", "the move happened before the kill"
    assert registry.decisions("idx") == [], "a run without its completion mark is no record"
    recorded = registry.record_decision(decision)
    assert [d.key for d in registry.decisions("idx")] == [decision.key], "exactly one decision"
    history = registry.alias_history("idx", "production")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "v0")], "exactly one history entry"
    assert [(m.from_version, m.to_version) for m in recorded.moves] == [(None, "v0")]


def test_metadata_update_and_not_found_with_recording_fake_wandb(registry: WandbRegistry, tmp_path: Path) -> None:
    registry.log_artifact("m", "t", files(tmp_path / "a", {"f": "1"}), run=RunInfo("j"), metadata={"a": 1, "b": 2})
    registry.set_alias("m:v0", "prod")
    updated = registry.update_metadata("m:v0", {"b": 3, "c": 4})
    assert updated.metadata == {"a": 1, "b": 3, "c": 4}
    assert updated.consumed == () and updated.producer_run, "the lineage bookkeeping survives a metadata update"
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
