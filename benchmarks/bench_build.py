"""Side-by-side build timings: bare model encode vs full ``build`` vs incremental rebuild.

Usage::

    .venv/bin/python benchmarks/bench_build.py CORPUS [--change-fraction 0.02] [--chunk-size 1000]
                                                      [--repeat 1] [--json]

All figures come from ONE process, one after the other, so their ratios are comparable even on a noisy
machine (the absolute seconds are not). The model is loaded and warmed up first and stays loaded
(``ragindex.embedding.load_model`` caches it per process), so no figure includes model load time.

(a) bare     the corpus is snapshotted, parsed and chunked with the project's own functions OUTSIDE the
             timer; then ``SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True)``
             is timed on exactly the unique chunk texts a build embeds.
(b) full     wall-clock of ``ragindex.pipeline.build`` into a fresh out folder, no ``previous``.
(c) incr     the corpus is copied, ceil(fraction x documents) text-like documents get a new paragraph
             appended, and ``build`` runs with ``previous`` = (b)'s output.

The ratios full/bare (target <= 1.15) and incremental/full (target <= 0.05) are reported with PASS/MISS.
A phase breakdown of (b) and (c) is taken inside the very same build calls by wrapping the pipeline's step
functions (snapshot, parse, chunk, plan: model identity / previous vectors, embed: model forward, index
write) with timers; the wrappers only add a ``perf_counter`` call each. The model identity's
folder-hash cache is cleared before each build, so each build pays it as a fresh ``ragindex build``
process would (only the model *load* is excluded).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".xhtml")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
TARGET_FULL_OVER_BARE = 1.15
TARGET_INCR_OVER_FULL = 0.05

# Phases, in display order: (label, module, attribute, top-level?). Nested phases are part of the
# top-level phase above them; "other" is the build's wall-clock minus the top-level phases.
PHASES: list[tuple[str, str, str, bool]] = [
    ("snapshot (copy + sha256)", "ragindex.sources", "snapshot", True),
    ("parse + chunk (step total)", "ragindex.pipeline", "chunk_snapshot", True),
    ("  read parse cache (previous chunks)", "ragindex.pipeline", "load_parse_cache", False),
    ("  parse documents (changed only)", "ragindex.pipeline", "parse_documents", False),
    ("  quality report", "ragindex.pipeline", "quality_report", False),
    ("plan (step total)", "ragindex.pipeline", "plan_embeddings", True),
    ("  model identity (hash weights)", "ragindex.embedding", "model_identity", False),
    ("  read previous index vectors", "ragindex.indexing", "cached_vectors", False),
    ("embed (step total)", "ragindex.pipeline", "embed_shard", True),
    ("  model forward (encode_texts)", "ragindex.embedding", "encode_texts", False),
    ("index write (step total)", "ragindex.pipeline", "build_index_from_shards", True),
    ("  write_index_dir (faiss+docstore)", "ragindex.indexing", "write_index_dir", False),
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class PhaseTimer:
    """Temporarily wrap module attributes with timers; the pipeline looks them up at call time."""

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self._patches: list[tuple[Any, str, Callable]] = []

    def __enter__(self) -> "PhaseTimer":
        import importlib

        for label, mod_name, attr, _top in PHASES:
            module = importlib.import_module(mod_name)
            orig = getattr(module, attr, None)
            if orig is None or not callable(orig):  # renamed by a later change: skip, never fail
                continue
            setattr(module, attr, self._wrap(label, orig))
            self._patches.append((module, attr, orig))
        return self

    def _wrap(self, label: str, orig: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.times[label] += time.perf_counter() - t0

        timed.__wrapped__ = orig  # type: ignore[attr-defined]
        return timed

    def __exit__(self, *exc) -> None:
        for module, attr, orig in reversed(self._patches):
            setattr(module, attr, orig)
        self._patches.clear()


def forget_model_identity_cache() -> None:
    """A fresh ``ragindex build`` process reads the weights' recorded fingerprint (hashed once per file state);
    make each in-process build read it too instead of the process's memo."""
    from ragindex import embedding

    fp = getattr(embedding, "_folder_fingerprint", None)
    if fp is not None and hasattr(fp, "cache_clear"):
        fp.cache_clear()


def timed_build(source: Path, out: Path, settings, previous: Path | None, work_root: Path) -> tuple[float, Any, dict[str, float]]:
    """One in-process build with its phase breakdown."""
    from ragindex import pipeline

    forget_model_identity_cache()
    with PhaseTimer() as pt:
        t0 = time.perf_counter()
        result = pipeline.build(str(source), out, settings, previous=previous, work_root=work_root)
        wall = time.perf_counter() - t0
    phases = {label: pt.times.get(label, 0.0) for label, *_ in PHASES}
    phases["other (setup, temp dirs, cleanup)"] = wall - sum(pt.times.get(label, 0.0) for label, _m, _a, top in PHASES if top)
    return wall, result, phases


def chunk_texts(source: Path, settings, work: Path) -> tuple[int, int, list[str]]:
    """Snapshot + parse + chunk with the project's functions; the unique texts in the order a build embeds them."""
    from ragindex.embedding import plan_embedding
    from ragindex.pipeline import chunk_snapshot, read_chunks_file
    from ragindex.sources import snapshot

    snapshot(str(source), work / "raw")
    result = chunk_snapshot(work / "raw", work / "chunks", settings)
    chunks = read_chunks_file(work / "chunks")
    plan = plan_embedding(chunks, {}, settings.index.section_path_in_text)
    return result.documents, len(chunks), [text for _sha, text in plan.to_embed]


def make_changed_copy(source: Path, dest: Path, fraction: float, seed: int = 1234) -> tuple[int, list[str]]:
    """Copy the corpus and append a new paragraph to ceil(fraction x documents) text-like documents."""
    from ragindex.sources import _walk_local  # the same walk (and refusals) as the snapshot

    shutil.copytree(source, dest, symlinks=True)
    docs = sorted(rel for rel, _p, _st in _walk_local(dest, []))
    want = max(1, math.ceil(round(fraction * len(docs), 9)))  # round: 0.07*100 is 7.000000000000001
    candidates = [rel for rel in docs if rel.lower().endswith(TEXT_SUFFIXES)]
    if len(candidates) < want:
        log(f"only {len(candidates)} text-like documents; changing all of them instead of {want}")
        want = len(candidates)
    # evenly spread over the sorted list, so the pick is deterministic and not clustered
    picked = [candidates[int(i * len(candidates) / want)] for i in range(want)] if want else []
    rng = random.Random(seed)
    words = ("pallet invoice carrier route audit schedule sensor battery ledger quota ticket sample vector "
             "update review module parser latency buffer window shard release budget forecast").split()
    for i, rel in enumerate(picked):
        path = dest / rel
        if path.is_symlink():  # never write through a link into the original corpus
            target = path.resolve()
            path.unlink()
            shutil.copyfile(target, path)
        sentences = []
        for _ in range(5):
            s = " ".join(rng.choice(words) for _ in range(rng.randint(8, 14)))
            sentences.append(s.capitalize() + ".")
        para = f"Benchmark change {i}: " + " ".join(sentences)
        raw = path.read_bytes()
        try:
            text, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, enc = raw.decode("latin-1"), "latin-1"
        if rel.lower().endswith(HTML_SUFFIXES):
            at = text.lower().rfind("</body>")
            block = f"\n<p>{para}</p>\n"
            text = text[:at] + block + text[at:] if at >= 0 else text + block
        else:
            text = text.rstrip("\n") + "\n\n" + para + "\n"
        path.write_bytes(text.encode(enc))
    return len(docs), picked


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="a local corpus folder")
    ap.add_argument("--change-fraction", type=float, default=0.02, help="share of documents changed for (c)")
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--chunk-overlap", type=int, default=None, help="default: the project's default (150)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat (a), (b) and (c) this many times, interleaved")
    ap.add_argument("--work-dir", type=Path, default=None, help="where temp folders go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (indexes, changed corpus)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        ap.error(f"{args.corpus}: not a folder")
    if not 0 < args.change_fraction <= 1:
        ap.error("--change-fraction must be in (0, 1]")

    logging.basicConfig(level=logging.WARNING)
    from ragindex.embedding import embedding_dimension, load_model, model_identity
    from ragindex.settings import BuildSettings, ChunkingSettings

    import torch

    overlap = args.chunk_overlap if args.chunk_overlap is not None else min(ChunkingSettings.chunk_overlap, args.chunk_size // 5)
    # The torch backend: (a) times that very model, so full / bare is the pipeline's own overhead.
    settings = BuildSettings(chunking=ChunkingSettings(chunk_size=args.chunk_size, chunk_overlap=overlap),
                             embedding_backend="torch")
    corpus = args.corpus.resolve()
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ragindex-bench-", dir=args.work_dir))
    try:
        log(f"parse + chunk {corpus} (untimed) ...")
        documents, n_chunks, texts = chunk_texts(corpus, settings, work / "prep")

        log("load + warm up model (untimed) ...")
        t0 = time.perf_counter()
        st = load_model(settings.model)
        st.encode(texts[:8], batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        st.encode(texts[:2], batch_size=1, normalize_embeddings=True, show_progress_bar=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        identity = model_identity(settings.model, settings.embedding_backend)
        identity_s = time.perf_counter() - t0

        log(f"changing {args.change_fraction:.1%} of the documents in a copy (untimed) ...")
        n_docs_copy, changed = make_changed_copy(corpus, work / "corpus-changed", args.change_fraction)

        bare_s: list[float] = []
        full_s: list[float] = []
        incr_s: list[float] = []
        full_phases: list[dict[str, float]] = []
        incr_phases: list[dict[str, float]] = []
        full_res = incr_res = None
        for r in range(args.repeat):
            tag = f" (round {r + 1}/{args.repeat})" if args.repeat > 1 else ""
            log(f"(a) bare encode of {len(texts)} texts, batch_size=32{tag} ...")
            t0 = time.perf_counter()
            st.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            bare_s.append(time.perf_counter() - t0)
            log(f"    {bare_s[-1]:.2f} s")

            log(f"(b) full build{tag} ...")
            full_out = work / f"full-{r}"
            wall, full_res, ph = timed_build(corpus, full_out, settings, None, work)
            full_s.append(wall)
            full_phases.append(ph)
            log(f"    {wall:.2f} s ({full_res.embedded} embedded)")

            log(f"(c) incremental build{tag} ...")
            wall, incr_res, ph = timed_build(work / "corpus-changed", work / f"incr-{r}", settings,
                                             work / "full-0", work)
            incr_s.append(wall)
            incr_phases.append(ph)
            log(f"    {wall:.2f} s ({incr_res.embedded} embedded, {incr_res.reused} reused)")
            if r > 0:
                shutil.rmtree(full_out, ignore_errors=True)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    bare, full, incr = statistics.median(bare_s), statistics.median(full_s), statistics.median(incr_s)
    r_full_bare = full / bare
    r_incr_full = incr / full
    phase_names = [label for label, *_ in PHASES] + ["other (setup, temp dirs, cleanup)"]
    med = lambda runs: {k: statistics.median(run[k] for run in runs) for k in phase_names}  # noqa: E731
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpus": str(corpus),
        "documents": documents,
        "chunks": n_chunks,
        "unique_texts": len(texts),
        "chunk_size": settings.chunking.chunk_size,
        "chunk_overlap": settings.chunking.chunk_overlap,
        "model": settings.model,
        "model_identity": identity,
        "dimension": embedding_dimension(st),
        "host": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                 "loadavg_start": [round(x, 2) for x in load_start],
                 "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "untimed": {"model_load_and_warmup_s": round(load_s, 3), "model_identity_s": round(identity_s, 3)},
        "repeat": args.repeat,
        "bare_encode_s": round(bare, 3),
        "full_build_s": round(full, 3),
        "incremental_build_s": round(incr, 3),
        "runs": {"bare_encode_s": [round(x, 3) for x in bare_s], "full_build_s": [round(x, 3) for x in full_s],
                 "incremental_build_s": [round(x, 3) for x in incr_s]},
        "bare_texts_per_s": round(len(texts) / bare, 2),
        "full": {"documents": full_res.documents, "chunks": full_res.chunks, "embedded": full_res.embedded,
                 "reused": full_res.reused, "failed": len(full_res.failed)},
        "incremental": {"change_fraction": args.change_fraction, "documents": n_docs_copy,
                        "changed_documents": len(changed), "changed_paths": changed,
                        "chunks": incr_res.chunks, "embedded": incr_res.embedded, "reused": incr_res.reused},
        "ratios": {
            "full_over_bare": {"value": round(r_full_bare, 3), "target": TARGET_FULL_OVER_BARE,
                               "verdict": verdict(r_full_bare, TARGET_FULL_OVER_BARE),
                               "per_round": [round(f / b, 3) for f, b in zip(full_s, bare_s)]},
            "incremental_over_full": {"value": round(r_incr_full, 4), "target": TARGET_INCR_OVER_FULL,
                                      "verdict": verdict(r_incr_full, TARGET_INCR_OVER_FULL),
                                      "per_round": [round(i / f, 4) for i, f in zip(incr_s, full_s)]},
        },
        "phases_s": {"full": {k: round(v, 3) for k, v in med(full_phases).items()},
                     "incremental": {k: round(v, 3) for k, v in med(incr_phases).items()}},
    }
    if full_res.embedded != len(texts):
        report["warning"] = f"build embedded {full_res.embedded} texts but the bare encode had {len(texts)}"
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


def print_table(r: dict[str, Any]) -> None:
    h = r["host"]
    print(f"corpus   {r['corpus']}: {r['documents']} documents, {r['chunks']} chunks, {r['unique_texts']} unique texts")
    print(f"settings chunk_size={r['chunk_size']} overlap={r['chunk_overlap']}, model {r['model_identity']} (dim {r['dimension']})")
    print(f"host     {h['cpus']} CPUs, torch threads {h['torch_threads']}, loadavg {h['loadavg_start'][0]} -> {h['loadavg_end'][0]}; "
          f"{r['date']}; median of {r['repeat']} round(s)")
    print(f"untimed  model load + warm-up {r['untimed']['model_load_and_warmup_s']:.2f} s")
    print()
    inc = r["incremental"]
    rows = [
        ("(a) bare encode (bs=32)", r["bare_encode_s"], f"{r['unique_texts']} texts, {r['bare_texts_per_s']:.1f}/s"),
        ("(b) full build", r["full_build_s"], f"{r['full']['embedded']} embedded, {r['full']['reused']} reused"),
        ("(c) incremental build", r["incremental_build_s"],
         f"{inc['changed_documents']}/{inc['documents']} docs changed: {inc['embedded']} embedded, {inc['reused']} reused"),
    ]
    print(f"{'':28s} {'seconds':>9s}")
    for name, secs, note in rows:
        print(f"{name:28s} {secs:9.2f}  {note}")
    if r["repeat"] > 1:
        for k, v in r["runs"].items():
            print(f"  rounds {k}: {', '.join(f'{x:.2f}' for x in v)}")
    print()
    for name, key in (("full / bare", "full_over_bare"), ("incremental / full", "incremental_over_full")):
        x = r["ratios"][key]
        print(f"{name:28s} {x['value']:9.3f}  target <= {x['target']:.2f}  {x['verdict']}")
    print()
    print(f"{'phase (seconds)':36s} {'full':>8s} {'incr':>8s}")
    for k, v in r["phases_s"]["full"].items():
        print(f"{k:36s} {v:8.2f} {r['phases_s']['incremental'][k]:8.2f}")
    print(f"{'= build wall-clock':36s} {r['full_build_s']:8.2f} {r['incremental_build_s']:8.2f}")
    if "warning" in r:
        print(f"WARNING: {r['warning']}")


if __name__ == "__main__":
    sys.exit(main())
