"""Control-plane requests of one rag_ingest run on the W&B backend, per step, counted by the fake W&B server.

No W&B server is reachable here: the W&B adapter runs over tests/registry/fake_wandb_server.py, which counts
the requests each SDK call makes (its ``COSTS``, read from the wandb 0.31 source). The registry calls are the
ones a rag_ingest run of the sample corpus makes, in its order (ragindex.ingest, ragindex.gate,
ragindex_airflow.review, ragindex.promotion): log raw, chunks, index, questions, the eval report (with the
index's eval metadata), stage, review, promote. Target: at most 120 requests for the run (figures and what
changed: benchmarks/README.md).

    python benchmarks/bench_wandb_requests.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "include", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ragindex.names import PRODUCTION  # noqa: E402
from ragindex.promotion import promote, stage  # noqa: E402
from ragindex.registry import RunInfo  # noqa: E402
from ragindex.registry.wandb import WandbRegistry  # noqa: E402
from ragindex.review import AUTO_APPROVED, record_review  # noqa: E402
from tests.registry.fake_wandb_server import ENTITY, PROJECT, FakeWandbModule, FakeWandbServer  # noqa: E402

PIPELINE_RUN = "scheduled__2026-01-01"


def _files(root: Path, name: str, content: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text(content)
    return folder


def run_ingest(root: Path) -> dict[str, int]:
    """Drive one rag_ingest run's registry calls; requests per step."""
    server = FakeWandbServer(root / "server")
    registry = WandbRegistry(ENTITY, PROJECT, wandb_module=FakeWandbModule(server), cache_dir=root / "cache",
                             run_dir=root / "runs")
    counts: dict[str, int] = {}

    def step(name: str, fn: Callable[[], object]) -> None:
        before = server.total()
        fn()
        counts[name] = server.total() - before

    def run(job: str) -> RunInfo:
        return RunInfo(job, group=PIPELINE_RUN, name=f"{PIPELINE_RUN}/{job}")

    def pull() -> None:
        registry.versions("vector-index")  # was this corpus built already?
        registry.log_artifact("raw-documents", "raw", _files(root, "raw", "docs"), run=run("pull_documents"),
                              metadata={"documents": 12})

    def chunk() -> None:
        registry.versions("vector-index")  # the previous index, for incremental chunking
        registry.download("raw-documents:latest")
        registry.log_artifact("chunks", "chunks", _files(root, "chunks", "chunks"), run=run("chunk"),
                              uses=["raw-documents:latest"], metadata={"chunks": 120})

    def index() -> None:
        registry.log_artifact("vector-index", "index", _files(root, "index", "vectors"), run=run("build_index"),
                              uses=["chunks:latest"], aliases=["candidate"],
                              metadata={"raw": "raw-documents:v0", "chunks_ref": "chunks:v0"})

    def questions() -> None:
        registry.log_artifact("eval-questions", "questions", _files(root, "q", "questions"), run=run("questions"),
                              uses=["chunks:latest"])

    def report() -> None:
        index_ref = registry.get("vector-index:latest").ref
        registry.download(index_ref)
        registry.find(f"vector-index:{PRODUCTION}")
        version = registry.log_artifact("eval-report", "report", _files(root, "report", "report"),
                                        run=run("evaluate"), uses=[index_ref, "eval-questions:latest"])
        registry.update_metadata(index_ref, {"eval": {"passed": True, "recall": 0.9, "report": version.ref}})

    def staging() -> None:
        stage(registry, "vector-index:v0", actor=f"rag_ingest {PIPELINE_RUN}", pipeline_run=PIPELINE_RUN)

    def review() -> None:
        registry.decision(f"review/{PIPELINE_RUN}/vector-index:v0")
        record_review(registry, "vector-index:v0", AUTO_APPROVED, actor="auto", pipeline_run=PIPELINE_RUN)

    def promotion() -> None:  # as ragindex_airflow.tasks.promote calls it (promote reads the review itself)
        promote(registry, "vector-index:v0", gate_reason="recall@5 0.900 >= 0.500", pipeline_run=PIPELINE_RUN,
                report_ref="eval-report:v0")

    for name, fn in [("log raw", pull), ("log chunks", chunk), ("log index", index), ("log questions", questions),
                     ("evaluate + report", report), ("stage", staging), ("review", review),
                     ("promote", promotion)]:
        step(name, fn)
    assert registry.get(f"vector-index:{PRODUCTION}").ref == "vector-index:v0"
    return counts


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        counts = run_ingest(Path(tmp))
    width = max(map(len, counts))
    for name, count in counts.items():
        print(f"{name:<{width}}  {count:>4}")
    print(f"{'total':<{width}}  {sum(counts.values()):>4}   (target <= 120; the test fails above 150)")


if __name__ == "__main__":
    main()
