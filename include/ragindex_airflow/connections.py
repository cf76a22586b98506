"""Airflow connections → what the core needs, so no secret ever travels in a Param, an XCom, a log line or a
version's metadata; only the connection's id does.

- Sources and prompts: ``PROTOCOL://CONN_ID@BUCKET/PREFIX/`` (the form ``ObjectStoragePath`` reads) opens the
  filesystem through that connection with the provider's own ``get_fs`` (``s3://`` → the amazon provider's
  s3fs, with the connection's keys, region and ``endpoint_url``); a plain fsspec URL is left to fsspec.
- W&B: ``wandb://[CONN_ID@][ENTITY/PROJECT]`` takes the API key (password), base URL (host), entity and
  project (extra) from the connection, ``wandb_default`` when none is named and it exists; environment
  variables (``WANDB_API_KEY``, ``WANDB_BASE_URL``, ``WANDB_ENTITY``, ``WANDB_PROJECT``) are the fallback.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ragindex.errors import RegistryError, SourceError

WANDB_DEFAULT_CONN = "wandb_default"
# The connection type each object-storage protocol's provider expects (a wrong type is a wrong connection)
CONN_TYPES = {"s3": "aws", "s3a": "aws", "s3n": "aws", "gs": "google_cloud_platform",
              "gcs": "google_cloud_platform", "abfs": "wasb", "az": "wasb"}


def _connection(conn_id: str, error: type[Exception], what: str | None) -> Any:
    """The Airflow connection ``conn_id``; a missing one is ``error`` (permanent) naming it (and ``what``)."""
    from airflow.sdk.definitions.connection import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        raise error(f"{what + ': ' if what else ''}Airflow connection {conn_id!r} is not defined (add it in Admin > "
                    f"Connections, or as the environment variable AIRFLOW_CONN_{conn_id.upper()})") from None


def open_filesystem(protocol: str, conn_id: str) -> Any:
    """The fsspec filesystem of ``protocol`` with the credentials of connection ``conn_id`` (what
    ``ObjectStoragePath("PROTOCOL://CONN_ID@...")`` would use). Checks the connection exists and is of the
    protocol's type first: the provider would otherwise fall back to whatever credentials the worker has.
    Errors say what is wrong with the connection; the core puts the URL (and whose it is) in front."""
    from airflow.sdk.io.fs import get_fs

    conn = _connection(conn_id, SourceError, None)
    expected = CONN_TYPES.get(protocol)
    if expected and conn.conn_type != expected:
        raise SourceError(f"connection {conn_id!r} is of type {conn.conn_type!r}, {protocol}:// needs an "
                          f"{expected!r} connection")
    try:
        return get_fs(protocol, conn_id)
    except ValueError as exc:  # no provider registers the protocol
        raise SourceError(f"{exc} (is the provider for {protocol}:// installed?)") from None
    except ImportError as exc:
        raise SourceError(str(exc)) from None


def checked_location(location: str, what: str = "source") -> str:
    """A source or prompts location, unchanged, once it is known to carry no credentials (``what`` names it
    in the error); a folder passes as it is."""
    from ragindex.sources import is_remote, parse_remote

    if is_remote(location):
        parse_remote(location, what)  # refuses user:password@ with the password redacted
    return location


def use_connections() -> None:
    """From now on in this process, ``CONN_ID@`` in a source or prompts URL resolves through Airflow."""
    from ragindex.sources import set_connection_opener

    set_connection_opener(open_filesystem)


def wandb_registry_uri(uri: str) -> str:
    """``wandb://[CONN_ID@][ENTITY/PROJECT][?query]`` as the plain ``wandb://ENTITY/PROJECT[?query]`` the
    registry opens, with the connection's API key and base URL exported to this process's environment (where
    the W&B SDK reads them, and where the registry's scrubbing finds the key to hide). Other URIs unchanged."""
    from ragindex.registry import default_registry_uri

    uri = uri.strip() or default_registry_uri()
    if not uri.startswith("wandb://"):
        return uri
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and (":" in userinfo or not userinfo):
        raise RegistryError("wandb:// registry URI: credentials in the URI are refused; put the API key in a "
                            "connection (password) and write wandb://CONN_ID@ENTITY/PROJECT")
    named = userinfo if at else None
    conn_id = named or WANDB_DEFAULT_CONN
    extra: dict[str, Any] = {}
    conn = _wandb_connection(conn_id, required=named is not None)
    if conn is not None:
        extra = conn.extra_dejson or {}
        if conn.password:
            os.environ["WANDB_API_KEY"] = conn.password
        if conn.host:
            os.environ["WANDB_BASE_URL"] = _base_url(conn)
    segments = [s for s in parts.path.split("/") if s]
    entity = host or extra.get("entity") or os.environ.get("WANDB_ENTITY", "")
    project = (segments[0] if segments else "") or extra.get("project") or os.environ.get("WANDB_PROJECT", "")
    if not entity or not project:
        where = f"connection {conn_id!r} extra" if conn is not None else "WANDB_ENTITY/WANDB_PROJECT"
        raise RegistryError(f"wandb:// registry URI {_safe(uri)!r}: no entity/project in the URI nor in {where}")
    query = parts.query
    if extra.get("registry") and "registry=" not in query:  # the connection names the W&B Registry to link into
        query = "&".join(q for q in (query, f"registry={extra['registry']}") if q)
    return f"wandb://{entity}/{project}" + (f"?{query}" if query else "")


def _wandb_connection(conn_id: str, *, required: bool) -> Any:
    """The W&B connection, or None when the default one is not defined (the environment is the fallback)."""
    if required:
        return _connection(conn_id, RegistryError, "wandb:// registry")
    try:
        return _connection(conn_id, RegistryError, "wandb:// registry")
    except RegistryError:
        return None


def _base_url(conn: Any) -> str:
    """The connection's host as a URL: a bare host name means https; a port is kept."""
    host = str(conn.host).rstrip("/")
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
    return f"{host}:{conn.port}" if conn.port and host.count(":") < 2 else host


def _safe(uri: str) -> str:
    return uri.split("?", 1)[0]
