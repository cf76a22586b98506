"""The W&B adapter without a server: real ``wandb.Artifact``/``wandb.Settings`` objects, and a file-backed fake of
the server and of the SDK's run and Api calls (tests/registry/fake_wandb_server.py, which says which SDK source
each behaviour follows). Errors are raised the way the SDK raises them, and classified by their cause.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import wandb  # pinned in requirements.txt: the adapter is tested against the real SDK classes
from wandb.errors import AuthenticationError, CommError, UsageError

from ragindex.errors import GovernanceError
from ragindex.registry import AliasChange, ArtifactNotFound, Decision, RegistryError, RegistryUnavailable, RunInfo
from ragindex.registry.digest import dir_digest
from ragindex.registry.wandb import LINEAGE_KEY, WandbRegistry
from tests.conftest import write_files
from tests.registry.fake_wandb_server import (
    ENTITY,
    PROJECT,
    FakeWandbApi,
    FakeWandbModule,
    FakeWandbRun,
    FakeWandbServer,
    WandbApiFailedError,
    api_failure,
    sdk_error,
)

HERE = Path(__file__).resolve().parent
KILL_WORKER = HERE / "wandb_kill_worker.py"

# The names test_contract.py and test_sync.py build the adapter with (both are fakes: see fake_wandb_server.py).
RecordingFakeWandbApi = FakeWandbApi
RecordingFakeWandbModule = FakeWandbModule


@pytest.fixture
def server(tmp_path: Path) -> FakeWandbServer:
    return FakeWandbServer(tmp_path / "fake-wandb-server")


@pytest.fixture
def fake_wandb(server: FakeWandbServer) -> FakeWandbModule:
    return FakeWandbModule(server)


@pytest.fixture
def registry(fake_wandb: FakeWandbModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WandbRegistry:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    return WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, cache_dir=tmp_path / "cache")


def files(root: Path, content: dict[str, str]) -> Path:
    return write_files(root, content)


# -- logging ------------------------------------------------------------------------------------------


def test_log_artifact_is_one_named_run_with_files_in_place_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path
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
    settings = init["settings"]
    assert settings.console == "off", "task logs are not uploaded unless asked"
    assert settings.x_disable_stats and settings.disable_git and not settings.x_save_requirements
    assert init["config"]["size"] == 512 and init["config"]["ragindex_artifact"] == "chunks"
    assert [m["alias"] for m in init["config"]["ragindex_plan"]] == ["candidate"], "planned at init"

    kinds = [call[0] for call in wb_run.calls]
    assert kinds == ["use_artifact", "log_artifact", "finish"]
    assert wb_run.calls[0] == ("use_artifact", raw.ref), "the Api artifact just fetched is used, not its name"
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
    assert wb_run._cached_public_api is registry.api, "the run reuses the registry's Api: no second login"

    assert version.ref == "chunks:v0" and version.digest == artifact.digest
    assert version.producer_run == wb_run.id and version.consumed == ("raw:v0",)
    assert version.metadata == {"n": 1}, "the registry's bookkeeping key is hidden"
    assert set(version.aliases) == {"latest", "candidate"}
    assert version.url and version.url.endswith(f"/{ENTITY}/{PROJECT}/artifacts/chunks/chunks/v0")
    assert "logged_by" not in server.requests(), "lineage came from the version's own metadata"
    assert server.requests().get("authenticate") == 1 and "default_entity" not in server.requests()


def test_dedup_answers_before_any_run_or_staging_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, tmp_path: Path, monkeypatch
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


def test_a_retried_log_records_only_the_retry_s_inputs_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path
) -> None:
    registry.log_artifact("raw", "raw", files(tmp_path / "r0", {"doc": "0"}), run=RunInfo("pull"))
    server.fail("create_artifact", ValueError("upload failed: connection reset by peer"))
    with pytest.raises(RegistryUnavailable, match="'idx'.*connection reset"):
        registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "x"}), run=RunInfo("build"), uses=["raw:v0"])
    assert fake_wandb.runs[-1].calls[-1] == ("finish", 1)
    registry.log_artifact("raw", "raw", files(tmp_path / "r1", {"doc": "1"}), run=RunInfo("pull"))
    retried = registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "x"}), run=RunInfo("build"),
                                    uses=["raw:latest"])
    assert retried.consumed == ("raw:v1",), "the failed try's input is not part of the version's lineage"
    assert fake_wandb.runs[-1].id != fake_wandb.runs[-3].id


def test_metadata_w_and_b_would_refuse_is_refused_before_any_run_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, tmp_path: Path
) -> None:
    source = files(tmp_path / "m", {"f": "1"})
    with pytest.raises(RegistryError, match="'m'.*100 keys.*at most 99"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={f"k{i}": i for i in range(100)})
    with pytest.raises(RegistryError, match="'m'.*finite"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={"recall": float("nan")})
    with pytest.raises(RegistryError, match="reserved"):
        registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={LINEAGE_KEY: {}})
    assert fake_wandb.runs == [], "refused before any run started"
    most = registry.log_artifact("m", "t", source, run=RunInfo("j"), metadata={f"k{i}": i for i in range(99)})
    assert len(most.metadata) == 99, "99 user keys and the lineage key are W&B's 100"
    with pytest.raises(RegistryError, match="100 keys"):
        registry.update_metadata(most.ref, {"one-more": 1})


# -- failures, by cause ---------------------------------------------------------------------------------

SECRET = "sk-" + "7" * 40


def _unreachable(what: str) -> WandbApiFailedError:
    return WandbApiFailedError(f"{what}: Post https://api.wandb.ai/graphql: dial tcp: connection refused")


FAILURES = {
    # cause: (where it is injected, the exception as the SDK raises it, retryable?, text the message must hold)
    "init timed out": ("init", CommError("Run initialization has timed out after 90.0 sec. Please try increasing "
                                         "the timeout with the `init_timeout` setting"), True, "did not answer"),
    "init 503": ("init", CommError("Error uploading run: returned error 503 Service Unavailable"), True,
                 "did not answer"),
    "init 429": ("init", CommError("Error uploading run: returned error 429 Too Many Requests"), True,
                 "did not answer"),
    "init bad key": ("init", CommError(f"Error uploading run: returned error 401: invalid api key {SECRET}"),
                     False, "WANDB_API_KEY"),
    "init no entity": ("init", CommError("Error uploading run: returned error 404: entity fake-team not found"),
                       False, "ragindex init"),
    "Api() unreachable": ("authenticate", sdk_error(AuthenticationError(
        f"Failed to verify credentials with https://api.wandb.ai: {_unreachable('authenticate')}"),
        _unreachable("authenticate")), True, "did not answer"),
    "Api() bad key": ("authenticate", sdk_error(AuthenticationError(
        "Failed to verify credentials with https://api.wandb.ai: 401 Unauthorized"),
        WandbApiFailedError("401 Unauthorized", 401)), False, "WANDB_API_KEY"),
    "project check transport": ("get_project", api_failure("dial tcp: i/o timeout"), True, "did not answer"),
    "project check 502": ("get_project", api_failure("502 Bad Gateway", 502), True, "did not answer"),
    "artifact query 500": ("artifact_by_name", api_failure("internal error", 500), True, "did not answer"),
    "artifact query 403": ("artifact_by_name", api_failure("permission denied", 403), False, "WANDB_API_KEY"),
    "upload failed": ("commit_artifact", ValueError("failed to upload file: PUT https://storage: EOF"), True,
                      "did not answer"),
    "validation": ("init", UsageError("Invalid project name 'fake project': cannot contain spaces"), False,
                   "refused the request"),
}


@pytest.mark.parametrize("cause", list(FAILURES))
def test_each_failure_is_classified_by_its_cause_with_fake_wandb_server(
    cause: str, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path, monkeypatch
) -> None:
    """Network errors, timeouts, 429 and 5xx are RegistryUnavailable (Airflow retries them); bad credentials, a
    missing entity or project and validation are permanent, naming the URI and the fix, never the key."""
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    where, error, retryable, text = FAILURES[cause]
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, cache_dir=tmp_path / "cache")
    if where == "init":
        fake_wandb.fail_init = error
    else:
        server.fail(where, error)
    with pytest.raises(RegistryError) as err:
        if where == "get_project":  # asked before a task's first run query (an artifact query answers it too)
            registry.decisions("a")
        else:
            registry.log_artifact("a", "t", files(tmp_path / "a", {"f": "1"}), run=RunInfo("pull"))
    assert isinstance(err.value, RegistryUnavailable) is retryable, err.value
    assert registry.uri in str(err.value) and text in str(err.value)
    assert SECRET not in str(err.value)


def test_missing_project_is_an_error_not_an_empty_registry_with_fake_wandb_server(
    fake_wandb: FakeWandbModule, server: FakeWandbServer
) -> None:
    typo = WandbRegistry(ENTITY, "fake-projetc", wandb_module=fake_wandb)
    for read in (lambda: typo.versions("vector-index"), lambda: typo.get("vector-index:production"),
                 lambda: typo.decisions("vector-index")):
        with pytest.raises(RegistryError, match="wandb://fake-team/fake-projetc: no such W&B project") as err:
            read()
        assert not isinstance(err.value, (ArtifactNotFound, RegistryUnavailable))
    typo.create_project()
    assert typo.versions("vector-index") == [], "an existing, readable project with no versions is empty"


def test_only_a_missing_artifact_is_not_found_with_fake_wandb_server(
    registry: WandbRegistry, server: FakeWandbServer
) -> None:
    registry.check_project()
    server.fail("artifact_by_name", api_failure("artifact not found? the request failed: connection refused"))
    with pytest.raises(RegistryUnavailable) as err:
        registry.get("vector-index:production")
    assert not isinstance(err.value, ArtifactNotFound), "'not found' in a transport failure's text is no answer"
    with pytest.raises(ArtifactNotFound, match="vector-index:production"):
        registry.get("vector-index:production")


def test_a_failed_finish_is_no_record_and_is_retryable_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path, monkeypatch
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    decision = Decision(kind="promote", verdict="promoted", ref="idx:v0", actor="admin", pipeline_run="p1",
                        key="promote/p1/idx:v0", changes=(AliasChange("idx:v0", "production"),))

    def finish_fails(self, exit_code=None):
        self.calls.append(("finish", exit_code))
        raise CommError("finish timed out: the service process is busy")  # nothing reached the server

    monkeypatch.setattr(FakeWandbRun, "finish", finish_fails)
    with pytest.raises(RegistryUnavailable, match="no complete record.*finishing it failed"):
        registry.record_decision(decision)
    monkeypatch.undo()
    assert registry.decision(decision.key) is None
    recorded = registry.record_decision(decision)
    assert recorded.at == next(r["created_at"] for r in server.runs() if r["id"] == recorded.record_id), \
        "the decision returned is the one W&B holds (server time)"
    assert [(m.from_version, m.to_version) for m in recorded.moves] == [(None, "v0")]
    assert [d.key for d in registry.decisions("idx")] == [decision.key]


def test_references_need_their_storage_client_with_fake_wandb_server(
    fake_wandb: FakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    import importlib.util

    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, by_reference=True)
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


def test_web_links_follow_the_configured_server_without_a_query_with_fake_wandb_server(
    fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("WANDB_APP_URL", raising=False)
    acme = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, base_url="https://api.acme.example")
    version = acme.log_artifact("w", "t", files(tmp_path / "w", {"f": "1"}), run=RunInfo("j"))
    before = server.total()
    assert acme.web_url(version.ref) == f"https://app.acme.example/{ENTITY}/{PROJECT}/artifacts/t/w/v0"
    assert server.total() == before, "a known version's link is built from its path"
    local_server = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb, base_url="http://localhost:8080")
    assert local_server.get("w:v0").url.startswith("http://localhost:8080/fake-team/")


def test_listing_versions_costs_one_paged_query_with_fake_wandb_server(
    registry: WandbRegistry, server: FakeWandbServer, tmp_path: Path
) -> None:
    for i in range(5):
        registry.log_artifact("n", "t", files(tmp_path / str(i), {"f": str(i)}), run=RunInfo("j"))
    before = server.requests()
    versions = registry.versions("n")
    assert [v.version for v in versions] == [f"v{i}" for i in range(5)]
    after = server.requests()
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
        "artifact_by_name": 1, "artifacts_page": 1}


# -- aliases and decisions: W&B runs ------------------------------------------------------------------


def test_alias_moves_are_runs_and_history_is_read_from_them_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path
) -> None:
    for i in range(3):
        registry.log_artifact("idx", "index", files(tmp_path / str(i), {"f": str(i)}), run=RunInfo("j"))
    moved = registry.set_alias("idx:v1", "prod", actor="alice", reason="eval ok")
    alias_run = fake_wandb.runs[-1]
    assert alias_run.init_kwargs["job_type"] == "alias"
    assert alias_run.calls[0] == ("use_artifact", "idx:v1"), "the run uses what it decided on"
    assert moved.ref == "idx:v1" and "prod" in moved.aliases

    registry.set_alias("idx:v2", "prod", actor="bob", reason="newer")
    assert [v.ref for v in registry.versions("idx") if "prod" in v.aliases] == ["idx:v2"]
    history = registry.alias_history("idx", "prod")
    assert [(m.from_version, m.to_version, m.actor, m.reason) for m in history] == [
        (None, "v1", "alice", "eval ok"),
        ("v1", "v2", "bob", "newer"),
    ]
    assert [m.at for m in history] == [r["created_at"] for r in server.runs()[-2:]], "server time, not a worker's"
    with pytest.raises(RegistryError, match="latest"):
        registry.set_alias("idx:v0", "latest")
    runs = len(fake_wandb.runs)
    with pytest.raises(GovernanceError, match="'production' is moved by decisions only"):
        registry.set_alias("idx:v0", "production")
    assert len(fake_wandb.runs) == runs and "production" not in registry.get("idx:v0").aliases, "no run, no move"


def test_alias_history_needs_no_regex_anchors_and_matches_names_exactly_with_fake_wandb_server(
    fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path
) -> None:
    server.regex_anchors = False  # a server that takes ^ and $ literally
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=fake_wandb)
    for name in ("raw", "raw-documents"):
        registry.log_artifact(name, "t", files(tmp_path / name, {"f": name}), run=RunInfo("j"))
        registry.set_alias(f"{name}:v0", "prod", actor="a")
    assert [(m.name, m.to_version) for m in registry.alias_history("raw", "prod")] == [("raw", "v0")]


def _staged(registry: WandbRegistry, ref: str) -> Decision:
    """A candidate takes staging the only way it can: by a decision record."""
    return registry.record_decision(Decision(kind="stage", verdict="staged", ref=ref, actor="dag",
                                             changes=(AliasChange(ref, "staging"),)))


def test_a_decision_is_one_run_and_a_retry_finds_it_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, server: FakeWandbServer, tmp_path: Path
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    staged = _staged(registry, "idx:v0")
    decision = Decision(kind="review", verdict="rejected", ref="idx:latest", actor="admin", reason="PII",
                        pipeline_run="manual__1", key="review/manual__1/idx:v0",
                        changes=(AliasChange("idx:v0", "staging", remove=True),))
    first = registry.record_decision(decision)
    runs = len(fake_wandb.runs)
    again = registry.record_decision(decision)
    assert len(fake_wandb.runs) == runs, "the retry found the record: no second run"
    assert again == first and first.ref == "idx:v0" and first.at == server.runs()[-1]["created_at"]
    assert [(m.alias, m.from_version, m.to_version) for m in first.moves] == [("staging", "v0", None)]
    assert "staging" not in registry.get("idx:v0").aliases
    assert [d.key for d in registry.decisions("idx")] == [staged.key, decision.key]
    assert fake_wandb.runs[-1].init_kwargs["group"] == "manual__1"


def test_a_promotion_fetches_and_saves_each_version_once_with_fake_wandb_server(
    registry: WandbRegistry, server: FakeWandbServer, tmp_path: Path
) -> None:
    """Adding production and removing staging on one version is one fetch and its alias mutations (what save()
    sends first), without the metadata save() would send back: a metadata update made since the fetch stays."""
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    _staged(registry, "idx:v0")
    elsewhere = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache2")
    real_start = WandbRegistry._start

    def start_after_an_update(self, run, config):  # the version is fetched; now another process updates it
        elsewhere.update_metadata("idx:v0", {"eval": {"passed": True}})
        return real_start(self, run, config)

    before = server.requests()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WandbRegistry, "_start", start_after_an_update)
        registry.record_decision(Decision(kind="promote", verdict="promoted", ref="idx:v0", actor="a", key="p/1",
                                          changes=(AliasChange("idx:v0", "production"),
                                                   AliasChange("idx:v0", "staging", remove=True))))
    after = server.requests()
    moved = {op: after.get(op, 0) - before.get(op, 0) for op in ("add_aliases", "delete_aliases", "update_artifact")}
    assert moved == {"add_aliases": 1, "delete_aliases": 1, "update_artifact": 1}, "only the other's update saved"
    assert after["artifact_by_name"] - before["artifact_by_name"] == 3, \
        "the ref once, production's holder once (and the other process's one fetch)"
    assert registry.get("idx:v0").aliases == ("latest", "production")
    assert registry.get("idx:v0").metadata == {"eval": {"passed": True}}, "the concurrent update is not undone"


def test_the_alias_mutations_the_adapter_calls_are_the_ones_save_sends_in_the_pinned_sdk() -> None:
    """The adapter moves aliases with ``Artifact._add_aliases`` / ``_delete_aliases`` (without the UpdateArtifact that
    ``save()`` adds): they are what ``save()`` itself calls on a logged version, with the arguments the adapter
    passes, in the SDK requirements.txt pins; and the stand-in's have the same signature."""
    import inspect

    from wandb.sdk.artifacts._validators import FullArtifactPath
    from wandb.sdk.artifacts.artifact import Artifact

    from ragindex.registry.wandb import alias_mutations
    from tests.registry.fake_wandb_server import FakeApiArtifact

    source = inspect.getsource(Artifact._update)
    assert "self._add_aliases(new_aliases - old_aliases, target=target)" in source
    assert "self._delete_aliases(old_aliases - new_aliases, target=target)" in source
    assert "FullArtifactPath(prefix=entity, project=project, name=collection)" in source
    for method in ("_add_aliases", "_delete_aliases"):
        assert list(inspect.signature(getattr(Artifact, method)).parameters) == ["self", "alias_names", "target"]
        assert list(inspect.signature(getattr(FakeApiArtifact, method)).parameters)[:3] == [
            "self", "alias_names", "target"]
    fetched = type("Fetched", (), {"name": "idx:v3", "entity": "e", "project": "p", "_saved_aliases": [],
                                   "_add_aliases": print, "_delete_aliases": print})()
    _add, _delete, path = alias_mutations(fetched)
    assert path == FullArtifactPath(prefix="e", project="p", name="idx")
    assert alias_mutations(object()) is None, "an SDK without them: save() is used"


def test_an_sdk_without_alias_mutations_gets_save_with_fake_wandb_server(
    registry: WandbRegistry, server: FakeWandbServer, tmp_path: Path, monkeypatch
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    _staged(registry, "idx:v0")
    monkeypatch.setattr("ragindex.registry.wandb.alias_mutations", lambda artifact: None)
    before = server.requests()
    registry.record_decision(Decision(kind="promote", verdict="promoted", ref="idx:v0", actor="a",
                                      changes=(AliasChange("idx:v0", "production"),
                                               AliasChange("idx:v0", "staging", remove=True))))
    after = server.requests()
    assert {op: after.get(op, 0) - before.get(op, 0) for op in ("add_aliases", "delete_aliases", "update_artifact")} \
        == {"add_aliases": 1, "delete_aliases": 1, "update_artifact": 1}, "one save()"
    assert registry.get("idx:v0").aliases == ("latest", "production")


def test_an_interrupted_decision_run_is_finished_by_the_retry_with_fake_wandb_server(
    registry: WandbRegistry, fake_wandb: FakeWandbModule, tmp_path: Path, monkeypatch
) -> None:
    registry.log_artifact("idx", "index", files(tmp_path / "i", {"f": "1"}), run=RunInfo("j"))
    decision = Decision(kind="promote", verdict="promoted", ref="idx:v0", actor="admin", pipeline_run="manual__2",
                        key="promote/manual__2/idx:v0", changes=(AliasChange("idx:v0", "production"),))

    def killed_after_the_move(self, wb_run, moves):
        raise RegistryUnavailable("worker killed after the alias moved, before the record was complete")

    monkeypatch.setattr(WandbRegistry, "_write_record", killed_after_the_move)
    with pytest.raises(RegistryUnavailable):
        registry.record_decision(decision)
    monkeypatch.undo()
    assert registry.get("idx:production").ref == "idx:v0", "the move happened before the kill"
    assert registry.decision(decision.key) is None and registry.decisions("idx") == [], "no complete record"
    recorded = registry.record_decision(decision)
    assert recorded.key == decision.key and recorded.record_id == fake_wandb.runs[-1].id, "a new record"
    assert [d.key for d in registry.decisions("idx")] == [decision.key], "exactly one decision"
    history = registry.alias_history("idx", "production")
    assert [(m.from_version, m.to_version) for m in history] == [(None, "v0")], "exactly one history entry"
    assert [(m.from_version, m.to_version) for m in recorded.moves] == [(None, "v0")], "the moves as planned"


def test_metadata_update_and_not_found_with_fake_wandb_server(
    registry: WandbRegistry, server: FakeWandbServer, tmp_path: Path
) -> None:
    registry.log_artifact("m", "t", files(tmp_path / "a", {"f": "1"}), run=RunInfo("j"), metadata={"a": 1, "b": 2})
    registry.set_alias("m:v0", "prod")
    before = server.requests()
    updated = registry.update_metadata("m:v0", {"b": 3, "c": 4})
    after = server.requests()
    assert (after["artifact_by_name"] - before["artifact_by_name"], after["update_artifact"]
            - before.get("update_artifact", 0)) == (1, 1), "one fetch, one save"
    assert updated.metadata == {"a": 1, "b": 3, "c": 4}
    assert updated.consumed == () and updated.producer_run, "the lineage bookkeeping survives a metadata update"
    assert len(registry.alias_history("m", "prod")) == 1, "metadata merges keep the alias history"
    with pytest.raises(ArtifactNotFound, match="m:v9"):
        registry.get("m:v9")
    with pytest.raises(ArtifactNotFound, match="nothing:latest"):
        registry.get("nothing")
    assert registry.versions("nothing") == []


def test_download_and_lineage_with_fake_wandb_server(registry: WandbRegistry, tmp_path: Path) -> None:
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


# -- the stand-in itself ----------------------------------------------------------------------------------


def test_the_fake_server_follows_the_sdk_on_runs_with_fake_wandb_server(
    fake_wandb: FakeWandbModule, server: FakeWandbServer
) -> None:
    """The run exists from init (config, created_at), its summary arrives at finish, Api.runs is cached per
    query until flush() and sorted as asked, and the clock only moves forward."""
    api = FakeWandbApi(server, {"entity": ENTITY, "project": PROJECT})
    path = f"{ENTITY}/{PROJECT}"
    run = fake_wandb.init(entity=ENTITY, project=PROJECT, job_type="j", config={"k": 1})
    run.summary["s"] = 1
    listed = api.runs(path, order="+created_at")
    assert [(r.id, r.config, r.summary_metrics) for r in listed] == [(run.id, {"k": 1}, {})]
    other = fake_wandb.init(entity=ENTITY, project=PROJECT, job_type="j", config={})
    run.finish(exit_code=0)
    assert [r.id for r in api.runs(path, order="+created_at")] == [run.id], "cached until flush()"
    api.flush()
    assert [r.id for r in api.runs(path, order="-created_at")] == [other.id, run.id]
    assert api.runs(path, order="+created_at")[0].summary_metrics == {"s": 1}
    stamps = [r["created_at"] for r in server.runs()]
    for _ in range(70):
        stamps.append(fake_wandb.init(entity=ENTITY, project=PROJECT, job_type="j", config={}).id and
                      server.runs()[-1]["created_at"])
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "strictly increasing"


# -- the kill matrix: a SIGKILLed worker, then a retry in this process --------------------------------------

KILLS = {
    "log: before init": ("log", "init:before", 1),
    "log: after init": ("log", "init:after", 1),
    "log: after the version was committed": ("log", "commit:after", 1),
    "log: before finish": ("log", "finish:before", 1),
    "decision: before init": ("promote", "init:before", 1),
    "decision: after init": ("promote", "init:after", 1),
    "decision: after the alias moves": ("promote", "aliases:after", 3),  # idx +production -staging, raw +production
    "decision: before finish": ("promote", "finish:before", 1),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_a_killed_worker_is_finished_by_the_retry_with_fake_wandb_server(
    case: str, server: FakeWandbServer, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    step, point, nth = KILLS[case]
    source = files(tmp_path / "idx", {"index.faiss": "vectors"})
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache")
    registry.log_artifact("raw", "raw", files(tmp_path / "raw", {"doc": "d"}), run=RunInfo("pull"))
    if step == "promote":
        registry.log_artifact("idx", "index", source, run=RunInfo("build"), uses=["raw:v0"])
        _staged(registry, "idx:v0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent / "include"),
                                                         str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(KILL_WORKER), str(server.root), step, str(source), point, str(nth)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -9, (done.returncode, done.stdout, done.stderr[-2000:])

    retry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache2")
    if step == "log":
        version = retry.log_artifact("idx", "index", source, run=RunInfo("build"), aliases=["candidate"],
                                     uses=["raw:v0"])
        assert [v.ref for v in retry.versions("idx")] == ["idx:v0"], "one version"
        assert set(version.aliases) == {"latest", "candidate"}
        history = retry.alias_history("idx", "candidate")
        assert [(m.from_version, m.to_version) for m in history] == [(None, "v0")], "recorded exactly once"
    else:
        outcome = _promote(retry)
        assert outcome.key == "promote/p1/idx:v0" and [(m.name, m.alias, m.from_version, m.to_version)
                                                        for m in outcome.moves] == PROMOTION_MOVES
        assert retry.get("idx:v0").aliases == ("latest", "production")
        assert retry.get("raw:v0").aliases == ("latest", "production")
        assert [d.key for d in retry.decisions("idx") if d.kind == "promote"] == ["promote/p1/idx:v0"], \
            "one complete record"
        assert [(m.from_version, m.to_version) for m in retry.alias_history("idx", "production")] == [(None, "v0")]
        assert retry.decision("promote/p1/idx:v0") == outcome


PROMOTION_MOVES = [("idx", "production", None, "v0"), ("raw", "production", None, "v0"),
                   ("idx", "staging", "v0", None)]


def _promote(registry: WandbRegistry) -> Decision:
    """The promotion the kill matrix interrupts and retries (as ragindex.promotion.promote records it)."""
    return registry.record_decision(Decision(
        kind="promote", verdict="promoted", ref="idx:v0", actor="admin", pipeline_run="p1", key="promote/p1/idx:v0",
        changes=(AliasChange("idx:v0", "production"), AliasChange("raw:v0", "production"),
                 AliasChange("idx:v0", "staging", remove=True))))


def test_a_full_ingest_stays_within_its_request_budget_with_fake_wandb_server(tmp_path: Path, monkeypatch) -> None:
    """The registry calls of one rag_ingest run (benchmarks/bench_wandb_requests.py) cost at most 150 requests."""
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    sys.path.insert(0, str(HERE.parent.parent / "benchmarks"))
    try:
        from bench_wandb_requests import run_ingest
    finally:
        sys.path.pop(0)
    per_step = run_ingest(tmp_path / "bench")
    total = sum(per_step.values())
    assert total <= 150, per_step


def test_a_promotion_killed_between_its_moves_and_its_record_is_finished_by_the_retried_task_with_fake_wandb_server(
    registry: WandbRegistry, tmp_path: Path, monkeypatch
) -> None:
    """promotion.promote retried after a crash that left production moved but no record: the retry records the
    move as planned (previous holder included) and reports it as new, so the Asset event is emitted once."""
    from ragindex.promotion import promote
    from ragindex.review import APPROVED, record_review

    def index(n: int) -> str:
        ref = registry.log_artifact("vector-index", "index", files(tmp_path / f"i{n}", {"f": str(n)}),
                                    run=RunInfo("build"), metadata={"eval": {"passed": True}}).ref
        record_review(registry, ref, APPROVED, actor="alice", pipeline_run=f"run-{n}")
        return ref

    first, second = index(0), index(1)
    promote(registry, first, actor="alice", pipeline_run="run-0")

    def killed_after_the_move(self, wb_run, moves):
        raise RegistryUnavailable("worker killed after the alias moved, before the record was complete")

    monkeypatch.setattr(WandbRegistry, "_write_record", killed_after_the_move)
    with pytest.raises(RegistryUnavailable):
        promote(registry, second, actor="alice", pipeline_run="run-1")
    monkeypatch.undo()
    assert registry.get("vector-index:production").ref == second and registry.interrupted("promote/run-1/" + second)
    retried = promote(registry, second, actor="alice", pipeline_run="run-1")
    assert (retried["changed"], retried.get("recorded_before"), retried["previous"]) == (True, False, first)
    promotions = [d for d in registry.decisions("vector-index") if d.kind == "promote"]
    assert [(d.ref, d.details["previous"]) for d in promotions] == [(first, None), (second, first)]
    again = promote(registry, second, actor="alice", pipeline_run="run-1")
    assert again["recorded_before"] is True, "a third try finds the complete record"
