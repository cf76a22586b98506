"""Governance moves made at the same time: two processes run `ragindex approve` / `ragindex rollback` on the same
registry (the local catalogue, and the W&B adapter over the file-backed stand-in of the W&B server), both started by
one signal and overlapping in time. Afterwards the holder, the alias history and the decision records tell one
story: each move starts where the one before it ended, each record's "from" is the real previous holder, and the
last record's target holds production. A mover that the governance lock does not reach is caught by the record's
compare-and-set, and the move is checked again from the start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragindex.errors import ConcurrentMove
from ragindex.names import PRODUCTION
from ragindex.promotion import promote
from ragindex.registry import AliasChange, Decision, RunInfo, open_registry
from ragindex.review import APPROVED, record_review
from ragindex.rollback import rollback
from tests.conftest import write_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "mover_worker.py"
INDEX = "vector-index"
BACKENDS = ["local", "wandb"]  # wandb: the adapter over tests/registry/fake_wandb_server.py (a stand-in)
SCENARIOS = {
    "two rollbacks": (["rollback", "--name", INDEX, "--to-version", "v0", "--json"],
                      ["rollback", "--name", INDEX, "--to-version", "v1", "--json"]),
    "approve and rollback": (["approve", f"{INDEX}:v3"], ["rollback", "--name", INDEX, "--to-version", "v1"]),
}


def open_backend(backend: str, root: Path):
    """The registry under test, as the workers open it (the same folder or stand-in server)."""
    if backend == "local":
        return open_registry(str(root / "registry"))
    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer

    return WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(FakeWandbServer(root / "server")),
                         cache_dir=root / "cache", run_dir=root / "runs")


def backend_root(backend: str, root: Path) -> Path:
    return root / ("registry" if backend == "local" else "server")


@pytest.fixture
def governed(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Four gate-passed index versions; v0, v1 and v2 approved and promoted in turn (production: v2)."""
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))  # the workers share it (W&B's lock lives there)
    registry = open_backend(request.param, tmp_path)
    for i in range(4):
        ref = registry.log_artifact(INDEX, "index", write_files(tmp_path / f"index{i}", {"f": str(i)}),
                                    run=RunInfo("build"), metadata={"eval": {"passed": True}}).ref
        if i < 3:
            record_review(registry, ref, APPROVED, actor="setup")
            promote(registry, ref, actor="setup")
    assert registry.get(f"{INDEX}:{PRODUCTION}").version == "v2"
    return request.param, registry


def production_story(registry) -> tuple[list, list]:
    """The production moves as the history tells them, and as the decision records tell them."""
    history = [(m.from_version, m.to_version) for m in registry.alias_history(INDEX, PRODUCTION)]
    recorded = [(m.from_version, m.to_version) for d in registry.decisions(INDEX) for m in d.moves
                if m.name == INDEX and m.alias == PRODUCTION]
    return history, recorded


@pytest.mark.parametrize("governed", BACKENDS, indirect=True)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_concurrent_movers_leave_one_consistent_story(governed, scenario: str, tmp_path: Path) -> None:
    backend, registry = governed
    signals = tmp_path / "signals"
    signals.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = {}
    for me, other, argv in (("a", "b", SCENARIOS[scenario][0]), ("b", "a", SCENARIOS[scenario][1])):
        command = [sys.executable, str(WORKER), backend, str(backend_root(backend, tmp_path)), str(signals), me, other,
                   "--", *argv, "--actor", f"mover-{me}", "--reason", f"test mover {me}"]
        procs[me] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for me, proc in procs.items():  # both are ready (imports done, registry open) before either starts
        while not (signals / f"ready-{me}").exists():
            assert proc.poll() is None, proc.communicate()
    (signals / "start").touch()
    outcomes = {}
    for me, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outcomes[me] = json.loads(out.strip().splitlines()[-1])
        assert outcomes[me]["rc"] == 0, err[-3000:]
    assert max(o["started"] for o in outcomes.values()) < min(o["ended"] for o in outcomes.values()), \
        f"the two moves did not overlap in time: {outcomes}"

    holder = registry.get(f"{INDEX}:{PRODUCTION}").version
    history, recorded = production_story(registry)
    assert recorded == history, "every production move is a decision's, in the same order"
    assert history[0][0] is None and all(prev[1] == nxt[0] for prev, nxt in zip(history, history[1:])), \
        f"each move starts where the one before it ended: {history}"
    assert history[-1][1] == holder, "the last move's target holds production"
    movers = [d for d in registry.decisions(INDEX) if d.actor in ("mover-a", "mover-b") and d.kind != "review"]
    assert sorted(d.actor for d in movers) == ["mover-a", "mover-b"], "both moves are on record"
    for d in movers:
        (move,) = [m for m in d.moves if m.alias == PRODUCTION]
        said = d.details.get("from", d.details.get("previous"))
        assert said == f"{INDEX}:{move.from_version}", f"{d.kind} by {d.actor}: its 'from' is the real previous holder"
    assert movers[0].moves[0].to_version == movers[1].moves[0].from_version, "the second moved from the first's target"
    assert movers[-1].moves[0].to_version == holder


@pytest.mark.parametrize("governed", BACKENDS, indirect=True)
def test_a_mover_the_lock_does_not_reach_is_caught_and_the_move_checked_again(governed, monkeypatch) -> None:
    """Another machine (no shared lock) moves production between a rollback's checks and its record: the record's
    compare-and-set refuses (nothing moves, nothing is recorded), and the rollback runs again from the start, so
    its record names the holder it really moved from."""
    backend, registry = governed
    cls = type(registry)
    real_record = cls.record_decision
    refused: list[str] = []

    def another_machine_moves_first(self, decision):
        if decision.kind == "rollback" and not refused:
            real_record(self, Decision(kind="promote", verdict="promoted", ref=f"{INDEX}:v1", actor="elsewhere",
                                       changes=(AliasChange(f"{INDEX}:v1", PRODUCTION),)))
            try:
                return real_record(self, decision)
            except ConcurrentMove as exc:
                refused.append(str(exc))
                raise
        return real_record(self, decision)

    monkeypatch.setattr(cls, "record_decision", another_machine_moves_first)
    outcome = rollback(registry, to_version="v0", actor="ops", reason="back to v0", pipeline_run="manual__r1")
    assert refused and "is held by v1, not v2" in refused[0], refused
    assert (outcome["from"], outcome["to"], outcome["changed"]) == (f"{INDEX}:v1", f"{INDEX}:v0", True)
    history, recorded = production_story(registry)
    assert history[-2:] == [("v2", "v1"), ("v1", "v0")] and recorded == history
    assert registry.decision("rollback/manual__r1").details["from"] == f"{INDEX}:v1"
    assert not registry.interrupted("rollback/manual__r1"), "the refused try is closed, not left open"
    if backend == "wandb":
        from tests.registry.fake_wandb_server import FakeWandbServer

        runs = [r for r in FakeWandbServer(registry.cache_dir.parent / "server").runs()
                if r["config"].get("ragindex_key") == "rollback/manual__r1"]
        assert [(r["state"], sorted(r["summary"].get("ragindex.record", {}))) for r in runs] == [
            ("failed", ["aborted", "reason"]), ("finished", ["complete", "moves"])], "the refused run says why"
