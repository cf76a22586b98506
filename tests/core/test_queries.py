"""Query vectors are encoded once: in a process (bounded memo), and for eval questions across processes (the
disk store), so a gate over a known eval set loads no model. Real model, real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ragindex import embedding, queries
from ragindex.settings import DEFAULT_EMBEDDING_BACKEND as BACKEND
from ragindex.settings import DEFAULT_MODEL
from tests.core.conftest import REPO

QUESTIONS = ["How long is a forklift certificate valid?", "Who pays for a return?", "When is inventory counted?"]


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty store and memo, and a count of every real encode."""
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(queries, "_memo", queries.OrderedDict())
    calls: list[str] = []
    real = embedding.encode_query

    def counting(model, text, backend=BACKEND):
        calls.append(text)
        return real(model, text, backend)

    monkeypatch.setattr(embedding, "encode_query", counting)
    return calls


def test_warm_encodes_each_question_once_and_the_vectors_are_the_encoders(fresh) -> None:
    assert queries.warm(DEFAULT_MODEL, BACKEND, QUESTIONS + QUESTIONS[:1]) == 3
    assert fresh == QUESTIONS, "a repeated question is encoded once"
    assert queries.warm(DEFAULT_MODEL, BACKEND, QUESTIONS) == 0
    for question in QUESTIONS:
        np.testing.assert_array_equal(queries.query_vector(DEFAULT_MODEL, question, BACKEND),
                                      embedding.encoder(DEFAULT_MODEL, BACKEND).query(question))
    assert len(fresh) == 3, "every later vector came from the memo"
    assert queries.store_path().is_file()


def test_a_new_process_with_the_store_loads_no_model(fresh, tmp_path) -> None:
    queries.warm(DEFAULT_MODEL, BACKEND, QUESTIONS)
    script = ("import json, sys; from ragindex import queries; "
              f"n = queries.warm({DEFAULT_MODEL!r}, {BACKEND!r}, {QUESTIONS!r}); "
              f"v = queries.query_vector({DEFAULT_MODEL!r}, {QUESTIONS[0]!r}, {BACKEND!r}); "
              "print(json.dumps({'encoded': n, 'onnxruntime': 'onnxruntime' in sys.modules, "
              "'vector': v.ravel().tolist()}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "RAGINDEX_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["encoded"] == 0 and seen["onnxruntime"] is False, "no question encoded, no runtime imported"
    np.testing.assert_array_equal(np.asarray(seen["vector"], dtype=np.float32),
                                  queries.query_vector(DEFAULT_MODEL, QUESTIONS[0], BACKEND).ravel())


def test_an_unreadable_store_costs_only_encoding_again(fresh, caplog) -> None:
    path = queries.store_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    assert queries.warm(DEFAULT_MODEL, BACKEND, QUESTIONS[:2]) == 2
    assert "unreadable" in caplog.text or "not written" in caplog.text
    assert path.read_bytes().startswith(b"this is not a database"), "a cache it cannot read is left as it is"


def test_the_memo_is_bounded(fresh, monkeypatch) -> None:
    monkeypatch.setattr(queries, "MEMO_SIZE", 2)
    for question in QUESTIONS:
        queries.query_vector(DEFAULT_MODEL, question, BACKEND)
    assert list(k[2] for k in queries._memo) == QUESTIONS[1:], "least recently used first out"
    queries.query_vector(DEFAULT_MODEL, QUESTIONS[0], BACKEND)
    assert fresh.count(QUESTIONS[0]) == 2, "evicted, so encoded again"


def test_a_query_vector_cannot_be_changed_in_place(fresh) -> None:
    vector = queries.query_vector(DEFAULT_MODEL, QUESTIONS[0], BACKEND)
    with pytest.raises(ValueError):
        vector[0, 0] = 1.0
