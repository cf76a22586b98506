"""The bare torch encode of exactly the texts a default ``ragindex build`` of a corpus embeds: the denominator of
issue 19's "full build in at most 0.5x the bare torch encode of the same chunks".

Usage::

    .venv/bin/python benchmarks/bare_encode.py CORPUS

The corpus is snapshotted, parsed and chunked with the project's own functions and default settings
(``bench_build.chunk_texts``: section-aware chunks, each embedded as its section path and text, every unique
text once), outside the timer; then only ``SentenceTransformer.encode(texts, batch_size=32,
normalize_embeddings=True)`` is timed, the model loaded and warmed up first (as ``../shared/bench/raw_encode.py``
does for the chunks LangChain's splitter makes of the same corpus, which are fewer and shorter: no section cut,
no section path). Prints one line in ``raw_encode.py``'s format: ``chunks=N seconds=S chunks_per_s=R``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build import chunk_texts  # noqa: E402  (puts include/ on the path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        parser.error(f"{args.corpus}: not a folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ragindex.embedding import load_model
    from ragindex.settings import BuildSettings

    settings = BuildSettings()
    with tempfile.TemporaryDirectory(prefix="ragindex-bare-") as work:
        _documents, _chunks, texts = chunk_texts(args.corpus.resolve(), settings, Path(work))
    model = load_model(settings.model)
    model.encode(texts[:16], batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - started
    print(f"chunks={len(texts)} seconds={seconds:.2f} chunks_per_s={len(texts) / seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
