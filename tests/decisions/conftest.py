"""Versions to decide on, in a real local registry: small folders logged with the metadata the pipeline
gives an index (its gate's verdict, the versions it came from), so each rule is tested on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragindex.registry import RunInfo, open_registry
from tests.conftest import write_files


class Versions:
    """A registry and a way to log index versions with a given gate outcome."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry = open_registry(str(root / "registry"))
        self.count = 0

    def index(self, *, passed: bool | None = True, aliases: tuple[str, ...] = ()) -> str:
        """A new vector-index version (with a raw and a chunks version it came from)."""
        self.count += 1
        n = self.count
        raw = self.registry.log_artifact("raw-documents", "raw_dataset", write_files(self.root / f"raw{n}", {"m": str(n)}),
                                         run=RunInfo("pull")).ref
        chunks = self.registry.log_artifact("processed-chunks", "dataset",
                                            write_files(self.root / f"chunks{n}", {"c": str(n)}), run=RunInfo("chunk"),
                                            uses=[raw]).ref
        meta = {"raw": raw, "chunks_ref": chunks}
        if passed is not None:
            meta["eval"] = {"passed": passed, "recall_at_k": 0.9 if passed else 0.1, "mrr": 0.8, "k": 5}
        return self.registry.log_artifact("vector-index", "index", write_files(self.root / f"index{n}", {"i": str(n)}),
                                          run=RunInfo("build"), uses=[chunks], metadata=meta, aliases=aliases).ref


@pytest.fixture
def versions(tmp_path: Path) -> Versions:
    return Versions(tmp_path)
