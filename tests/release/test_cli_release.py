"""`ragindex prompt log` and `ragindex release create|show|diff` against a real local registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ragindex.cli import main
from tests.release.conftest import PROMPT_TEMPLATES, SAMPLE_PROMPT, log_index, write_prompt

RAGINDEX = str(Path(sys.executable).with_name("ragindex"))


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args: str):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_prompt_log_through_the_console_script(tmp_path):
    env = os.environ | {"RAGINDEX_HOME": str(tmp_path / "home")}
    command = [RAGINDEX, "prompt", "log", str(SAMPLE_PROMPT), "--registry", str(tmp_path / "r"), "--json"]
    outputs = [json.loads(subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout)
               for _ in range(2)]
    assert [(o["ref"], o["created"]) for o in outputs] == [("prompt-template:v0", True), ("prompt-template:v0", False)]
    assert outputs[0]["budget"]["questions"] == 24 and outputs[0]["budget"]["passed"]


def test_prompt_log_of_a_bad_folder_is_one_line_and_touches_no_registry(capsys, tmp_path):
    folder = write_prompt(tmp_path / "p", files={**PROMPT_TEMPLATES, "user.j2": "{{ question }} {{ history }}"})
    code, out, err = run(capsys, "prompt", "log", str(folder), "--registry", str(tmp_path / "r"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"ragindex prompt: error: prompt {folder / 'user.j2'}: uses variable")
    assert not (tmp_path / "r").exists()


def test_prompt_log_checks_the_budget_with_a_real_index(capsys, tmp_path, built):
    from ragindex.registry import open_registry

    registry = open_registry(str(tmp_path / "r"))
    index = log_index(registry, built["a"])
    result = run_json(capsys, "prompt", "log", str(SAMPLE_PROMPT), "--registry", str(tmp_path / "r"), "--index", index,
                      "--questions", str(built["questions"]), "-k", "2")
    assert result["budget"] == {"budget": 8000, "k": 2, "retrieval": index, "questions": 2,
                                "max_chars": result["budget"]["max_chars"], "over": 0, "passed": True}
    assert 0 < result["budget"]["max_chars"] < 2000  # two real chunks of at most 200 characters, not placeholders
    folder = write_prompt(tmp_path / "tight", context_budget=result["budget"]["max_chars"] - 1)
    for file in ("system.j2", "user.j2"):
        (folder / file).write_text((SAMPLE_PROMPT / file).read_text())
    code, _out, err = run(capsys, "prompt", "log", str(folder), "--registry", str(tmp_path / "r"), "--index", index,
                          "--questions", str(built["questions"]), "-k", "2")
    assert code == 2 and f"prompt {folder / 'prompt.json'}: rendered prompt over its context_budget" in err
    assert f"hits from {index}" in err
    assert [v.ref for v in registry.versions("prompt-template")] == ["prompt-template:v0"]


def test_release_create_show_and_diff(capsys, tmp_path, built):
    from ragindex.registry import open_registry

    r = str(tmp_path / "r")
    registry = open_registry(r)
    index_a, index_b = log_index(registry, built["a"]), log_index(registry, built["b"])
    prompt = run_json(capsys, "prompt", "log", str(SAMPLE_PROMPT), "--registry", r)["ref"]
    first = run_json(capsys, "release", "create", "--registry", r, "--index", index_a, "--prompt", prompt,
                     "--questions", str(built["questions"]), "--k", "3", "--set", "mode=dense")
    assert (first["ref"], first["created"]) == ("rag-release:v0", True)
    assert first["manifest"]["questions"]["ref"] == "eval-questions:v0"  # the file became a version
    again = run_json(capsys, "release", "create", "--registry", r, "--index", index_a, "--prompt", prompt,
                     "--questions", "eval-questions:v0", "--set", "retrieval.k=3", "--set", "mode=dense")
    assert (again["ref"], again["created"]) == ("rag-release:v0", False)
    second = run_json(capsys, "release", "create", "--registry", r, "--index", "vector-index:latest",
                      "--prompt", prompt, "--set", "mode=hybrid", "--set", "temperature=0.4")
    assert (second["ref"], second["created"]) == ("rag-release:v1", True)
    assert second["manifest"]["settings"] == {"retrieval": {"k": 5, "mode": "hybrid"},
                                              "generation": {"model": "gpt-4o-mini", "temperature": 0.4}}

    code, out, _err = run(capsys, "release", "show", "rag-release:v1", "--registry", r)
    assert code == 0 and f"  index      {index_b}" in out and "  retrieval.mode = 'hybrid'" in out

    code, out, _err = run(capsys, "release", "diff", "rag-release:v0", "rag-release:v1", "--registry", r)
    assert code == 0
    lines = out.splitlines()
    for line in ("rag-release:v0 -> rag-release:v1", f"index: {index_a} -> {index_b}",
                 "  documents: 1 added, 1 removed, 1 changed", "  ~ returns.txt", f"prompt: {prompt} (same)",
                 "  retrieval.k: 3 -> 5", "  retrieval.mode: 'dense' -> 'hybrid'",
                 "  generation.temperature: 0.1 -> 0.4"):
        assert line in lines, line
    diff = run_json(capsys, "release", "diff", "rag-release:v0", "rag-release:v1", "--registry", r)
    assert diff["documents"]["added"] == ["cold_chain.md"] and diff["same"] is False
    assert diff["settings"]["retrieval.k"] == [3, 5]


def test_release_create_names_a_bad_setting_and_logs_nothing(capsys, tmp_path, built):
    from ragindex.registry import open_registry

    r = str(tmp_path / "r")
    registry = open_registry(r)
    index = log_index(registry, built["a"])
    create = ("release", "create", "--registry", r, "--index", index, "--prompt", "prompt-template:v0")
    code, out, err = run(capsys, *create, "--set", "temprature=0.4")
    assert code == 2 and out == ""
    assert err == ("ragindex release: error: release setting 'temprature': unknown (known: retrieval.k, "
                   "retrieval.mode, generation.model, generation.temperature)\n")
    code, _out, err = run(capsys, *create)
    assert code == 2 and "prompt-template:v0" in err  # no such prompt version: named
    assert registry.versions("rag-release") == []
