"""W&B Registry promotion: with a Registry configured (``wandb://E/P?registry=NAME``), a promotion also links the
production version into ``wandb-registry-NAME/<name>`` with ``production`` and a rollback moves it back, both
named in the decision record; ``ragindex init`` says clearly when the Registry cannot be used. W&B's servers
cannot be reached here: the file-backed stand-in (fake_wandb_server.py) follows the SDK's Registry calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragindex.errors import RegistryError
from ragindex.promotion import approve
from ragindex.registry import RunInfo
from ragindex.registry.wandb import WandbRegistry
from ragindex.rollback import rollback
from tests.conftest import write_files
from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer, api_failure

REGISTRY = "rag"


@pytest.fixture
def server(tmp_path: Path) -> FakeWandbServer:
    server = FakeWandbServer(tmp_path / "fake-wandb-server")
    server.create_registry(REGISTRY)
    return server


def open_registry(server: FakeWandbServer, tmp_path: Path, registry: str | None = REGISTRY) -> WandbRegistry:
    return WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / "cache",
                         registry=registry)


def gated_index(registry: WandbRegistry, tmp_path: Path, n: int) -> str:
    """A vector-index version that passed its gate."""
    return registry.log_artifact("vector-index", "index", write_files(tmp_path / f"index-{n}", {"index.json": f"{n}"}),
                                 run=RunInfo("build_index"),
                                 metadata={"eval": {"passed": True, "recall_at_k": 1.0, "mrr": 1.0, "k": 5}}).ref


@pytest.fixture
def world(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    registry = open_registry(server, tmp_path)
    return registry, [gated_index(registry, tmp_path, n) for n in range(2)]


def production_link(server: FakeWandbServer) -> str | None:
    held = [b["source"] for b in server.registry_links(REGISTRY, "vector-index") if "production" in b["aliases"]]
    assert len(held) <= 1, "an alias is unique within a Registry collection"
    return held[0] if held else None


def test_promotion_links_production_into_the_registry_and_rollback_moves_it_back(server, world) -> None:
    registry, (first, second) = world
    approve(registry, first, actor="alice", reason="first")
    assert production_link(server) == first
    approve(registry, second, actor="bob", reason="second")
    assert production_link(server) == second
    promoted = registry.decisions("vector-index")[-1]
    registry_moves = [(m.name, m.alias, m.from_version, m.to_version) for m in promoted.moves
                      if m.name.startswith("wandb-registry-")]
    assert registry_moves == [("wandb-registry-rag/vector-index", "production", "v0", "v1")], promoted.moves
    assert any(m.name == "vector-index" and m.to_version == "v1" for m in promoted.moves), "and the collection's"

    outcome = rollback(registry, reason="bad answers", actor="carol")
    assert outcome["to"] == first and production_link(server) == first
    undone = registry.decisions("vector-index")[-1]
    assert [(m.name, m.from_version, m.to_version) for m in undone.moves if m.name.startswith("wandb-registry-")] \
        == [("wandb-registry-rag/vector-index", "v1", "v0")]
    assert registry.get("vector-index:production").ref == first, "collection aliases stay the serving truth"
    assert len(server.registry_links(REGISTRY, "vector-index")) == 2, "a version is linked once, re-linked by alias"


def test_a_refused_link_moves_nothing_and_says_why(server, world) -> None:
    registry, (first, _second) = world
    server.fail("link_artifact", api_failure("permission denied: alias 'production' is protected", 403))
    with pytest.raises(RegistryError, match="the W&B Registry refused it.*protected alias.*nothing was moved"):
        approve(registry, first, actor="alice", reason="first")
    assert "production" not in registry.get(first).aliases and production_link(server) is None
    assert [d.kind for d in registry.decisions("vector-index") if d.kind == "promote"] == []


def test_a_transient_failure_after_the_link_is_finished_by_the_retry_with_one_record(server, world) -> None:
    """As the DAG's promote task retries: the same pipeline run, so the same decision key."""
    from ragindex.promotion import promote
    from ragindex.review import APPROVED, record_review

    registry, (first, _second) = world
    record_review(registry, first, APPROVED, actor="alice", pipeline_run="run-1")
    server.fail("add_aliases", api_failure("the request failed: connection reset by peer"))
    with pytest.raises(Exception, match="did not answer"):
        promote(registry, first, pipeline_run="run-1")
    assert production_link(server) == first, "the link was made before the failure"
    promote(registry, first, pipeline_run="run-1")
    promotes = [d for d in registry.decisions("vector-index") if d.kind == "promote"]
    assert len(promotes) == 1 and registry.get(first).aliases.count("production") == 1
    assert [(m.from_version, m.to_version) for m in promotes[0].moves if m.name.startswith("wandb-registry-")] \
        == [(None, "v0")], "the interrupted try's link is on the record, once"


def test_without_a_registry_nothing_is_linked(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    registry = open_registry(server, tmp_path, registry=None)
    approve(registry, gated_index(registry, tmp_path, 0), actor="alice", reason="first")
    assert server.registry_links(REGISTRY, "vector-index") == [] and "link_artifact" not in server.requests()


def test_the_registry_uri_and_the_connection_name_it(monkeypatch) -> None:
    from ragindex.registry import open_registry as open_uri

    monkeypatch.delenv("RAGINDEX_WANDB_REGISTRY", raising=False)
    opened = open_uri("wandb://team/proj?registry=rag")
    assert opened.registry_name == "rag" and opened.uri == "wandb://team/proj?registry=rag"
    assert open_uri("wandb://team/proj").registry_name is None
    monkeypatch.setenv("RAGINDEX_WANDB_REGISTRY", "models")
    assert open_uri("wandb://team/proj").registry_name == "models"
    with pytest.raises(RegistryError, match="without the 'wandb-registry-' prefix"):
        open_uri("wandb://team/proj?registry=wandb-registry-rag/x")


@pytest.mark.parametrize("setup, expected", [
    ("no Registry on the server", "has no Registry"),
    ("no such registry", "no W&B Registry 'rag' is visible"),
    ("types refused", "accepts the types \\['model'\\], not index, release"),
    ("viewer", "is a viewer of the W&B Registry 'rag' and cannot link"),
])
def test_init_says_clearly_why_the_registry_cannot_be_used(tmp_path, monkeypatch, setup, expected) -> None:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    server = FakeWandbServer(tmp_path / "fake-wandb-server")
    if setup == "no Registry on the server":
        with server.state() as state:
            state["registry_enabled"] = False
    elif setup == "types refused":
        server.create_registry(REGISTRY, types=["model"])
    elif setup == "viewer":
        server.create_registry(REGISTRY, members={"ragindex-bot": "viewer"})
    with pytest.raises(RegistryError, match=expected) as caught:
        open_registry(server, tmp_path).check_registry()
    assert "drop registry=rag" in str(caught.value), "and how to keep collection aliases only"


def test_init_warns_a_member_about_protected_aliases_and_passes_an_admin(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    server = FakeWandbServer(tmp_path / "fake-wandb-server")
    server.create_registry(REGISTRY, members={"ragindex-bot": "member"})
    (warning,) = open_registry(server, tmp_path).check_registry()
    assert "a member" in warning and "protected alias" in warning
    server.create_registry(REGISTRY)  # admin
    assert open_registry(server, tmp_path).check_registry() == []
    assert open_registry(server, tmp_path, registry=None).check_registry() == []
