"""The ``ragindex`` console script: build/search --json output, and clear errors without tracebacks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from ragindex.cli import main
from ragindex.indexing import read_chunks, read_faiss

from .conftest import RAGINDEX_BIN, SMALL, write_files, write_pdf

CHUNK_ARGS = ["--chunk-size", str(SMALL.chunking.chunk_size), "--chunk-overlap", str(SMALL.chunking.chunk_overlap)]


def ragindex(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([str(RAGINDEX_BIN), *args], capture_output=True, text=True, timeout=timeout, env=env)


def assert_clean_error(proc: subprocess.CompletedProcess, *must_name: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    for text in must_name:
        assert text in proc.stderr, (text, proc.stderr)


def test_console_script_is_installed() -> None:
    assert RAGINDEX_BIN.is_file() and os.access(RAGINDEX_BIN, os.X_OK)


def test_build_json_reports_counts_and_failed_documents(tmp_path: Path, capsys) -> None:
    """In-process (the model is already loaded); the console script itself is run by the search test."""
    corpus = write_files(tmp_path / "corpus", {
        "dock.md": "# Loading dock\n\nTrailers are chocked before anyone enters them.\n\n"
                   "Dock plates are inspected every morning by the shift lead.",
        "notes/contacts.txt": "Questions about the dock go to dock.lead@example.com.",
        "empty.txt": b"",
        "noise.bin": random.Random(3).randbytes(1024),
    })
    write_pdf(corpus / "manual.pdf", ["Page one of the dock manual.", "Page two of the dock manual."])
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.5\n% truncated")
    out = tmp_path / "index"

    started = time.monotonic()
    assert main(["build", str(corpus), "--out", str(out), "--json", *CHUNK_ARGS]) == 0
    wall = time.monotonic() - started
    stdout = capsys.readouterr().out
    report = json.loads(stdout)
    assert {"documents", "chunks", "embedded", "reused", "failed", "seconds"} <= set(report)
    assert report["documents"] == 3
    chunks = read_chunks(out)
    assert report["chunks"] == len(chunks) == read_faiss(out).ntotal
    assert report["embedded"] == len({c.sha256 for c in chunks}) and report["reused"] == 0
    assert {f["path"] for f in report["failed"]} == {"empty.txt", "noise.bin", "broken.pdf"}
    assert all(f["reason"] for f in report["failed"])
    assert 0 < report["seconds"] <= wall + 0.01, "the build's own clock, inside the call's"
    assert {c.source for c in chunks} == {"dock.md", "notes/contacts.txt", "manual.pdf"}
    assert "dock.lead@example.com" not in stdout  # the quality report counts PII, never shows it
    assert report["quality"]["pii"] == {"notes/contacts.txt": {"email": 1}}


def test_search_json_returns_scored_hits_with_provenance(tiny_index) -> None:
    out, _ = tiny_index
    proc = ragindex("search", str(out), "What must forklift operators wear?", "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert isinstance(hits, list) and len(hits) == 3
    for hit in hits:
        assert {"score", "source", "page", "text", "chunk_id", "section"} <= set(hit)
        assert -1.0 <= hit["score"] <= 1.0 + 1e-6
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert hits[0]["source"] == "warehouse.md" and "vest" in hits[0]["text"]
    by_id = {c.chunk_id: c for c in read_chunks(out)}
    for hit in hits:
        chunk = by_id[hit["chunk_id"]]
        assert (chunk.source, chunk.page, chunk.text) == (hit["source"], hit["page"], hit["text"])
        assert hit["section"] == list(chunk.section)
    assert hits[0]["section"] == ["Forklift rules"], "the Markdown heading the chunk is under"


def test_search_in_process_human_output_and_k_larger_than_the_index(tiny_index, capsys) -> None:
    out, result = tiny_index
    assert main(["search", str(out), "Which trucks carry vaccines?", "-k", "50", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == result.chunks  # capped at the index size
    assert hits[0]["source"] == "cold_chain.pdf" and hits[0]["page"] == 1
    assert main(["search", str(out), "Which trucks carry vaccines?", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("1. [") and "cold_chain.pdf p.1" in text and "\n2. [" in text
    assert main(["search", str(out), "What must forklift operators wear?", "-k", "1"]) == 0
    assert "warehouse.md § Forklift rules\n" in capsys.readouterr().out, "a hit shows its section path"


def test_build_of_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus"
    proc = ragindex("build", str(missing), "--out", str(tmp_path / "idx"))
    assert_clean_error(proc, str(missing), "no such folder")
    assert not (tmp_path / "idx").exists()


def test_build_of_an_empty_corpus_fails_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    (empty / ".hidden").write_text("not a document")
    proc = ragindex("build", str(empty), "--out", str(tmp_path / "idx"))
    assert_clean_error(proc, str(empty), "no documents found")


def test_build_of_a_corpus_where_nothing_parses_fails_cleanly(tmp_path: Path, capsys) -> None:
    corpus = write_files(tmp_path / "bad", {"a.txt": b"", "b.pdf": b"%PDF-1.4 nope"})
    assert main(["build", str(corpus), "--out", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert str(corpus) in err and "none of its 2 documents could be parsed" in err
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("args,named", [
    (["--chunk-size", "100", "--chunk-overlap", "100"], "chunk_overlap=100"),
    (["--chunk-size", "20"], "chunk_size=20"),
    (["--splitter", "words"], "splitter='words'"),
    (["--index-kind", "ivf"], "index kind='ivf'"),
])
def test_build_with_bad_settings_fails_cleanly(tiny_corpus: Path, tmp_path: Path, args: list[str], named: str,
                                               capsys) -> None:
    assert main(["build", str(tiny_corpus), "--out", str(tmp_path / "idx"), *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "ragindex build: error:" in err
    assert not (tmp_path / "idx").exists()


def test_bad_chunk_settings_fail_cleanly_from_the_console_script(tiny_corpus: Path, tmp_path: Path) -> None:
    proc = ragindex("build", str(tiny_corpus), "--out", str(tmp_path / "idx"), "--chunk-size", "100",
                    "--chunk-overlap", "250")
    assert_clean_error(proc, "chunk_overlap=250", "smaller than chunk_size=100")


def test_search_on_a_missing_index_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "no-index-here"
    proc = ragindex("search", str(missing), "anything", "--json")
    assert_clean_error(proc, str(missing), "no such folder")


def test_search_on_a_folder_that_is_not_an_index_fails_cleanly(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "plain", {"readme.txt": "hi"})
    proc = ragindex("search", str(folder), "anything")
    assert_clean_error(proc, str(folder), "not a ragindex index folder")


def test_search_with_an_empty_question_or_bad_k_fails_cleanly(tiny_index, capsys) -> None:
    out, _ = tiny_index
    assert main(["search", str(out), "   "]) == 2
    assert "question: must not be empty" in capsys.readouterr().err
    assert main(["search", str(out), "forklift", "-k", "0"]) == 2
    assert "k=0" in capsys.readouterr().err


def test_build_out_onto_a_non_index_folder_is_refused_and_untouched(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    precious = write_files(tmp_path / "precious", {"notes.txt": "do not delete", "sub/a.csv": "1,2"})
    before = {p: p.read_bytes() for p in precious.rglob("*") if p.is_file()}
    assert main(["build", str(tiny_corpus), "--out", str(precious), *CHUNK_ARGS]) == 2
    err = capsys.readouterr().err
    assert str(precious) in err and "refusing to overwrite" in err
    assert {p: p.read_bytes() for p in precious.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_build_with_a_previous_that_is_not_an_index_fails_cleanly(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    assert main(["build", str(tiny_corpus), "--out", str(tmp_path / "idx"), "--previous", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "no such folder" in err


def test_build_out_onto_an_existing_file_is_refused_without_a_traceback(tiny_corpus: Path, tmp_path: Path,
                                                                          capsys) -> None:
    target = tmp_path / "index.faiss"
    target.write_text("not a folder")
    assert main(["build", str(tiny_corpus), "--out", str(target), *CHUNK_ARGS]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "not a folder" in err
    assert target.read_text() == "not a folder"
