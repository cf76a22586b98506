"""Evaluation metrics and the promotion gate."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ragindex.errors import RagindexError
from ragindex.evaluation import EvalQuestion, evaluate, load_questions
from ragindex.gate import gate


@dataclass
class FixedHit:
    source: str


class FixedRankingSearcher:
    """A searcher stand-in with a fixed ranking per question, so the metric arithmetic can be checked exactly."""

    def __init__(self, rankings: dict[str, list[str]]) -> None:
        self.rankings = rankings

    def search(self, question: str, k: int = 5, mode: str | None = None):
        ranking = self.rankings[question] if mode in (None, "dense") else list(reversed(self.rankings[question]))
        return [FixedHit(s) for s in ranking[:k]]


def test_recall_and_mrr_follow_the_rank_of_the_expected_source():
    questions = [EvalQuestion("q1", "a.md"), EvalQuestion("q2", "b.md"), EvalQuestion("q3", "c.md")]
    searcher = FixedRankingSearcher({"q1": ["a.md", "x"], "q2": ["x", "y", "b.md"], "q3": ["x", "y", "z", "w", "v", "c.md"]})
    result = evaluate(searcher, questions, k=5)
    assert result["recall_at_k"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3, abs=1e-4)
    assert [r["rank"] for r in result["results"]] == [1, 3, None]


def test_the_deeper_figures_and_each_mode_follow_the_ranks():
    """Ranks 1, 3 and 6 (beyond k=5, within 10): recall@1 1/3, recall@5 2/3, MRR@10 (1 + 1/3 + 1/6)/3,
    nDCG@10 (1/log2(2) + 1/log2(4) + 1/log2(7))/3; another mode (here: the ranking reversed) scored alike."""
    import math

    questions = [EvalQuestion("q1", "a.md"), EvalQuestion("q2", "b.md"), EvalQuestion("q3", "c.md")]
    searcher = FixedRankingSearcher({"q1": ["a.md", "x"], "q2": ["x", "y", "b.md"],
                                     "q3": ["x", "y", "z", "w", "v", "c.md"]})
    result = evaluate(searcher, questions, k=5, modes=("dense", "sparse"))
    assert result["recall_at_1"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["recall_at_5"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3, abs=1e-4)
    assert result["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7)) / 3, abs=1e-4)
    assert result["by_mode"]["dense"] == {k: result[k] for k in result["by_mode"]["dense"]}
    reversed_ranks = [2, 1, 1]  # "x","a.md" reversed; "b.md","y","x"; "c.md",...
    sparse = result["by_mode"]["sparse"]
    assert sparse["recall_at_1"] == pytest.approx(2 / 3, abs=1e-4)
    assert sparse["mrr_at_10"] == pytest.approx(sum(1 / r for r in reversed_ranks) / 3, abs=1e-4)
    assert "by_mode" not in evaluate(searcher, questions, k=5), "no modes asked, none reported"
    searcher.mode = "dense"
    calls = []
    search = searcher.search
    searcher.search = lambda question, k=5, mode=None: calls.append(mode) or search(question, k, mode)
    again = evaluate(searcher, questions, k=5, modes=("dense", "sparse"))
    assert again["by_mode"] == result["by_mode"] and calls.count("dense") == 0, "its own mode is not searched twice"


def test_gate_refuses_below_the_absolute_threshold():
    decision = gate({"k": 5, "recall_at_k": 0.5, "mrr": 0.4}, None, min_recall=0.6, max_regression=0.05)
    assert not decision.passed and "below the threshold" in decision.reason


def test_gate_refuses_a_regression_beyond_tolerance_and_names_the_metric():
    prod = {"k": 5, "recall_at_k": 0.9, "mrr": 0.8}
    decision = gate({"k": 5, "recall_at_k": 0.9, "mrr": 0.7}, prod, min_recall=0.6, max_regression=0.05)
    assert not decision.passed and "mrr" in decision.reason


def test_gate_passes_within_tolerance_of_production():
    prod = {"k": 5, "recall_at_k": 0.9, "mrr": 0.8}
    assert gate({"k": 5, "recall_at_k": 0.86, "mrr": 0.78}, prod, min_recall=0.6, max_regression=0.05).passed


def test_malformed_question_file_names_file_and_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "ok", "expected_source": "a.md"}\n{"question": "missing source"}\n')
    with pytest.raises(RagindexError, match=r"q\.jsonl, line 2"):
        load_questions(path)
