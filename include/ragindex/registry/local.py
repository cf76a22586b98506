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

import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from .base import RegistryBase, refuse_type_change
from .digest import manifest_of
from .protocol import (
    AliasMove,
    ArtifactNotFound,
    ArtifactVersion,
    Decision,
    LogRequest,
    RegistryError,
    RunInfo,
    split_ref,
)
from .rules import LATEST, VERSION_TAG, to_json, utc_now

CATALOG = "catalog.sqlite"
OBJECTS = "objects"
STAGING = ".staging"
BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 2

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
    to_version   TEXT,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_moves_by_alias ON alias_moves (name, alias, seq);
CREATE TABLE IF NOT EXISTS decisions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    record       TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_name ON decisions (name, seq);
"""

# Schema 1 -> 2: alias_moves.to_version may be NULL (an alias taken off); the decisions table is new.
_MIGRATE_1_TO_2 = """
ALTER TABLE alias_moves RENAME TO alias_moves_v1;
CREATE TABLE alias_moves (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    alias        TEXT NOT NULL,
    from_version TEXT,
    to_version   TEXT,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL
);
INSERT INTO alias_moves SELECT * FROM alias_moves_v1;
DROP TABLE alias_moves_v1;
"""


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


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class LocalRegistry(RegistryBase):
    """The ``Registry`` protocol over a folder: SQLite catalogue plus content-addressed files."""

    def __init__(self, root: Path | str, *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        self.objects = self.root / OBJECTS
        self.staging = self.root / STAGING
        if not create and not (self.root / CATALOG).is_file():
            raise RegistryError(f"no registry at {self.uri} (no {CATALOG}): check the path, or create it by "
                                "ingesting into it (rag_ingest, `ragindex ingest`)")
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry at {self.uri}: {exc}") from exc
        try:
            self._init_schema()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open catalogue of {self.uri}: {exc}") from exc

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

    @retry(retry=retry_if_exception(_locked), wait=wait_fixed(0.05), stop=stop_after_delay(BUSY_TIMEOUT_S),
           reraise=True)
    def _init_schema(self) -> None:
        """Create tables (migrating an older catalogue in the same transaction) and switch to WAL; retried
        because concurrent openers may collide."""
        conn = self._connect()
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found > SCHEMA_VERSION:
                    raise RegistryError(f"catalogue of {self.uri} has schema {found}, newer than this ragindex "
                                        f"understands ({SCHEMA_VERSION}): upgrade ragindex")
                if found == 1:
                    for statement in filter(str.strip, _MIGRATE_1_TO_2.split(";")):
                        conn.execute(statement)
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- row mapping ---------------------------------------------------------------------------

    def _aliases_of(self, conn: sqlite3.Connection, name: str, idx: int) -> tuple[str, ...]:
        """The aliases a version holds, ``latest`` included when it is the newest."""
        rows = conn.execute(
            "SELECT alias FROM aliases WHERE name = ? AND idx = ? ORDER BY alias", (name, idx)
        ).fetchall()
        aliases = [row["alias"] for row in rows]
        newest = conn.execute("SELECT MAX(idx) FROM versions WHERE name = ?", (name,)).fetchone()[0]
        if newest == idx:
            aliases.insert(0, LATEST)
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

    def _row(self, conn: sqlite3.Connection, name: str, tag: str) -> sqlite3.Row:
        """Find the ``versions`` row of ``name:tag``, or raise ArtifactNotFound naming the ref."""
        match = VERSION_TAG.match(tag)
        if match:
            row = conn.execute(
                "SELECT * FROM versions WHERE name = ? AND idx = ?", (name, int(match.group(1)))
            ).fetchone()
        elif tag == LATEST:
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

    def _move_alias(self, conn: sqlite3.Connection, name: str, alias: str, idx: int | None, actor: str,
                    reason: str, *, only_from: int | None = None) -> AliasMove | None:
        """Point ``alias`` at version ``idx`` (None: take it off ``only_from``) inside the caller's transaction
        and log the move; None when nothing moved."""
        current = conn.execute(
            "SELECT idx FROM aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchone()
        held = None if current is None else current["idx"]
        if held == idx or (idx is None and (held is None or held != only_from)):
            return None
        if idx is None:
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        else:
            conn.execute(
                "INSERT INTO aliases (name, alias, idx) VALUES (?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET idx = excluded.idx",
                (name, alias, idx),
            )
        move = AliasMove(name, alias, None if held is None else f"v{held}", None if idx is None else f"v{idx}",
                         utc_now(), actor, reason)
        conn.execute(
            "INSERT INTO alias_moves (name, alias, from_version, to_version, at, actor, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (move.name, move.alias, move.from_version, move.to_version, move.at, move.actor, move.reason),
        )
        return move

    # -- storage primitives --------------------------------------------------------------------------

    def _store_content(self, files: Path, manifest: dict[str, str], digest: str) -> Path:
        """Copy files into staging, check them, then rename into ``objects/<digest>`` atomically."""
        final = self.objects / digest
        if final.is_dir():
            return final
        tmp = self.staging / f"{digest}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            copy_tree_synced(files, tmp, manifest)
            if manifest_of(tmp) != manifest:
                raise RegistryError(f"files under {str(files)!r} changed while being logged (digest mismatch)")
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

    def _log(self, request: LogRequest) -> ArtifactVersion:
        run = request.run
        run_id = run.run_id or uuid.uuid4().hex
        config_json = to_json(dict(run.config), f"run config for {request.name!r}")
        self._store_content(request.files, request.manifest, request.digest)
        with self._write() as conn:
            existing = conn.execute("SELECT type FROM versions WHERE name = ? LIMIT 1", (request.name,)).fetchone()
            refuse_type_change(request.name, request.type, existing["type"] if existing else None)
            row = conn.execute("SELECT * FROM versions WHERE name = ? AND digest = ?",
                               (request.name, request.digest)).fetchone()
            if row is None:
                idx = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM versions WHERE name = ?",
                                   (request.name,)).fetchone()[0]
                conn.execute(
                    "INSERT OR IGNORE INTO runs (run_id, job_type, run_group, config, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (run_id, run.job_type, run.group, config_json, utc_now()))
                conn.execute(
                    "INSERT INTO versions (name, idx, type, digest, manifest, metadata, created_at, "
                    "producer_run, consumed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request.name, idx, request.type, request.digest, json.dumps(request.manifest, sort_keys=True),
                     to_json(request.metadata, f"metadata for {request.name!r}"), utc_now(), run_id,
                     json.dumps(list(request.consumed))))
                row = self._row(conn, request.name, f"v{idx}")
            for alias in request.aliases:
                self._move_alias(conn, request.name, alias, row["idx"], f"run:{run_id}", "logged")
            return self._version(conn, row)

    def _set_alias(self, version: ArtifactVersion, alias: str, actor: str, reason: str) -> ArtifactVersion:
        with self._write() as conn:
            row = self._row(conn, version.name, version.version)
            self._move_alias(conn, version.name, alias, row["idx"], actor, reason)
            return self._version(conn, row)

    def _update_metadata(self, version: ArtifactVersion, patch: dict[str, Any]) -> ArtifactVersion:
        with self._write() as conn:
            row = self._row(conn, version.name, version.version)
            merged = {**json.loads(row["metadata"]), **patch}
            conn.execute("UPDATE versions SET metadata = ? WHERE name = ? AND idx = ?",
                         (to_json(merged, f"metadata for {version.ref}"), row["name"], row["idx"]))
            return self._version(conn, self._row(conn, version.name, version.version))

    def _get(self, name: str, tag: str) -> ArtifactVersion:
        with self._read() as conn:
            return self._version(conn, self._row(conn, name, tag))

    def _versions(self, name: str) -> list[ArtifactVersion]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM versions WHERE name = ? ORDER BY idx", (name,)).fetchall()
            return [self._version(conn, row) for row in rows]

    def _manifest(self, version: ArtifactVersion) -> dict[str, str]:
        with self._read() as conn:
            return json.loads(self._row(conn, version.name, version.version)["manifest"])

    def _stored_dir(self, version: ArtifactVersion) -> Path:
        stored = self.objects / version.digest
        if not stored.is_dir():
            raise RegistryError(f"content of {version.ref} is missing from {stored}")
        return stored

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        copy_tree_synced(self._stored_dir(version), into, self._manifest(version))

    def _record(self, decision: Decision) -> Decision:
        """The decision row and its alias moves in one transaction: both or neither survive a crash."""
        with self._write() as conn:
            row = conn.execute("SELECT record FROM decisions WHERE key = ?", (decision.key,)).fetchone()
            if row is not None:  # another writer recorded it between our check and this transaction
                return Decision.from_json(json.loads(row["record"]))
            at = utc_now()
            moves = []
            for change in decision.changes:
                name, tag = split_ref(change.ref)
                idx = self._row(conn, name, tag)["idx"]
                move = self._move_alias(conn, name, change.alias, None if change.remove else idx, decision.actor,
                                        decision.move_reason, only_from=idx)
                if move is not None:
                    moves.append(move)
            cursor = conn.execute("INSERT INTO decisions (key, name, record, at) VALUES (?, ?, '{}', ?)",
                                  (decision.key, decision.name, at))
            stored = decision.recorded(at=at, record_id=str(cursor.lastrowid), moves=moves)
            conn.execute("UPDATE decisions SET record = ? WHERE seq = ?",
                         (to_json(stored.to_json(), f"the {decision.kind} decision on {decision.ref}"),
                          cursor.lastrowid))
            return stored

    def _records(self, name: str) -> list[Decision]:
        with self._read() as conn:
            rows = conn.execute("SELECT record FROM decisions WHERE name = ? ORDER BY seq", (name,)).fetchall()
        return [Decision.from_json(json.loads(r["record"])) for r in rows]

    def _find_record(self, key: str) -> Decision | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM decisions WHERE key = ?", (key,)).fetchone()
        return None if row is None else Decision.from_json(json.loads(row["record"]))

    # -- extras of this backend ----------------------------------------------------------------------

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
        return RunInfo(job_type=row["job_type"], group=row["run_group"], config=json.loads(row["config"]),
                       run_id=row["run_id"])

    def producer(self, version: ArtifactVersion) -> RunInfo | None:
        """The recorded run that logged the version."""
        return self.run_info(version.producer_run) if version.producer_run else None

    def alias_history(self, name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` within ``name``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM alias_moves WHERE name = ? AND alias = ? ORDER BY seq", (name, alias)
            ).fetchall()
        return [AliasMove(name=row["name"], alias=row["alias"], from_version=row["from_version"],
                          to_version=row["to_version"], at=row["at"], actor=row["actor"], reason=row["reason"])
                for row in rows]

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
