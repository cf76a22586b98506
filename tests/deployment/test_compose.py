"""docker-compose.yaml, resolved by a real compose implementation (`docker-compose config` needs no engine),
has the production topology: CeleryExecutor, PostgreSQL and Redis with health checks, the Airflow 3
services, the code mounts, the shared ragindex volume, and the W&B secrets only from .env.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SENTINEL_KEY = "wandb-sentinel-0123456789abcdef0123456789abcdef"  # stands in for a real 40-char key

AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init"}


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """`docker-compose config` of a copy of the file, with a throwaway .env made from .env.example
    (plus a sentinel W&B key and registry), in a temp folder."""
    compose = _compose_binary()
    need(compose is not None, "no compose implementation installed (docker-compose or the docker compose plugin; "
                              "scripts/system-deps.sh installs Debian's docker-compose)")
    work = tmp_path_factory.mktemp("compose")
    shutil.copy(COMPOSE, work / "docker-compose.yaml")
    env = ENV_EXAMPLE.read_text()
    env += f"\nWANDB_API_KEY={SENTINEL_KEY}\nRAGINDEX_REGISTRY=wandb://acme/ragindex\n"
    env += "AIRFLOW__CORE__FERNET_KEY=test-fernet\nAIRFLOW__API_AUTH__JWT_SECRET=test-jwt\nAIRFLOW__API__SECRET_KEY=test-sk\n"
    (work / ".env").write_text(env)
    for folder in ("dags", "plugins", "include"):
        (work / folder).mkdir()
    # a clean environment: only .env may feed the substitutions
    clean = {k: v for k, v in __import__("os").environ.items()
             if k in ("PATH", "HOME", "LANG", "LC_ALL", "DOCKER_HOST", "TMPDIR")}
    done = subprocess.run([*compose, "-f", "docker-compose.yaml", "config"], cwd=work, env=clean,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(compose)} config failed:\n{done.stderr}"
    config = yaml.safe_load(done.stdout)
    # the whole profile set too (flower, airflow-cli), which must resolve as well
    profiles = subprocess.run([*compose, "-f", "docker-compose.yaml", "--profile", "debug", "--profile", "flower",
                               "config", "--services"], cwd=work, env=clean, capture_output=True, text=True,
                              timeout=120)
    assert profiles.returncode == 0, profiles.stderr
    config["_all_services"] = profiles.stdout.split()
    config["_workdir"] = str(work)
    return config


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def _healthcheck(service: dict) -> str:
    hc = service.get("healthcheck") or {}
    test = hc.get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of every volume (both short and long syntax)."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            out[parts[1]] = parts[0]
        else:
            out[v["target"]] = str(v.get("source"))
    return out


def test_services_present(resolved):
    services = set(resolved["services"])
    assert {"postgres", "redis"} | AIRFLOW_SERVICES <= services, services
    assert {"flower", "airflow-cli"} <= set(resolved["_all_services"])


def test_backing_services_have_health_checks(resolved):
    s = resolved["services"]
    assert "pg_isready" in _healthcheck(s["postgres"])
    assert "redis-cli" in _healthcheck(s["redis"]) and "ping" in _healthcheck(s["redis"])
    assert any("postgresql" in str(m) for m in _mounts(s["postgres"])), "postgres data needs a volume"


def test_airflow_services_have_health_checks(resolved):
    s = resolved["services"]
    assert "/api/v2/version" in _healthcheck(s["airflow-apiserver"])
    assert "/health" in _healthcheck(s["airflow-scheduler"])
    assert _env(s["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    assert "DagProcessorJob" in _healthcheck(s["airflow-dag-processor"])
    assert "TriggererJob" in _healthcheck(s["airflow-triggerer"])
    assert "inspect ping" in _healthcheck(s["airflow-worker"])
    for name in LONG_RUNNING:
        assert _healthcheck(s[name]), f"{name} has no health check"


def test_start_order(resolved):
    s = resolved["services"]
    for name in LONG_RUNNING:
        deps = s[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    assert s["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_init_migrates_and_creates_the_admin(resolved):
    init = resolved["services"]["airflow-init"]
    env = _env(init)
    assert env["_AIRFLOW_DB_MIGRATE"] == "true" and env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_USERNAME"] and env["_AIRFLOW_WWW_USER_PASSWORD"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "/entrypoint airflow version" in script  # the image entrypoint runs the migration + user creation
    assert "/opt/ragindex" in script  # prepares the shared data volume
    # and the pool promote and rollback take turns in (the scheduler never runs a task whose pool is missing)
    from ragindex_airflow.pools import GOVERNANCE_POOL

    pools = re.search(r'airflow pools set[\s\\]+"?\$*\{RAGINDEX_GOVERNANCE_POOL:-([\w.-]+)\}"?[\s\\]+(\d+)\s', script)
    assert pools and pools.groups() == (GOVERNANCE_POOL, "1"), script


def test_celery_executor_settings(resolved):
    for name in AIRFLOW_SERVICES:
        env = _env(resolved["services"][name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["RAGINDEX_HOME"] == "/opt/ragindex"
        # shared secrets reach every component (from .env)
        for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
            assert env[key], f"{name}: {key} not delivered from .env"


def test_worker_scales(resolved):
    worker = resolved["services"]["airflow-worker"]
    assert worker["command"] in ("celery worker", ["celery", "worker"])
    assert int(worker["deploy"]["replicas"]) >= 2
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    assert _env(worker)["DUMB_INIT_SETSID"] == "0"  # warm shutdown of Celery


def test_code_mounts_and_shared_data_volume(resolved):
    work = Path(resolved["_workdir"])
    assert "ragindex-data" in resolved["volumes"]
    for name in AIRFLOW_SERVICES:
        mounts = _mounts(resolved["services"][name])
        for folder in ("dags", "plugins", "include"):
            assert Path(mounts[f"/opt/airflow/{folder}"]) == work / folder, (name, mounts)
        assert mounts["/opt/ragindex"] == "ragindex-data", (name, mounts)


def test_image_is_built_from_the_dockerfile(resolved):
    for name in AIRFLOW_SERVICES:
        service = resolved["services"][name]
        assert Path(service["build"]["context"]) == Path(resolved["_workdir"]), name
    dockerfile = (REPO / "Dockerfile").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(rf"^FROM apache/airflow:{re.escape(airflow_pin)}-python3\.11\b", dockerfile, re.M)
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert "-r /tmp/ragindex/requirements.txt" in dockerfile and "--no-deps" in dockerfile
    for folder in ("dags", "plugins", "include"):
        assert re.search(rf"^COPY .*{folder}/ /opt/airflow/{folder}/", dockerfile, re.M), folder


def test_wandb_settings_only_from_env_file(resolved):
    # delivered: every Airflow service gets the key and the registry from .env ...
    for name in AIRFLOW_SERVICES:
        env = _env(resolved["services"][name])
        assert env["WANDB_API_KEY"] == SENTINEL_KEY, name
        assert env["RAGINDEX_REGISTRY"] == "wandb://acme/ragindex", name
    # ... which is its only source: the compose file names no key or value (comments aside) ...
    raw = yaml.safe_load(COMPOSE.read_text())
    text = json.dumps(raw)
    assert "WANDB_API_KEY" not in text and "RAGINDEX_REGISTRY" not in text
    assert ".env" in json.dumps(raw["x-airflow-common"]["env_file"])
    assert not re.search(r"^\s*[^#\s].*WANDB_API_KEY\s*[:=]\s*\S", COMPOSE.read_text(), re.M)
    # ... and the example holds no real value, while .env stays out of git and of the image
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line and not line.startswith("#") and "=" in line)
    assert example.get("WANDB_API_KEY", "") == ""
    assert "WANDB_API_KEY" in ENV_EXAMPLE.read_text() and "RAGINDEX_REGISTRY" in ENV_EXAMPLE.read_text()
    assert ".env" in (REPO / ".gitignore").read_text().split()
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert ".env" in dockerignore


def test_env_file_is_gitignored():
    probe = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True)
    if probe.returncode == 128:
        pytest.skip("not a git checkout")
    assert probe.returncode == 0, ".env must be git-ignored"
