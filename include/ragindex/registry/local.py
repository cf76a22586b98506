"""The embedded default registry: a folder holding an SQLite catalogue and content-addressed files.

Layout under the registry folder::

    catalog.sqlite          the catalogue (WAL mode); the only source of truth for what exists
    blobs/ab/<sha256>       every distinct file once, read-only; a version is its manifest (path -> blob)
    views/<digest>/...      a version's files as a folder, hard links to the blobs, made on first read
    .staging/<uuid>/        copies in progress; never read, safe to delete when no writer runs

Storage grows with what changed: a weekly raw version of a large corpus in which 2 % of the files changed
adds those 2 % (plus its manifest row), as W&B and DVC store each distinct file once.

A version becomes visible only when its catalogue row is committed, and that happens after its
files were copied, fsynced and renamed into ``blobs/``; a crash at any point leaves either no
version or a complete one (and at worst blobs no version uses yet). Writers serialise through
``BEGIN IMMEDIATE`` so that concurrent processes get distinct version numbers and alias moves are never
lost. Registries written before content addressing (``objects/<digest>/`` folders, schema 1 and 2) are
migrated once, on open: each version's files move into ``blobs/`` and its row then names them, one
version at a time, so an interrupted migration resumes; open it while no task reads from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from ragindex.atomic import link_or_copy
from ragindex.errors import ArtifactNotFound, RegistryError, RegistryUnavailable

from .base import RegistryBase, move_conflict, refuse_type_change
from .protocol import AliasMove, ArtifactVersion, Decision, LogRequest, RunInfo, split_ref
from .rules import LATEST, VERSION_TAG, fill_atomically, to_json, utc_now

CATALOG = "catalog.sqlite"
GOVERNANCE_LOCK = "governance.lock"  # held by promotions and rollbacks (RegistryBase.governance_lock)
OBJECTS = "objects"  # the layout before content addressing, migrated on open
BLOBS = "blobs"
VIEWS = "views"
STAGING = ".staging"
BUSY_TIMEOUT_S = 60.0
SCHEMA_VERSION = 3
_BLOCK = 1 << 20
_WATCH_LOCK = threading.Lock()  # alias_token's kept connections, shared by threads

# The one definition of alias_moves: the schema creates it, and the 1 -> 2 migration re-creates it.
_ALIAS_MOVES = """alias_moves (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    alias        TEXT NOT NULL,
    from_version TEXT,
    to_version   TEXT,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL
)"""

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
    blobs        TEXT,
    PRIMARY KEY (name, idx),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS aliases (
    name  TEXT NOT NULL,
    alias TEXT NOT NULL,
    idx   INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS {alias_moves};
CREATE INDEX IF NOT EXISTS alias_moves_by_alias ON alias_moves (name, alias, seq);
CREATE TABLE IF NOT EXISTS decisions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    record       TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_name ON decisions (name, seq);
""".format(alias_moves=_ALIAS_MOVES)

# Schema 1 -> 2: alias_moves.to_version may be NULL (an alias taken off); the decisions table is new.
_MIGRATE_1_TO_2 = """
ALTER TABLE alias_moves RENAME TO alias_moves_v1;
CREATE TABLE {alias_moves};
INSERT INTO alias_moves SELECT * FROM alias_moves_v1;
DROP TABLE alias_moves_v1;
""".format(alias_moves=_ALIAS_MOVES)
# Schema 2 -> 3: a version names its files' blobs (NULL: still in objects/<digest>, until migrated).
_MIGRATE_2_TO_3 = "ALTER TABLE versions ADD COLUMN blobs TEXT"


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


def file_hashes(src: Path, out: BinaryIO | None = None) -> tuple[str, str]:
    """(sha256 hex, W&B's base64 MD5) of a file's bytes, read once (enough to find a content already stored);
    written on to ``out`` when given."""
    import base64

    sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 - md5 is W&B's content digest, not security
    with open(src, "rb") as fin:
        for block in iter(lambda: fin.read(_BLOCK), b""):
            sha.update(block)
            md5.update(block)
            if out is not None:
                out.write(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode("ascii")


def copy_hashing(src: Path, dst: Path) -> tuple[str, str]:
    """Copy one file, fsync it, and return (sha256 hex, W&B's base64 MD5) of the bytes copied."""
    with open(dst, "wb") as fout:
        hashes = file_hashes(src, fout)
        fout.flush()
        os.fsync(fout.fileno())
    return hashes


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class LocalRegistry(RegistryBase):
    """The ``Registry`` protocol over a folder: SQLite catalogue plus content-addressed files."""

    def __init__(self, root: Path | str, *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = f"file://{self.root}"
        self.objects = self.root / OBJECTS
        self.blobs = self.root / BLOBS
        self.views = self.root / VIEWS
        self.staging = self.root / STAGING
        if not create and not (self.root / CATALOG).is_file():
            raise RegistryError(f"no registry at {self.uri} (no {CATALOG}): check the path, or create it by "
                                "ingesting into it (rag_ingest, `ragindex ingest`)")
        try:
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry at {self.uri}: {exc}") from exc
        try:
            self._init_schema()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open catalogue of {self.uri}: {exc}") from exc
        if self.objects.is_dir():
            self._migrate_objects()

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
    def _catalogue_errors(self) -> Iterator[None]:
        """A catalogue that cannot be read or written (corrupt, locked for too long) is a registry error
        naming the registry, never a bare sqlite3 exception."""
        try:
            yield
        except sqlite3.Error as exc:
            kind = RegistryUnavailable if _locked(exc) else RegistryError
            raise kind(f"catalogue {self.root / CATALOG} of {self.uri}: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection whose reads see one consistent snapshot."""
        with self._catalogue_errors():
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            finally:
                conn.close()

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: writers queue here, all-or-nothing commit."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own, in one write transaction."""
        with self._catalogue_errors():
            conn = self._connect()
            try:
                with self._transaction(conn):
                    yield conn
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
            with self._transaction(conn):
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found > SCHEMA_VERSION:
                    raise RegistryError(f"catalogue of {self.uri} has schema {found}, newer than this ragindex "
                                        f"understands ({SCHEMA_VERSION}): upgrade ragindex")
                if found == 1:
                    for statement in filter(str.strip, _MIGRATE_1_TO_2.split(";")):
                        conn.execute(statement)
                if 1 <= found <= 2:
                    conn.execute(_MIGRATE_2_TO_3)
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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
        if held == idx or (idx is None and held != only_from):
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

    def _blob(self, sha: str) -> Path:
        return self.blobs / sha[:2] / sha

    def _store_content(self, files: Path, manifest: dict[str, str]) -> dict[str, str]:
        """Hash every file; copy into staging only the contents ``blobs/`` lacks (so a corpus with 2 % changed
        writes and fsyncs 2 % of it), check each is what the manifest says, then rename them into ``blobs/``.
        Returns path -> blob."""
        tmp = self.staging / uuid.uuid4().hex
        tmp.mkdir(parents=True)

        def check(rel: str, md5: str) -> None:
            if md5 != manifest[rel]:
                raise RegistryError(f"files under {str(files)!r} changed while being logged ({rel})")

        try:
            blobs: dict[str, str] = {}
            staged: dict[str, Path] = {}  # sha -> staged copy: content twice in this version is copied once
            for i, rel in enumerate(sorted(manifest)):
                sha, md5 = file_hashes(files / rel)
                check(rel, md5)
                # blobs are never removed: one already there is this content
                if sha not in staged and not self._blob(sha).is_file():
                    sha, md5 = copy_hashing(files / rel, tmp / str(i))
                    check(rel, md5)
                    staged[sha] = tmp / str(i)
                blobs[rel] = sha
            for sha, path in staged.items():
                final = self._blob(sha)
                if final.is_file():  # stored meanwhile by another writer
                    continue
                final.parent.mkdir(exist_ok=True)
                os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                os.replace(path, final)  # another writer storing the same content gives the same bytes
                fsync_dir(final.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return blobs

    def _log(self, request: LogRequest) -> ArtifactVersion:
        run = request.run
        run_id = run.run_id or uuid.uuid4().hex
        config_json = to_json(dict(run.config), f"run config for {request.name!r}")
        with self._read() as conn:
            stored = conn.execute("SELECT blobs FROM versions WHERE name = ? AND digest = ?",
                                  (request.name, request.digest)).fetchone()
        blobs = None if stored is not None and stored["blobs"] else self._store_content(request.files, request.manifest)
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
                    "producer_run, consumed, blobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request.name, idx, request.type, request.digest, json.dumps(request.manifest, sort_keys=True),
                     to_json(request.metadata, f"metadata for {request.name!r}"), utc_now(), run_id,
                     json.dumps(list(request.consumed)), json.dumps(blobs, sort_keys=True)))
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

    def _blob_map(self, version: ArtifactVersion) -> dict[str, str]:
        """path -> blob of a version's files; an error naming the version when any blob is missing."""
        with self._read() as conn:
            row = self._row(conn, version.name, version.version)
        if not row["blobs"]:
            raise RegistryError(f"{version.ref} in {self.uri} is in the old layout and was not migrated")
        blobs = json.loads(row["blobs"])
        missing = [rel for rel, sha in blobs.items() if not self._blob(sha).is_file()]
        if missing:
            raise RegistryError(f"content of {version.ref} is missing from {self.blobs} ({missing[:3]})")
        return blobs

    def _stored_dir(self, version: ArtifactVersion) -> Path:
        """The version as a folder (hard links to its blobs), made once: treat it as read-only. A view is never
        replaced once there, so a reader of it never sees it move."""
        view = self.views / version.digest
        if view.is_dir():
            return view
        blobs = self._blob_map(version)

        def link(tmp: Path) -> None:
            for rel, sha in blobs.items():
                link_or_copy(self._blob(sha), tmp / rel)

        return fill_atomically(view, link, version.ref, keep_existing=True)  # no files: an empty folder

    def _fill(self, version: ArtifactVersion, into: Path) -> None:
        """A caller's own copy of the files (copies, not links: the caller may change them)."""
        for rel, sha in self._blob_map(version).items():
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._blob(sha), target)
            os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)

    def _migrate_objects(self) -> None:
        """Move the files of old-layout versions (``objects/<digest>/``) into blobs, one version at a time."""
        with self._read() as conn:
            legacy = conn.execute("SELECT name, idx, digest, manifest FROM versions WHERE blobs IS NULL").fetchall()
        for row in legacy:
            folder = self.objects / row["digest"]
            if not folder.is_dir():
                raise RegistryError(f"{row['name']}:v{row['idx']} in {self.uri}: its files are missing ({folder})")
            blobs = self._store_content(folder, json.loads(row["manifest"]))
            with self._write() as conn:
                conn.execute("UPDATE versions SET blobs = ? WHERE name = ? AND idx = ? AND blobs IS NULL",
                             (json.dumps(blobs, sort_keys=True), row["name"], row["idx"]))
        with self._read() as conn:
            still = {r[0] for r in conn.execute("SELECT digest FROM versions WHERE blobs IS NULL")}
        for folder in self.objects.iterdir():
            if folder.name not in still:
                shutil.rmtree(folder, ignore_errors=True)
        if not still:
            shutil.rmtree(self.objects, ignore_errors=True)

    def storage_bytes(self) -> int:
        """Bytes the registry's contents take on disk (each distinct file once)."""
        return sum(p.stat().st_size for p in self.blobs.rglob("*") if p.is_file())

    def _record(self, decision: Decision) -> Decision:
        """The decision row and its alias moves in one transaction: both or neither survive a crash. The holders
        the decision expects are read in that transaction (writers queue on BEGIN IMMEDIATE), so the check and the
        moves are one compare-and-set."""
        with self._write() as conn:
            row = conn.execute("SELECT record FROM decisions WHERE key = ?", (decision.key,)).fetchone()
            if row is not None:  # another writer recorded it between our check and this transaction
                return Decision.from_json(json.loads(row["record"]))
            for where in decision.expect:
                name, alias = split_ref(where)
                held = conn.execute("SELECT idx FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
                held_version = None if held is None else f"v{held['idx']}"
                if held_version != decision.expect[where]:
                    raise move_conflict(decision, where, held_version, self.uri)
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

    def _governance_lock_path(self) -> Path:
        """In the registry's folder: every process (and machine) that writes this catalogue shares it."""
        return self.root / GOVERNANCE_LOCK

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

    def alias_token(self, name: str, alias: str) -> str:
        """The alias's holder and its last recorded move (every move changes it, even away and back), for a server
        that polls it twice a second: a connection kept for this (a new one reads the schema, about 1 ms) asks
        ``PRAGMA data_version`` (about 10 us) and queries again only when some connection committed since. A kept
        connection that fails is dropped and the check made once more on a new one, whose error is the answer."""
        catalogue = self.root / CATALOG

        def check(fresh: bool) -> str:
            try:
                found = os.stat(catalogue)
            except OSError as exc:
                raise RegistryError(f"catalogue {catalogue} of {self.uri} cannot be read: {exc}") from exc
            key = (os.getpid(), found.st_dev, found.st_ino)  # a fork or a replaced file needs a connection anew
            watch = getattr(self, "_alias_watch", None)
            if fresh or watch is None or watch["key"] != key:
                if watch is not None and watch["key"][0] == key[0]:
                    watch["conn"].close()  # never one inherited over fork: SQLite forbids using it there
                self._alias_watch = None
                watch = self._alias_watch = {
                    "key": key, "data_version": None, "tokens": {},
                    "conn": sqlite3.connect(catalogue, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                            check_same_thread=False)}
            conn = watch["conn"]
            data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            if data_version != watch["data_version"]:
                watch["data_version"], watch["tokens"] = data_version, {}
            if (name, alias) not in watch["tokens"]:
                if alias == LATEST:  # follows the newest version, never recorded as a move
                    row = conn.execute("SELECT MAX(idx), NULL FROM versions WHERE name = ?", (name,)).fetchone()
                else:
                    row = conn.execute("SELECT (SELECT idx FROM aliases WHERE name = ?1 AND alias = ?2), "
                                       "(SELECT MAX(seq) FROM alias_moves WHERE name = ?1 AND alias = ?2)",
                                       (name, alias)).fetchone()
                watch["tokens"][(name, alias)] = f"{'absent' if row[0] is None else f'v{row[0]}'}#{row[1] or 0}"
            return watch["tokens"][(name, alias)]

        with _WATCH_LOCK, self._catalogue_errors():
            try:
                return check(fresh=False)
            except sqlite3.Error:
                return check(fresh=True)

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
