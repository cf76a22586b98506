"""Index folders: their files and settings, byte-identical rebuilds, HNSW, and refusing to overwrite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragindex.embedding import encode_texts
from ragindex.errors import IndexDirError
from ragindex.indexing import (
    DOCSTORE_FILE, INDEX_FILE, SETTINGS_FILE, cached_vectors, read_chunks, read_faiss, read_index_settings,
    write_index_dir,
)
from ragindex.pipeline import DOCUMENTS_FILE, build
from ragindex.retrieval import Retriever
from ragindex.settings import DEFAULT_MODEL, BuildSettings, IndexSettings
from ragindex.sparse import SPARSE_DIR

from .conftest import SMALL, TINY_CORPUS, TINY_PDF_PAGES

FILES = (INDEX_FILE, DOCSTORE_FILE, SETTINGS_FILE, DOCUMENTS_FILE, SPARSE_DIR)


def all_vectors(index) -> np.ndarray:
    import faiss

    if hasattr(index, "storage"):
        index = faiss.downcast_index(index.storage)
    return index.reconstruct_n(0, index.ntotal)


def test_index_folder_holds_faiss_docstore_and_settings(tiny_index) -> None:
    out, result = tiny_index
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    meta = json.loads((out / SETTINGS_FILE).read_text())
    assert meta["model"] == DEFAULT_MODEL
    assert meta["model_identity"].startswith(DEFAULT_MODEL + "@")
    assert meta["dimension"] == 384
    assert meta["metric"] == "inner_product" and meta["normalized"] is True
    assert meta["chunking"] == {"chunk_size": 200, "chunk_overlap": 20, "splitter": "recursive"}
    assert meta["index"]["kind"] == "flat"
    assert meta["documents"] == result.documents == len(TINY_CORPUS) + 1
    chunks = read_chunks(out)
    index = read_faiss(out)
    assert meta["chunks"] == result.chunks == len(chunks) == index.ntotal
    assert {c.source for c in chunks} == set(TINY_CORPUS) | {"cold_chain.pdf"}
    assert {c.page for c in chunks if c.source == "cold_chain.pdf"} == {1, 2}
    assert read_index_settings(out) == meta


def test_each_row_holds_the_vector_of_its_docstore_text(tiny_index) -> None:
    """The vector of what was indexed: the chunk's section path, then its text (the default), or the text."""
    from ragindex.chunking import indexed_text

    out, _ = tiny_index
    chunks = read_chunks(out)
    assert read_index_settings(out)["index"]["section_path_in_text"] is True
    assert any(c.section for c in chunks) and any(not c.section for c in chunks)
    stored = all_vectors(read_faiss(out))
    expected = encode_texts(DEFAULT_MODEL, [indexed_text(c, True) for c in chunks])
    assert stored.dtype == np.float32
    assert stored.tobytes() == expected.tobytes()
    assert stored.tobytes() != encode_texts(DEFAULT_MODEL, [c.text for c in chunks]).tobytes()


def test_two_builds_of_the_same_corpus_are_byte_identical(tiny_corpus: Path, tiny_index, tmp_path: Path) -> None:
    out, _ = tiny_index
    again = build(str(tiny_corpus), tmp_path / "again", SMALL)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert Path(SPARSE_DIR, "params.index.json") in files
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    assert again.embedded == again.chunks > 0  # really rebuilt (no previous index given)


def test_hnsw_index_is_built_and_searchable(tiny_corpus: Path, tiny_index, tmp_path: Path) -> None:
    import faiss

    settings = BuildSettings(chunking=SMALL.chunking, index=IndexSettings(kind="hnsw", hnsw_m=8))
    build(str(tiny_corpus), tmp_path / "hnsw", settings)
    index = read_faiss(tmp_path / "hnsw")
    assert isinstance(faiss.downcast_index(index), faiss.IndexHNSWFlat)
    assert json.loads((tmp_path / "hnsw" / SETTINGS_FILE).read_text())["index"]["kind"] == "hnsw"
    flat_out, _ = tiny_index
    # same docstore and the same stored vectors as the flat index: only the search structure differs
    assert (tmp_path / "hnsw" / DOCSTORE_FILE).read_bytes() == (flat_out / DOCSTORE_FILE).read_bytes()
    assert all_vectors(index).tobytes() == all_vectors(read_faiss(flat_out)).tobytes()

    hits = Retriever(tmp_path / "hnsw").search("At what temperature are vaccines kept in trucks?", k=3)
    assert hits[0].source == "cold_chain.pdf" and hits[0].page == 1
    assert TINY_PDF_PAGES[0] in hits[0].text
    flat_hits = Retriever(flat_out).search("At what temperature are vaccines kept in trucks?", k=3)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in flat_hits]

    again = tmp_path / "hnsw2"
    build(str(tiny_corpus), again, settings)
    assert (again / INDEX_FILE).read_bytes() == (tmp_path / "hnsw" / INDEX_FILE).read_bytes()


def test_out_onto_a_folder_that_is_not_an_index_is_refused_and_left_untouched(tiny_index, tmp_path: Path) -> None:
    out, _ = tiny_index
    chunks = read_chunks(out)
    vectors = all_vectors(read_faiss(out))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("five years of work")
    (precious / "data").mkdir()
    (precious / "data" / "x.csv").write_text("1,2,3")
    before = {p.relative_to(precious): p.read_bytes() for p in precious.rglob("*") if p.is_file()}

    with pytest.raises(IndexDirError) as exc:
        write_index_dir(precious, chunks, vectors, index_settings=IndexSettings(), description={})
    assert str(precious) in str(exc.value) and "not a ragindex index" in str(exc.value)
    after = {p.relative_to(precious): p.read_bytes() for p in precious.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no temp folder left beside it


def test_an_existing_index_folder_is_replaced(tiny_index, tmp_path: Path) -> None:
    out, _ = tiny_index
    target = tmp_path / "index"
    shutil.copytree(out, target)
    chunks = read_chunks(out)[:2]
    vectors = all_vectors(read_faiss(out))[:2]
    write_index_dir(target, chunks, vectors, index_settings=IndexSettings(), description={"model": "m"})
    assert read_faiss(target).ntotal == 2
    assert read_chunks(target) == chunks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # the old copy was removed


def test_read_index_settings_explains_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(IndexDirError, match="no such folder"):
        read_index_settings(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / SETTINGS_FILE).write_text("{}")
    with pytest.raises(IndexDirError, match=f"missing {SETTINGS_FILE} or {INDEX_FILE}"):
        read_index_settings(tmp_path / "half")


def test_cached_vectors_only_offered_for_the_same_model(tiny_index) -> None:
    out, _ = tiny_index
    meta = read_index_settings(out)
    from ragindex.chunking import indexed_key, indexed_text, text_sha256

    cache = cached_vectors(out, meta["model_identity"])
    chunks = read_chunks(out)
    keys = [indexed_key(c, True) for c in chunks]
    assert set(cache) == set(keys) and keys == [text_sha256(indexed_text(c, True)) for c in chunks]
    assert set(keys) != {c.sha256 for c in chunks}, "known by what was embedded: section path and text"
    stored = all_vectors(read_faiss(out))
    for i, key in enumerate(keys):
        assert cache[key].tobytes() == stored[i].tobytes()
    assert cached_vectors(out, "some-other-model@0123456789abcdef") == {}
    assert cached_vectors(None, meta["model_identity"]) == {}
