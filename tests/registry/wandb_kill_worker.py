"""A worker the kill matrix SIGKILLs half way through a W&B registry call (over the file-backed fake server).

Usage: wandb_kill_worker.py SERVER_ROOT log|promote|sync SOURCE CHECKPOINT N
  log      log SOURCE as idx (alias candidate, using raw:v0)
  promote  the promotion of test_wandb_adapter._promote
  sync     ``ragindex sync`` of the registry at SOURCE (a URI) into the W&B registry
It SIGKILLs itself at the N-th pass of CHECKPOINT (a FakeWandbServer.checkpoint name); exiting normally is a
failure of the test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ragindex.registry import RunInfo
from ragindex.registry.wandb import WandbRegistry
from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer


def main(root: str, step: str, source: str, point: str, nth: str) -> None:
    server = FakeWandbServer(Path(root))
    home = Path(tempfile.mkdtemp(prefix="kill-worker-"))
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=home / "cache",
                             run_dir=home / "runs")
    FakeWandbServer.kill_at = (point, int(nth))
    if step == "log":
        registry.log_artifact("idx", "index", Path(source), run=RunInfo("build"), aliases=["candidate"],
                              uses=["raw:v0"])
    elif step == "sync":
        from ragindex.registry import open_registry
        from ragindex.sync import sync

        sync(open_registry(source, create=False), registry)
    else:
        from tests.registry.test_wandb_adapter import _promote

        _promote(registry)
    print("finished without being killed")


if __name__ == "__main__":
    main(*sys.argv[1:])
