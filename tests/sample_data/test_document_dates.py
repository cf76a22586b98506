"""The sample corpus's document dates: every file has one, the script applies them, and a snapshot as of
a past week (what a scheduled or backfill run takes) sees the documents written by then."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ragindex.errors import SourceError
from ragindex.sources import snapshot

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "include" / "sample_data"
SCRIPT = REPO / "scripts" / "date_sample_corpus.py"


def listed_dates() -> dict[str, datetime]:
    """The dates file as the script itself reads it."""
    spec = importlib.util.spec_from_file_location("date_sample_corpus", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stamps = script.document_dates(SAMPLE / "document_dates.json")
    return {path: datetime.fromtimestamp(stamp, timezone.utc) for path, stamp in stamps.items()}


def dated_copy(tmp_path: Path) -> Path:
    """The sample corpus copied with fresh mtimes (as a checkout has), then dated by the real script."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE / "corpus", corpus, copy_function=shutil.copyfile)
    result = subprocess.run([sys.executable, str(SCRIPT), str(corpus)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "every sample document has a date"
    return corpus


def test_every_sample_document_has_a_date_and_every_date_a_document() -> None:
    files = {p.relative_to(SAMPLE / "corpus").as_posix() for p in (SAMPLE / "corpus").rglob("*") if p.is_file()}
    assert set(listed_dates()) == files


def test_script_sets_each_file_mtime_to_its_date(tmp_path: Path) -> None:
    corpus = dated_copy(tmp_path)
    for relative, when in listed_dates().items():
        assert (corpus / relative).stat().st_mtime == when.timestamp(), relative


def test_snapshot_as_of_a_past_week_keeps_the_documents_written_by_then(tmp_path: Path) -> None:
    corpus = dated_copy(tmp_path)
    week_end = datetime(2026, 1, 12, 3, tzinfo=timezone.utc)  # end of the DAG's first weekly interval
    snap = snapshot(str(corpus), tmp_path / "snap", as_of=week_end)
    expected = {path for path, when in listed_dates().items() if when <= week_end}
    assert {e.path for e in snap.entries} == expected
    assert 0 < len(expected) < len(listed_dates())
    everything = snapshot(str(corpus), tmp_path / "snap-all", as_of="2026-03-31")
    assert len(everything.entries) == len(listed_dates())


def test_snapshot_before_the_first_document_names_the_source_and_the_date(tmp_path: Path) -> None:
    corpus = dated_copy(tmp_path)
    with pytest.raises(SourceError, match="no documents found") as caught:
        snapshot(str(corpus), tmp_path / "snap", as_of="2025-12-31")
    assert str(corpus) in str(caught.value) and "as of 2025-12-31" in str(caught.value)


def test_script_refuses_a_date_for_a_missing_file_naming_it(tmp_path: Path) -> None:
    corpus = dated_copy(tmp_path)
    (corpus / "returns_policy.md").unlink()
    result = subprocess.run([sys.executable, str(SCRIPT), str(corpus)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "returns_policy.md" in result.stderr and "not a file" in result.stderr
