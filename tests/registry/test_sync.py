"""``ragindex sync``: a registry replayed into another has the same versions (files, digests, metadata),
lineage (producing step, versions used), aliases and decision/alias history, in order; a second sync copies
nothing; a sync killed in the middle resumes, and one SIGKILLed inside a write (of the local catalogue, or of
the W&B stand-in a killed process leaves as a server would) leaves no half version and ends exact on rerun.
Local → local here (and local → the W&B adapter over its fakes); local → W&B is what it is for."""

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


def consistent_part(target, source, moves_recorded: bool = True) -> tuple[list[str], list[str]]:
    """What a killed sync left in ``target``, checked whole: each version is one of the source's, complete (its
    files download to its digest) and there once; each decision is one of the source's, once, with its moves
    in place (``moves_recorded``: and no move without its record, where record and moves are one transaction).
    Returns (version refs, decision keys)."""
    digests = {v.digest: v for name in NAMES for v in source.versions(name)}
    refs = []
    for name in NAMES:
        found = target.versions(name)
        assert [v.version for v in found] == [f"v{i}" for i in range(len(found))], "numbered without a gap"
        assert len({v.digest for v in found}) == len(found), f"a duplicate version of {name}"
        for v in found:
            assert v.digest in digests and dir_digest(target.download(v.ref)) == v.digest, f"half version {v.ref}"
            refs.append(v.ref)
    keys = [d.key for name in NAMES for d in target.decisions(name)]
    assert len(keys) == len(set(keys)), f"a decision recorded twice: {keys}"
    assert set(keys) <= {d.key for name in NAMES for d in source.decisions(name)}
    for name in NAMES if moves_recorded else ():
        for alias in ("production", "staging"):
            history = target.alias_history(name, alias)
            holders = [v.version for v in target.versions(name) if alias in v.aliases]
            assert holders == ([history[-1].to_version] if history and history[-1].to_version else []), \
                f"{name}:{alias} is held without its move on record (or the reverse)"
    return refs, keys


INSIDE = {  # (point, n): the n-th version (files, row) or decision (record) the target was writing
    "a version's files half copied": ("files", 6),  # raw-documents:v2, the 6th in dependency order: new content
    "a version's row inserted, not committed": ("row", 7),
    "a decision's first move written, not committed": ("record", 3),
}


@pytest.mark.parametrize("case", list(INSIDE))
def test_a_sync_killed_inside_a_write_leaves_no_half_version_and_the_rerun_ends_exact(source, tmp_path, case):
    point, nth = INSIDE[case]
    target_uri = f"file://{tmp_path / 'target'}"
    code, out, err = finish(worker("crash-sync-inside", source.registry.uri, target_uri, point, str(nth)))
    assert code == -9, f"the sync should have been killed: {out} {err[-2000:]}"
    partial = open_registry(target_uri, create=False)
    refs, keys = consistent_part(partial, source.registry)
    if point == "record":
        assert len(refs) == 9, "every version was copied before the history"
        assert len(keys) < 6
    else:
        assert len(refs) == nth - 1 and keys == [], "the version being written is not there, not even in part"
    if point == "files":
        assert any((tmp_path / "target" / ".staging").iterdir()), "killed while copying: its copy is left in staging"
    report = sync(source.registry, partial)
    assert len(report.present) == len(refs) and len(report.copied) == 9 - len(refs)
    assert snapshot_of(partial) == snapshot_of(source.registry)
    assert consistent_part(partial, source.registry)[0] == [f"{name}:v{i}" for name in NAMES for i in range(3)]


# Where a W&B sync is killed: (FakeWandbServer checkpoint, which pass of it, versions the target holds after the
# kill). The pass is found in a reference sync, so the cases stay where they say as the adapter changes its calls.
WANDB_KILLS = {
    "a version's run started, nothing uploaded": ("init:after", "the 5th version", 4),
    "a version committed, its run not finished": ("commit:after", "the 4th version", 4),
    "between a promotion's alias moves": ("aliases:after", "the first promotion's first move", 9),
    "a promotion's moves saved, its record not": ("finish:before", "the first promotion", 9),
}


def checkpoint_trace(source, root: Path, monkeypatch) -> list[tuple[str, str]]:
    """(checkpoint, the key or job type of the run it fell in) of every checkpoint a whole sync into W&B passes."""
    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer

    trace: list[tuple[str, str]] = []
    current = {"run": ""}
    real_init, real_checkpoint = FakeWandbModule.init, FakeWandbServer.checkpoint

    def init(self, **kwargs):
        current["run"] = (kwargs.get("config") or {}).get("ragindex_key") or kwargs.get("job_type", "")
        return real_init(self, **kwargs)

    def checkpoint(self, point):
        trace.append((point, current["run"]))
        return real_checkpoint(self, point)

    with monkeypatch.context() as patched:
        patched.setattr(FakeWandbModule, "init", init)
        patched.setattr(FakeWandbServer, "checkpoint", checkpoint)
        server = FakeWandbServer(root / "reference-server")
        sync(source, WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=root / "ref"))
    return trace


def kill_pass(trace: list[tuple[str, str]], point: str, where: str, promotion: str) -> int:
    """Which pass of ``point`` (1-based) is ``where`` in the reference trace."""
    passes = [run for p, run in trace if p == point]
    if where.endswith("version"):
        return int(where.split()[1][:-2])  # the versions are copied first, one run each
    at = [i + 1 for i, run in enumerate(passes) if run == promotion]
    if where.endswith("first move"):
        assert len(at) >= 2, f"the first promotion makes {len(at)} alias move(s): no kill between its moves"
    return at[0]


@pytest.mark.parametrize("case", list(WANDB_KILLS))
def test_a_sync_into_w_and_b_killed_inside_a_write_ends_exact_on_rerun_with_fake_wandb_server(source, tmp_path, case,
                                                                                               monkeypatch):
    """The W&B target over the file-backed stand-in, whose state a SIGKILLed process leaves as a server would."""
    import os
    import sys

    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer
    from tests.registry.test_wandb_adapter import HERE, KILL_WORKER

    point, where, versions_left = WANDB_KILLS[case]
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    first_promotion = next(d.key for d in source.registry.decisions("vector-index") if d.kind == "promote")
    nth = kill_pass(checkpoint_trace(source.registry, tmp_path, monkeypatch), point, where, first_promotion)
    server = FakeWandbServer(tmp_path / "fake-wandb-server")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent / "include"), str(HERE.parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(KILL_WORKER), str(server.root), "sync", source.registry.uri, point,
                           str(nth)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == -9, (done.returncode, done.stdout, done.stderr[-2000:])

    def target(cache: str) -> WandbRegistry:
        return WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=tmp_path / cache)

    partial = target("cache-partial")
    refs, keys = consistent_part(partial, source.registry, moves_recorded=False)
    assert len(refs) == versions_left and first_promotion not in keys
    assert keys == [] or versions_left == 9, "no decision is replayed before every version is there"
    assert partial.interrupted(first_promotion) == (versions_left == 9), "the kill was inside the promotion's write"
    retry = target("cache-retry")
    report = sync(source.registry, retry)
    assert len(report.present) == versions_left and len(report.copied) == 9 - versions_left
    assert snapshot_of(retry) == snapshot_of(source.registry)
    assert consistent_part(retry, source.registry)[0] == [f"{name}:v{i}" for name in NAMES for i in range(3)]
    assert sync(source.registry, target("cache-again")).copied == []


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
