"""How ragindex writes: files and folders by write-then-rename (a reader never sees half of either), records
as sorted JSON lines (equal content gives equal bytes, so equal digests)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable


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


def replace_file_atomically(target: Path, write: Callable[[Path], Any]) -> Path:
    """Write ``target`` through ``write(tmp)`` under a temp name of its own beside it, then rename it into place,
    so a reader never sees half a file and two writers never share a temp file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the filesystem allows one (no space), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, keys sorted, so equal content gives equal bytes."""
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
