"""Score an index on a question set: recall@k and MRR per question set (the gate that uses them is ``gate``)."""

from __future__ import annotations

import json
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


def evaluate(searcher: Searcher, questions: Sequence[EvalQuestion], k: int = 5) -> dict[str, Any]:
    """recall@k (the expected source among the top k) and MRR (1/rank of its first hit, 0 if absent)."""
    rows, hits_at_k, reciprocal = [], 0, 0.0
    for q in questions:
        sources = [h.source for h in searcher.search(q.question, k=k)]
        rank = sources.index(q.expected_source) + 1 if q.expected_source in sources else None
        hits_at_k += rank is not None
        reciprocal += 1.0 / rank if rank else 0.0
        rows.append({"question": q.question, "expected_source": q.expected_source, "rank": rank, "top": sources[:3]})
    n = len(questions)
    return {"k": k, "questions": n, "recall_at_k": round(hits_at_k / n, 4), "mrr": round(reciprocal / n, 4),
            "results": rows}
