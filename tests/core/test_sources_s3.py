"""Snapshots of a corpus on S3, against a real S3 API over HTTP on 127.0.0.1 (moto's server, IAM auth on):
what a date sees (LastModified), change and delete, a backfill over a versioned bucket that rebuilds the
corpus as it was, and each failure classified (unreachable: retryable; refused or missing: permanent).

Plain ``s3://BUCKET/PREFIX`` URLs take credentials and endpoint from the environment here (botocore's
``AWS_*`` variables); the ``s3://CONN_ID@...`` form through Airflow connections is tested in
tests/dags/test_s3_source.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ragindex.errors import SourceError, SourceUnavailable
from ragindex.sources import parse_remote, redact, snapshot
from tests.moto_s3 import moto  # noqa: F401 - the fixture
from tests.moto_s3 import REGION, free_port, server_time, start_or_skip

CORPUS = {"corpus/forklifts.md": b"Forklift drivers keep the forks lowered.",
          "corpus/notes/returns.txt": b"Returns need an authorization number.",
          "corpus/.hidden/draft.md": b"not a document",
          "elsewhere/other.md": b"outside the prefix"}



@pytest.fixture
def aws_env(moto, monkeypatch):
    """botocore's own environment variables pointing at the server, and no s3fs instance from another test."""
    import s3fs

    for name, value in {"AWS_ACCESS_KEY_ID": moto.key_id, "AWS_SECRET_ACCESS_KEY": moto.secret,
                        "AWS_ENDPOINT_URL": moto.endpoint, "AWS_DEFAULT_REGION": REGION,
                        "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def put(s3, bucket: str, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def texts(snap) -> dict[str, str]:
    return {e.path: (snap.root / "files" / e.path).read_text() for e in snap.entries}


def test_snapshot_of_a_prefix_keeps_its_documents_with_their_last_modified(moto, aws_env, tmp_path: Path) -> None:
    s3 = moto.bucket("plain-docs")
    put(s3, "plain-docs", CORPUS)
    snap = snapshot("s3://plain-docs/corpus/", tmp_path / "snap")
    assert texts(snap) == {"forklifts.md": "Forklift drivers keep the forks lowered.",
                           "notes/returns.txt": "Returns need an authorization number."}
    written = server_time(s3, "plain-docs", "corpus/forklifts.md")
    entry = next(e for e in snap.entries if e.path == "forklifts.md")
    assert entry.modified == written.isoformat() and entry.size == len(CORPUS["corpus/forklifts.md"])
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert [d["path"] for d in manifest["documents"]] == ["forklifts.md", "notes/returns.txt"]
    assert snap.snapshot_facts()["source"] == "s3://plain-docs/corpus/"


def test_change_and_delete_are_seen_and_a_date_before_them_sees_only_older_objects(moto, aws_env,
                                                                                    tmp_path: Path) -> None:
    s3 = moto.bucket("changing-docs")
    put(s3, "changing-docs", CORPUS)
    first = snapshot("s3://changing-docs/corpus", tmp_path / "one")
    before = server_time(s3, "changing-docs", "corpus/forklifts.md")
    time.sleep(1.1)  # LastModified has one-second resolution
    put(s3, "changing-docs", {"corpus/forklifts.md": b"Forklift drivers sound the horn at every corner."})
    s3.delete_object(Bucket="changing-docs", Key="corpus/notes/returns.txt")

    now = snapshot("s3://changing-docs/corpus", tmp_path / "two")
    assert texts(now) == {"forklifts.md": "Forklift drivers sound the horn at every corner."}
    assert now.content_digest != first.content_digest
    # Without versions, a date before the change cannot see the old bytes: the changed object is newer
    with pytest.raises(SourceError, match="no documents found as of"):
        snapshot("s3://changing-docs/corpus", tmp_path / "three", as_of=before)


def test_backfill_over_a_versioned_bucket_rebuilds_the_corpus_as_it_was(moto, aws_env, tmp_path: Path) -> None:
    s3 = moto.bucket("versioned-docs", versioned=True)
    put(s3, "versioned-docs", CORPUS)
    then = server_time(s3, "versioned-docs", "corpus/notes/returns.txt")
    original = snapshot("s3://versioned-docs/corpus/", tmp_path / "then-live")
    time.sleep(1.1)
    put(s3, "versioned-docs", {"corpus/forklifts.md": b"Forklift drivers sound the horn at every corner.",
                               "corpus/new.md": b"A document added after the date."})
    s3.delete_object(Bucket="versioned-docs", Key="corpus/notes/returns.txt")

    backfill = snapshot("s3://versioned-docs/corpus/", tmp_path / "then", as_of=then)
    assert texts(backfill) == {"forklifts.md": "Forklift drivers keep the forks lowered.",
                               "notes/returns.txt": "Returns need an authorization number."}
    assert backfill.content_digest == original.content_digest, "the past corpus, byte for byte"
    assert backfill.as_of == then.isoformat()

    now = snapshot("s3://versioned-docs/corpus/", tmp_path / "now")
    assert texts(now) == {"forklifts.md": "Forklift drivers sound the horn at every corner.",
                          "new.md": "A document added after the date."}
    dated_now = snapshot("s3://versioned-docs/corpus/", tmp_path / "dated-now",
                         as_of=server_time(s3, "versioned-docs", "corpus/new.md"))
    assert dated_now.content_digest == now.content_digest, "as of now, versions agree with the live listing"


def test_a_document_deleted_and_written_again_is_seen_at_each_date(moto, aws_env, tmp_path: Path) -> None:
    s3 = moto.bucket("reborn-docs", versioned=True)
    put(s3, "reborn-docs", {"corpus/a.md": b"first", "corpus/b.md": b"stays"})
    first = server_time(s3, "reborn-docs", "corpus/a.md")
    time.sleep(1.1)
    s3.delete_object(Bucket="reborn-docs", Key="corpus/a.md")
    deleted = s3.list_object_versions(Bucket="reborn-docs", Prefix="corpus/a.md")["DeleteMarkers"][0]["LastModified"]
    time.sleep(1.1)
    put(s3, "reborn-docs", {"corpus/a.md": b"second"})
    assert texts(snapshot("s3://reborn-docs/corpus", tmp_path / "1", as_of=first)) == {"a.md": "first",
                                                                                      "b.md": "stays"}
    assert texts(snapshot("s3://reborn-docs/corpus", tmp_path / "2", as_of=deleted)) == {"b.md": "stays"}
    assert texts(snapshot("s3://reborn-docs/corpus", tmp_path / "3")) == {"a.md": "second", "b.md": "stays"}


def test_unreachable_storage_is_a_retryable_error_naming_the_source(aws_env, tmp_path: Path) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"s3://plain-docs/corpus/.*did not answer.*retry later") as err:
        snapshot("s3://plain-docs/corpus/", tmp_path / "snap")
    assert err.value.retryable is True
    assert time.monotonic() - started < 60


def test_refused_credentials_are_a_permanent_error_without_the_secret(moto, aws_env, tmp_path: Path) -> None:
    moto.bucket("guarded-docs")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(SourceError, match=r"s3://guarded-docs/corpus/.*access refused") as err:
        snapshot("s3://guarded-docs/corpus/", tmp_path / "snap")
    assert err.value.retryable is False
    assert "not-the-secret-at-all" not in str(err.value) and moto.secret not in str(err.value)


def test_a_missing_bucket_is_a_permanent_error_naming_it(moto, aws_env, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"s3://no-such-bucket/corpus/") as err:
        snapshot("s3://no-such-bucket/corpus/", tmp_path / "snap")
    assert err.value.retryable is False


def test_credentials_in_the_url_are_refused_and_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"credentials in the URL are refused") as err:
        snapshot("s3://AKIAKEY:TopSecret123@bucket/corpus/", tmp_path / "snap")
    assert "TopSecret123" not in str(err.value) and "s3://AKIAKEY:***@bucket/corpus/" in str(err.value)
    assert redact("s3://minio@bucket/x") == "s3://minio@bucket/x"


def test_a_connection_url_outside_airflow_names_the_connection(tmp_path: Path, monkeypatch) -> None:
    import ragindex.sources

    monkeypatch.setattr(ragindex.sources, "_connection_opener", None)  # as in a process without Airflow glue
    remote = parse_remote("s3://minio@bucket/corpus/")
    assert (remote.conn_id, remote.path, remote.protocol) == ("minio", "bucket/corpus/", "s3")
    assert parse_remote("s3://bucket/corpus/").conn_id is None
    with pytest.raises(SourceError, match=r"connection 'minio'.*only inside Airflow.*s3://bucket/corpus/"):
        snapshot("s3://minio@bucket/corpus/", tmp_path / "snap")
