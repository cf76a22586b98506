"""Start and stop the distributed Airflow stack (PostgreSQL, Redis, CeleryExecutor) on loopback, without Docker.

Every process is started in a session of its own, remembered by process id, and stopped in reverse
order: SIGTERM (SIGINT for PostgreSQL: its fast shutdown) to the process group and to every descendant
found at that moment, then SIGKILL for whatever is left. Logs go to files; ``tails()`` shows their ends.

Only the standard library (and psutil, which Airflow requires, when available) is imported at module
level: ``worker_hostname`` below is the ``[core] hostname_callable`` of the test's Celery workers, so the
task processes import this module too.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

WORKER_NAME_VAR = "RAGINDEX_TEST_WORKER_NAME"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of each test worker: both run on one host, so the name they record in
    ``task_instance.hostname`` comes from the environment (in Docker each container has its own hostname)."""
    name = os.environ.get(WORKER_NAME_VAR)
    return name or socket.getfqdn()


class StackError(RuntimeError):
    """A service did not start (the message says which, with the end of its log)."""


# ------------------------------------------------------------------------------------------ helpers

def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on host:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) != 0


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5,
              alive: Callable[[], bool] | None = None, log: Callable[[], str] | None = None) -> None:
    """Poll ``check`` until true; fail early if ``alive`` says the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited while starting\n{log() if log else ''}")
        time.sleep(interval)
    raise StackError(f"{what}: not ready after {timeout:.0f}s\n{log() if log else ''}")


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' when missing)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------------------------------ processes

@dataclass
class Service:
    """One started process: its name, Popen handle, log file and how it wants to be stopped."""

    name: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM
    stop: Callable[[], None] | None = None  # a graceful stop of its own (pg_ctl), tried first

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class ProcessGroup:
    """The processes a test started, stopped in reverse order by process id (never by name)."""

    log_dir: Path
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], *, cwd: Path | None = None,
              user: str | None = None, stop_signal: int = signal.SIGTERM) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        out = open(log, "ab")  # noqa: SIM115 - closed with the process
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs |= {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)
        out.close()
        service = Service(name, proc, log, stop_signal)
        self.services.append(service)
        return service

    def tails(self, lines: int = 40) -> str:
        return "\n".join(f"----- {s.name} (pid {s.pid}, {'running' if s.alive() else f'exit {s.proc.returncode}'}) "
                         f"{s.log}\n{tail(s.log, lines)}" for s in self.services)

    def stop_all(self, grace: float = 20.0) -> list[str]:
        """Stop everything, newest first; returns what had to be killed (for the test's report)."""
        killed: list[str] = []
        for service in reversed(self.services):
            killed += _stop(service, grace)
        self.services.clear()
        return killed


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Airflow
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal(pids: Iterable[int], pgid: int | None, sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone once reaped
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _stop(service: Service, grace: float) -> list[str]:
    proc = service.proc
    kids = _descendants(proc.pid)
    pgid = proc.pid  # start_new_session=True: the service leads its own group
    if service.stop is not None and proc.poll() is None:
        try:
            service.stop()
        except Exception:  # noqa: BLE001 - fall back to signals
            pass
    if proc.poll() is None:
        _signal([proc.pid], pgid, service.stop_signal)
    else:
        _signal(kids, pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not any(_alive(k) for k in kids):
            break
        time.sleep(0.2)
    left = [k for k in kids if _alive(k)]
    killed = []
    if proc.poll() is None or left:
        killed.append(f"{service.name} (pid {proc.pid}, {len(left)} descendants) did not stop in {grace:.0f}s: SIGKILL")
        _signal([proc.pid, *left], pgid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            killed.append(f"{service.name} (pid {proc.pid}) still running after SIGKILL")
    else:
        # the group may hold orphans that were not our descendants any more
        _signal([], pgid, signal.SIGKILL)
    return killed


# ------------------------------------------------------------------------------------------ the stack

@dataclass
class Ports:
    """Loopback ports of the test stack (other suites use 8080, 18080 and 38080)."""

    postgres: int = 25432
    redis: int = 26379
    api: int = 28080
    worker_logs: tuple[int, ...] = (28793, 28795)
    trigger_logs: int = 28794
    scheduler_health: int = 28974


class AirflowStack:
    """PostgreSQL + Redis + the Airflow 3 services with the CeleryExecutor, all on 127.0.0.1."""

    PG_USER = "airflow"
    PG_DB = "airflow"

    def __init__(self, root: Path, repo: Path, ports: Ports | None = None, *, bin_dir: Path | None = None) -> None:
        self.root = root
        self.repo = repo
        self.ports = ports or Ports()
        self.bin_dir = bin_dir or Path(sys.executable).parent
        self.airflow_home = root / "airflow"
        self.ragindex_home = root / "ragindex"  # the shared volume of every worker
        self.processes = ProcessGroup(root / "logs")
        self.pg_dir: Path | None = None
        self.pg_bin = postgres_bin()
        self.pg_user: str | None = None

    # ---- settings

    @property
    def sql_alchemy_conn(self) -> str:
        return f"postgresql+psycopg2://{self.PG_USER}@127.0.0.1:{self.ports.postgres}/{self.PG_DB}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def airflow_env(self, **extra: str) -> dict[str, str]:
        """One environment for every Airflow process (what the compose file's x-airflow-common does)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW_", "AIRFLOW__", "RAGINDEX_", "_AIRFLOW"))}
        env |= {
            "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.repo / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND":
                f"db+postgresql://{self.PG_USER}@127.0.0.1:{self.ports.postgres}/{self.PG_DB}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports.api),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__SECRET_KEY": "ragindex-distributed-test-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "ragindex-distributed-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports.trigger_logs),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.ports.scheduler_health),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "RAGINDEX_HOME": str(self.ragindex_home),
            "RAGINDEX_SCHEDULE": "none",  # only the test's own run, no scheduled one on unpause
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        return env | extra

    # ---- PostgreSQL

    def start_postgres(self) -> None:
        if self.pg_bin is None:
            raise StackError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)")
        import tempfile

        # initdb/postgres refuse to run as root: run them as the 'postgres' user, in a folder it owns
        # (pytest's tmp_path is 0700 root, so the cluster lives in a sibling temp folder of its own).
        self.pg_user = "postgres" if os.geteuid() == 0 else None
        self.pg_dir = Path(tempfile.mkdtemp(prefix="ragindex-pg-"))
        data = self.pg_dir / "data"
        if self.pg_user:
            pw = pwd.getpwnam(self.pg_user)
            os.chown(self.pg_dir, pw.pw_uid, pw.pw_gid)
        env = {"PATH": f"{self.pg_bin}{os.pathsep}{os.environ.get('PATH', '')}", "LC_ALL": "C.UTF-8",
               "HOME": str(self.pg_dir)}
        init = subprocess.run([str(self.pg_bin / "initdb"), "-D", str(data), "-U", self.PG_USER, "--auth=trust",
                               "-E", "UTF8", "--no-sync"], env=env, capture_output=True, text=True,
                              user=self.pg_user, group=pwd.getpwnam(self.pg_user).pw_gid if self.pg_user else None,
                              extra_groups=[] if self.pg_user else None, timeout=120)
        if init.returncode != 0:
            raise StackError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        service = self.processes.start(
            "postgres",
            [str(self.pg_bin / "postgres"), "-D", str(data), "-p", str(self.ports.postgres), "-k", str(self.pg_dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            env, user=self.pg_user, stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
        # the service's own graceful stop; the group signal is the fallback
        service.stop = lambda: subprocess.run(
            [str(self.pg_bin / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30"], env=env,
            capture_output=True, timeout=40, user=self.pg_user,
            group=pwd.getpwnam(self.pg_user).pw_gid if self.pg_user else None,
            extra_groups=[] if self.pg_user else None)
        wait_for("postgres", self._postgres_ready, 60, alive=service.alive, log=lambda: tail(service.log))
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.ports.postgres, user=self.PG_USER, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {self.PG_DB}")
        conn.close()

    def _postgres_ready(self) -> bool:
        import psycopg2

        psycopg2.connect(host="127.0.0.1", port=self.ports.postgres, user=self.PG_USER, dbname="postgres",
                         connect_timeout=2).close()
        return True

    # ---- Redis

    def start_redis(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            raise StackError("redis-server not found")
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        service = self.processes.start(
            "redis", [redis, "--port", str(self.ports.redis), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(data)], dict(os.environ))

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.ports.redis), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_for("redis", ping, 30, alive=service.alive, log=lambda: tail(service.log))

    # ---- Airflow

    def airflow(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
        """Run an ``airflow`` command to completion (e.g. ``db migrate``)."""
        return subprocess.run([str(self.bin_dir / "airflow"), *args], env=self.airflow_env(**env), capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)

    def start_airflow(self, name: str, *args: str, **env: str) -> Service:
        return self.processes.start(name, [str(self.bin_dir / "airflow"), *args], self.airflow_env(**env), cwd=self.root)

    def migrate(self) -> None:
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.ragindex_home.mkdir(parents=True, exist_ok=True)
        done = self.airflow("db", "migrate")
        if done.returncode != 0:
            raise StackError(f"airflow db migrate failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        from ragindex_airflow.pools import GOVERNANCE_POOL, GOVERNANCE_POOL_DESCRIPTION, GOVERNANCE_POOL_SLOTS

        done = self.airflow("pools", "set", GOVERNANCE_POOL, str(GOVERNANCE_POOL_SLOTS), GOVERNANCE_POOL_DESCRIPTION)
        if done.returncode != 0:  # as the compose file's airflow-init: promote never runs without it
            raise StackError(f"airflow pools set failed ({done.returncode}):\n{done.stderr[-3000:]}")

    def start_services(self, workers: Iterable[str] = ("w1", "w2"), concurrency: int = 1) -> None:
        """api-server, scheduler, dag-processor, triggerer and one Celery worker per name."""
        api = self.start_airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.ports.api),
                                 "--workers", "1")
        self.start_airflow("scheduler", "scheduler")
        self.start_airflow("dag-processor", "dag-processor")
        self.start_airflow("triggerer", "triggerer")
        deployment = str(Path(__file__).resolve().parent)
        for i, name in enumerate(workers):
            env = {
                # each worker records its own name as task_instance.hostname (see worker_hostname)
                WORKER_NAME_VAR: name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack.worker_hostname",
                "PYTHONPATH": os.pathsep.join(filter(None, [deployment, os.environ.get("PYTHONPATH")])),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs[i % len(self.ports.worker_logs)]),
            }
            self.start_airflow(f"worker-{name}", "celery", "worker", "--celery-hostname", f"{name}@%h",
                               "--concurrency", str(concurrency), **env)
        wait_for("api-server", lambda: self.get("/api/v2/version") is not None, 180, interval=1, alive=api.alive,
                 log=lambda: tail(api.log))

    def wait_workers_ready(self, names: Iterable[str], timeout: float = 180) -> None:
        """Each Celery worker logged 'ready' (it consumes from the queue)."""
        for name in names:
            service = next(s for s in self.processes.services if s.name == f"worker-{name}")
            wait_for(f"worker {name}", lambda log=service.log: " ready." in log.read_text(errors="replace"), timeout,
                     interval=1, alive=service.alive, log=lambda log=service.log: tail(log))

    # ---- REST

    def token(self) -> str:
        """A JWT from the simple auth manager (all-admins mode: no credentials needed)."""
        with urllib.request.urlopen(f"{self.api_url}/auth/token", timeout=30) as r:
            return json.loads(r.read())["access_token"]

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method, headers={
            "Content-Type": "application/json", "Accept": "application/json",
            "Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                payload = r.read()
        except urllib.error.HTTPError as exc:
            raise StackError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    # ---- teardown

    def stop(self) -> list[str]:
        killed = self.processes.stop_all()
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)
        return killed

    def tails(self, lines: int = 40) -> str:
        return self.processes.tails(lines)
