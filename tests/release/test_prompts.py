"""Prompt folders: checked, rendered in Jinja2's sandbox, logged as content-addressed prompt-template versions;
each bad input is an error naming the file and the reason, and logs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragindex.evaluation import load_questions
from ragindex.prompts import (
    SAMPLE_QUESTIONS,
    PromptError,
    check_budget,
    index_retriever,
    load_prompt,
    log_prompt,
    placeholder_retriever,
)
from ragindex.registry import RunInfo
from tests.release.conftest import PROMPT_META, PROMPT_TEMPLATES, SAMPLE_PROMPT, log_index, write_prompt

HITS = [{"text": "Operator cards stay valid for three years.", "source": "forklifts.md", "page": None, "score": 0.8},
        {"text": "Vaccines travel between 2 and 8 degrees.", "source": "cold.pdf", "page": 2, "score": 0.4}]


def log(registry, folder: Path, k: int = 5, chunk_chars: int = 1000):
    """What `ragindex prompt log` does without --index: load, placeholder budget check, log."""
    prompt = load_prompt(folder)
    budget = check_budget(prompt, load_questions(SAMPLE_QUESTIONS), placeholder_retriever(chunk_chars), k,
                          retrieval="placeholder")
    return log_prompt(registry, prompt, budget, run=RunInfo("log_prompt", group="test-run"))


# ---------------------------------------------------------------- the sample folder and rendering

def test_sample_prompt_renders_the_question_and_each_hit_with_its_source():
    rendered = load_prompt(SAMPLE_PROMPT).render_for("How long is a forklift card valid?", HITS)
    assert [m["role"] for m in rendered.messages()] == ["system", "user"]
    user = rendered.parts["user"]
    assert "[1] forklifts.md\nOperator cards stay valid for three years." in user
    assert "[2] cold.pdf, page 2\n" in user
    assert user.rstrip().endswith("Question: How long is a forklift card valid?")
    assert rendered.chars == len(rendered.parts["system"]) + len(user)


def test_sample_prompt_fits_its_budget_for_every_sample_question_with_five_full_chunks():
    report = check_budget(load_prompt(SAMPLE_PROMPT), load_questions(SAMPLE_QUESTIONS), placeholder_retriever(1000), 5,
                          retrieval="placeholder")
    assert report.passed and len(report.sizes) == 24
    assert 5000 < report.max_chars <= 8000  # five 1000-character hits and the instructions


def test_context_is_the_hits_texts_joined(tmp_path):
    folder = write_prompt(tmp_path / "p", files={"u.j2": "{{ context }}"}, templates={"user": "u.j2"},
                          input_variables=["context"])
    rendered = load_prompt(folder).render_for("q", HITS)
    assert rendered.parts["user"] == HITS[0]["text"] + "\n\n" + HITS[1]["text"]


def test_budget_counts_every_rendered_character_per_question(tmp_path):
    folder = write_prompt(tmp_path / "p", files={"u.j2": "{{ question }}|{{ chunks|length }}"},
                          templates={"user": "u.j2"}, context_budget=6)
    report = check_budget(load_prompt(folder), ["abc", "abcdef"], placeholder_retriever(10), 3)
    assert report.sizes == [("abc", 5), ("abcdef", 8)]  # "abc|3", "abcdef|3"
    assert report.over == [("abcdef", 8)] and not report.passed


# ---------------------------------------------------------------- content addressing

def test_logging_the_same_content_gives_the_existing_version(registry, tmp_path):
    first = log(registry, SAMPLE_PROMPT)
    assert (first.ref, first.created) == ("prompt-template:v0", True)
    again = log(registry, SAMPLE_PROMPT)
    assert (again.ref, again.created, again.digest) == (first.ref, False, first.digest)
    # prompt.json reformatted (other key order, other spacing): the same prompt, the same version
    copy = write_prompt(tmp_path / "copy", meta=json.loads((SAMPLE_PROMPT / "prompt.json").read_text()),
                        files={f: (SAMPLE_PROMPT / f).read_text() for f in ("system.j2", "user.j2")})
    body = json.loads((copy / "prompt.json").read_text())
    (copy / "prompt.json").write_text(json.dumps(dict(reversed(list(body.items()))), indent=4))
    assert (log(registry, copy).ref, log(registry, copy).created) == ("prompt-template:v0", False)
    # one template changed: a new version
    (copy / "user.j2").write_text((copy / "user.j2").read_text() + "Answer in one sentence.\n")
    changed = log(registry, copy)
    assert (changed.ref, changed.created) == ("prompt-template:v1", True)
    assert [v.ref for v in registry.versions("prompt-template")] == ["prompt-template:v0", "prompt-template:v1"]
    v1 = registry.get("prompt-template:v1")
    assert v1.type == "prompt" and v1.metadata["model"] == "gpt-4o-mini" and v1.metadata["context_budget"] == 8000


def test_the_logged_version_holds_the_metadata_and_the_templates_it_names(registry):
    result = log(registry, SAMPLE_PROMPT)
    files = sorted(p.name for p in registry.download(result.ref).iterdir())
    assert files == ["prompt.json", "system.j2", "user.j2"]
    assert load_prompt(registry.download(result.ref)).spec == load_prompt(SAMPLE_PROMPT).spec


# ---------------------------------------------------------------- bad input: a clear error, nothing logged

def bad(registry, folder: Path, *, chunk_chars: int = 1000) -> str:
    """Log a bad folder: the error's message, after checking nothing was logged."""
    with pytest.raises(PromptError) as caught:
        log(registry, folder, chunk_chars=chunk_chars)
    assert registry.versions("prompt-template") == []
    return str(caught.value)


def test_a_template_that_does_not_parse(registry, tmp_path):
    folder = write_prompt(tmp_path / "p",
                          files={**PROMPT_TEMPLATES, "user.j2": "Q: {{ question }}\n{% for c in chunks %}"})
    message = bad(registry, folder)
    assert str(folder / "user.j2") in message and "does not parse" in message and "line 2" in message


def test_a_variable_used_but_not_declared(registry, tmp_path):
    folder = write_prompt(tmp_path / "p", files={**PROMPT_TEMPLATES, "user.j2": "{{ question }} {{ history }}"})
    message = bad(registry, folder)
    assert str(folder / "user.j2") in message and "history" in message and "not declared" in message


def test_a_variable_declared_that_serving_never_gives(registry, tmp_path):
    folder = write_prompt(tmp_path / "p", input_variables=["question", "chunks", "user_name"])
    message = bad(registry, folder)
    assert str(folder / "prompt.json") in message and "user_name" in message and "never given" in message


def test_a_declared_variable_not_given_to_render(tmp_path):
    prompt = load_prompt(write_prompt(tmp_path / "p"))
    with pytest.raises(PromptError, match=r"prompt\.json: input variable\(s\) chunks declared but not given"):
        prompt.render({"question": "q"})


def test_a_prompt_over_its_budget_for_some_question(registry, tmp_path):
    folder = write_prompt(tmp_path / "p", context_budget=10**6)
    sizes = sorted(n for _, n in check_budget(load_prompt(folder), load_questions(SAMPLE_QUESTIONS),
                                              placeholder_retriever(200), 5).sizes)
    budget = sizes[len(sizes) // 2]  # the longer questions' prompts are over it, the shorter ones' are not
    write_prompt(folder, context_budget=budget)
    message = bad(registry, folder, chunk_chars=200)
    over = sum(n > budget for n in sizes)
    assert 0 < over < len(sizes)
    assert str(folder / "prompt.json") in message and f"over its context_budget of {budget} characters" in message
    assert f"for {over} of 24 question(s) with k=5" in message and f"largest {sizes[-1]} characters" in message


@pytest.mark.parametrize("change, reason", [
    ({"temperature": 3}, "temperature 3 must be a number from 0 to 2"),
    ({"context_budget": 0}, "context_budget 0 must be a positive whole number"),
    ({"context_budget": "8000"}, "context_budget '8000' must be a positive whole number"),
    ({"model": ""}, "model must be a non-empty string"),
    ({"max_tokens": 10}, "unknown field(s) max_tokens"),
    ({"templates": {"user": "../outside.j2"}}, "must be a relative path inside the folder"),
    ({"templates": {"user": "missing.j2"}}, "missing.j2: no such file"),
])
def test_bad_metadata(registry, tmp_path, change, reason):
    folder = write_prompt(tmp_path / "p", **change)
    message = bad(registry, folder)
    assert reason in message and str(folder) in message


def test_missing_field_and_invalid_json(registry, tmp_path):
    meta = {k: v for k, v in PROMPT_META.items() if k != "context_budget"}
    folder = write_prompt(tmp_path / "p", meta=meta)
    assert "prompt.json: missing field(s) context_budget" in bad(registry, folder)
    (folder / "prompt.json").write_text('{"templates": {"user": "user.j2"},\n "model": }')
    assert f"{folder / 'prompt.json'}: line 2: not valid JSON" in bad(registry, folder)


def test_a_file_the_metadata_does_not_name_is_refused(registry, tmp_path):
    folder = write_prompt(tmp_path / "p")
    (folder / "old_user.j2").write_text("{{ question }}")
    message = bad(registry, folder)
    assert "old_user.j2 not named in prompt.json's templates" in message


def test_a_folder_that_is_not_there(registry, tmp_path):
    assert f"prompt folder {tmp_path / 'nope'}: not a directory" in bad(registry, tmp_path / "nope")


# ---------------------------------------------------------------- the sandbox

@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ question.__class__.__base__.__subclasses__() }}",
    "{% if false %}{{ chunks.__class__ }}{% endif %}{{ question }}",  # refused even where no render goes
    "{{ question['__class__'] }}",
    "{{ question|attr('__class__') }}",
])
def test_private_attributes_are_refused_before_rendering(registry, tmp_path, template):
    folder = write_prompt(tmp_path / "p", files={**PROMPT_TEMPLATES, "user.j2": template})
    message = bad(registry, folder)
    assert str(folder / "user.j2") in message and "refused by the sandbox" in message and "__class__" in message


@pytest.mark.parametrize("template, unsafe", [
    ("{% set name = '__cla' ~ 'ss__' %}{{ question|attr(name) }}", "__class__"),  # built at render time
    ("{{ chunks.append('injected') }}{{ question }}", "append"),  # inputs are immutable
])
def test_unsafe_access_built_at_render_time_is_refused_by_the_sandbox(registry, tmp_path, template, unsafe):
    folder = write_prompt(tmp_path / "p", files={**PROMPT_TEMPLATES, "user.j2": template})
    message = bad(registry, folder)
    assert str(folder / "user.j2") in message and "refused by the sandbox" in message and unsafe in message


# ---------------------------------------------------------------- the budget with real retrieval

def test_budget_with_real_hits_from_an_index(registry, built):
    index = log_index(registry, built["a"])
    prompt = load_prompt(SAMPLE_PROMPT)
    retrieve = index_retriever(registry.download(index), index)
    report = check_budget(prompt, ["How long does a forklift operator card stay valid?"], retrieve, 2, retrieval=index)
    hits = retrieve("How long does a forklift operator card stay valid?", 2)
    assert len(hits) == 2 and hits[0].source == "forklifts.md"
    expected = prompt.render_for("How long does a forklift operator card stay valid?", hits).chars
    assert report.sizes == [("How long does a forklift operator card stay valid?", expected)]
    assert report.summary()["retrieval"] == index and report.passed
