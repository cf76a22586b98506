"""The embedded default registry: a folder holding an SQLite catalogue and content-addressed files.

Layout under the registry folder::

    catalog.sqlite          the catalogue (WAL mode); the only source of truth for what exists
    objects/<digest>/...    one directory per distinct content, never modified once renamed in
    .staging/<uuid>/        copies in progress; never read, safe to delete when no writer runs

A version becomes visible only when its catalogue row is committed, and that happens after its
files were copied, fsynced and renamed into ``objects/``; a crash at any point leaves either no
version or a complete one. Writers serialise through ``BEGIN IMMEDIATE`` so that concurrent
processes get distinct version numbers and alias moves are never lost.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from .digest import manifest_digest, manifest_of
from .graph import build_lineage
from .protocol import AliasMove, ArtifactNotFound, ArtifactVersion, RegistryError, RunInfo, split_ref

CATALOG = "catalog.sqlite"
OBJECTS = "objects"
STAGING = ".staging"
BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 1
_VERSION_TAG = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    job_type   TEXT NOT NULL,
    run_group  TEXT,
    config     TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name         TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    producer_run TEXT,
    consumed     TEXT NOT NULL,
    PRIMARY KEY (name, idx),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS aliases (
    name  TEXT NOT NULL,
    alias TEXT NOT NULL,
    idx   INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS alias_moves (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    alias        TEXT NOT NULL,
    from_version TEXT,
    to_version   TEXT NOT NULL,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_moves_by_alias ON alias_moves (name, alias, seq);
"""


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with microseconds, so moves sort in the order they happened."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def default_actor() -> str:
    """Who is acting when the caller did not say (user@host), for the alias audit trail."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        user = "unknown"
    return f"{user}@{os.uname().nodename}" if hasattr(os, "uname") else user


def validate_alias(name: str, alias: str) -> None:
    """Refuse aliases that would shadow version tags or are empty (as W&B does)."""
    if not alias or ":" in alias or "/" in alias:
        raise RegistryError(f"invalid alias {alias!r} for {name!r}: must be non-empty without ':' or '/'")
    if _VERSION_TAG.match(alias):
        raise RegistryError(f"invalid alias {alias!r} for {name!r}: looks like a version tag")


def validate_name(name: str) -> None:
    """Refuse names that cannot be a W&B artifact name, so both backends accept the same names."""
    if not _NAME.match(name or ""):
        raise RegistryError(f"invalid artifact name {name!r}: use letters, digits, '-', '_' or '.'")


def to_json(value: Any, what: str) -> str:
    """Serialise metadata/config, naming what failed when it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} is not JSON-serialisable: {exc}") from exc


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename survives a power cut (best effort off POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_tree_synced(src: Path, dst: Path, manifest: dict[str, str]) -> None:
    """Copy the manifest's files from ``src`` into ``dst`` and fsync each one."""
    for rel in sorted(manifest):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
        with open(target, "rb") as fh:
            os.fsync(fh.fileno())
    for directory in sorted({p.parent for p in dst.rglob("*")} | {dst}, reverse=True):
        fsync_dir(directory)


class LocalRegistry:
    """The ``Registry`` protocol over a folder: SQLite catalogue plus content-addressed files."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        self.objects = self.root / OBJECTS
        self.staging = self.root / STAGING
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry at {self.uri}: {exc}") from exc
        self._init_schema()

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    # -- catalogue plumbing ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A fresh autocommit connection (one per call: safe across threads and processes)."""
        conn = sqlite3.connect(self.root / CATALOG, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection whose reads see one consistent snapshot."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: writers queue here, all-or-nothing commit."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _init_schema(self) -> None:
        """Create tables and switch to WAL; retried because concurrent openers may collide."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn = self._connect()
                try:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("BEGIN IMMEDIATE")
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                finally:
                    conn.close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise RegistryError(f"cannot open catalogue of {self.uri}: {exc}") from exc
                time.sleep(0.05)

    # -- row mapping ---------------------------------------------------------------------------

    def _aliases_of(self, conn: sqlite3.Connection, name: str, idx: int) -> tuple[str, ...]:
        """The aliases a version holds, ``latest`` included when it is the newest."""
        rows = conn.execute(
            "SELECT alias FROM aliases WHERE name = ? AND idx = ? ORDER BY alias", (name, idx)
        ).fetchall()
        aliases = [row["alias"] for row in rows]
        newest = conn.execute("SELECT MAX(idx) FROM versions WHERE name = ?", (name,)).fetchone()[0]
        if newest == idx:
            aliases.insert(0, "latest")
        return tuple(aliases)

    def _version(self, conn: sqlite3.Connection, row: sqlite3.Row) -> ArtifactVersion:
        """Turn a ``versions`` row into the protocol's value object."""
        return ArtifactVersion(
            name=row["name"],
            type=row["type"],
            version=f"v{row['idx']}",
            digest=row["digest"],
            aliases=self._aliases_of(conn, row["name"], row["idx"]),
            metadata=json.loads(row["metadata"]),
            created_at=row["created_at"],
            producer_run=row["producer_run"],
            consumed=tuple(json.loads(row["consumed"])),
            url=None,
        )

    def _row(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
        """Find the ``versions`` row a ref names, or raise ArtifactNotFound naming the ref."""
        name, tag = split_ref(ref)
        match = _VERSION_TAG.match(tag)
        if match:
            row = conn.execute(
                "SELECT * FROM versions WHERE name = ? AND idx = ?", (name, int(match.group(1)))
            ).fetchone()
        elif tag == "latest":
            row = conn.execute(
                "SELECT * FROM versions WHERE name = ? ORDER BY idx DESC LIMIT 1", (name,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT v.* FROM versions v JOIN aliases a ON a.name = v.name AND a.idx = v.idx "
                "WHERE a.name = ? AND a.alias = ?",
                (name, tag),
            ).fetchone()
        if row is None:
            known = conn.execute("SELECT COUNT(*) FROM versions WHERE name = ?", (name,)).fetchone()[0]
            why = f"no version {tag!r} of it" if known else "no artifact of that name"
            raise ArtifactNotFound(f"artifact {name}:{tag} not found in {self.uri}: {why}")
        return row

    def _move_alias(
        self, conn: sqlite3.Connection, name: str, alias: str, idx: int, actor: str, reason: str
    ) -> None:
        """Point ``alias`` at version ``idx`` inside the caller's transaction and log the move."""
        current = conn.execute(
            "SELECT idx FROM aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchone()
        if current is not None and current["idx"] == idx:
            return
        conn.execute(
            "INSERT INTO aliases (name, alias, idx) VALUES (?, ?, ?) "
            "ON CONFLICT (name, alias) DO UPDATE SET idx = excluded.idx",
            (name, alias, idx),
        )
        conn.execute(
            "INSERT INTO alias_moves (name, alias, from_version, to_version, at, actor, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                alias,
                None if current is None else f"v{current['idx']}",
                f"v{idx}",
                utc_now(),
                actor,
                reason,
            ),
        )

    # -- writing -------------------------------------------------------------------------------

    def _store_content(self, files: Path, manifest: dict[str, str], digest: str) -> Path:
        """Copy files into staging, check them, then rename into ``objects/<digest>`` atomically."""
        final = self.objects / digest
        if final.is_dir():
            return final
        tmp = self.staging / f"{digest}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            copy_tree_synced(files, tmp, manifest)
            copied = manifest_of(tmp)
            if copied != manifest:
                raise RegistryError(
                    f"files under {str(files)!r} changed while being logged (digest mismatch)"
                )
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # not "another writer stored the same content first"
                    raise
            fsync_dir(self.objects)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def log_artifact(
        self,
        name: str,
        type: str,
        files: Path,
        *,
        run: RunInfo,
        metadata: dict[str, Any] | None = None,
        aliases: Sequence[str] = (),
        uses: Sequence[str] = (),
    ) -> ArtifactVersion:
        """Log the files under directory ``files`` as a version of ``name``; dedup by digest."""
        validate_name(name)
        wanted_aliases = [a for a in dict.fromkeys(aliases) if a != "latest"]
        for alias in wanted_aliases:
            validate_alias(name, alias)
        metadata_json = to_json(metadata or {}, f"metadata for {name!r}")
        config_json = to_json(dict(run.config), f"run config for {name!r}")
        run_id = run.run_id or uuid.uuid4().hex
        consumed = [self.get(ref).ref for ref in uses]
        manifest = manifest_of(Path(files))
        digest = manifest_digest(manifest)
        self._store_content(Path(files), manifest, digest)
        actor = f"run:{run_id}"
        with self._write() as conn:
            existing_type = conn.execute(
                "SELECT type FROM versions WHERE name = ? LIMIT 1", (name,)
            ).fetchone()
            if existing_type is not None and existing_type["type"] != type:
                raise RegistryError(
                    f"cannot log {name!r} as type {type!r}: it already has type {existing_type['type']!r}"
                )
            row = conn.execute(
                "SELECT * FROM versions WHERE name = ? AND digest = ?", (name, digest)
            ).fetchone()
            if row is None:
                idx = conn.execute(
                    "SELECT COALESCE(MAX(idx) + 1, 0) FROM versions WHERE name = ?", (name,)
                ).fetchone()[0]
                conn.execute(
                    "INSERT OR IGNORE INTO runs (run_id, job_type, run_group, config, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, run.job_type, run.group, config_json, utc_now()),
                )
                conn.execute(
                    "INSERT INTO versions (name, idx, type, digest, manifest, metadata, created_at, "
                    "producer_run, consumed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        idx,
                        type,
                        digest,
                        json.dumps(manifest, sort_keys=True),
                        metadata_json,
                        utc_now(),
                        run_id,
                        json.dumps(consumed),
                    ),
                )
                row = self._row(conn, f"{name}:v{idx}")
            for alias in wanted_aliases:
                self._move_alias(conn, name, alias, row["idx"], actor, "logged")
            return self._version(conn, row)

    def set_alias(self, ref: str, alias: str, *, actor: str = "", reason: str = "") -> ArtifactVersion:
        """Point ``alias`` at ``ref`` (taking it off any other version) and record the move."""
        name, _tag = split_ref(ref)
        if alias == "latest":
            raise RegistryError(f"cannot set alias 'latest' on {ref}: it always follows the newest version")
        validate_alias(name, alias)
        with self._write() as conn:
            row = self._row(conn, ref)
            self._move_alias(conn, name, alias, row["idx"], actor or default_actor(), reason)
            return self._version(conn, row)

    def update_metadata(self, ref: str, patch: dict[str, Any]) -> ArtifactVersion:
        """Merge ``patch`` into a version's metadata (files and digest stay immutable)."""
        with self._write() as conn:
            row = self._row(conn, ref)
            merged = {**json.loads(row["metadata"]), **patch}
            conn.execute(
                "UPDATE versions SET metadata = ? WHERE name = ? AND idx = ?",
                (to_json(merged, f"metadata for {ref}"), row["name"], row["idx"]),
            )
            return self._version(conn, self._row(conn, f"{row['name']}:v{row['idx']}"))

    # -- reading -------------------------------------------------------------------------------

    def get(self, ref: str) -> ArtifactVersion:
        """Resolve ``name:vN`` / ``name:alias`` / ``name`` (latest); raise ArtifactNotFound."""
        with self._read() as conn:
            return self._version(conn, self._row(conn, ref))

    def versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first (empty list when the name is unknown)."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM versions WHERE name = ? ORDER BY idx", (name,)).fetchall()
            return [self._version(conn, row) for row in rows]

    def names(self) -> list[str]:
        """Every artifact name in the catalogue (an extra, handy for listings)."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def run_info(self, run_id: str) -> RunInfo | None:
        """The recorded run that produced versions, or None when unknown."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return RunInfo(
            job_type=row["job_type"], group=row["run_group"], config=json.loads(row["config"]), run_id=row["run_id"]
        )

    def _stored_dir(self, ref: str) -> tuple[ArtifactVersion, Path, dict[str, str]]:
        """The version, its content directory and its manifest; errors when content is missing."""
        with self._read() as conn:
            row = self._row(conn, ref)
            version = self._version(conn, row)
            manifest = json.loads(row["manifest"])
        stored = self.objects / version.digest
        if not stored.is_dir():
            raise RegistryError(f"content of {version.ref} is missing from {stored}")
        return version, stored, manifest

    def download(self, ref: str, root: Path | None = None) -> Path:
        """Materialise a version's files in a directory and return it (cached, never half-written).

        Without ``root`` the stored directory itself is returned: treat it as read-only.
        """
        version, stored, manifest = self._stored_dir(ref)
        if root is None:
            return stored
        root = Path(root).expanduser().resolve()
        if root.is_dir() and any(root.iterdir()):
            if manifest_of(root) == manifest:
                return root
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex}"
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            copy_tree_synced(stored, tmp, manifest)
            if root.exists():
                os.rename(root, old)
            os.rename(tmp, root)
            fsync_dir(root.parent)
        except OSError as exc:
            raise RegistryError(f"cannot download {version.ref} into {root}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return root

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` within ``name``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM alias_moves WHERE name = ? AND alias = ? ORDER BY seq", (name, alias)
            ).fetchall()
        return [
            AliasMove(
                name=row["name"],
                alias=row["alias"],
                from_version=row["from_version"],
                to_version=row["to_version"],
                at=row["at"],
                actor=row["actor"],
                reason=row["reason"],
            )
            for row in rows
        ]

    def lineage(self, ref: str) -> dict[str, Any]:
        """The upstream graph of a version: ``{"root": ref, "nodes": {ref: {...}}, "edges": [[src, dst]]}``."""
        return build_lineage(self.get, ref)

    def web_url(self, ref: str) -> str | None:
        """No web page for the local backend (the ref is still checked)."""
        self.get(ref)
        return None

    def clean_staging(self, older_than_s: float = 3600.0) -> int:
        """Remove staging leftovers of crashed writers older than ``older_than_s``; return how many."""
        removed = 0
        cutoff = time.time() - older_than_s
        for entry in self.staging.iterdir():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

