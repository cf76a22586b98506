"""The embedding modules import in one direction and start lean: ``embedding`` uses ``onnx_model`` (a backend),
``onnx_model`` never imports ``embedding`` (at the top or inside a function), both share ``offline``; each
imports alone in a fresh interpreter, and ``import ragindex.embedding`` loads neither torch nor
sentence-transformers (an ONNX worker starts in a fraction of a second because of it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "include" / "ragindex"
HEAVY = ("torch", "sentence_transformers", "transformers", "onnxruntime")
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
""".format(heavy=HEAVY)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside any function (a lazy import is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_onnx_model_does_not_import_embedding_and_both_take_the_shared_helper_from_offline() -> None:
    assert "ragindex.embedding" not in imported_modules(CORE / "onnx_model.py"), "an import cycle is back"
    assert "ragindex.offline" in imported_modules(CORE / "onnx_model.py")
    assert "ragindex.offline" in imported_modules(CORE / "embedding.py")
    assert {"ragindex.embedding", "ragindex.onnx_model"}.isdisjoint(imported_modules(CORE / "offline.py"))


@pytest.mark.parametrize("module", ["ragindex.embedding", "ragindex.onnx_model", "ragindex.offline"])
def test_each_module_imports_alone_in_a_fresh_interpreter_without_torch(module: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], f"import {module} loaded {heavy}"
