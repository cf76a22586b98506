"""The ONNX embedding backends: the installed sentence-transformers model exported once to ONNX (``onnx``,
fp32) and quantised (``onnx-int8``, dynamic QInt8 per channel), cached under ``RAGINDEX_MODELS``, and run
with onnxruntime, the fast tokenizer and numpy, so embedding and query encoding import neither torch nor
sentence-transformers (a fresh process starts in a fraction of a second instead of about six).

Export path: ``torch.onnx.export`` (TorchScript exporter, opset 17) of the Hugging Face model inside the
installed sentence-transformers folder (the exporter re-serialises through the ``onnx`` package), then
``onnxruntime.quantization.quantize_dynamic``; no download, and no optimum (whose pins conflict with
sentence-transformers 6). Only the export needs torch, once per model and exporter: the cache is keyed on the
weights, the opset and the versions of torch, transformers and onnx (the int8 file also on onnxruntime's),
so an upgraded exporter makes a new file instead of reusing one another exporter wrote.
Each file is written beside its final name and renamed into place, so a crash or a concurrent exporter on
another worker never leaves half a model (two exports of one model give the same bytes), and two workers
exporting into one shared folder at once both succeed (``_quantize`` says what that took).

Determinism, measured (see benchmarks/README.md): fp32 gives bit-identical vectors for texts padded to their
length bucket, whatever the batch-mates, the batch's size and the thread count; int8 quantises activations
per batch, so it runs one text per pass (still about twice as fast as torch).
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ragindex.atomic import link_or_copy, replace_file_atomically
from ragindex.errors import SettingsError
from ragindex.offline import hugging_face_offline
from ragindex.settings import models_home

if TYPE_CHECKING:  # numpy is imported where it is used: a no-op build never needs it (benchmarks/README.md)
    import numpy as np

log = logging.getLogger(__name__)

ONNX, ONNX_INT8 = "onnx", "onnx-int8"
OPSET = 17
EXPORTERS = ("torch", "transformers", "onnx")  # torch.onnx.export traces transformers' model, onnx re-serialises


@lru_cache(maxsize=None)
def onnxruntime_version() -> str:
    """The installed onnxruntime's version (part of a model identity: its kernels decide the bits); read once a
    process, as the metadata lookup walks every installed distribution (~4 ms each time here)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxruntime")
    except PackageNotFoundError:
        raise SettingsError("the onnx embedding backends need the package onnxruntime (see requirements.txt)") from None


@lru_cache(maxsize=None)
def package_version(name: str) -> str:
    """An installed package's version without importing it ("absent" when it is not installed); once a process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def export_key() -> str:
    """What besides the weights decides the exported file's bits, so another exporter never reuses the file."""
    return "-".join([f"opset{OPSET}", *(f"{name}{package_version(name)}" for name in EXPORTERS)])


def model_file(backend: str) -> str:
    """The backend's file name in the export folder: int8 is made by onnxruntime's quantiser, so it names it."""
    return "model.onnx" if backend == ONNX else f"model-qint8-ort{onnxruntime_version()}.onnx"


def export_folder(location: Path, fingerprint: str) -> Path:
    """Where a model's exports live: one folder per weights and exporter (see ``export_key``)."""
    return models_home() / f"{location.name}@{fingerprint}" / export_key()


def model_settings(location: Path) -> dict[str, Any]:
    """What the ONNX runtime must reproduce of a sentence-transformers folder: max length, mean pooling."""
    pooling_file = location / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_file.read_text()) if pooling_file.is_file() else {}
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SettingsError(f"model at {location}: the onnx backends support mean-pooling models only; use "
                            "embedding_backend=torch for this one")
    sbert = location / "sentence_bert_config.json"
    max_length = int(json.loads(sbert.read_text()).get("max_seq_length", 256)) if sbert.is_file() else 256
    return {"max_length": max_length, "dimension": int(pooling["word_embedding_dimension"])}


def _export_fp32(location: Path, target: Path) -> None:
    """The Hugging Face model of a sentence-transformers folder as ONNX (last_hidden_state), once."""
    hugging_face_offline()  # before transformers is imported: huggingface_hub reads these at import
    import warnings

    import torch
    from transformers import AutoModel

    log.info("exporting %s to ONNX (once per model; torch is needed only for this)", location)
    bert = AutoModel.from_pretrained(str(location), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):  # keyword call: positional arguments clash in transformers 5
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    dummy = {k: torch.ones(2, 16, dtype=torch.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    dummy["token_type_ids"].zero_()
    dummy["attention_mask"][1, 10:] = 0  # real padding, so no "no padding" shortcut is traced
    axes = {0: "batch", 1: "sequence"}
    names = ["input_ids", "attention_mask", "token_type_ids"]

    def export(tmp: Path) -> None:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState(bert), tuple(dummy[n] for n in names), str(tmp), input_names=names,
                              output_names=["last_hidden_state"],
                              dynamic_axes={n: axes for n in [*names, "last_hidden_state"]}, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False)

    replace_file_atomically(target, export)


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8 (QInt8 weights per channel: per-tensor weights lose too much, see benchmarks/README.md).
    ``quantize_dynamic`` writes a shape-inferred copy beside its input under a fixed name (``model-inferred.onnx``)
    and deletes it, so two workers quantising in one shared export folder deleted each other's copy (the
    second failed with FileNotFoundError): it reads the fp32 file through a link in a folder of this call's own."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # quantize_dynamic advises a pre-processing that changes nothing here
    try:
        with tempfile.TemporaryDirectory(prefix=f".{target.name}.in-", dir=target.parent) as private:
            own = Path(private) / source.name
            link_or_copy(source, own)  # beside the source: a link, no copy of ~90 MB
            replace_file_atomically(target, lambda tmp: quantize_dynamic(str(own), str(tmp),
                                                                         weight_type=QuantType.QInt8, per_channel=True))
    finally:
        logging.disable(logging.NOTSET)


def ensure_onnx(location: Path, fingerprint: str, backend: str) -> Path:
    """The folder holding the backend's ONNX file and the tokenizer for a model (made once, crash-safely)."""
    folder = export_folder(location, fingerprint)
    target = folder / model_file(backend)
    if target.is_file() and (folder / "tokenizer.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / model_file(ONNX)
    if not fp32.is_file():
        _export_fp32(location, fp32)
    if backend == ONNX_INT8 and not target.is_file():
        _quantize(fp32, target)
    if not (folder / "tokenizer.json").is_file():
        replace_file_atomically(folder / "tokenizer.json", lambda tmp: tmp.write_bytes((location / "tokenizer.json").read_bytes()))
    return folder


class OnnxEncoder:
    """Encodes with onnxruntime: mean pooling over the attention mask, then L2 normalisation (what the
    sentence-transformers model does), from token ids of the model's own fast tokenizer."""

    def __init__(self, location: Path, fingerprint: str, backend: str) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        settings = model_settings(location)
        folder = ensure_onnx(location, fingerprint, backend)
        self.max_length, self.dimension = settings["max_length"], settings["dimension"]
        # int8 quantises activations per tensor, so batch-mates would change a row: one text per pass. fp32
        # rows are independent of the batch's size in onnxruntime's CPU kernels (measured, and checked by
        # tests/core/test_embedding.py), so a batch is not topped up to its fixed size: a small update does
        # not pay for a full batch.
        self.tokens_per_batch = 0 if backend == ONNX_INT8 else None
        # one-text passes are too small to keep several cores busy inside one pass: int8 runs its passes side by
        # side instead (a thread each, one core per pass; onnxruntime's run is thread-safe and drops the GIL),
        # and a row depends only on its text, so the worker count never changes a bit (tests/core/test_embedding.py)
        threads = int(os.environ.get("RAGINDEX_ONNX_THREADS") or os.cpu_count() or 1)
        self.workers = threads if backend == ONNX_INT8 else 1
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # tokenizer.json ships fixed padding and truncation at 128
        self.tokenizer.enable_truncation(self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if self.workers > 1 else threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # part of the bits: pinned
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / model_file(backend)), options, providers=["CPUExecutionProvider"])

    def tokenize(self, texts: Sequence[str]) -> list[Any]:
        return self.tokenizer.encode_batch(list(texts))

    @staticmethod
    def length(item: Any) -> int:
        return len(item.ids)

    def forward(self, items: Sequence[Any], length: int, size: int) -> np.ndarray:
        """One pass of the texts padded to ``length`` tokens, one row each: ``size`` (the fixed batch size) is not
        topped up to, as rows do not depend on the batch's size here (see ``__init__``)."""
        import numpy as np
        ids = np.zeros((len(items), length), np.int64)
        mask = np.zeros((len(items), length), np.int64)
        for row, item in enumerate(items):
            n = min(len(item.ids), length)
            ids[row, :n] = item.ids[:n]
            mask[row, :n] = 1
        hidden = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                          "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def query(self, text: str) -> np.ndarray:
        """A question's vector: unpadded, one row."""
        item = self.tokenizer.encode(text)
        return self.forward([item], len(item.ids), 1)

