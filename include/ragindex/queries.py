"""Query vectors, never encoded twice: a question's vector depends only on the model identity and its text.

Two layers. In a process, every query vector is remembered (bounded, least recently used first out), so the
gate's three passes over the eval set (the candidate, production, the prompt's budget) encode each question
once, and a server answers a repeated question without the model. On disk, only what ``warm`` is given: the
eval questions, kept per model identity under ``$RAGINDEX_HOME/cache/query-vectors.sqlite``, so a gate over a
known eval set (every prompt-only run) loads no model at all. Users' questions are never written to disk.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ragindex.settings import ragindex_home

log = logging.getLogger(__name__)

MEMO_SIZE = 4096
_memo: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
_memo_lock = threading.Lock()


def store_path() -> Path:
    """The on-disk store of eval questions' vectors (a cache: deleting it only costs encoding again)."""
    return ragindex_home() / "cache" / "query-vectors.sqlite"


@lru_cache(maxsize=16)
def _identity(model: str, backend: str) -> str:
    """The model identity a stored vector is filed under (weights and how vectors are made from them)."""
    from ragindex.embedding import model_identity

    return model_identity(model, backend)


def _remember(key: tuple[str, str, str], vector: np.ndarray) -> None:
    with _memo_lock:
        _memo[key] = vector
        _memo.move_to_end(key)
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)


def query_vector(model: str, text: str, backend: str) -> np.ndarray:
    """A question's vector for search (1 x dimension, float32), encoded at most once in this process."""
    key = (model, backend, text)
    with _memo_lock:
        found = _memo.get(key)
        if found is not None:
            _memo.move_to_end(key)
            return found
    from ragindex import embedding

    vector = np.ascontiguousarray(embedding.encode_query(model, text, backend), dtype=np.float32)
    vector.setflags(write=False)  # shared by every caller: nobody may change it in place
    _remember(key, vector)
    return vector


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, sha256 TEXT NOT NULL, "
                 "vector BLOB NOT NULL, PRIMARY KEY (identity, sha256))")
    return conn


def _stored(path: Path, identity: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
    """The vectors on disk for these texts (by sha256); none when the store cannot be read."""
    if not path.exists():
        return {}
    try:
        with _connect(path) as conn:
            rows = conn.execute(f"SELECT sha256, vector FROM vectors WHERE identity = ? AND sha256 IN "
                                f"({','.join('?' * len(shas))})", (identity, *shas)).fetchall()
    except sqlite3.Error as exc:
        log.warning("query-vector store %s unreadable (%s): encoding the questions instead", path, exc)
        return {}
    return {sha: np.frombuffer(blob, dtype=np.float32).reshape(1, -1) for sha, blob in rows}


def _keep(path: Path, identity: str, vectors: dict[str, np.ndarray]) -> None:
    """Add vectors to the store; a store that cannot be written is skipped (it is only a cache)."""
    try:
        with _connect(path) as conn:
            conn.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)",
                             [(identity, sha, v.astype(np.float32).tobytes()) for sha, v in vectors.items()])
    except sqlite3.Error as exc:
        log.warning("query-vector store %s not written (%s): the questions will be encoded again next time",
                    path, exc)


def warm(model: str, backend: str, texts: Sequence[str]) -> int:
    """Make the vectors of ``texts`` (eval questions) ready in this process from the disk store, encoding and
    storing only those never seen with this model identity; returns how many were encoded."""
    with _memo_lock:
        missing = list(dict.fromkeys(t for t in texts if (model, backend, t) not in _memo))
    if not missing:
        return 0
    path, identity = store_path(), _identity(model, backend)
    shas = {text: _sha(text) for text in missing}
    stored = _stored(path, identity, list(shas.values()))
    encoded: dict[str, np.ndarray] = {}
    for text, sha in shas.items():
        vector = stored.get(sha)
        if vector is None:
            vector = encoded[sha] = query_vector(model, text, backend)
        else:
            vector.setflags(write=False)
            _remember((model, backend, text), vector)
    if encoded:
        _keep(path, identity, encoded)
    return len(encoded)
