"""Object-storage corpora are logged to W&B by reference: only the manifest is uploaded."""

from __future__ import annotations

import json
from ragindex.ingest import logs_by_reference, manifest_only
from ragindex.sources import MANIFEST_NAME, snapshot
from ragindex.workdir import WorkDir


class RegistryStandIn:
    """Only the attribute the decision reads; a stand-in because no W&B server is reachable."""

    def __init__(self, by_reference: bool) -> None:
        self.by_reference = by_reference


def test_reference_logging_applies_only_to_object_storage_with_reference_registry():
    assert logs_by_reference(RegistryStandIn(True), "s3://bucket/corpus")
    assert not logs_by_reference(RegistryStandIn(True), "/data/corpus")
    assert not logs_by_reference(RegistryStandIn(True), "file:///data/corpus")
    assert not logs_by_reference(RegistryStandIn(False), "s3://bucket/corpus")


def test_manifest_only_folder_lists_every_document_as_a_reference(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/refcorpus/a.md": b"# A\n\nalpha", "/refcorpus/sub/b.txt": b"beta"})
    work = WorkDir(tmp_path)
    snap = snapshot("memory://refcorpus", work.raw)
    folder, references = manifest_only(work, "memory://refcorpus", snap.entries)
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]
    assert references == {"files/a.md": "memory://refcorpus/a.md", "files/sub/b.txt": "memory://refcorpus/sub/b.txt"}
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert {d["path"] for d in manifest["documents"]} == {"a.md", "sub/b.txt"}
