"""``ragindex sync``: a registry replayed into another has the same versions (files, digests, metadata),
lineage (producing step, versions used), aliases and decision/alias history, in order; a second sync copies
nothing; a sync killed in the middle resumes. Local → local here (and local → the W&B adapter over its
recording fakes); local → W&B is what it is for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ragindex.promotion import approve
from ragindex.registry import open_registry
from ragindex.registry.digest import dir_digest
from ragindex.review import REJECTED, record_review
from ragindex.rollback import rollback
from ragindex.sync import sync
from tests.decisions.conftest import Versions
from tests.registry.test_contract import finish, worker

NAMES = ("raw-documents", "processed-chunks", "vector-index")


@pytest.fixture
def source(tmp_path: Path) -> Versions:
    """Three pipeline versions, with snapshot aliases, a rejection, two promotions, a rollback and a plain alias."""
    v = Versions(tmp_path / "source")
    first = v.index(aliases=("snapshot-2026-01-05",))
    approve(v.registry, first, actor="alice", reason="first")
    second = v.index(aliases=("snapshot-2026-01-12",))
    record_review(v.registry, second, REJECTED, actor="bob", reason="prices wrong", pipeline_run="weekly-2")
    third = v.index(aliases=("snapshot-2026-01-19",))
    approve(v.registry, third, actor="carol", reason="fixed")
    rollback(v.registry, reason="drill", actor="ops", pipeline_run="rb-1")
    v.registry.set_alias(third, "canary", actor="ops", reason="10 % of traffic")
    return v


def snapshot_of(registry) -> dict:
    """Everything sync promises to carry over, in a comparable form (record ids and times aside)."""
    out: dict = {"versions": {}, "decisions": [], "history": {}}
    for name in NAMES:
        for v in registry.versions(name):
            run = registry.producer(v)
            out["versions"][v.ref] = (v.type, v.digest, v.metadata, v.consumed, sorted(v.aliases),
                                      (run.job_type, run.group) if run else None)
        out["decisions"] += [(d.kind, d.verdict, d.ref, d.actor, d.reason, d.pipeline_run, d.key,
                              [(m.alias, m.from_version, m.to_version) for m in d.moves])
                             for d in registry.decisions(name)]
        aliases = {a for v in registry.versions(name) for a in v.aliases if a != "latest"} | {"staging"}
        for alias in sorted(aliases):
            out["history"][f"{name}:{alias}"] = [(m.from_version, m.to_version, m.actor, m.reason)
                                                 for m in registry.alias_history(name, alias)]
    return out


def test_sync_copies_versions_lineage_aliases_and_history_and_a_second_sync_copies_nothing(source, tmp_path):
    target = open_registry(str(tmp_path / "target"))
    report = sync(source.registry, target)
    assert len(report.copied) == 9 and report.present == []
    assert report.decisions_copied == len(source.registry.decisions("vector-index")) == 6
    assert snapshot_of(target) == snapshot_of(source.registry)
    for name in NAMES:
        for v in source.registry.versions(name):
            assert dir_digest(target.download(v.ref)) == v.digest
    synced = target.decisions("vector-index")[0].details["synced_from"]
    assert synced["registry"] == source.registry.uri and synced["at"] == source.registry.decisions("vector-index")[0].at

    again = sync(source.registry, target)
    assert again.copied == [] and len(again.present) == 9
    assert (again.decisions_copied, again.moves_copied) == (0, 0)
    assert again.decisions_present == 6 and again.moves_present == report.moves_copied
    assert snapshot_of(target) == snapshot_of(source.registry)


@pytest.mark.parametrize("kill_at", [2, 7, 12])
def test_a_sync_killed_in_the_middle_resumes(source, tmp_path, kill_at):
    target_uri = f"file://{tmp_path / 'target'}"
    code, _out, err = finish(worker("crash-sync", source.registry.uri, target_uri, str(kill_at)))
    assert code == -9, f"the sync should have been killed: {err}"
    partial = open_registry(target_uri, create=False)
    assert snapshot_of(partial) != snapshot_of(source.registry)
    report = sync(source.registry, partial)
    assert report.present, "what the killed sync finished is not copied again"
    assert snapshot_of(partial) == snapshot_of(source.registry)


def test_the_cli_reports_what_was_copied_as_json(source, tmp_path):
    from tests.core.conftest import RAGINDEX_BIN

    target = tmp_path / "target"
    cmd = [str(RAGINDEX_BIN), "sync", "--from", source.registry.uri, "--to", str(target), "--json"]
    first = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert len(first["copied"]) == 9 and second["copied"] == [] and len(second["present"]) == 9
    missing = subprocess.run([str(RAGINDEX_BIN), "sync", "--from", str(tmp_path / "nowhere"), "--to", str(target)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no registry at" in missing.stderr and "Traceback" not in missing.stderr


def test_sync_into_the_wandb_adapter_keeps_the_history(source, tmp_path, monkeypatch):
    """Local → W&B, through the real adapter over the recording fakes of test_wandb_adapter.py."""
    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.test_wandb_adapter import ENTITY, PROJECT, RecordingFakeWandbApi, RecordingFakeWandbModule

    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    api = RecordingFakeWandbApi()
    target = WandbRegistry(ENTITY, PROJECT, wandb_module=RecordingFakeWandbModule(api), api=api,
                           cache_dir=tmp_path / "cache")
    sync(source.registry, target)
    assert snapshot_of(target) == snapshot_of(source.registry)
    assert sync(source.registry, target).copied == []
