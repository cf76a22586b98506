"""What the Dockerfile builds from, checked without a Docker engine: the pinned requirements it installs
give working Celery workers, the build context holds what the Dockerfile copies and nothing secret."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_pinned_requirements_give_a_working_celery_worker():
    """`airflow celery worker` (every worker container) imports this module first; with the pinned
    celery/provider pair it must load. Runs in this environment, which is installed from requirements.txt."""
    probe = subprocess.run([sys.executable, "-c", "import airflow.providers.celery.executors.celery_executor"],
                           capture_output=True, text=True, timeout=300)
    pins = _requirements()
    assert probe.returncode == 0, (
        f"celery=={pins.get('celery')} with apache-airflow-providers-celery=={pins.get('apache-airflow-providers-celery')} "
        f"cannot start a Celery worker: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.stdout}")


def test_dockerfile_matches_the_requirements():
    text = DOCKERFILE.read_text()
    pins = _requirements()
    assert re.search(rf"^FROM apache/airflow:{re.escape(pins['apache-airflow'])}-python3\.11$", text, re.M)
    assert f"airflow.__version__ == '{pins['apache-airflow']}'" in text
    assert "torch" in pins  # the CPU build is installed first, by the pin read from requirements.txt
    assert "grep '^torch==' /tmp/ragindex/requirements.txt" in text and "download.pytorch.org/whl/cpu" in text
    torch_line = text.index("grep '^torch=='")
    assert torch_line < text.index("-r /tmp/ragindex/requirements.txt"), "torch (CPU) must be installed first"
    assert "pip install --no-cache-dir --no-deps /tmp/ragindex" in text


def test_build_context_has_what_the_dockerfile_copies_and_no_secrets():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for secret in (".env", ".venv", ".git", "wandb", ".ragindex", ".airflow"):
        assert secret in ignored, f".dockerignore must exclude {secret}"
    sources = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for group in sources:
        for source in group.split():
            name = source.rstrip("/")
            assert name not in ignored, f"{source} is copied but excluded by .dockerignore"
            assert (REPO / name).exists(), f"the Dockerfile copies {source}, which is not in the repository"
