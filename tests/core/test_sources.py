"""Snapshots: the manifest, as_of, links out of the corpus, hidden files, empty/missing sources, fsspec."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ragindex.errors import SourceError
from ragindex.sources import FILES_DIR, MANIFEST_NAME, load_manifest, snapshot

from .conftest import write_files


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp()


def test_manifest_records_relative_path_size_mtime_and_sha256(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {"a.txt": "alpha text", "sub/deeper/b.md": "# Bravo\n\nbody"})
    (corpus / "c.bin.txt").write_bytes(bytes(range(1, 200)))
    os.utime(corpus / "a.txt", (_ts("2023-03-04T05:06:07"), _ts("2023-03-04T05:06:07")))

    snap = snapshot(str(corpus), tmp_path / "snap")

    by_path = {e.path: e for e in snap.entries}
    assert set(by_path) == {"a.txt", "sub/deeper/b.md", "c.bin.txt"}
    for rel, entry in by_path.items():
        data = (corpus / rel).read_bytes()
        assert entry.size == len(data)
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        mtime = datetime.fromtimestamp((corpus / rel).stat().st_mtime, tz=timezone.utc)
        assert datetime.fromisoformat(entry.modified) == mtime
        assert (tmp_path / "snap" / FILES_DIR / rel).read_bytes() == data  # the copy is exact
    assert datetime.fromisoformat(by_path["a.txt"].modified) == datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone.utc)

    manifest = load_manifest(tmp_path / "snap")
    assert manifest == json.loads((tmp_path / "snap" / MANIFEST_NAME).read_text())
    assert {d["path"]: d["sha256"] for d in manifest["documents"]} == {p: e.sha256 for p, e in by_path.items()}
    assert manifest["content_digest"] == snap.content_digest
    assert snap.snapshot_facts()["source"] == str(corpus)  # where it came from is metadata, not content
    assert not {"source", "as_of"} & set(manifest) and not any("modified" in d for d in manifest["documents"])


def test_same_documents_give_the_same_manifest_bytes_whatever_the_folder_date_or_mtime(tmp_path: Path) -> None:
    files = {"a.txt": "alpha text", "sub/b.md": "# Bravo\n\nbody"}
    first = write_files(tmp_path / "first", files)
    second = write_files(tmp_path / "elsewhere" / "second", files)
    for rel in files:  # older copies, read as of another date
        os.utime(second / rel, (_ts("2020-01-01T00:00:00"), _ts("2020-01-01T00:00:00")))
    snapshot(str(first), tmp_path / "s1")
    snapshot(str(second), tmp_path / "s2", as_of="2025-06-01T00:00:00")
    assert (tmp_path / "s1" / MANIFEST_NAME).read_bytes() == (tmp_path / "s2" / MANIFEST_NAME).read_bytes()


def test_as_of_keeps_only_documents_modified_at_or_before_the_cutoff(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {"old.txt": "old", "exact.txt": "exact", "new.txt": "new"})
    for name, when in [("old.txt", "2021-06-01T00:00:00"), ("exact.txt", "2022-01-01T00:00:00"),
                       ("new.txt", "2023-06-01T00:00:00")]:
        os.utime(corpus / name, (_ts(when), _ts(when)))

    snap = snapshot(str(corpus), tmp_path / "snap", as_of="2022-01-01")
    assert sorted(e.path for e in snap.entries) == ["exact.txt", "old.txt"]
    assert not (tmp_path / "snap" / FILES_DIR / "new.txt").exists()
    assert datetime.fromisoformat(snap.as_of) == datetime(2022, 1, 1, tzinfo=timezone.utc)

    everything = snapshot(str(corpus), tmp_path / "snap2")
    assert sorted(e.path for e in everything.entries) == ["exact.txt", "new.txt", "old.txt"]

    with pytest.raises(SourceError, match="no documents found as of 2020"):
        snapshot(str(corpus), tmp_path / "snap3", as_of="2020-01-01T00:00:00Z")
    with pytest.raises(SourceError, match="not an ISO date"):
        snapshot(str(corpus), tmp_path / "snap4", as_of="last tuesday")


def test_symlinks_pointing_outside_the_corpus_are_refused_and_not_copied(tmp_path: Path) -> None:
    outside = write_files(tmp_path / "outside", {"secret.txt": "TOP SECRET PAYROLL", "dir/inner.txt": "also secret"})
    corpus = write_files(tmp_path / "corpus", {"ok.txt": "fine", "inside_target.txt": "target text"})
    (corpus / "leak.txt").symlink_to(outside / "secret.txt")
    (corpus / "leakdir").symlink_to(outside / "dir", target_is_directory=True)
    (corpus / "alias.txt").symlink_to(corpus / "inside_target.txt")  # stays inside: allowed

    snap = snapshot(str(corpus), tmp_path / "snap")

    kept = {e.path for e in snap.entries}
    assert kept == {"ok.txt", "inside_target.txt", "alias.txt"}
    refused = {r["path"]: r["reason"] for r in snap.refused}
    assert set(refused) == {"leak.txt", "leakdir"}
    assert all("outside" in reason for reason in refused.values())
    copied = [p.relative_to(tmp_path / "snap" / FILES_DIR).as_posix()
              for p in (tmp_path / "snap" / FILES_DIR).rglob("*") if p.is_file()]
    assert sorted(copied) == sorted(kept)
    all_copied_text = "".join((tmp_path / "snap" / FILES_DIR / p).read_text() for p in copied)
    assert "SECRET" not in all_copied_text and "secret" not in all_copied_text
    assert load_manifest(tmp_path / "snap")["refused"] == snap.refused


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {
        "visible.md": "shown", ".hidden.txt": "no", ".git/config": "no", "sub/.DS_Store": "no", ".cache/sub/x.txt": "no",
    })
    snap = snapshot(str(corpus), tmp_path / "snap")
    assert [e.path for e in snap.entries] == ["visible.md"]
    assert snap.refused == []

    only_hidden = write_files(tmp_path / "only_hidden", {".a.txt": "x", ".git/HEAD": "ref"})
    with pytest.raises(SourceError, match="no documents found"):
        snapshot(str(only_hidden), tmp_path / "snap2")


def test_missing_and_empty_sources_raise_source_error_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(SourceError) as exc:
        snapshot(str(missing), tmp_path / "snap")
    assert str(missing) in str(exc.value) and "no such folder" in str(exc.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError) as exc:
        snapshot(str(empty), tmp_path / "snap")
    assert str(empty) in str(exc.value) and "no documents found" in str(exc.value)

    a_file = write_files(tmp_path / "f", {"plain.txt": "x"}) / "plain.txt"
    with pytest.raises(SourceError, match="not a folder"):
        snapshot(str(a_file), tmp_path / "snap")

    with pytest.raises(SourceError, match="no such folder"):
        snapshot(f"file://{missing}", tmp_path / "snap")


def test_memory_fsspec_url_is_snapshotted_like_a_folder(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/corpus-{uuid.uuid4().hex}"
    files = {"a.txt": b"remote alpha", "sub/b.md": b"# remote bravo", ".hidden": b"skip me"}
    for rel, data in files.items():
        fs.pipe(f"{prefix}/{rel}", data)
    fs.pipe(f"{prefix}-sibling/c.txt", b"another prefix, not ours")
    try:
        snap = snapshot(f"memory://{prefix}", tmp_path / "snap")
        by_path = {e.path: e for e in snap.entries}
        assert set(by_path) == {"a.txt", "sub/b.md"}
        for rel, entry in by_path.items():
            assert entry.sha256 == hashlib.sha256(files[rel]).hexdigest()
            assert entry.size == len(files[rel])
            assert (tmp_path / "snap" / FILES_DIR / rel).read_bytes() == files[rel]
            datetime.fromisoformat(entry.modified)  # a valid timestamp
        assert snap.snapshot_facts()["source"] == f"memory://{prefix}"
        assert {d["path"] for d in load_manifest(tmp_path / "snap")["documents"]} == {"a.txt", "sub/b.md"}

        with pytest.raises(SourceError) as exc:
            snapshot(f"memory://{prefix}-nothing-here", tmp_path / "snap2")
        assert f"{prefix}-nothing-here" in str(exc.value)
    finally:
        fs.rm(prefix, recursive=True)
        fs.rm(f"{prefix}-sibling", recursive=True)


def test_content_digest_ignores_modification_times_but_not_content(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {"a.txt": "one", "b.txt": "two"})
    first = snapshot(str(corpus), tmp_path / "s1")

    os.utime(corpus / "a.txt", (_ts("2030-01-01T00:00:00"), _ts("2030-01-01T00:00:00")))
    touched = snapshot(str(corpus), tmp_path / "s2")
    assert [e.modified for e in touched.entries] != [e.modified for e in first.entries]
    assert touched.content_digest == first.content_digest

    (corpus / "b.txt").write_text("two, edited")
    edited = snapshot(str(corpus), tmp_path / "s3")
    assert edited.content_digest != first.content_digest

    (corpus / "b.txt").write_text("two")
    (corpus / "b.txt").rename(corpus / "renamed.txt")
    renamed = snapshot(str(corpus), tmp_path / "s4")
    assert renamed.content_digest != first.content_digest  # same bytes under another path is another corpus


def test_a_file_too_large_to_be_a_document_is_refused_unread_from_a_folder_and_from_storage(tmp_path: Path,
                                                                                             monkeypatch) -> None:
    """Judged by its listed size alone: never copied, downloaded or hashed, and refused with the file and the rule;
    the other documents are snapshotted as usual."""
    import fsspec

    from ragindex.settings import DocumentLimits

    small = DocumentLimits(max_chars=1_000)  # a text file over 4,000 bytes cannot be within it
    corpus = write_files(tmp_path / "corpus", {"a.txt": "alpha text", "big.txt": "word " * 1_000})
    with open(corpus / "scan.pdf", "wb") as fh:
        fh.truncate(3 * 2**20)  # over a 2 MB parser memory limit
    snap = snapshot(str(corpus), tmp_path / "snap", documents=small, parse_memory_mb=2)
    assert [e.path for e in snap.entries] == ["a.txt"]
    assert snap.refused == [
        {"path": "big.txt",
         "reason": "too large: 5,000 bytes of text is more than max_document_chars=1,000 characters"},
        {"path": "scan.pdf", "reason": "too large: a 3.1 MB PDF is more than the PDF parser's memory limit of 2 MB "
                                       "(parse_memory_mb; the parser reads the whole file into memory)"}]
    assert sorted(p.name for p in (tmp_path / "snap" / FILES_DIR).iterdir()) == ["a.txt"]
    assert load_manifest(tmp_path / "snap")["refused"] == snap.refused

    fs = fsspec.filesystem("memory")
    prefix = f"/big-{uuid.uuid4().hex}"
    fs.pipe(f"{prefix}/a.txt", b"remote alpha")
    fs.pipe(f"{prefix}/big.txt", b"word " * 1_000)
    fetched: list[str] = []
    real_get = type(fs).get_file

    def counted_get(self, key, *args, **kwargs):
        fetched.append(key)
        return real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(type(fs), "get_file", counted_get)
    try:
        remote = snapshot(f"memory://{prefix}", tmp_path / "remote", documents=small)
        assert [e.path for e in remote.entries] == ["a.txt"] and [r["path"] for r in remote.refused] == ["big.txt"]
        assert fetched == [f"{prefix}/a.txt"], "the big object is never downloaded"
    finally:
        fs.rm(prefix, recursive=True)
