"""Each step says in a line what it decided and how long its steps took (real local registry, real model):
the lines an operator reads in the Airflow task logs."""

from __future__ import annotations

import json
import logging
import re

from ragindex.context import IngestContext
from ragindex.gate import evaluate_index
from ragindex.ingest import ingest, pull_documents
from ragindex.promotion import approve
from ragindex.registry import open_registry
from ragindex.settings import BuildSettings, ChunkingSettings
from tests.conftest import write_files

TIMED = r"\d+\.\d s \(.*\d+\.\d s\)$"  # "4.2 s (snapshot 3.1 s, log 0.9 s)" at the end of a line


def lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_every_step_logs_its_decision_and_its_timings(tmp_path, caplog) -> None:
    corpus = write_files(tmp_path / "corpus", {"a.md": "# Pallets\n\nEuro pallets measure 1200 by 800 millimetres.\n",
                                               "b.txt": "Night shifts start at ten.\n"})
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "How big is a euro pallet?", "expected_source": "a.md"}))
    registry = open_registry(str(tmp_path / "registry"))
    settings = BuildSettings(chunking=ChunkingSettings(200, 20))

    def ctx(run_id: str, run_type: str = "manual") -> IngestContext:
        return IngestContext(registry, run_id, settings, source=str(corpus), run_type=run_type,
                             work_root=tmp_path / "work")

    caplog.set_level(logging.INFO, logger="ragindex")
    first = ingest(ctx("one"))
    evaluate_index(ctx("one"), first["index"], questions)
    approve(registry, first["index"], actor="test")
    (corpus / "b.txt").write_text("Night shifts start at eleven.\n")
    caplog.clear()
    second = ingest(ctx("two"))
    outcome = evaluate_index(ctx("two"), second["index"], questions)

    (pulled,) = lines(caplog, "ragindex.ingest")[:1]
    assert pulled.startswith(f"{second['raw']}: 2 documents (0 refused) from {corpus}, a new corpus; ")
    assert re.search(r"\(snapshot \d+\.\d s, registry lookup \d+\.\d s, log \d+\.\d s\)$", pulled), pulled
    chunked, built = lines(caplog, "ragindex.ingest")[1:3]
    assert "2 documents (1 parsed, 1 unchanged, 0 failed)" in chunked and "to embed 1 new texts" in chunked
    assert re.search(r"download .*parse \+ chunk .*log .*plan \d+\.\d s\)$", chunked), chunked
    assert built.startswith(f"{second['index']}: 2 chunks of 2 documents (this run embedded 1, reused 1), a ")
    assert re.search(TIMED, built), built
    (embedded,) = lines(caplog, "ragindex.pipeline")
    assert embedded.startswith(f"shard 1 of 1: embedded 1 new texts with {settings.model} "
                               f"({settings.embedding_backend} backend); 1 of 2 chunks reuse cached vectors; ")
    assert re.search(r"\(read \d+\.\d s, model \d+\.\d s, encode \d+\.\d s, save \d+\.\d s\)$", embedded), embedded
    (evaluated,) = lines(caplog, "ragindex.gate")
    assert evaluated.startswith(f"{outcome.report}: {second['index']} scored recall@5 1.000, MRR 1.000 on 1 "
                                f"questions (production {first['index']}: recall@5 1.000, MRR 1.000); gate passed; ")
    assert "1 document(s) differ (full diff: changes.diff)" in evaluated and re.search(TIMED, evaluated), evaluated

    caplog.clear()
    assert pull_documents(ctx("three", "scheduled")).unchanged
    (stopped,) = lines(caplog, "ragindex.ingest")
    assert "nothing to do: 2 documents from" in stopped and re.search(TIMED, stopped), stopped
