#!/usr/bin/env python3
"""Give the sample corpus's files the modification times in include/sample_data/document_dates.json.

A git checkout dates every file "now", so a scheduled or backfill run, which snapshots the corpus as of
its data interval's end (a past instant), would find no sample document at all. Standard library only:
it runs before the virtual environment exists. Usage: date_sample_corpus.py [CORPUS [DATES.json]].
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "include" / "sample_data"


def document_dates(dates_file: Path) -> dict[str, float]:
    """Relative path → POSIX timestamp; keys starting with '_' are comments."""
    raw = json.loads(dates_file.read_text(encoding="utf-8"))
    return {path: datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
            for path, when in raw.items() if not path.startswith("_")}


def date_corpus(corpus: Path, dates_file: Path) -> list[str]:
    """Set each listed file's mtime; return the corpus files the dates file does not list."""
    dates = document_dates(dates_file)
    for relative, stamp in dates.items():
        path = corpus / relative
        if not path.is_file():
            raise SystemExit(f"{dates_file}: {relative!r} is not a file under {corpus}")
        os.utime(path, (stamp, stamp))
    files = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()}
    return sorted(files - dates.keys())


def main(argv: list[str]) -> int:
    corpus = Path(argv[1]) if len(argv) > 1 else SAMPLE / "corpus"
    dates_file = Path(argv[2]) if len(argv) > 2 else SAMPLE / "document_dates.json"
    undated = date_corpus(corpus, dates_file)
    for relative in undated:
        print(f"date_sample_corpus: {relative} has no date in {dates_file}; it keeps its checkout time",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
