"""A real S3 API over HTTP on 127.0.0.1 for the tests: moto's server in a subprocess (``moto_server``), with
IAM authentication enforced, so a wrong key is refused the way AWS refuses it (403 InvalidAccessKeyId).

The server starts with one IAM user allowed everything and an access key for it; every request after
those set-up calls must be signed with that key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key: the only unauthenticated requests
REGION = "us-east-1"


def free_port() -> int:
    """A loopback port nothing listens on (also what an unreachable endpoint looks like)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoS3:
    """The running server, its endpoint, and the one access key it accepts."""

    process: subprocess.Popen
    endpoint: str
    key_id: str = ""
    secret: str = ""

    @classmethod
    def start(cls, log_path: Path) -> "MotoS3":
        port = free_port()
        log = open(log_path, "wb")
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
        process = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
        server = cls(process, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"moto_server did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)
        server._make_user()
        return server

    def _make_user(self) -> None:
        iam = self.client("iam", key_id="setup", secret="setup")
        iam.create_user(UserName="ragindex")
        iam.put_user_policy(UserName="ragindex", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="ragindex")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, service: str = "s3", key_id: str | None = None, secret: str | None = None) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key_id or self.key_id, aws_secret_access_key=secret or self.secret)

    def bucket(self, name: str, *, versioned: bool = False) -> Any:
        """A new bucket (versioning enabled if asked); returns the S3 client that made it."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return s3

    def connection_json(self, key_id: str | None = None, secret: str | None = None,
                        endpoint: str | None = None) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value for this server (one attempt per request: tests stay fast)."""
        return json.dumps({"conn_type": "aws", "login": key_id or self.key_id, "password": secret or self.secret,
                           "extra": {"endpoint_url": endpoint or self.endpoint, "region_name": REGION,
                                     "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def server_time(s3: Any, bucket: str, key: str) -> datetime:
    """When the server says an object was last written (the clock as-of dates are compared with)."""
    return s3.head_object(Bucket=bucket, Key=key)["LastModified"].astimezone(timezone.utc)


def start_or_skip(log_path: Path) -> MotoS3:
    """The server, or a skip (a failure in CI, where moto[server] is pinned) where moto is not installed."""
    from tests.conftest import need

    need(MOTO_SERVER.exists(), "moto[server] is not installed (pip install -r requirements.txt)")
    return MotoS3.start(log_path)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto S3 server on loopback for the tests of one module (import this fixture where it is used)."""
    server = start_or_skip(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()
