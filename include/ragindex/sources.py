"""Snapshot a corpus (local folder or any fsspec URL) into a point-in-time copy plus a manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ragindex.errors import SourceError, SourceUnavailable
from ragindex.parsing import DEFAULT_PDF_MEMORY_MB, size_problem
from ragindex.settings import CorpusLimits, DocumentLimits

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 2  # 1 also held source, as_of and modification times
FILES_DIR = "files"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestEntry:
    """One document of the corpus as it was when the snapshot was taken."""

    path: str
    size: int
    modified: str
    sha256: str


@dataclass
class Snapshot:
    """The documents kept, the ones refused (with why), and a digest of the corpus contents."""

    source: str
    as_of: str | None
    entries: list[ManifestEntry]
    refused: list[dict[str, str]] = field(default_factory=list)
    root: Path | None = None

    @property
    def content_digest(self) -> str:
        """Identity of the corpus by (path, sha256) alone, so a re-sync that only touches times is no change."""
        h = hashlib.sha256()
        for e in sorted(self.entries, key=lambda e: e.path):
            h.update(f"{e.path}\0{e.sha256}\n".encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The manifest file's content: what the documents are (paths, sizes, sha256), never when or where
        they were read, so the same documents give the same bytes, hence the same raw version, on any date.
        Where and as of when is the version's metadata (``snapshot_facts``)."""
        return {
            "format": MANIFEST_FORMAT,
            "content_digest": self.content_digest,
            "documents": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.entries],
            "refused": self.refused,
        }

    def snapshot_facts(self) -> dict[str, Any]:
        """Where and as of when the snapshot was taken, and the documents' time range (for metadata)."""
        times = sorted(e.modified for e in self.entries)
        return {"source": self.source, "as_of": self.as_of, "documents": len(self.entries),
                "bytes": sum(e.size for e in self.entries), "refused": len(self.refused),
                "oldest_document": times[0] if times else None, "newest_document": times[-1] if times else None}


def file_sha256(path: Path) -> str:
    """Hash in blocks so large documents never sit in memory whole."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """Accept an ISO date/time (naive means UTC) so backfills can pass the data interval's end."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise SourceError(f"as_of={value!r}: not an ISO date or date-time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _walk_local(root: Path, refused: list[dict[str, str]]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield regular files under root; links that resolve outside it are refused, never followed out."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            p = here / d
            if p.is_symlink():
                dirnames.remove(d)
                target = p.resolve()
                rel = p.relative_to(root).as_posix()
                if not target.is_relative_to(real_root):
                    refused.append({"path": rel, "reason": f"symlink resolves outside the source root ({target})"})
                else:
                    refused.append({"path": rel, "reason": "symlinked folder inside the source (not followed)"})
        dirnames.sort()
        for name in sorted(filenames):
            p = here / name
            rel = p.relative_to(root).as_posix()
            if _is_hidden(rel):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    refused.append({"path": rel, "reason": f"symlink resolves outside the source root ({target})"})
                    continue
                if not target.is_file():
                    refused.append({"path": rel, "reason": "broken symlink"})
                    continue
            if not p.is_file():
                continue
            yield rel, p, p.stat()


def is_remote(location: str) -> bool:
    """Whether a source or prompts location is an object-storage URL (not a folder, nor ``file://``)."""
    return "://" in location and not location.startswith("file://")


def _local_root(source: str) -> Path | None:
    if source.startswith("file://"):
        return Path(source[len("file://"):])
    if "://" not in source:
        return Path(source)
    return None


class _Budget:
    """Counts documents and bytes as a snapshot takes them; past a corpus limit it stops the walk at once. A file
    too large to be a document is refused here, unread (it counts as a document, not its bytes)."""

    def __init__(self, source: str, limits: CorpusLimits, documents: DocumentLimits | None = None,
                 parse_memory_mb: int = DEFAULT_PDF_MEMORY_MB) -> None:
        self.source, self.limits, self.documents, self.bytes = source, limits, 0, 0
        self.document_limits, self.parse_memory_mb = documents or DocumentLimits(), parse_memory_mb

    def refusal(self, rel: str, size: int) -> dict[str, str] | None:
        """The refusal of a file that is too large to be a document (counted, never read), else None."""
        why = size_problem(rel, size, self.document_limits, self.parse_memory_mb)
        if why is None:
            return None
        self.take(0)
        log.warning("refused %s unread: %s", rel, why)
        return {"path": rel, "reason": why}

    def take(self, size: int) -> None:
        self.documents += 1
        self.bytes += size
        if self.documents > self.limits.max_documents:
            raise SourceError(f"source {self.source!r}: more than max_documents={self.limits.max_documents:,} "
                              "documents: is the source the folder you meant?")
        if self.bytes > self.limits.max_bytes:
            raise SourceError(f"source {self.source!r}: more than max_corpus_bytes={self.limits.max_bytes:,} "
                              f"bytes after {self.documents:,} documents: is the source the folder you meant?")


def snapshot(source: str, dest: Path, as_of: str | datetime | None = None,
             limits: CorpusLimits | None = None, documents: DocumentLimits | None = None,
             parse_memory_mb: int = DEFAULT_PDF_MEMORY_MB) -> Snapshot:
    """Copy the corpus at ``source`` (as it was at ``as_of``) into ``dest/files`` and write the manifest; stop
    with a clear error as soon as the corpus passes a limit of ``limits``; refuse, unread, a file too large for
    ``documents`` (or, a PDF, for the parser's memory limit)."""
    cutoff = parse_as_of(as_of)
    budget = _Budget(str(source), limits or CorpusLimits(), documents, parse_memory_mb)
    files_dir = dest / FILES_DIR
    if dest.exists():
        shutil.rmtree(dest)
    files_dir.mkdir(parents=True)
    refused: list[dict[str, str]] = []
    entries: list[ManifestEntry] = []
    local = _local_root(str(source))
    if local is not None:
        if not local.exists():
            raise SourceError(f"source {source!r}: no such folder")
        if not local.is_dir():
            raise SourceError(f"source {source!r}: not a folder")
        items = ((rel, p, st.st_size, _utc(st.st_mtime)) for rel, p, st in _walk_local(local, refused))
        for rel, p, size, modified in items:
            if cutoff is not None and modified > cutoff:
                continue
            if (refusal := budget.refusal(rel, size)) is not None:
                refused.append(refusal)
                continue
            budget.take(size)
            target = files_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            entries.append(ManifestEntry(rel, size, modified.isoformat(), file_sha256(target)))
    else:
        entries = _snapshot_remote(str(source), files_dir, cutoff, refused, budget)
    snap = Snapshot(str(source), cutoff.isoformat() if cutoff else None, entries, refused, dest)
    if not entries:
        when = f" as of {snap.as_of}" if snap.as_of else ""
        raise SourceError(f"source {source!r}: no documents found{when}")
    (dest / MANIFEST_NAME).write_text(json.dumps(snap.to_json(), indent=1, sort_keys=True))
    return snap


@dataclass(frozen=True)
class RemoteSource:
    """An object-storage URL taken apart: ``PROTOCOL://[CONN_ID@]BUCKET/PREFIX`` (``CONN_ID@`` names an
    Airflow connection, the way ``ObjectStoragePath`` reads it; the URL itself never holds a secret)."""

    url: str
    protocol: str
    conn_id: str | None
    path: str
    what: str = "source"  # what the URL is, for messages: the corpus source, or a Param such as prompts

    @property
    def via(self) -> str:
        """' through connection X' for messages, so a credentials problem names where to fix it."""
        return f" through connection {self.conn_id!r}" if self.conn_id else ""


def redact(source: str) -> str:
    """A source URL fit to print: a ``user:password@`` part is shown as ``user:***@``."""
    scheme, sep, rest = str(source).partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return str(source)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{slash}{tail}"


def parse_remote(source: str, what: str = "source") -> RemoteSource:
    """Split a remote URL (``what`` names it in messages: the source, the prompts); credentials written into
    it are refused (they would end up in Params, logs and version metadata), and so is an empty connection id."""
    protocol, _, rest = source.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return RemoteSource(source, protocol, None, rest, what)
    if ":" in userinfo:
        raise SourceError(f"{what} {redact(source)!r}: credentials in the URL are refused (they would be "
                          f"recorded with every version); put them in a connection and write "
                          f"{protocol}://CONN_ID@{host}/...")
    if not userinfo or not host:
        raise SourceError(f"{what} {source!r}: expected {protocol}://CONN_ID@BUCKET/PREFIX")
    return RemoteSource(source, protocol, userinfo, f"{host}{slash}{tail}", what)


ConnectionOpener = Callable[[str, str], Any]
_connection_opener: ConnectionOpener | None = None


def set_connection_opener(opener: ConnectionOpener | None) -> None:
    """Say how ``CONN_ID@`` in a source URL becomes a filesystem: ``opener(protocol, conn_id)`` returns an
    fsspec filesystem or raises ``SourceError`` saying what is wrong with the connection (the URL is put in
    front of it here). The Airflow glue installs one; the core knows no Airflow."""
    global _connection_opener
    _connection_opener = opener


def _open_remote(remote: RemoteSource) -> tuple[Any, str]:
    """The filesystem and root path of a remote source: through its connection, or plain fsspec."""
    import fsspec

    if remote.conn_id:
        if _connection_opener is None:
            raise SourceError(f"{remote.what} {remote.url!r} names connection {remote.conn_id!r}, but connections "
                              "are resolved only inside Airflow; outside it use a plain URL "
                              f"({remote.protocol}://{remote.path}) with credentials from the environment")
        try:
            return _connection_opener(remote.protocol, remote.conn_id), remote.path.rstrip("/")
        except SourceError as exc:
            raise type(exc)(f"{remote.what} {remote.url!r}: {exc}") from None
    try:
        fs, root = fsspec.core.url_to_fs(remote.url)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"{remote.what} {remote.url!r}: cannot open ({exc})") from None
    return fs, root.rstrip("/")


# botocore, aiohttp and requests name "could not reach it" with classes of their own, not ConnectionError
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError", "ConnectionError",
                "ConnectTimeout", "ReadTimeout"}


def _unreachable(exc: BaseException) -> bool:
    """Whether a failure (or one it was raised from) says the storage did not answer, not that it refused."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        if any(cls.__name__ in _UNREACHABLE for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _storage_errors(remote: RemoteSource, doing: str) -> Iterator[None]:
    """What a storage client raised, as a ragindex error: unreachable → ``SourceUnavailable`` (retry);
    refused, missing or anything else → ``SourceError`` (retrying will not help), naming the connection."""
    try:
        yield
    except SourceError:
        raise
    except FileNotFoundError:
        raise SourceError(f"{remote.what} {remote.url!r}: no such location{remote.via} ({doing})") from None
    except PermissionError as exc:
        whose = f" of connection {remote.conn_id!r}" if remote.conn_id else ""
        raise SourceError(f"{remote.what} {remote.url!r}: access refused{remote.via} while {doing} ({exc}); check "
                          f"the credentials{whose}") from None
    except Exception as exc:  # noqa: BLE001 - every storage client has its own family; classified here
        if _unreachable(exc):
            raise SourceUnavailable(f"{remote.what} {remote.url!r}: storage did not answer{remote.via} while "
                                    f"{doing} ({type(exc).__name__}: {exc}); retry later") from None
        raise SourceError(f"{remote.what} {remote.url!r}: cannot read{remote.via} while {doing} "
                          f"({type(exc).__name__}: {exc})") from None


def _snapshot_remote(source: str, files_dir: Path, cutoff: datetime | None, refused: list[dict[str, str]],
                     budget: _Budget) -> list[ManifestEntry]:
    """Object storage through fsspec (s3://, gs://, memory://, ...): keys are relative to the URL's prefix.
    As of a date, a versioned S3 bucket gives the object versions that were current then (documents changed
    or deleted since included); elsewhere an object counts from its modification time on."""
    remote = parse_remote(source)
    fs, root = _open_remote(remote)
    with _storage_errors(remote, "listing"):
        fs.invalidate_cache()  # a filesystem kept by an earlier snapshot in this process must not list stale keys
        versions = _versions_as_of(fs, root, cutoff) if cutoff is not None else None
        listing = versions if versions is not None else fs.find(root, detail=True)
    entries = []
    for key in sorted(listing):
        info = listing[key]
        if info.get("type") != "file":
            continue
        rel = key[len(root):].lstrip("/") if key.startswith(root) else key
        if not rel or _is_hidden(rel):
            continue
        if ".." in rel.split("/") or rel.startswith("/"):
            refused.append({"path": rel, "reason": "key escapes the source prefix"})
            continue
        modified = _remote_mtime(info)
        if cutoff is not None and modified is not None and modified > cutoff:
            continue
        if (refusal := budget.refusal(rel, int(info.get("size") or 0))) is not None:
            refused.append(refusal)
            continue
        budget.take(int(info.get("size") or 0))
        target = files_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with _storage_errors(remote, f"reading {rel}"):
            if info.get("VersionId"):
                fs.get_file(key, str(target), version_id=info["VersionId"])
            else:
                fs.get_file(key, str(target))
        stamp = (modified or _utc(target.stat().st_mtime)).isoformat()
        entries.append(ManifestEntry(rel, target.stat().st_size, stamp, file_sha256(target)))
    return entries


def fetch_folder(url: str, dest: Path, what: str) -> list[str]:
    """Copy the objects under an object-storage URL into the empty folder ``dest`` (through the URL's
    connection when it names one), for a folder read as a whole, such as a prompt: hidden keys are left out
    as a snapshot leaves them out, a key escaping the prefix is refused, and ``what`` names the URL in errors."""
    remote = parse_remote(url, what)
    fs, root = _open_remote(remote)
    with _storage_errors(remote, "listing"):
        fs.invalidate_cache()
        listing = fs.find(root, detail=True)
    copied: list[str] = []
    for key in sorted(listing):
        if listing[key].get("type") != "file":
            continue
        rel = key[len(root):].lstrip("/") if key.startswith(root) else key
        if not rel or _is_hidden(rel):
            continue
        if ".." in rel.split("/") or rel.startswith("/"):
            raise SourceError(f"{what} {url!r}: key {rel!r} escapes the prefix")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with _storage_errors(remote, f"reading {rel}"):
            fs.get_file(key, str(target))
        copied.append(rel)
    if not copied:
        raise SourceError(f"{what} {url!r}: no objects under it{remote.via}")
    return copied


def _versions_as_of(fs: Any, root: str, cutoff: datetime) -> dict[str, dict[str, Any]] | None:
    """On a versioned S3 bucket, each key's version that was current at ``cutoff`` (a key whose newest
    change by then is a delete marker is absent); None where the store keeps no versions (or may not say)."""
    if "s3" not in _protocols(fs) or not hasattr(fs, "call_s3"):
        return None
    bucket, _, prefix = root.partition("/")
    try:
        status = fs.call_s3("get_bucket_versioning", Bucket=bucket).get("Status")
    except PermissionError:
        log.warning("s3://%s: may not read the bucket's versioning; as-of by modification time only", bucket)
        return None
    if status not in ("Enabled", "Suspended"):
        return None
    current: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
    while True:
        page = fs.call_s3("list_object_versions", **kwargs)
        # each list is newest first per key; a later one of equal time never replaces an earlier one
        changes = [dict(v, deleted=False) for v in page.get("Versions", [])]
        changes += [dict(m, deleted=True) for m in page.get("DeleteMarkers", [])]
        for change in changes:
            when = _aware(change["LastModified"])
            best = current.get(change["Key"])
            if when <= cutoff and (best is None or when > _aware(best["LastModified"])):
                current[change["Key"]] = change
        if not page.get("IsTruncated"):
            break
        kwargs["KeyMarker"] = page.get("NextKeyMarker")
        kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
    return {f"{bucket}/{key}": {"type": "file", "size": change.get("Size", 0),
                                "LastModified": change["LastModified"], "VersionId": change.get("VersionId")}
            for key, change in current.items() if not change["deleted"]}


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _remote_mtime(info: dict[str, Any]) -> datetime | None:
    """Object stores name the modification time differently; accept the common spellings."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return _utc(float(value))
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        try:
            return parse_as_of(str(value))
        except SourceError:
            continue
    return None


def load_manifest(snapshot_dir: Path) -> dict[str, Any]:
    """Read a snapshot's manifest (from a work dir or a downloaded raw-documents version)."""
    path = snapshot_dir / MANIFEST_NAME
    if not path.is_file():
        raise SourceError(f"{snapshot_dir}: no {MANIFEST_NAME} (not a ragindex snapshot)")
    return json.loads(path.read_text())
