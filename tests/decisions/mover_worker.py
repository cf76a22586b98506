"""A separate process that makes one governance move through the real CLI, for test_concurrent_moves.py.

Usage: mover_worker.py BACKEND ROOT SIGNALS ME OTHER -- RAGINDEX-ARGS...
  BACKEND  local (ROOT is the registry folder) or wandb (ROOT is the FakeWandbServer folder; a stand-in, not W&B)
  SIGNALS  a folder: the worker writes ``ready-ME``, waits for ``start``, and, when its move is about to be recorded,
           writes ``reached-ME`` and waits (up to RENDEZVOUS_S) for ``reached-OTHER``: movers that are not serialised
           both read the holder before either records, so a broken serialisation shows every time.
Prints one JSON line last: the CLI's exit code and when (wall clock) the move started and ended.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

RENDEZVOUS_S = 3.0
MOVES = ("promote", "rollback")


def open_backend(backend: str, root: Path):
    """The registry the CLI acts on: the local folder, or the W&B adapter over the file-backed stand-in."""
    if backend == "local":
        from ragindex.registry import open_registry

        return open_registry(str(root), create=False)
    from ragindex.registry.wandb import WandbRegistry
    from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer

    home = Path(tempfile.mkdtemp(prefix="mover-"))
    return WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(FakeWandbServer(root)),
                         cache_dir=home / "cache", run_dir=home / "runs")


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main(backend: str, root: str, signals: str, me: str, other: str, *argv: str) -> None:
    import ragindex.cli as cli

    folder = Path(signals)
    registry = open_backend(backend, Path(root))
    cli._registry = lambda args, create=False: registry  # the CLI's own commands, on this registry
    real_record = type(registry).record_decision
    met: dict[str, bool] = {}

    def record_after_rendezvous(self, decision):
        if decision.kind in MOVES and "other" not in met:
            (folder / f"reached-{me}").touch()
            met["other"] = wait_for(folder / f"reached-{other}", RENDEZVOUS_S)
        return real_record(self, decision)

    type(registry).record_decision = record_after_rendezvous
    (folder / f"ready-{me}").touch()
    assert wait_for(folder / "start", 120), "no start signal"
    started = time.time()
    code = cli.main(list(argv))
    ended = time.time()
    print(json.dumps({"rc": code, "started": started, "ended": ended, "met_the_other": met.get("other")}))


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    main(*args[:split], *args[split + 1:])
