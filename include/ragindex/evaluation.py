"""Score an index on a question set: recall@k and MRR (what the gate judges, ``gate``), and recall@1, recall@5,
MRR@10 and nDCG@10 for the index's default retrieval mode and for each mode it can answer (what users feel).

Relevance is binary and by document: a question's one relevant item is its expected source, at the rank of
its first hit, so nDCG@10 is the mean of 1/log2(1 + rank) over the questions (0 when absent from the top 10).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ragindex.errors import RagindexError

QUESTIONS_FILE = "questions.jsonl"


@dataclass(frozen=True)
class EvalQuestion:
    """A question and the document that answers it."""

    question: str
    expected_source: str
    expected_page: int | None = None


class Searcher(Protocol):
    """Anything with ``search(question, k)`` returning hits that have a ``source`` (a Retriever)."""

    def search(self, question: str, k: int = 5) -> Sequence[Any]: ...


def load_questions(path: Path) -> list[EvalQuestion]:
    """Read a JSON-lines question set; a malformed line is an error naming file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / QUESTIONS_FILE
    if not path.is_file():
        raise RagindexError(f"eval questions {path}: no such file")
    questions = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            questions.append(EvalQuestion(str(record["question"]), str(record["expected_source"]),
                                          record.get("expected_page")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RagindexError(f"eval questions {path}, line {n}: expected {{question, expected_source}} ({exc})") from None
    if not questions:
        raise RagindexError(f"eval questions {path}: no questions")
    return questions


RANK_DEPTH = 10  # the deepest cut-off reported (nDCG@10, MRR@10)


def figures(ranks: Sequence[int | None], k: int) -> dict[str, float]:
    """The reported metrics from each question's rank of its expected source (None: not in the top ranks)."""
    n = max(1, len(ranks))

    def within(cut: int) -> list[int]:
        return [r for r in ranks if r is not None and r <= cut]

    return {"recall_at_k": round(len(within(k)) / n, 4), "mrr": round(sum(1 / r for r in within(k)) / n, 4),
            "recall_at_1": round(len(within(1)) / n, 4), "recall_at_5": round(len(within(5)) / n, 4),
            "mrr_at_10": round(sum(1 / r for r in within(RANK_DEPTH)) / n, 4),
            "ndcg_at_10": round(sum(1 / math.log2(1 + r) for r in within(RANK_DEPTH)) / n, 4)}


def _rank(sources: Sequence[str], expected: str) -> int | None:
    return sources.index(expected) + 1 if expected in sources else None


def evaluate(searcher: Searcher, questions: Sequence[EvalQuestion], k: int = 5,
             modes: Sequence[str] = ()) -> dict[str, Any]:
    """recall@k (the expected source among the top k), MRR (1/rank of its first hit within k, 0 if absent) and
    the deeper figures for the searcher's default ranking, plus the same figures per mode in ``modes`` (one
    search per question for each mode but the searcher's own ``mode``, whose ranks are those above)."""
    depth = max(k, RANK_DEPTH)
    rows, ranks = [], []
    for q in questions:
        sources = [h.source for h in searcher.search(q.question, k=depth)]
        rank = _rank(sources, q.expected_source)
        ranks.append(rank)
        rows.append({"question": q.question, "expected_source": q.expected_source,
                     "rank": rank if rank is not None and rank <= k else None, "top": sources[:3]})
    result: dict[str, Any] = {"k": k, "questions": len(questions), **figures(ranks, k)}
    default = getattr(searcher, "mode", None)  # already searched above: its figures are those
    by_mode = {}
    for mode in modes:
        mode_ranks = ranks if mode == default else [
            _rank([h.source for h in searcher.search(q.question, k=depth, mode=mode)], q.expected_source)
            for q in questions]
        by_mode[mode] = figures(mode_ranks, k)
    if by_mode:
        result["by_mode"] = by_mode
    return {**result, "results": rows}
