"""`ragindex ingest` on the sample corpus, through the real console script, a real local registry and the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "include" / "sample_data" / "corpus"
QUESTIONS = ROOT / "include" / "sample_data" / "eval_questions.jsonl"
RAGINDEX = str(Path(sys.executable).with_name("ragindex"))


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"RAGINDEX_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("RAGINDEX_REGISTRY", None)
    return subprocess.run([RAGINDEX, *args], capture_output=True, text=True, env=env, timeout=600)


def cli_json(*args: str, home: Path):
    proc = run_cli(*args, "--json", home=home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def chunk_texts(registry_ref: str, home: Path) -> set[str]:
    from ragindex.pipeline import read_chunks_file
    from ragindex.registry import open_registry

    registry = open_registry(str(home / "registry"))
    return {c.sha256 for c in read_chunks_file(registry.download(registry_ref))}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Ingest, ingest again unchanged, change one document, ingest a third time."""
    home = tmp_path_factory.mktemp("home")
    corpus = tmp_path_factory.mktemp("corpus") / "c"
    shutil.copytree(SAMPLE, corpus)
    first = cli_json("ingest", str(corpus), home=home)
    versions_after_first = {n: len(cli_json("versions", n, home=home))
                            for n in ("raw-documents", "processed-chunks", "vector-index")}
    second = cli_json("ingest", str(corpus), home=home)
    versions_after_second = {n: len(cli_json("versions", n, home=home))
                             for n in ("raw-documents", "processed-chunks", "vector-index")}
    doc = corpus / "returns_policy.md"
    doc.write_text(doc.read_text() + "\n\n## Gift returns\n\nGifts can be returned for store credit within 60 days.\n")
    third = cli_json("ingest", str(corpus), home=home)
    return {"home": home, "first": first, "second": second, "third": third,
            "after_first": versions_after_first, "after_second": versions_after_second}


def test_first_ingest_logs_one_version_of_each(scenario):
    first = scenario["first"]
    assert (first["raw"], first["chunks"], first["index"]) == ("raw-documents:v0", "processed-chunks:v0", "vector-index:v0")
    assert first["reused"] == 0 and first["embedded"] == len(chunk_texts(first["chunks"], scenario["home"]))
    assert first["documents"] == len([p for p in SAMPLE.rglob("*") if p.is_file()])


def test_second_ingest_of_an_unchanged_corpus_creates_nothing(scenario):
    assert scenario["second"]["unchanged"] is True
    assert scenario["second"]["embedded"] == 0
    assert scenario["after_second"] == scenario["after_first"]


def test_changed_document_gives_linked_versions_and_embeds_only_its_new_chunks(scenario):
    home, first, third = scenario["home"], scenario["first"], scenario["third"]
    assert (third["raw"], third["chunks"], third["index"]) == ("raw-documents:v1", "processed-chunks:v1", "vector-index:v1")
    new_texts = chunk_texts(third["chunks"], home) - chunk_texts(first["chunks"], home)
    assert 0 < len(new_texts) < 5
    assert third["embedded"] == len(new_texts)
    lineage = cli_json("lineage", third["index"], home=home)
    assert [third["chunks"], third["index"]] in lineage["edges"]
    assert [third["raw"], third["chunks"]] in lineage["edges"]


def test_search_by_registry_ref_answers_from_the_changed_document(scenario):
    hits = cli_json("search", "vector-index:latest", "Can gifts be returned for store credit?", "-k", "3",
                    home=scenario["home"])
    assert hits[0]["source"] == "returns_policy.md"
    assert "store credit" in " ".join(h["text"] for h in hits)


def test_versions_of_unknown_artifact_is_a_clear_error(scenario):
    proc = run_cli("versions", "no-such-artifact", home=scenario["home"])
    assert proc.returncode == 2
    assert "no-such-artifact" in proc.stderr and "Traceback" not in proc.stderr


def test_rollback_to_missing_version_is_refused_without_losing_production(scenario):
    home = scenario["home"]
    assert run_cli("evaluate", "vector-index:v1", "--questions", str(QUESTIONS), home=home).returncode == 0
    assert run_cli("approve", "vector-index:v1", "--reason", "evaluated", home=home).returncode == 0
    proc = run_cli("rollback", "--to-version", "v99", home=home)
    assert proc.returncode == 2 and "v99" in proc.stderr and "Traceback" not in proc.stderr
    held = [v["ref"] for v in cli_json("versions", "vector-index", home=home) if "production" in v["aliases"]]
    assert held == ["vector-index:v1"]


def test_reject_a_former_production_version_then_rollback_refused_then_forced(tmp_path):
    """The governance commands in sequence, as an operator types them; each state built here."""
    home, corpus = tmp_path / "home", tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "forklifts.md").write_text("# Forklifts\n\nA forklift certificate is valid for three years.\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "How long is a forklift certificate valid?",
                                     "expected_source": "forklifts.md"}) + "\n")
    refs = []
    for run, reason in (("r1", "first"), ("r2", "second")):
        refs.append(cli_json("ingest", str(corpus), "--run-id", run, home=home)["index"])
        assert run_cli("evaluate", refs[-1], "--questions", str(questions), home=home).returncode == 0
        assert run_cli("approve", refs[-1], "--actor", "alice", "--reason", reason, home=home).returncode == 0
        (corpus / "forklifts.md").write_text("# Forklifts\n\nA forklift certificate is valid for two years.\n")
    old, new = refs
    assert run_cli("reject", old, "--actor", "carol", "--reason", "policy withdrawn", home=home).returncode == 0
    refused = run_cli("rollback", "--reason", "bad answers", home=home)
    assert refused.returncode == 2 and f"rollback to {old} refused: it was rejected" in refused.stderr
    assert "“policy withdrawn”, after it held 'production'" in refused.stderr
    held = [v["ref"] for v in cli_json("versions", "vector-index", home=home) if "production" in v["aliases"]]
    assert held == [new], "a refused rollback moves nothing"
    forced = run_cli("rollback", "--force", "--reason", "incident 9", "--actor", "ops", home=home)
    assert forced.returncode == 0 and f"{new} -> {old}" in forced.stdout and "forced" in forced.stdout
    listed = run_cli("decisions", home=home).stdout.splitlines()
    assert "forced rollback" in listed[-1] and "by ops: “incident 9”" in listed[-1]
    assert f"vector-index:production {new.split(':')[1]} → {old.split(':')[1]}" in listed[-1]
    assert "raw-documents:production" in listed[-1], "each moved alias names its artifact"


def test_a_forced_move_from_the_cli_is_not_laundered_by_unforced_rollbacks(tmp_path):
    """`rollback --to-version v1 --force`, back to v0, then `--to-version v1` without force: refused; every listing
    says "forced in" for v1, never "approved"."""
    from ragindex.promotion import approve
    from ragindex.review import TIMED_OUT, record_review
    from tests.decisions.conftest import Versions

    home = tmp_path / "home"
    versions = Versions(home)  # its registry is home/registry, the CLI's default under RAGINDEX_HOME
    approved, timed_out = versions.index(), versions.index()
    approve(versions.registry, approved, actor="alice", reason="checked")
    record_review(versions.registry, timed_out, TIMED_OUT, actor="timeout", reason="no answer within 72 h")
    forced = run_cli("rollback", "--to-version", "v1", "--force", "--reason", "incident 12", "--actor", "ops", home=home)
    assert forced.returncode == 0 and "forced" in forced.stdout, forced.stderr
    back = run_cli("rollback", "--to-version", "v0", "--reason", "incident over", "--actor", "ops", home=home)
    assert back.returncode == 0 and "forced" not in back.stdout, back.stderr
    again = run_cli("rollback", "--to-version", "v1", "--reason", "try", "--actor", "ops", home=home)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"rollback to {timed_out} refused: it was forced in by ops" in again.stderr, again.stderr
    assert "never approved since (its review: timed out" in again.stderr
    listed = {v["ref"]: v for v in cli_json("versions", "vector-index", home=home)}
    assert listed[timed_out]["standing"]["label"] == "forced in" and not listed[timed_out]["standing"]["eligible"]
    assert listed[approved]["standing"]["eligible"] and "production" in listed[approved]["aliases"]
    text = run_cli("versions", "vector-index", home=home).stdout
    line = next(line for line in text.splitlines() if line.startswith(timed_out))
    assert "FORCED IN forced in by ops" in line and "approved on" not in line
