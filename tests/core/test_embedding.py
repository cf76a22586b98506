"""Embedding with the real default model: normalised float32, per-text determinism, the reuse plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragindex.chunking import Chunk, text_sha256
from ragindex.embedding import (
    EMBEDDING_RECIPE, EmbeddingPlan, assemble_vectors, embedding_dimension, encode_query, encode_texts, load_vectors,
    model_identity, fixed_shape_batches, length_bucket, plan_embedding, save_vectors,
)
from ragindex.errors import SettingsError
from ragindex.settings import DEFAULT_MODEL

TEXTS = [
    "Forklift operators renew their certification every three years.",
    "Perishable parcels ship on Mondays and Tuesdays only.",
    "A very short one.",
    "Customs invoices are archived for five years after the export date, together with the packing list, "
    "the certificate of origin and any licence the goods required, so that an audit can be answered.",
]


def chunk(text: str, n: int = 0) -> Chunk:
    sha = text_sha256(text)
    return Chunk(f"id{n:030d}", f"doc{n}.txt", None, 0, text, sha)


def test_vectors_are_float32_and_l2_normalised(model) -> None:
    vectors = encode_texts(DEFAULT_MODEL, TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), embedding_dimension(model)) == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == len(TEXTS)  # different texts, different vectors


def test_similar_texts_are_closer_than_unrelated_ones(model) -> None:
    a, b, c = encode_texts(DEFAULT_MODEL, ["How often must forklift drivers be recertified?",
                                           TEXTS[0], "Perishable parcels ship on Mondays."])
    assert float(a @ b) > float(a @ c) + 0.2


BACKENDS = ("torch", "onnx", "onnx-int8")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_texts_vector_does_not_depend_on_the_other_texts_encoded_with_it(backend) -> None:
    together = encode_texts(DEFAULT_MODEL, TEXTS, backend=backend)
    for i, text in enumerate(TEXTS):
        alone = encode_texts(DEFAULT_MODEL, [text], backend=backend)
        assert alone[0].tobytes() == together[i].tobytes(), f"text {i} differs alone vs in a batch"
    reordered = encode_texts(DEFAULT_MODEL, list(reversed(TEXTS)) * 2, backend=backend)
    assert reordered[len(TEXTS) - 1].tobytes() == together[0].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_vectors_do_not_depend_on_batch_neighbours_in_a_full_bucket(backend) -> None:
    """Enough same-length texts to fill several fixed-shape batches: each row as if encoded alone."""
    many = [f"Dock {n} opens at {n % 12 + 1} o'clock for inbound pallets." for n in range(150)]
    together = encode_texts(DEFAULT_MODEL, many, backend=backend)
    for i in (0, 63, 64, 149):
        assert encode_texts(DEFAULT_MODEL, [many[i]], backend=backend)[0].tobytes() == together[i].tobytes()


def test_onnx_rows_do_not_depend_on_the_batch_size() -> None:
    """What lets the onnx backend skip topping batches up: a row's bits whatever the number of rows."""
    from ragindex.embedding import encoder

    enc = encoder(DEFAULT_MODEL, "onnx")
    items = enc.tokenize([f"Dock {n} opens at {n % 12 + 1} o'clock for inbound pallets." for n in range(40)])
    padded = enc.forward(items[:3] + [items[0]] * 61, 32, 64)  # topped up to the fixed batch size, as torch is
    for rows in (1, 2, 3):
        assert enc.forward(items[:rows], 32, 64)[0].tobytes() == padded[0].tobytes()
    assert enc.forward([items[0], *items[20:40]], 32, 64)[0].tobytes() == padded[0].tobytes()


def test_int8_vectors_do_not_depend_on_how_many_passes_run_side_by_side(monkeypatch) -> None:
    """onnx-int8 runs its one-text passes in parallel threads: the bits must be those of one thread."""
    from ragindex.embedding import encode_with, model_fingerprint
    from ragindex.onnx_model import OnnxEncoder

    folder, fingerprint = model_fingerprint(DEFAULT_MODEL)
    texts = [*TEXTS, *(f"Dock {n} opens at {n % 12 + 1} o'clock for inbound pallets." for n in range(30))]
    out = {}
    for threads in ("1", "2", "4"):
        monkeypatch.setenv("RAGINDEX_ONNX_THREADS", threads)
        enc = OnnxEncoder(folder, fingerprint, "onnx-int8")
        assert enc.workers == int(threads)
        out[threads] = encode_with(enc, texts)
    assert out["1"].tobytes() == out["2"].tobytes() == out["4"].tobytes()
    shuffled = texts[::-1]
    assert encode_with(enc, shuffled)[::-1].tobytes() == out["1"].tobytes()


RULES = [
    "Forklift operators renew their certification every three years and carry the card while on shift.",
    "Perishable parcels ship on Mondays and Tuesdays only, so that none waits in a depot over the weekend.",
    "Customs invoices are archived for five years after the export date, with the packing list beside them.",
    "Pedestrians have right of way in every aisle; drivers sound the horn at blind corners and ramp ends.",
    "Returned parcels need an authorization number on the label, or they go back to the sender unopened.",
    "Vaccines travel between two and eight degrees Celsius, logged every ten minutes by the truck's sensor.",
]
# Past the tokenizer file's own truncation (128, which the onnx backend must override) and past the model's
# max_seq_length (256, where both backends must cut at the same token); LONGER shares LONG's first 256 tokens.
MEDIUM = " ".join(RULES * 2)
LONG = " ".join(RULES * 4)
LONGER = LONG + " " + " ".join(reversed(RULES)) * 3
# fp32 onnx vs torch: measured max |difference| 1.0e-7 per component on these texts (1.8e-7 over 503 texts,
# benchmarks/README.md): kernel order and fusion only, a few float32 ulps of a unit vector's ~0.05 components.
# 1e-6 is ten times that; a text cut at another token moves components by ~1e-2, a bug ten thousand times over.
FP32_ATOL = 1e-6


def test_the_long_texts_are_past_128_and_256_tokens(model) -> None:
    """What the parity test relies on: the texts really cross both truncation limits."""
    assert model.max_seq_length == 256
    untruncated = [len(model.tokenizer(t)["input_ids"]) for t in (MEDIUM, LONG, LONGER)]
    assert 128 < untruncated[0] < 256 < untruncated[1] < untruncated[2], untruncated


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_the_onnx_backends_agree_with_torch(backend) -> None:
    """fp32 gives torch's vectors (to rounding), short and long texts alike, so both truncate at the same token;
    int8 stays close (measured minimum cosine 0.987 on 503 texts)."""
    texts = [*TEXTS, MEDIUM, LONG, LONGER]
    reference = encode_texts(DEFAULT_MODEL, texts, backend="torch")
    ours = encode_texts(DEFAULT_MODEL, texts, backend=backend)
    if backend == "onnx":
        np.testing.assert_allclose(ours, reference, rtol=0, atol=FP32_ATOL)
    else:
        cosines = (reference * ours).sum(axis=1)
        assert cosines.min() > 0.97, cosines
    for i, text in enumerate(texts):
        query = encode_query(DEFAULT_MODEL, text, backend)
        assert query.shape == (1, 384)
        if backend == "onnx":
            np.testing.assert_allclose(query[0], reference[i], rtol=0, atol=FP32_ATOL, err_msg=f"query {i}")
        else:
            assert float(query[0] @ reference[i]) > 0.97, i


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_text_past_the_models_limit_is_cut_at_its_256th_token(backend) -> None:
    """What follows the 256th token changes nothing, and what comes before it does (no cut at 128)."""
    medium, long, longer = encode_texts(DEFAULT_MODEL, [MEDIUM, LONG, LONGER], backend=backend)
    assert long.tobytes() == longer.tobytes()
    assert float(medium @ long) < 0.9999, "the text between tokens 128 and 256 was dropped"


def test_fixed_shape_batches_depend_only_on_lengths_and_cover_every_text() -> None:
    lengths = [5, 300, 33, 32, 64, 7, 256, 100] * 20
    batches = fixed_shape_batches(lengths, 256)
    assert sorted(i for _, _, members in batches for i in members) == list(range(len(lengths)))
    for length, size, members in batches:
        assert length % 32 == 0 and length <= 256 and size == 2048 // length and 0 < len(members) <= size
        assert all(length_bucket(lengths[i], 256) == length for i in members)
    assert fixed_shape_batches(lengths, 256) == batches


def test_progress_callback_reports_texts_done() -> None:
    seen = []
    encode_texts(DEFAULT_MODEL, TEXTS[:3], on_progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (3, 3) and all(total == 3 for _, total in seen)


def test_plan_embeds_each_new_text_once_and_counts_reused_chunks() -> None:
    cached_text, new_a, new_b = "already embedded", "brand new text", "another new text"
    chunks = [chunk(cached_text, 0), chunk(new_a, 1), chunk(new_a, 2), chunk(new_b, 3), chunk(cached_text, 4),
              chunk(new_b, 5), chunk(new_a, 6)]
    cache = {text_sha256(cached_text): np.zeros(3, np.float32)}
    plan = plan_embedding(chunks, cache)
    assert plan.total_chunks == 7
    assert plan.reused == 2
    assert sorted(text for _, text in plan.to_embed) == sorted([new_a, new_b])
    assert [sha for sha, _ in plan.to_embed] == sorted(sha for sha, _ in plan.to_embed)
    assert all(sha == text_sha256(text) for sha, text in plan.to_embed)
    # a set of shas works as the cache too, and an empty cache embeds every distinct text
    assert plan_embedding(chunks, set(cache)).to_embed == plan.to_embed
    fresh = plan_embedding(chunks, {})
    assert (len(fresh.to_embed), fresh.reused) == (3, 0)


@pytest.mark.parametrize("items,count", [(0, 1), (0, 3), (1, 4), (5, 1), (5, 2), (5, 5), (7, 3), (10, 16), (100, 7)])
def test_shards_cover_every_item_exactly_once(items: int, count: int) -> None:
    to_embed = [(f"{i:064x}", f"text {i}") for i in range(items)]
    plan = EmbeddingPlan(to_embed, reused=0, total_chunks=items)
    shards = plan.shards(count)
    assert len(shards) == count
    assert [item for shard in shards for item in shard] == to_embed
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shards_of_zero_or_negative_count_give_one_shard() -> None:
    plan = EmbeddingPlan([("a" * 64, "x"), ("b" * 64, "y")], 0, 2)
    assert plan.shards(0) == [plan.to_embed] == plan.shards(-3)


def test_saved_vectors_round_trip_and_assemble_in_chunk_order(tmp_path) -> None:
    vectors = encode_texts(DEFAULT_MODEL, TEXTS[:2])
    shas = [text_sha256(t) for t in TEXTS[:2]]
    save_vectors(tmp_path / "shard.npz", shas, vectors)
    lookup = load_vectors(tmp_path / "shard.npz")
    assert set(lookup) == set(shas)
    chunks = [chunk(TEXTS[1], 0), chunk(TEXTS[0], 1), chunk(TEXTS[1], 2)]
    assembled = assemble_vectors(chunks, lookup, vectors.shape[1])
    assert assembled[0].tobytes() == assembled[2].tobytes() == vectors[1].tobytes()
    assert assembled[1].tobytes() == vectors[0].tobytes()
    with pytest.raises(RuntimeError, match="no vector for chunk"):
        assemble_vectors([chunk("missing text", 9)], lookup, vectors.shape[1])


def test_model_identity_names_the_weights_and_how_vectors_are_made() -> None:
    identities = {b: model_identity(DEFAULT_MODEL, b) for b in BACKENDS}
    weights = {identity.split("@")[1].split("/", 1)[0] for identity in identities.values()}
    assert len(weights) == 1 and len(weights.pop()) == 16, "one model, one weights hash"
    assert all(i.startswith(DEFAULT_MODEL + "@") for i in identities.values())
    assert identities["torch"].endswith("/" + EMBEDDING_RECIPE), "a change of batching recipe must not reuse vectors"
    assert "/onnx-ort" in identities["onnx"] and "/onnx-int8-ort" in identities["onnx-int8"]
    assert identities["onnx"].endswith("/bucket-32x2048") and identities["onnx-int8"].endswith("/single-32")
    assert len(set(identities.values())) == 3, "vectors of different backends never meet in a cache"
    assert model_identity("all-MiniLM-L6-v2", "onnx") == identities["onnx"]  # an alias of the same weights
    with pytest.raises(SettingsError, match="backend"):
        model_identity(DEFAULT_MODEL, "tensorrt")


LEAN_BUILD = r"""
import json, sys
from pathlib import Path
from ragindex.pipeline import build
from ragindex.retrieval import Retriever
from ragindex.settings import BuildSettings, ChunkingSettings
build(sys.argv[1], Path(sys.argv[2]), BuildSettings(chunking=ChunkingSettings(200, 20), embedding_backend=sys.argv[3]))
hits = Retriever(sys.argv[2]).search("What must forklift operators wear?", k=1)
print(json.dumps({"loaded": [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules],
                  "hit": hits[0].source}))
"""


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_a_build_and_a_search_with_the_onnx_cache_present_import_no_torch(backend, tiny_corpus, tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    encode_texts(DEFAULT_MODEL, ["make sure the export is cached"], backend=backend)
    proc = subprocess.run([sys.executable, "-c", LEAN_BUILD, str(tiny_corpus), str(tmp_path / "index"), backend],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"loaded": [], "hit": "warehouse.md"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_texts_get_identical_vectors_whatever_the_shards(backend, tiny_corpus, tmp_path) -> None:
    """The same chunks embedded as one shard or split over three (as mapped tasks on workers do)."""
    from ragindex.pipeline import chunk_snapshot, embed_shard, plan_embeddings
    from ragindex.settings import BuildSettings, ChunkingSettings, ShardSettings
    from ragindex.sources import snapshot
    from ragindex.workdir import WorkDir

    settings = BuildSettings(chunking=ChunkingSettings(120, 10), embedding_backend=backend)
    vectors = []
    for shards in (1, 3):
        work = WorkDir(tmp_path / f"work-{shards}")
        snapshot(str(tiny_corpus), work.raw)
        chunk_snapshot(work.raw, work.chunks, settings)
        plan = plan_embeddings(work, None, settings, ShardSettings(shard_size=1, max_shards=shards))
        assert len(plan.shards) == shards and plan.backend == backend
        found = {}
        for i in range(shards):
            embed_shard(work, i)
            found.update(load_vectors(work.shard(i)))
        vectors.append(found)
    assert vectors[0].keys() == vectors[1].keys() and len(vectors[0]) > 3
    assert all(vectors[0][sha].tobytes() == vectors[1][sha].tobytes() for sha in vectors[0])


def test_two_workers_quantising_into_one_shared_export_folder_both_get_the_same_file(tmp_path, monkeypatch) -> None:
    """The compose file's Celery workers share RAGINDEX_HOME, so on a first run two embedding shards make the int8
    file side by side (the Celery fan-out test's first run hit it): onnxruntime's quantiser writes a shape-inferred
    copy beside its input under one fixed name and deletes it, and the second worker failed on the missing file."""
    import shutil
    import threading

    from ragindex import onnx_model
    from ragindex.embedding import model_fingerprint

    location, fingerprint = model_fingerprint(DEFAULT_MODEL)
    shared = onnx_model.ensure_onnx(location, fingerprint, "onnx-int8")  # this checkout's own: the expected bytes
    monkeypatch.setenv("RAGINDEX_MODELS", str(tmp_path))
    folder = onnx_model.export_folder(location, fingerprint)
    folder.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):  # the fp32 export done: what is left is the quantising
        shutil.copy(shared / name, folder / name)
    start, failures = threading.Barrier(2), []

    def worker() -> None:
        start.wait()
        try:
            onnx_model.ensure_onnx(location, fingerprint, "onnx-int8")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    int8 = onnx_model.model_file("onnx-int8")
    assert failures == []
    assert (folder / int8).read_bytes() == (shared / int8).read_bytes(), "the same quantised bytes as ever"
    assert sorted(p.name for p in folder.iterdir()) == sorted([int8, "model.onnx", "tokenizer.json"]), "no leftovers"


def test_the_export_cache_is_keyed_on_the_exporter_and_the_opset(tmp_path, monkeypatch) -> None:
    """An unchanged exporter reuses the exported file; another torch (or transformers, onnx) version or opset
    gets its own folder and a fresh export, and vectors of the two never share a model identity."""
    import shutil
    from importlib.metadata import version

    from ragindex import onnx_model
    from ragindex.embedding import model_fingerprint

    location, fingerprint = model_fingerprint(DEFAULT_MODEL)
    key = onnx_model.export_key()
    assert f"opset{onnx_model.OPSET}" in key
    assert all(f"{name}{version(name)}" in key for name in ("torch", "transformers", "onnx")), key
    assert version("onnxruntime") in onnx_model.model_file("onnx-int8")  # the quantiser names the int8 file
    shared = onnx_model.ensure_onnx(location, fingerprint, "onnx")  # RAGINDEX_MODELS: exported once per checkout

    monkeypatch.setenv("RAGINDEX_MODELS", str(tmp_path))
    seeded = onnx_model.export_folder(location, fingerprint)
    seeded.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copy(shared / name, seeded / name)
    exports: list[Path] = []
    real_export = onnx_model._export_fp32

    def counted_export(source: Path, target: Path) -> None:
        exports.append(target)
        real_export(source, target)

    monkeypatch.setattr(onnx_model, "_export_fp32", counted_export)
    assert onnx_model.ensure_onnx(location, fingerprint, "onnx") == seeded and exports == [], "unchanged key: reuse"
    identity = model_identity(DEFAULT_MODEL, "onnx")

    real_version = onnx_model.package_version
    monkeypatch.setattr(onnx_model, "package_version", lambda name: "99.0" if name == "torch" else real_version(name))
    upgraded = onnx_model.ensure_onnx(location, fingerprint, "onnx")
    assert upgraded != seeded and upgraded.parent == seeded.parent and "torch99.0" in upgraded.name
    assert exports == [upgraded / "model.onnx"] and (upgraded / "model.onnx").stat().st_size > 10_000_000
    assert (seeded / "model.onnx").is_file(), "the other exporter's file is left alone"
    assert model_identity(DEFAULT_MODEL, "onnx") != identity, "vectors of another export must not be reused"

    monkeypatch.setattr(onnx_model, "OPSET", 18)
    assert onnx_model.export_folder(location, fingerprint) not in (seeded, upgraded)
    assert "opset18" in onnx_model.export_folder(location, fingerprint).name


def test_the_weights_are_hashed_once_per_file_state_and_again_when_a_file_changes(tmp_path, monkeypatch) -> None:
    """A fresh process reads the recorded fingerprint; a changed weight file (or a touched one) is hashed again."""
    import os

    from ragindex import embedding

    monkeypatch.setenv("RAGINDEX_MODELS", str(tmp_path / "models"))
    model = tmp_path / "tiny-model"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 4}')
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    weights = model / "model.safetensors"
    weights.write_bytes(b"weights-1" * 1000)
    hashed: list[str] = []
    real = embedding._folder_fingerprint.__wrapped__

    def counting(folder: str, stamp: tuple) -> str:
        hashed.append(folder)
        return real(folder, stamp)

    monkeypatch.setattr(embedding, "_folder_fingerprint", counting)
    _, first = embedding.model_fingerprint(str(model))
    assert embedding.model_fingerprint(str(model))[1] == first and len(hashed) == 1, "read from the record"
    assert len(list((tmp_path / "models" / "fingerprints").iterdir())) == 1
    weights.write_bytes(b"weights-2" * 1000)  # same size, new content and mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    _, second = embedding.model_fingerprint(str(model))
    assert second != first and len(hashed) == 2
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": false}')  # a nested file counts
    os.utime(model / "1_Pooling" / "config.json", ns=(1, 10**18))
    assert embedding.model_fingerprint(str(model))[1] not in (first, second) and len(hashed) == 3


def test_the_encoder_loaded_ahead_is_the_one_the_encode_then_uses() -> None:
    from ragindex.embedding import encoder, load_encoder_in_background

    encoder.cache_clear()
    thread = load_encoder_in_background(DEFAULT_MODEL, "onnx-int8")
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()
    loaded = encoder.cache_info()
    assert loaded.misses == 1 and loaded.currsize == 1
    encoder(DEFAULT_MODEL, "onnx-int8")
    after = encoder.cache_info()
    assert (after.hits, after.misses) == (loaded.hits + 1, loaded.misses), "not loaded a second time"


def test_a_load_ahead_that_fails_leaves_the_error_to_the_encode(monkeypatch) -> None:
    import threading

    from ragindex.embedding import encoder, load_encoder_in_background

    escaped: list = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    model = "no-such-org/no-such-model"  # a hub name: the onnx backends cannot export it offline
    thread = load_encoder_in_background(model, "onnx")
    thread.join(timeout=60)
    assert escaped == [], "nothing escapes the thread"
    with pytest.raises(SettingsError, match="no-such-model"):
        encoder(model, "onnx")


def test_torch_is_not_loaded_ahead() -> None:
    from ragindex.embedding import load_encoder_in_background

    assert load_encoder_in_background(DEFAULT_MODEL, "torch") is None
