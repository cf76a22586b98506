"""A real ``wandb.init`` + ``log_artifact`` in offline mode, with the adapter's init arguments and artifact.

Offline mode cannot ``use_artifact`` nor read back through the Api, so this checks what the
adapter hands to the real SDK: the run is created as configured (in RAGINDEX_HOME, console capture off),
the ``.wandb`` transaction log holds the artifact record (name, type, digest, aliases, metadata, manifest
entries), and nothing was copied into W&B's staging area.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import wandb  # pinned in requirements.txt: a missing install is an error, not a skip

from ragindex.registry import RunInfo  # noqa: E402
from ragindex.registry.digest import manifest_digest, manifest_of  # noqa: E402
from ragindex.registry.protocol import LogRequest  # noqa: E402
from ragindex.registry.wandb import WandbRegistry  # noqa: E402

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" magic, uint16 key, uint8 version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[bytes]:
    """Payloads of a ``.wandb`` file (a LevelDB-style log of protobuf ``Record``s after a 7-byte header)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records: list[bytes] = []
    pending = b""
    offset = HEADER
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:  # block trailer padding
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        payload = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            records.append(pending + payload)
            pending = b""
    return records


def artifact_records(path: Path) -> list:
    """The artifact records in a ``.wandb`` file, parsed with the SDK's protobuf schema."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for payload in read_wandb_records(path):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "artifact":
            found.append(record.artifact)
    return found


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with every directory it writes under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("RAGINDEX_HOME", str(tmp_path / "ragindex-home"))
    return tmp_path


def test_offline_run_records_the_logged_artifact(offline_env: Path, tmp_path: Path) -> None:
    source = tmp_path / "index"
    (source / "sub").mkdir(parents=True)
    (source / "index.faiss").write_bytes(b"\x00faiss\x01" * 100)
    (source / "sub" / "meta.json").write_text('{"dim": 384}')
    registry = WandbRegistry("offline-team", "offline-project")
    run_info = RunInfo("embed", group="dag-run-1", config={"model": "minilm"}, name="dag-run-1/embed")
    manifest = manifest_of(source)
    request = LogRequest(name="rag-index", type="index", files=source, manifest=manifest,
                         digest=manifest_digest(manifest), run=run_info, metadata={"chunks": 42},
                         aliases=("candidate",), consumed=())

    wb_run = wandb.init(**registry._init_kwargs(run_info, {"model": "minilm"}))
    try:
        artifact = registry._build_artifact(request, str(wb_run.id))
        wb_run.log_artifact(artifact, aliases=["candidate"])
        expected_digest = artifact.digest
    finally:
        wb_run.finish()
        # finish() returns before wandb-core's writer has closed the transaction log; teardown
        # stops the service, so the log is complete on disk before it is read.
        wandb.teardown()

    assert not (offline_env / "wandb").exists(), "nothing in WANDB_DIR or the working directory"
    run_dirs = list((registry.run_dir / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1, list(registry.run_dir.rglob("*"))
    assert not list(run_dirs[0].rglob("output.log")), "console capture is off"
    staging = offline_env / "data" / "artifacts" / "staging"
    assert not staging.exists() or not any(staging.iterdir()), "no staging copy of the files"
    logs = list(run_dirs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    records = artifact_records(logs[0])
    assert len(records) == 1, "exactly one artifact logged"
    record = records[0]
    assert (record.name, record.type, record.digest) == ("rag-index", "index", expected_digest)
    assert (record.entity, record.project) == ("offline-team", "offline-project")
    assert "candidate" in list(record.aliases)
    assert json.loads(record.metadata) == {"chunks": 42, "ragindex.lineage": {"run": wb_run.id, "consumed": []}}
    entries = {entry.path: entry.digest for entry in record.manifest.contents}
    assert entries == manifest_of(source), "manifest paths and per-file digests match the local algorithm"
