"""Incremental builds: only new chunk texts are embedded, and the result equals a fresh build bit for bit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from ragindex.cli import main
from ragindex.indexing import DOCSTORE_FILE, INDEX_FILE, SETTINGS_FILE, iter_docstore, read_faiss
from ragindex.pipeline import DOCUMENTS_FILE, build

from .conftest import SMALL, write_files

CHUNK_ARGS = ["--chunk-size", str(SMALL.chunking.chunk_size), "--chunk-overlap", str(SMALL.chunking.chunk_overlap)]

V1 = {
    "safety.md": "# Safety\n\nHelmets are worn in the high-bay area at all times.\n\n"
                 "Spills are covered with absorbent and reported to the shift lead within ten minutes.\n\n"
                 "Fire exits stay clear; pallets are never parked in front of them.",
    "returns.txt": "Returns need an authorization number printed on the shipping label; parcels that arrive "
                   "without one are sent back to the customer unopened.\n\n"
                   "Refunds are issued within five business days after the returned parcel has been inspected "
                   "by the returns desk and its contents checked.\n\n"
                   "Opened electronics are refunded at eighty percent of the price paid, unless the device was "
                   "faulty on arrival, in which case the full price is refunded.\n\n"
                   "Damaged returns are photographed from every side before they are thrown away, and the photos "
                   "are attached to the customer's case.",
    "fleet/trucks.txt": "Box trucks get an oil change every ten thousand miles.\n\n"
                        "Tyre pressure is checked every Monday before the first run.",
}
# only returns.txt changes: one paragraph is edited, one is added; the others stay word for word
RETURNS_V2 = V1["returns.txt"].replace("five business days", "three business days") + \
    "\n\nGift returns are refunded as store credit to the person who returned them."


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vectors(index_dir: Path):
    index = read_faiss(index_dir)
    return index.reconstruct_n(0, index.ntotal)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 built fresh; v2 (one document changed) built with --previous v1 through the CLI, and fresh."""
    root = tmp_path_factory.mktemp("incremental")
    v1 = write_files(root / "v1", V1)
    v2 = root / "v2"
    shutil.copytree(v1, v2)
    (v2 / "returns.txt").write_text(RETURNS_V2)

    first = build(str(v1), root / "index-v1", SMALL)
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["build", str(v2), "--out", str(root / "index-v2-incremental"), "--previous",
                   str(root / "index-v1"), "--json", *CHUNK_ARGS])
    assert rc == 0
    incremental = json.loads(stdout.getvalue())
    fresh = build(str(v2), root / "index-v2-fresh", SMALL)
    return {"root": root, "v1": v1, "v2": v2, "first": first, "incremental": incremental, "fresh": fresh}


def test_only_new_chunk_texts_are_embedded(builds: dict) -> None:
    root = builds["root"]
    old_texts = {sha(r["text"]) for r in iter_docstore(root / "index-v1")}
    new_records = list(iter_docstore(root / "index-v2-incremental"))
    expected_embedded = len({sha(r["text"]) for r in new_records} - old_texts)
    expected_reused = sum(1 for r in new_records if sha(r["text"]) in old_texts)

    report = builds["incremental"]
    assert expected_embedded > 0 and expected_reused > 0  # the edit really changed some chunks but not all
    assert report["embedded"] == expected_embedded
    assert report["reused"] == expected_reused
    assert report["chunks"] == len(new_records) == expected_reused + sum(
        1 for r in new_records if sha(r["text"]) not in old_texts)
    # every new text comes from the one document that changed
    assert {r["source"] for r in new_records if sha(r["text"]) not in old_texts} == {"returns.txt"}
    # unchanged chunks of the changed document are reused too
    assert any(r["source"] == "returns.txt" and sha(r["text"]) in old_texts for r in new_records)
    assert builds["fresh"].embedded == len({sha(r["text"]) for r in new_records}) and builds["fresh"].reused == 0


def test_incremental_vectors_are_bit_identical_to_a_fresh_build(builds: dict) -> None:
    root = builds["root"]
    inc, fresh, old = (vectors(root / n) for n in ("index-v2-incremental", "index-v2-fresh", "index-v1"))
    records = list(iter_docstore(root / "index-v2-incremental"))
    old_rows = {r["sha256"]: i for i, r in enumerate(iter_docstore(root / "index-v1"))}
    assert inc.shape == fresh.shape == (len(records), 384)
    reused_rows = [i for i, r in enumerate(records) if r["sha256"] in old_rows]
    assert reused_rows
    for i in reused_rows:
        assert inc[i].tobytes() == fresh[i].tobytes(), f"reused row {i} differs from the fresh build"
        assert inc[i].tobytes() == old[old_rows[records[i]["sha256"]]].tobytes()  # it came from v1
    assert inc.tobytes() == fresh.tobytes()


def test_incremental_index_files_equal_the_fresh_build(builds: dict) -> None:
    root = builds["root"]
    for name in (INDEX_FILE, DOCSTORE_FILE, SETTINGS_FILE, DOCUMENTS_FILE):
        assert (root / "index-v2-incremental" / name).read_bytes() == (root / "index-v2-fresh" / name).read_bytes(), name
    assert (root / "index-v2-fresh" / INDEX_FILE).read_bytes() != (root / "index-v1" / INDEX_FILE).read_bytes()


def test_rebuilding_an_unchanged_corpus_embeds_nothing(builds: dict) -> None:
    root = builds["root"]
    again = build(str(builds["v1"]), root / "index-v1-again", SMALL, previous=root / "index-v1")
    assert again.embedded == 0
    assert again.reused == again.chunks == builds["first"].chunks
    for name in (INDEX_FILE, DOCSTORE_FILE, SETTINGS_FILE):
        assert (root / "index-v1-again" / name).read_bytes() == (root / "index-v1" / name).read_bytes(), name


def test_only_changed_documents_are_parsed_and_the_report_equals_a_fresh_one(builds: dict) -> None:
    incremental, fresh = builds["incremental"], builds["fresh"]
    assert (incremental["parsed"], incremental["documents_reused"]) == (1, len(V1) - 1)
    assert (fresh.parsed, fresh.documents_reused) == (len(V1), 0)
    assert incremental["quality"] == fresh.quality


def test_a_failed_document_is_not_parsed_again_until_it_changes(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "c", {**V1, "broken.pdf": b"%PDF-1.4 not really a pdf"})
    first = build(str(corpus), tmp_path / "i1", SMALL)
    again = build(str(corpus), tmp_path / "i2", SMALL, previous=tmp_path / "i1")
    assert [f["path"] for f in first.failed] == [f["path"] for f in again.failed] == ["broken.pdf"]
    assert again.failed[0]["reason"] == first.failed[0]["reason"]
    assert again.parsed == 0 and again.documents_reused == len(V1) + 1
    (corpus / "broken.pdf").write_bytes(b"still not a pdf, but different")
    third = build(str(corpus), tmp_path / "i3", SMALL, previous=tmp_path / "i2")
    assert third.parsed == 1 and [f["path"] for f in third.failed] == ["broken.pdf"]


def test_other_chunk_settings_parse_everything_again(builds: dict, tmp_path: Path) -> None:
    from ragindex.settings import BuildSettings, ChunkingSettings

    other = BuildSettings(chunking=ChunkingSettings(SMALL.chunking.chunk_size + 50, SMALL.chunking.chunk_overlap))
    result = build(str(builds["v2"]), tmp_path / "other", other, previous=builds["root"] / "index-v2-fresh")
    assert result.parsed == len(V1) and result.documents_reused == 0
