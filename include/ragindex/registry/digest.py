"""Content digests shared by the backends, computed the way W&B computes an artifact's digest.

A file's digest is the base64 of its MD5 (W&B's ``B64MD5``); the artifact digest is the hex MD5 of
``"wandb-artifact-manifest-v1\\n"`` followed by ``"{path}:{b64md5}\\n"`` for every file sorted by its
relative POSIX path. It is therefore order-independent and depends only on paths and contents, and a
directory gets the same digest from the local backend as from ``wandb.Artifact.add_dir``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from .protocol import RegistryError

MANIFEST_HEADER = b"wandb-artifact-manifest-v1\n"
_CHUNK = 1 << 20


def file_b64md5(path: Path) -> str:
    """The base64 MD5 of one file's bytes, W&B's per-entry digest."""
    hasher = hashlib.md5()  # noqa: S324 - content fingerprint, not security
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            hasher.update(chunk)
    return base64.b64encode(hasher.digest()).decode("ascii")


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (following W&B: symlinks to files count, dirs are walked)."""
    found: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_file():
                found.append(path)
    return found


def manifest_of(root: Path) -> dict[str, str]:
    """Map each file's relative POSIX path under ``root`` to its base64 MD5."""
    root = Path(root)
    if not root.is_dir():
        raise RegistryError(f"cannot log {str(root)!r}: not a directory")
    return {path.relative_to(root).as_posix(): file_b64md5(path) for path in list_files(root)}


def manifest_digest(manifest: dict[str, str]) -> str:
    """The artifact digest of a manifest (hex MD5 over the sorted ``path:digest`` lines)."""
    hasher = hashlib.md5()  # noqa: S324 - content fingerprint, not security
    hasher.update(MANIFEST_HEADER)
    for path, entry_digest in sorted(manifest.items()):
        hasher.update(f"{path}:{entry_digest}\n".encode())
    return hasher.hexdigest()


def dir_digest(root: Path) -> str:
    """The artifact digest of a directory's files."""
    return manifest_digest(manifest_of(root))
