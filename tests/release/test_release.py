"""The release manifest in a real local registry: exact parts by ref and digest, settings checked against
the schema, content addressing, lineage, the diff, and the budget check the gate will run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragindex.errors import SettingsError
from ragindex.prompts import PromptError, check_budget, load_prompt, log_prompt, placeholder_retriever
from ragindex.registry import RunInfo
from ragindex.release import (
    ReleaseError,
    assemble_release,
    check_release_budget,
    diff_releases,
    log_release,
    parse_overrides,
    read_release,
)
from tests.release.conftest import PROMPT_TEMPLATES, log_index, write_prompt


def logged_prompt(registry, folder: Path, k: int = 5) -> str:
    prompt = load_prompt(folder)
    budget = check_budget(prompt, ["a question"], placeholder_retriever(200), k, retrieval="placeholder")
    return log_prompt(registry, prompt, budget, run=RunInfo("log_prompt", group="test")).ref


def questions_version(registry, path: Path) -> str:
    from ragindex.context import IngestContext
    from ragindex.gate import log_eval_questions

    return log_eval_questions(IngestContext(registry, "test-run"), path)[0].ref


@pytest.fixture
def world(registry, built, tmp_path):
    """Index v0 (corpus A) and v1 (corpus B), prompt v0 and v1 (another template, another temperature), one
    eval set."""
    parts = {"index_a": log_index(registry, built["a"]), "index_b": log_index(registry, built["b"]),
             "prompt_a": logged_prompt(registry, write_prompt(tmp_path / "pa")),
             "prompt_b": logged_prompt(registry, write_prompt(
                 tmp_path / "pb", files={**PROMPT_TEMPLATES, "user.j2": PROMPT_TEMPLATES["user.j2"] + "Be brief.\n"},
                 temperature=0.7)),
             "questions": questions_version(registry, built["questions"])}
    assert parts == {"index_a": "vector-index:v0", "index_b": "vector-index:v1", "prompt_a": "prompt-template:v0",
                     "prompt_b": "prompt-template:v1", "questions": "eval-questions:v0"}
    return parts


def release(registry, index: str, prompt: str, **kwargs):
    manifest = assemble_release(registry, index, prompt, **kwargs)
    run = RunInfo("create_release", group=f"run-{len(registry.versions('rag-release'))}")
    return log_release(registry, manifest, run=run)


# ---------------------------------------------------------------- the manifest and content addressing

def test_a_release_names_exact_versions_by_ref_and_digest_with_its_settings(registry, world):
    result = release(registry, "vector-index:latest", "prompt-template:v0", questions_ref="eval-questions:latest")
    assert (result.ref, result.created) == ("rag-release:v0", True)
    manifest = read_release(registry, result.ref).manifest
    expected = (("index", "vector-index:v1"), ("prompt", "prompt-template:v0"), ("questions", "eval-questions:v0"))
    for part, ref in expected:
        assert getattr(manifest, part).ref == ref  # aliases resolved to the version they named
        assert getattr(manifest, part).digest == registry.get(ref).digest
    assert manifest.settings == {"retrieval": {"k": 5, "mode": "hybrid"},  # the index's own default mode
                                 "generation": {"model": "small-model", "temperature": 0.2}}  # the prompt's own


def test_the_same_parts_and_settings_are_the_same_version(registry, world):
    first = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0", k=3)
    again = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0",
                    overrides=parse_overrides(["retrieval.k=3"]))
    assert (again.ref, again.created, again.digest) == (first.ref, False, first.digest)
    other_k = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0", k=4)
    other_index = release(registry, "vector-index:v1", "prompt-template:v0", questions_ref="eval-questions:v0", k=3)
    assert [other_k.ref, other_index.ref] == ["rag-release:v1", "rag-release:v2"]
    assert other_k.created and other_index.created
    assert len(registry.versions("rag-release")) == 3


def test_the_lineage_of_a_release_uses_its_index_prompt_and_eval_set(registry, world):
    ref = release(registry, "vector-index:v0", "prompt-template:v1", questions_ref="eval-questions:v0").ref
    version = registry.get(ref)
    assert version.type == "release"
    assert sorted(version.consumed) == ["eval-questions:v0", "prompt-template:v1", "vector-index:v0"]
    graph = registry.lineage(ref)
    assert {(src, dst) for src, dst in graph["edges"] if dst == ref} == {
        ("vector-index:v0", ref), ("prompt-template:v1", ref), ("eval-questions:v0", ref)}
    assert version.metadata["k"] == 5 and version.metadata["temperature"] == 0.7


def test_the_eval_set_defaults_to_the_one_the_index_was_evaluated_on(registry, world, built, tmp_path):
    from ragindex.context import IngestContext
    from ragindex.gate import evaluate_index
    from ragindex.settings import GateSettings

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "Where do vaccines travel?", "expected_source": "cold_chain.md"}) + "\n")
    evaluate_index(IngestContext(registry, "eval-run"), "vector-index:v1", other, GateSettings(k=2, min_recall=0.0))
    assert registry.get("eval-questions:latest").ref == "eval-questions:v1"
    evaluate_index(IngestContext(registry, "eval-run-2"), "vector-index:v0", built["questions"], GateSettings(k=2))
    manifest = assemble_release(registry, "vector-index:v0", "prompt-template:v0")
    assert manifest.questions.ref == "eval-questions:v0"  # what v0 was scored on, not the newest set
    assert assemble_release(registry, "vector-index:v1", "prompt-template:v0").questions.ref == "eval-questions:v1"


def test_without_an_eval_set_the_error_says_what_to_give(registry, built, tmp_path):
    index = log_index(registry, built["a"])
    prompt = logged_prompt(registry, write_prompt(tmp_path / "p"))
    with pytest.raises(ReleaseError, match="vector-index:v0 was never evaluated.*give --questions REF or FILE"):
        assemble_release(registry, index, prompt)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("pairs, message", [
    (["temprature=0.5"], "release setting 'temprature': unknown (known: retrieval.k, retrieval.mode, "
                         "generation.model, generation.temperature)"),
    (["retrieval.mode=bm25"], "release setting retrieval.mode='bm25': must be one of dense, sparse, hybrid"),
    (["k=0"], "release setting retrieval.k='0': must be at least 1"),
    (["k=five"], "release setting retrieval.k='five'"),
    (["temperature=2.5"], "release setting generation.temperature='2.5': must be from 0 to 2"),
    (["k=3", "retrieval.k=4"], "release setting 'retrieval.k': given twice"),
    (["model"], "--set 'model': expected KEY=VALUE"),
])
def test_bad_settings_are_named(pairs, message):
    with pytest.raises(SettingsError) as caught:
        parse_overrides(pairs)
    assert message in str(caught.value)


def test_settings_override_the_prompts_and_modes_are_accepted(registry, world):
    overrides = parse_overrides(["mode=hybrid", "generation.temperature=0", "model=other-model"])
    manifest = assemble_release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0",
                                overrides=overrides)
    assert manifest.settings == {"retrieval": {"k": 5, "mode": "hybrid"},
                                 "generation": {"model": "other-model", "temperature": 0.0}}
    with pytest.raises(SettingsError, match=r"given twice \(--k 3 and --set retrieval.k=4\)"):
        assemble_release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0", k=3,
                         overrides={"retrieval.k": 4})


def test_parts_of_the_wrong_kind_are_refused_and_nothing_is_logged(registry, world):
    with pytest.raises(ReleaseError, match=r"--index prompt-template:v0: prompt-template:v0 is a 'prompt' version, "
                                           r"not 'index'"):
        assemble_release(registry, "prompt-template:v0", "prompt-template:v0", questions_ref="eval-questions:v0")
    with pytest.raises(PromptError, match=r"vector-index:v0: a 'index' version, not a prompt"):
        assemble_release(registry, "vector-index:v0", "vector-index:v0", questions_ref="eval-questions:v0")
    with pytest.raises(ReleaseError, match=r"--questions vector-index:v1: .* not 'eval_dataset'"):
        assemble_release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="vector-index:v1")
    assert registry.versions("rag-release") == []


# ---------------------------------------------------------------- the diff

def test_diff_shows_documents_the_prompt_and_the_settings(registry, world):
    a = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0").ref
    b = release(registry, "vector-index:v1", "prompt-template:v1", questions_ref="eval-questions:v0", k=8).ref
    diff = diff_releases(registry, a, b)
    assert diff.documents == {"added": ["cold_chain.md"], "removed": ["fleet.md"], "changed": ["returns.txt"]}
    assert diff.settings == {"generation.temperature": [0.2, 0.7], "retrieval.k": [5, 8]}
    assert diff.parts["questions"] == {"a": "eval-questions:v0", "b": "eval-questions:v0", "same": True}
    assert "--- prompt-template:v0/user.j2\n+++ prompt-template:v1/user.j2\n" in diff.prompt
    assert "\n+Be brief.\n" in diff.prompt
    assert '\n- "temperature": 0.2,\n+ "temperature": 0.7,\n' in diff.prompt  # prompt.json, canonical
    assert "prompt-template:v0/system.j2" not in diff.prompt  # unchanged files are not in the diff
    text = diff.to_text()
    assert text.splitlines()[0] == f"{a} -> {b}"
    for line in ("index: vector-index:v0 -> vector-index:v1", "  documents: 1 added, 1 removed, 1 changed",
                 "  + cold_chain.md", "  - fleet.md", "  ~ returns.txt",
                 "prompt: prompt-template:v0 -> prompt-template:v1",
                 "  +Be brief.", "questions: eval-questions:v0 (same)", "  retrieval.k: 5 -> 8",
                 "  generation.temperature: 0.2 -> 0.7"):
        assert line in text.splitlines(), line


def test_diff_of_a_release_with_itself_is_empty(registry, world):
    a = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0").ref
    diff = diff_releases(registry, a, a)
    assert diff.same and diff.documents is None and diff.prompt == "" and diff.settings == {}
    assert diff.to_text().splitlines()[0] == f"{a} -> {a}: no changes"


def test_diff_refuses_a_ref_that_is_not_a_release(registry, world):
    a = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0").ref
    with pytest.raises(ReleaseError, match="release vector-index:v0: vector-index:v0 is a 'index' version"):
        diff_releases(registry, a, "vector-index:v0")


# ---------------------------------------------------------------- what the gate will run

def test_the_budget_check_renders_every_eval_question_with_the_releases_own_retrieval(registry, world, tmp_path):
    ref = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0", k=2).ref
    report = check_release_budget(registry, read_release(registry, ref).manifest)
    assert report.passed and report.k == 2 and report.retrieval == "vector-index:v0" and len(report.sizes) == 2
    tight = logged_prompt(registry, write_prompt(tmp_path / "tight", context_budget=report.max_chars - 1), k=1)
    tight_ref = release(registry, "vector-index:v0", tight, questions_ref="eval-questions:v0", k=2).ref
    tight_report = check_release_budget(registry, read_release(registry, tight_ref).manifest)
    assert not tight_report.passed and tight_report.over == [max(report.sizes, key=lambda row: row[1])]


def test_the_release_searches_in_its_own_mode(registry, world):
    from ragindex.release import release_retriever

    ref = release(registry, "vector-index:v0", "prompt-template:v0", questions_ref="eval-questions:v0",
                  overrides={"retrieval.mode": "sparse"}).ref
    manifest = read_release(registry, ref).manifest
    assert release_retriever(registry, manifest).mode == "sparse"
    assert check_release_budget(registry, manifest).passed


@pytest.mark.parametrize("settings, reason", [
    ({"retrieval": {"k": 5, "mode": "bm25"}, "generation": {"model": "m", "temperature": 0.1}},
     "release setting retrieval.mode='bm25': must be one of dense, sparse, hybrid"),
    ({"retrieval": {"k": 5}, "generation": {"model": "m", "temperature": 0.1}}, "missing setting(s) retrieval.mode"),
    ({"retrieval": {"k": 5, "mode": "dense", "rerank": True}, "generation": {"model": "m", "temperature": 0.1}},
     "unknown setting(s) retrieval.rerank"),
])
def test_a_manifest_with_bad_settings_is_refused_when_read(registry, world, tmp_path, settings, reason):
    good = read_release(registry, release(registry, "vector-index:v0", "prompt-template:v0",
                                          questions_ref="eval-questions:v0").ref).manifest.to_json()
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "release.json").write_text(json.dumps({**good, "settings": settings}))
    ref = registry.log_artifact("rag-release", "release", folder, run=RunInfo("by-hand")).ref
    with pytest.raises(ReleaseError) as caught:
        read_release(registry, ref)
    assert str(caught.value).startswith(f"{ref}/release.json: ") and reason in str(caught.value)
