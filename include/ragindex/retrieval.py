"""Query an index: what a serving application calls, for a folder or a registry ref alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragindex.errors import RagindexError
from ragindex.indexing import DocstoreReader, read_faiss, read_index_settings


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk with its cosine score and provenance."""

    score: float
    source: str
    page: int | None
    text: str
    chunk_id: str
    start: int

    def to_json(self) -> dict[str, Any]:
        """JSON form used by ``ragindex search --json``."""
        return asdict(self)


class Retriever:
    """Loads an index once and answers top-k questions against it."""

    def __init__(self, index_dir: Path | str, *, ref: str | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.settings = read_index_settings(self.index_dir)
        self.index = read_faiss(self.index_dir)
        self.docstore = DocstoreReader.open(self.index_dir)
        self.model = self.settings["model"]
        self.backend = self.settings.get("embedding_backend", "torch")  # indexes before backends were torch
        self.ref = ref

    @classmethod
    def from_ref(cls, ref: str, registry_uri: str | None = None) -> "Retriever":
        """Open ``vector-index:production`` (or any ref) from a registry, downloading it once into the cache."""
        from ragindex.registry import open_registry

        registry = open_registry(registry_uri, create=False)
        version = registry.get(ref)
        return cls(registry.download(version.ref), ref=version.ref)

    @classmethod
    def open(cls, target: str, registry_uri: str | None = None) -> "Retriever":
        """A folder if one exists at ``target``, else a registry ref."""
        if Path(target).exists() or ":" not in target:
            return cls(target)
        return cls.from_ref(target, registry_uri)

    def search(self, question: str, k: int = 5) -> list[Hit]:
        """Top-k chunks by cosine similarity."""
        if not question.strip():
            raise RagindexError("question: must not be empty")
        if k < 1:
            raise RagindexError(f"k={k}: must be at least 1")
        if self.index.ntotal == 0:
            return []
        from ragindex.embedding import encode_query

        query = encode_query(self.model, question, self.backend)
        scores, rows = self.index.search(np.ascontiguousarray(query), min(k, self.index.ntotal))
        valid = [(float(s), int(r)) for s, r in zip(scores[0], rows[0]) if r >= 0]
        records = self.docstore.get([r for _, r in valid])
        return [Hit(s, rec["source"], rec["page"], rec["text"], rec["chunk_id"], rec["start"])
                for (s, _), rec in zip(valid, records)]
