"""The artifact registry: versioned, content-addressed artifacts with aliases and lineage.

``open_registry(uri)`` picks the backend:

- ``None``/``""``: ``$RAGINDEX_REGISTRY`` if set, else the local folder ``$RAGINDEX_HOME/registry``
  (``RAGINDEX_HOME`` defaults to ``~/.ragindex``);
- ``wandb://ENTITY/PROJECT`` (``?reference=1`` to add ``metadata["references"]`` URLs by reference;
  ``?registry=NAME``, else ``$RAGINDEX_WANDB_REGISTRY``, to link production into the W&B Registry NAME too):
  Weights & Biases;
- ``file://PATH`` or a plain path: the local SQLite-catalogued folder.

``wandb`` is never imported here; only the W&B backend imports it, when first used.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from ragindex.settings import ragindex_home

from .protocol import (
    DECISION_KINDS,
    AliasChange,
    AliasMove,
    ArtifactNotFound,
    ArtifactVersion,
    ConcurrentMove,
    Decision,
    Registry,
    RegistryError,
    RegistryUnavailable,
    RunInfo,
    split_ref,
)

__all__ = [
    "DECISION_KINDS",
    "AliasChange",
    "AliasMove",
    "ArtifactNotFound",
    "ArtifactVersion",
    "ConcurrentMove",
    "Decision",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "RunInfo",
    "default_registry_uri",
    "open_registry",
    "split_ref",
]

_TRUE = {"1", "true", "yes", "on"}


def default_registry_uri() -> str:
    """``$RAGINDEX_REGISTRY``, else the local folder under ``$RAGINDEX_HOME`` (default ``~/.ragindex``)."""
    configured = os.environ.get("RAGINDEX_REGISTRY", "").strip()
    if configured:
        return configured
    return str(ragindex_home() / "registry")


def _open_wandb(uri: str) -> Registry:
    """Parse ``wandb://ENTITY/PROJECT[?reference=1]`` and build the W&B backend."""
    parts = urlsplit(uri)
    entity = parts.netloc
    segments = [s for s in parts.path.split("/") if s]
    if not entity or len(segments) != 1:
        raise RegistryError(f"invalid registry URI {uri!r}: expected wandb://ENTITY/PROJECT")
    query = parse_qs(parts.query)
    by_reference = any(v.lower() in _TRUE for v in query.get("reference", []))
    registry = (query.get("registry") or [os.environ.get("RAGINDEX_WANDB_REGISTRY", "")])[-1].strip() or None
    from .wandb import WandbRegistry  # noqa: PLC0415 - keeps wandb out of package import

    return WandbRegistry(entity, segments[0], by_reference=by_reference, registry=registry)


def _is_plain_path(uri: str) -> bool:
    """A URI without a scheme (``C:\\...`` drive letters count as paths too)."""
    if "://" not in uri:
        return True
    scheme = uri.split("://", 1)[0]
    return len(scheme) == 1 and scheme.isalpha()


def open_registry(uri: str | None = None, *, create: bool = True) -> Registry:
    """Open the registry a URI names (see the module docstring for the forms). ``create=False`` is for
    readers: a local registry that does not exist yet is then an error naming it, not a new empty one. A W&B
    project is never created implicitly (a typo would fork the system of record): ``ragindex init`` does it."""
    uri = (uri or "").strip() or default_registry_uri()
    if uri.startswith("wandb://"):
        return _open_wandb(uri)
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if not path:
            raise RegistryError(f"invalid registry URI {uri!r}: file:// needs a path")
        from .local import LocalRegistry  # noqa: PLC0415

        return LocalRegistry(path, create=create)
    if _is_plain_path(uri):
        from .local import LocalRegistry  # noqa: PLC0415

        return LocalRegistry(uri, create=create)
    scheme = uri.split("://", 1)[0]
    raise RegistryError(f"unsupported registry URI {uri!r}: unknown scheme {scheme!r} (use wandb:// or file://)")
