"""Suite-wide rules: in CI (``CI`` set), a pinned package or system service that is missing is a failure,
not a skip. Only the live-W&B contract run may skip there (no credentials in CI), and the summary says so.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
REPO = Path(__file__).resolve().parents[1]
# Exported ONNX models are made once per checkout and shared by every test process (each test has its own
# RAGINDEX_HOME; exporting per test would dominate the suite's time).
os.environ.setdefault("RAGINDEX_MODELS", str(REPO / ".ragindex" / "models"))
ARTIFACTS = REPO / "test-artifacts"  # screenshots of the UI checks (git-ignored), to look at
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling hosts this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def need(available: bool, what: str) -> None:
    """Skip a test whose system dependency is absent on a developer machine; fail it in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} (a CI run installs it with scripts/system-deps.sh; missing here is a CI bug)")
    pytest.skip(what)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say what was skipped and why, grouped, so a skip is never silent."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("what was skipped, and why")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:4d} x {reason}")


@contextmanager
def phase(name: str) -> Iterator[None]:
    """One named phase of a scenario test: a failing assertion says which phase it belongs to."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"[phase: {name}] {exc}") from exc


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create ``root`` holding ``files`` (text is written as UTF-8)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return root
