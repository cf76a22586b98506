"""Write-then-rename for folders, so a reader (or a crashed writer's successor) never sees half a folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


def fresh_temp_dir(target: Path) -> Path:
    """A temp folder beside ``target`` (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def replace_dir_atomically(tmp: Path, target: Path) -> Path:
    """Move a finished temp folder into place; an old ``target`` is removed only after the swap."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    return target
