"""The registry protocol's rules, written once for every backend.

Names, aliases and metadata are checked here by the same rule whatever the backend, and the rule is
W&B's (so a version the local registry accepts can always be synced to W&B): artifact names of letters,
digits, ``-_.`` (at most 128 characters); aliases the same but lower case, because W&B treats aliases that
differ only in case as one alias; never a version tag (``v3``) nor ``latest`` (it follows the newest version
by itself); metadata is JSON with finite numbers and at most 99 top-level keys (W&B's limit of 100, less the
one key the W&B backend keeps in every version for its lineage).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from ragindex.errors import RegistryError

LATEST = "latest"
NAME_MAXLEN = 128
WANDB_MAX_METADATA_KEYS = 100  # wandb/sdk/artifacts/_validators.py: MAX_ARTIFACT_METADATA_KEYS
BACKEND_METADATA_KEYS = 1  # the W&B backend's ``ragindex.lineage``, stored next to the user's keys
MAX_METADATA_KEYS = WANDB_MAX_METADATA_KEYS - BACKEND_METADATA_KEYS
RESERVED_PREFIX = "ragindex."  # metadata keys the registry keeps for itself
VERSION_TAG = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with microseconds, so records sort in the order they happened."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def default_actor() -> str:
    """Who is acting when the caller did not say (user@host), for the audit trail."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        user = "unknown"
    return f"{user}@{os.uname().nodename}" if hasattr(os, "uname") else user


def validate_name(name: str) -> str:
    """Refuse names that cannot be a W&B artifact name, so both backends accept the same names."""
    if not _NAME.match(name or "") or len(name) > NAME_MAXLEN:
        raise RegistryError(f"invalid artifact name {name!r}: use letters, digits, '-', '_' or '.' "
                            f"(at most {NAME_MAXLEN} characters)")
    return name


def validate_alias(name: str, alias: str) -> str:
    """One alias rule for both backends (see the module docstring)."""
    if alias == LATEST:
        raise RegistryError(f"cannot set alias 'latest' on {name}: it always follows the newest version")
    if VERSION_TAG.match(alias or ""):
        raise RegistryError(f"invalid alias {alias!r} for {name!r}: looks like a version tag")
    if not _ALIAS.match(alias or "") or len(alias) > NAME_MAXLEN:
        why = "aliases are lower case (W&B treats aliases that differ only in case as one)" \
            if alias and _ALIAS.match(alias.lower()) else "use lower-case letters, digits, '-', '_' or '.'"
        raise RegistryError(f"invalid alias {alias!r} for {name!r}: {why}")
    return alias


def requested_aliases(name: str, aliases: Sequence[str]) -> list[str]:
    """The aliases a log call asks for, deduplicated and checked; ``latest`` is implied, so dropped."""
    return [validate_alias(name, a) for a in dict.fromkeys(aliases) if a != LATEST]


def to_json(value: Any, what: str) -> str:
    """Serialise metadata/config, naming what failed when it is not JSON (or not finite)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} is not JSON-serialisable with finite numbers: {exc}") from exc


def check_metadata(metadata: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """Metadata both backends can store: JSON, finite numbers, at most ``MAX_METADATA_KEYS`` keys, none
    under the registry's own ``ragindex.`` prefix."""
    metadata = dict(metadata or {})
    to_json(metadata, what)
    reserved = sorted(k for k in metadata if str(k).startswith(RESERVED_PREFIX))
    if reserved:
        raise RegistryError(f"{what} may not set keys {reserved}: the '{RESERVED_PREFIX}' prefix is reserved")
    if len(metadata) > MAX_METADATA_KEYS:
        raise RegistryError(f"{what} has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed "
                            f"(W&B stores at most {WANDB_MAX_METADATA_KEYS} and the registry keeps "
                            f"{BACKEND_METADATA_KEYS} of them; nest the rest under one key)")
    return metadata


def check_files(files: Path, name: str) -> Path:
    """What is logged is a directory."""
    files = Path(files)
    if not files.is_dir():
        raise RegistryError(f"cannot log {name!r} from {str(files)!r}: not a directory")
    return files


def fill_atomically(target: Path, fill: Callable[[Path], None], what: str, *, keep_existing: bool = False) -> Path:
    """Fill a temp sibling of ``target`` with ``fill(tmp)``, then swap it in: a reader never sees half.

    With ``keep_existing`` (a cache folder named by the version's digest) a folder that another process put
    there meanwhile is kept and this copy dropped: a cached folder a reader holds never moves.
    """
    target = Path(target).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        fill(tmp)
        if keep_existing:
            try:
                os.rename(tmp, target)  # refused when another writer's folder (not empty) is there
            except OSError:
                if not target.is_dir():
                    raise
        else:
            if target.exists():
                os.rename(target, old)
            os.rename(tmp, target)
    except RegistryError:
        raise
    except OSError as exc:
        raise RegistryError(f"cannot download {what} into {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target
