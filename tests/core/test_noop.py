"""A no-op build (nothing changed since ``--previous``): the previous index folder is copied, byte for byte,
without importing a model runtime, FAISS, bm25s or numpy; it reports what a full run would report; anything that
differs (a document, a setting, the model identity, the folder's contents) takes the full path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import ragindex.pipeline as pipeline
from ragindex.indexing import SETTINGS_FILE
from ragindex.pipeline import build
from ragindex.settings import ChunkingSettings, IndexSettings, RetrievalSettings

from .conftest import REPO, SMALL, write_files

CORPUS = {
    "dock.md": "# Loading dock\n\nTrailers are chocked before anyone enters them.\n\n"
               "Dock plates are inspected every morning by the shift lead, who writes to dock.lead@example.com.",
    "notes/returns.txt": "Returned parcels need a return authorization number printed on the label.",
    "broken.pdf": b"%PDF-1.4 not really a pdf",
}
HEAVY = ("faiss", "bm25s", "onnxruntime", "torch", "sentence_transformers", "langchain_text_splitters", "scipy", "numpy")
PROBE = """
import io, json, sys, contextlib
from ragindex.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(sys.argv[1:])
print(json.dumps({{"rc": rc, "report": json.loads(out.getvalue()), "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
""".format(heavy=HEAVY)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_args(settings=SMALL) -> list[str]:
    return ["--chunk-size", str(settings.chunking.chunk_size), "--chunk-overlap", str(settings.chunking.chunk_overlap)]


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, its index) built once with SMALL settings; read-only for the tests."""
    root = tmp_path_factory.mktemp("noop")
    corpus = write_files(root / "corpus", CORPUS)
    build(str(corpus), root / "index", SMALL)
    return corpus, root / "index"


def test_a_no_op_process_copies_the_index_and_imports_no_runtime_faiss_bm25s_or_numpy(first, tmp_path: Path) -> None:
    corpus, previous = first
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "include"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, "build", str(corpus), "--out", str(out), "--previous",
                           str(previous), "--json", *cli_args()], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and result["heavy"] == [], f"a no-op run imported {result['heavy']}"
    assert files_of(out) == files_of(previous)
    report = result["report"]
    assert (report["embedded"], report["reused"], report["parsed"]) == (0, report["chunks"], 0)
    assert [f["path"] for f in report["failed"]] == ["broken.pdf"]


def test_a_no_op_reports_what_the_full_path_reports_and_writes_the_same_bytes(first, tmp_path: Path,
                                                                              monkeypatch) -> None:
    corpus, previous = first
    copied = build(str(corpus), tmp_path / "copied", SMALL, previous=previous)
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "unchanged_index", lambda *args: False)  # force every stage to run
        rebuilt = build(str(corpus), tmp_path / "rebuilt", SMALL, previous=previous)
    assert files_of(tmp_path / "copied") == files_of(tmp_path / "rebuilt") == files_of(previous)
    ignore = {"seconds", "out"}
    copied_json, rebuilt_json = copied.to_json(), rebuilt.to_json()
    assert {k: v for k, v in copied_json.items() if k not in ignore} == \
        {k: v for k, v in rebuilt_json.items() if k not in ignore}
    assert copied.quality["pii_totals"] == {"email": 1} and copied.quality["chunks"] == copied.chunks > 0
    assert (copied.documents, copied.documents_reused) == (2, 3)


def test_a_no_op_onto_its_own_previous_folder_keeps_it(first, tmp_path: Path) -> None:
    corpus, previous = first
    own = tmp_path / "own"
    shutil.copytree(previous, own)
    again = build(str(corpus), own, SMALL, previous=own)
    assert again.embedded == 0 and files_of(own) == files_of(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own"]  # no temp or old folder left beside it


def test_a_no_op_copy_that_fails_leaves_no_half_written_folder(first, tmp_path: Path, monkeypatch) -> None:
    corpus, previous = first
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    (out / SETTINGS_FILE).write_text((previous / SETTINGS_FILE).read_text() + "\n")  # an older, different out
    before = files_of(out)
    copied: list[str] = []
    real = shutil.copyfile

    def fail_on_the_third(src, dst, **kw):  # of the index's files (the snapshot copies the corpus's too)
        if Path(src).is_relative_to(previous):
            if len(copied) == 2:
                raise OSError(28, "No space left on device")
            copied.append(str(src))
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copyfile", fail_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        build(str(corpus), out, SMALL, previous=previous)
    assert len(copied) == 2
    assert files_of(out) == before  # the old out untouched, and no temp folder left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("change", ["document", "chunk size", "sparse off", "model identity", "extra file"])
def test_anything_that_differs_takes_the_full_path(first, tmp_path: Path, monkeypatch, change: str) -> None:
    corpus, previous = first
    settings = SMALL
    if change == "document":
        corpus = Path(shutil.copytree(corpus, tmp_path / "corpus"))
        (corpus / "notes" / "returns.txt").write_text("Returns are accepted for thirty days.\n")
    elif change == "chunk size":
        settings = replace(SMALL, chunking=ChunkingSettings(chunk_size=150, chunk_overlap=20))
    elif change == "sparse off":
        settings = replace(SMALL, index=IndexSettings(sparse=False, retrieval=RetrievalSettings(mode="dense")))
    elif change == "model identity":  # same name, other weights: the vectors must not be reused
        import ragindex.embedding as embedding

        real = embedding.model_identity
        monkeypatch.setattr(embedding, "model_identity", lambda *a, **kw: real(*a, **kw) + "-other-weights")
    elif change == "extra file":
        previous = Path(shutil.copytree(previous, tmp_path / "previous"))
        (previous / "notes.txt").write_text("left here by someone\n")
    copies: list[Path] = []
    monkeypatch.setattr(pipeline, "copy_index_dir", lambda src, out: copies.append(src))
    result = build(str(corpus), tmp_path / "out", settings, previous=previous)
    assert copies == [], f"a {change} change was taken for a no-op"
    out = tmp_path / "out"
    assert (out / SETTINGS_FILE).is_file() and not (out / "notes.txt").exists()
    if change in ("document", "chunk size"):
        assert result.parsed > 0 and result.embedded > 0
    if change == "model identity":
        assert result.embedded == result.chunks  # nothing reused from other weights
    if change == "sparse off":
        assert not (out / "sparse").exists()


def test_the_chunks_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    from ragindex.chunking import Chunk
    from ragindex.pipeline import CHUNKS_FILE, read_chunks_file, remember_chunks_file

    folder = tmp_path / "chunks"
    folder.mkdir()
    one = Chunk("id1", "a.txt", None, 0, "first text", "sha1")
    (folder / CHUNKS_FILE).write_text(json.dumps(one.to_json()) + "\n")
    remember_chunks_file(folder, [one])
    assert read_chunks_file(folder) == [one]
    two = Chunk("id2", "a.txt", None, 0, "other text", "sha2")
    tmp = folder / "new.jsonl"
    tmp.write_text(json.dumps(two.to_json()) + "\n")
    os.replace(tmp, folder / CHUNKS_FILE)  # how a chunk step replaces it: a new file
    assert read_chunks_file(folder) == [two]
