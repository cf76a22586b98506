"""The gate: may this candidate index go before a reviewer at all? Scored against production on a versioned
question set, logged as ``eval-report`` (lineage: the index and the questions it was scored on).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically
from ragindex.context import IngestContext
from ragindex.names import ARTIFACT_TYPES, PRODUCTION
from ragindex.registry import ArtifactVersion
from ragindex.settings import GateSettings

REPORT_FILE = "report.json"


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may be promoted, and the reason in words."""

    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """For the eval report."""
        return asdict(self)


def gate(candidate: dict[str, Any], production: dict[str, Any] | None, *, min_recall: float,
         max_regression: float) -> GateDecision:
    """Pass only above an absolute recall floor and no worse than production by more than a tolerance."""
    recall = candidate["recall_at_k"]
    if recall < min_recall:
        return GateDecision(False, f"recall@{candidate['k']} {recall:.3f} is below the threshold {min_recall:.3f}")
    if production is not None:
        for metric in ("recall_at_k", "mrr"):
            drop = production[metric] - candidate[metric]
            if drop > max_regression + 1e-9:
                return GateDecision(False, f"{metric} {candidate[metric]:.3f} is worse than production's "
                                           f"{production[metric]:.3f} by {drop:.3f} (tolerance {max_regression:.3f})")
        return GateDecision(True, f"recall@{candidate['k']} {recall:.3f} >= {min_recall:.3f} and within "
                                  f"{max_regression:.3f} of production ({production['recall_at_k']:.3f})")
    return GateDecision(True, f"recall@{candidate['k']} {recall:.3f} >= {min_recall:.3f} (no production index yet)")


@dataclass
class EvalOutcome:
    """The report version, the gate's decision and the figures a reviewer compares."""

    report: str
    questions: str
    passed: bool
    reason: str
    candidate: dict[str, Any]
    production: dict[str, Any] | None
    production_ref: str | None

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Evaluation figures without the per-question rows (those stay in the report file, not in XCom)."""
    return {k: v for k, v in metrics.items() if k != "results"} if metrics else None


def log_eval_questions(ctx: IngestContext, questions_file: Path) -> ArtifactVersion:
    """Version the question set (identical content resolves to the existing version)."""
    from ragindex.evaluation import QUESTIONS_FILE, load_questions

    questions = load_questions(questions_file)  # refuse a malformed set before it becomes a version
    target = ctx.work.eval_questions
    tmp = fresh_temp_dir(target)
    shutil.copyfile(questions_file, tmp / QUESTIONS_FILE)
    replace_dir_atomically(tmp, target)
    return ctx.registry.log_artifact(ctx.names.questions, ARTIFACT_TYPES["questions"], target,
                                     run=ctx.run("register_eval_questions"), aliases=ctx.aliases,
                                     metadata={"questions": len(questions), "origin": str(questions_file)})


def write_report(ctx: IngestContext, report: dict[str, Any]) -> Path:
    """The eval-report folder (one ``report.json``), written then renamed."""
    target = ctx.work.eval_report
    tmp = fresh_temp_dir(target)
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1, sort_keys=True))
    return replace_dir_atomically(tmp, target)


def evaluate_index(ctx: IngestContext, index_ref: str, questions_file: Path | str,
                   settings: GateSettings | None = None) -> EvalOutcome:
    """Score candidate and production on the versioned question set, apply the gate, log ``eval-report``."""
    from ragindex.evaluation import evaluate, load_questions
    from ragindex.retrieval import Retriever

    gs = settings or ctx.gate
    questions_version = log_eval_questions(ctx, Path(questions_file))
    questions = load_questions(ctx.registry.download(questions_version.ref))
    candidate = evaluate(Retriever(ctx.registry.download(index_ref), ref=index_ref), questions, gs.k)
    production_version = ctx.registry.find(f"{ctx.names.index}:{PRODUCTION}")
    production = None
    if production_version is not None:
        prod_retriever = Retriever(ctx.registry.download(production_version.ref), ref=production_version.ref)
        production = evaluate(prod_retriever, questions, gs.k)
    decision = gate(candidate, production, min_recall=gs.min_recall, max_regression=gs.max_regression)
    report = {"candidate": index_ref, "production": production_version.ref if production_version else None,
              "questions": questions_version.ref, "k": gs.k,
              "thresholds": {"min_recall": gs.min_recall, "max_regression": gs.max_regression},
              "candidate_metrics": candidate, "production_metrics": production, "gate": decision.to_json()}
    summary = {"recall_at_k": candidate["recall_at_k"], "mrr": candidate["mrr"], "k": gs.k, "passed": decision.passed}
    version = ctx.registry.log_artifact(
        ctx.names.report, ARTIFACT_TYPES["report"], write_report(ctx, report), run=ctx.run("evaluate_index"),
        uses=[index_ref, questions_version.ref], aliases=ctx.aliases,
        metadata=ctx.metadata(index=index_ref, questions=questions_version.ref, **summary,
                              production=report["production"],
                              production_recall_at_k=production["recall_at_k"] if production else None,
                              production_mrr=production["mrr"] if production else None, reason=decision.reason))
    ctx.registry.update_metadata(index_ref, {"eval": {**summary, "report": version.ref}})
    return EvalOutcome(version.ref, questions_version.ref, decision.passed, decision.reason, headline(candidate),
                       headline(production), report["production"])
