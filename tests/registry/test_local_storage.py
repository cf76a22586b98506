"""The local registry's storage: each distinct file once (a version is its manifest), so it grows with what
changed; registries written before content addressing are migrated once, on open, and an interrupted
migration resumes."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ragindex.registry import RegistryError, RunInfo, open_registry
from ragindex.registry.digest import dir_digest, manifest_digest, manifest_of
from ragindex.registry.local import LocalRegistry
from tests.conftest import need, write_files

# The catalogue as ragindex 0.1 wrote it (schema 1), with every version's files under objects/<digest>/.
SCHEMA_1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, job_type TEXT NOT NULL, run_group TEXT, config TEXT NOT NULL,
                   created_at TEXT NOT NULL);
CREATE TABLE versions (name TEXT NOT NULL, idx INTEGER NOT NULL, type TEXT NOT NULL, digest TEXT NOT NULL,
                       manifest TEXT NOT NULL, metadata TEXT NOT NULL, created_at TEXT NOT NULL, producer_run TEXT,
                       consumed TEXT NOT NULL, PRIMARY KEY (name, idx), UNIQUE (name, digest));
CREATE TABLE aliases (name TEXT NOT NULL, alias TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (name, alias));
CREATE TABLE alias_moves (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, alias TEXT NOT NULL,
                          from_version TEXT, to_version TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
                          reason TEXT NOT NULL);
"""


def old_layout_registry(root: Path, contents: list[dict[str, str]]) -> Path:
    """A schema-1 registry holding one version of "docs" per entry of ``contents``, production on the last."""
    (root / "objects").mkdir(parents=True)
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        conn.executescript(SCHEMA_1)
        for idx, files in enumerate(contents):
            folder = write_files(root / "in" / str(idx), files)
            manifest = manifest_of(folder)
            digest = manifest_digest(manifest)
            shutil.copytree(folder, root / "objects" / digest)
            conn.execute("INSERT INTO versions VALUES (?, ?, 'dataset', ?, ?, ?, ?, NULL, '[]')",
                         ("docs", idx, digest, json.dumps(manifest), json.dumps({"n": idx}), f"2026-01-0{idx + 1}"))
        conn.execute("INSERT INTO aliases VALUES ('docs', 'production', ?)", (len(contents) - 1,))
        conn.execute("INSERT INTO alias_moves (name, alias, from_version, to_version, at, actor, reason) "
                     "VALUES ('docs', 'production', NULL, ?, '2026-01-09', 'alice', 'first')",
                     (f"v{len(contents) - 1}",))
        conn.execute("PRAGMA user_version = 1")
    shutil.rmtree(root / "in")
    return root


CONTENTS = [{"a.txt": "alpha", "shared.txt": "same in both"}, {"a.txt": "alpha 2", "shared.txt": "same in both"}]


def test_an_old_layout_registry_is_migrated_on_open(tmp_path: Path) -> None:
    root = old_layout_registry(tmp_path / "reg", CONTENTS)
    digests = sorted(p.name for p in (root / "objects").iterdir())
    registry = open_registry(str(root))
    assert not (root / "objects").exists(), "the old folders are gone once every version names its blobs"
    assert sorted(v.digest for v in registry.versions("docs")) == digests
    for idx, files in enumerate(CONTENTS):
        folder = registry.download(f"docs:v{idx}", tmp_path / f"out{idx}")
        assert {p.name: p.read_text() for p in folder.iterdir()} == files
        assert dir_digest(folder) == registry.get(f"docs:v{idx}").digest
    assert registry.get("docs:production").ref == "docs:v1" and registry.get("docs:v1").metadata == {"n": 1}
    assert [(m.to_version, m.actor) for m in registry.alias_history("docs", "production")] == [("v1", "alice")]
    assert len([p for p in (root / "blobs").rglob("*") if p.is_file()]) == 3, "'same in both' is stored once"
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_an_interrupted_migration_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = old_layout_registry(tmp_path / "reg", CONTENTS)
    real = LocalRegistry._store_content
    calls = []

    def fail_on_the_second_version(self, files, manifest):
        calls.append(files)
        if len(calls) == 2:
            raise OSError("killed (simulated)")
        return real(self, files, manifest)

    monkeypatch.setattr(LocalRegistry, "_store_content", fail_on_the_second_version)
    with pytest.raises(OSError, match="killed"):
        open_registry(str(root))
    monkeypatch.undo()
    assert (root / "objects").is_dir(), "an unfinished migration keeps the old folders it still needs"
    registry = open_registry(str(root))
    assert not (root / "objects").exists()
    for idx, files in enumerate(CONTENTS):
        assert {p.name: p.read_text() for p in registry.download(f"docs:v{idx}").iterdir()} == files


def test_a_version_whose_blob_is_gone_is_a_clear_error(tmp_path: Path) -> None:
    registry = open_registry(str(tmp_path / "reg"))
    version = registry.log_artifact("docs", "dataset", write_files(tmp_path / "in", {"f": "x"}),
                                    run=RunInfo("t"))
    for blob in (tmp_path / "reg" / "blobs").rglob("*"):
        if blob.is_file():
            blob.chmod(0o644)
            blob.unlink()
    with pytest.raises(RegistryError, match=f"content of {version.ref} is missing"):
        registry.download(version.ref, tmp_path / "out")


TEXLIVE_DOC = Path("/usr/share/doc/texlive-doc/latex/base")


def test_storage_grows_with_what_changed_over_weekly_ingests_of_real_pdfs(tmp_path: Path) -> None:
    """The 12 smallest PDFs of Debian's texlive-latex-base-doc and a note; four ingests, the note changing weekly."""
    from ragindex.context import IngestContext
    from ragindex.ingest import ingest

    pdfs = sorted(TEXLIVE_DOC.glob("*.pdf"), key=lambda p: p.stat().st_size)[:12] if TEXLIVE_DOC.is_dir() else []
    need(len(pdfs) == 12, f"12 PDFs under {TEXLIVE_DOC} (apt-get install texlive-latex-base-doc; system-deps.sh)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for pdf in pdfs:
        shutil.copyfile(pdf, corpus / pdf.name)
    corpus_bytes = sum(p.stat().st_size for p in corpus.iterdir())
    registry = open_registry(str(tmp_path / "registry"))
    sizes, notes = [], []
    for week in range(4):
        note = f"Release note of week {week}: the handbook was reviewed.\n"
        (corpus / "note.txt").write_text(note)
        notes.append(len(note.encode()))
        ingest(IngestContext(registry, f"week-{week}", source=str(corpus), work_root=tmp_path / "work"))
        sizes.append(registry.storage_bytes())
    raw = registry.versions("raw-documents")
    assert len(raw) == 4
    growth = sizes[-1] - sizes[0]
    later_versions = sum(sum(f.stat().st_size for f in registry.download(v.ref).rglob("*") if f.is_file())
                         for name in ("processed-chunks", "vector-index") for v in registry.versions(name)[1:])
    print(f"corpus {corpus_bytes} B; registry after each week: {sizes}; growth {growth} B, of which the later "
          f"chunks and index versions are at most {later_versions} B")
    assert growth <= later_versions + sum(notes[1:]) + 3 * 4096, "raw versions add only the changed note"
    first_derived = sum(f.stat().st_size for name in ("processed-chunks", "vector-index")
                        for f in registry.download(registry.versions(name)[0].ref).rglob("*") if f.is_file())
    assert sizes[0] <= corpus_bytes + notes[0] + first_derived + 3 * 4096, "the first week stores the corpus once"
