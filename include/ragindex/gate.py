"""The gate: may this candidate index go before a reviewer at all? Scored against production on a versioned
question set, logged as ``eval-report`` (lineage: the index and the questions it was scored on).

Two checks. The retrieval gate (recall@k, MRR) passes or fails. The data gate compares the candidate's
content with production's (documents removed, chunks changed, documents that newly contain PII or more of
it than production's copy, shorter chunks, more duplicates): crossing a threshold is a warning that a person
must approve explicitly, and a failure when no person is asked (``require_approval`` off). Both sets of
figures are in the report.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragindex.atomic import fresh_temp_dir, replace_dir_atomically
from ragindex.context import IngestContext
from ragindex.evaluation import EvalQuestion
from ragindex.names import ARTIFACT_TYPES, PRODUCTION
from ragindex.registry import ArtifactVersion
from ragindex.settings import DriftSettings, GateSettings
from ragindex.timing import Steps

log = logging.getLogger(__name__)

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


def _documents(index_dir: Path) -> dict[str, dict[str, Any]]:
    """The parsed documents of an index folder, by path."""
    from ragindex.pipeline import read_documents

    return {d["path"]: d for d in read_documents(index_dir) if not d.get("failed")}


def _chunk_figures(index_dir: Path) -> tuple[set[str], float, float]:
    """Distinct chunk texts (by sha256), mean chunk length and the share of duplicate chunks of an index."""
    from ragindex.indexing import iter_docstore

    shas, lengths, count = set(), 0, 0
    for record in iter_docstore(index_dir):
        shas.add(record["sha256"])
        lengths += len(record["text"])
        count += 1
    return shas, lengths / max(1, count), (count - len(shas)) / max(1, count)


def gained_pii(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, int]:
    """The PII counts of a document that has more of some kind than production's copy (else empty): a document
    that had PII before is not thereby allowed more."""
    before, now = (old or {}).get("pii") or {}, new.get("pii") or {}
    return dict(now) if any(n > before.get(kind, 0) for kind, n in now.items()) else {}


def _pii_change(path: str, now: dict[str, int], old: dict[str, Any] | None) -> str:
    """A document in the PII warning: its path, and the counts before and now when it had PII before (so the
    reviewer sees what it gained)."""
    before = (old or {}).get("pii") or {}
    if not before:
        return path
    return f"{path} (had {_pii_counts(before)}; now {_pii_counts(now)})"


def _pii_counts(pii: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(pii.items()))


def drift(candidate_dir: Path, production_dir: Path, settings: DriftSettings | None = None) -> dict[str, Any]:
    """How the candidate's content differs from production's, and which thresholds it crosses."""
    settings = settings or DriftSettings()
    new_docs, old_docs = _documents(candidate_dir), _documents(production_dir)
    new_shas, new_mean, new_dups = _chunk_figures(candidate_dir)
    old_shas, old_mean, old_dups = _chunk_figures(production_dir)
    removed = sorted(set(old_docs) - set(new_docs))
    gained = {p: pii for p, d in sorted(new_docs.items()) if (pii := gained_pii(d, old_docs.get(p)))}
    newly_pii = list(gained)
    figures = {
        "documents_added": len(set(new_docs) - set(old_docs)), "documents_removed": len(removed),
        "documents_removed_share": round(len(removed) / max(1, len(old_docs)), 4),
        "chunks_changed_share": round(len(new_shas ^ old_shas) / max(1, len(old_shas)), 4),
        "new_pii_documents": newly_pii,
        "chunk_length_drop": round((old_mean - new_mean) / old_mean, 4) if old_mean else 0.0,
        "duplicate_increase": round(new_dups - old_dups, 4),
    }
    checks = [
        (figures["documents_removed_share"] > settings.max_documents_removed,
         f"{len(removed)} of {len(old_docs)} production documents are gone ({figures['documents_removed_share']:.0%}, "
         f"limit {settings.max_documents_removed:.0%})" + (f": {', '.join(removed[:5])}" if removed else "")),
        (figures["chunks_changed_share"] > settings.max_chunks_changed,
         f"chunk texts removed or rewritten ({len(old_shas - new_shas)}) plus new ones ({len(new_shas - old_shas)}) "
         f"are {figures['chunks_changed_share']:.0%} of production's {len(old_shas)} "
         f"(limit {settings.max_chunks_changed:.0%})"),
        (len(newly_pii) > settings.max_new_pii_documents,
         f"{len(newly_pii)} document(s) newly contain PII (limit {settings.max_new_pii_documents}): "
         + ", ".join(_pii_change(p, gained[p], old_docs.get(p)) for p in newly_pii[:5])),
        (figures["chunk_length_drop"] > settings.max_chunk_length_drop,
         f"chunks are {figures['chunk_length_drop']:.0%} shorter on average (limit {settings.max_chunk_length_drop:.0%})"),
        (figures["duplicate_increase"] > settings.max_duplicate_increase,
         f"duplicate chunks rose by {figures['duplicate_increase']:.0%} of all chunks "
         f"(limit {settings.max_duplicate_increase:.0%})"),
    ]
    return {"figures": figures, "thresholds": asdict(settings), "warnings": [why for crossed, why in checks if crossed]}


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
    warnings: list[str] = field(default_factory=list)  # the data gate's; its figures are in the report

    def to_json(self) -> dict[str, Any]:
        """Small enough for XCom."""
        return asdict(self)


def headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Evaluation figures without the per-question rows (those stay in the report file, not in XCom)."""
    return {k: v for k, v in metrics.items() if k != "results"} if metrics else None


def log_eval_questions(ctx: IngestContext, questions_file: Path) -> tuple[ArtifactVersion, list[EvalQuestion]]:
    """Version the question set (identical content resolves to the existing version); the questions come back
    parsed, as the version holds exactly that file."""
    from ragindex.evaluation import QUESTIONS_FILE, load_questions

    questions = load_questions(questions_file)  # refuse a malformed set before it becomes a version
    target = ctx.work.eval_questions
    tmp = fresh_temp_dir(target)
    shutil.copyfile(questions_file, tmp / QUESTIONS_FILE)
    replace_dir_atomically(tmp, target)
    version = ctx.registry.log_artifact(ctx.names.questions, ARTIFACT_TYPES["questions"], target,
                                        run=ctx.run("register_eval_questions"), aliases=ctx.aliases,
                                        metadata={"questions": len(questions), "origin": str(questions_file)})
    return version, questions


def write_report(ctx: IngestContext, report: dict[str, Any], files: dict[str, str] | None = None) -> Path:
    """The eval-report folder (``report.json``, and e.g. ``changes.diff``), written then renamed."""
    target = ctx.work.eval_report
    tmp = fresh_temp_dir(target)
    (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1, sort_keys=True))
    for name, text in (files or {}).items():
        (tmp / name).write_text(text, encoding="utf-8")
    return replace_dir_atomically(tmp, target)


def score(retriever: Any, questions: list[EvalQuestion], k: int) -> tuple[dict[str, Any], int]:
    """An index's figures on the eval set in its default mode and in each mode it can answer, and how many
    questions had to be encoded: their vectors are made ready first, each encoded once per model identity,
    ever (kept on disk), so a gate over a known eval set loads no model."""
    from ragindex.evaluation import evaluate
    from ragindex.queries import warm

    encoded = warm(retriever.model, retriever.backend, [q.question for q in questions])
    return evaluate(retriever, questions, k, modes=retriever.modes) | {"mode": retriever.mode}, encoded


def evaluate_index(ctx: IngestContext, index_ref: str, questions_file: Path | str,
                   settings: GateSettings | None = None, mode: str | None = None) -> EvalOutcome:
    """Score candidate and production on the versioned question set, apply the gate, compare their content
    (the data gate), log ``eval-report``."""
    from ragindex.changes import CHANGES_FILE, changes_between, unified_diff
    from ragindex.retrieval import Retriever

    gs, steps = settings or ctx.gate, Steps()
    questions_version, questions = log_eval_questions(ctx, Path(questions_file))
    steps.done("questions")
    index_ref = ctx.registry.get(index_ref).ref  # `vector-index:latest` is recorded as the version it names
    candidate_dir = ctx.registry.download(index_ref)
    candidate, encoded = score(Retriever(candidate_dir, ref=index_ref, mode=mode), questions, gs.k)  # None: its own
    steps.done(f"score candidate ({encoded} of {len(questions)} questions encoded)")
    production_version = ctx.registry.find(f"{ctx.names.index}:{PRODUCTION}")
    production, data_gate, changes = None, None, []
    if production_version is not None and production_version.ref == index_ref:
        production = candidate  # the candidate is production: scored once
    elif production_version is not None:
        production_dir = ctx.registry.download(production_version.ref)
        production, _encoded = score(Retriever(production_dir, ref=production_version.ref), questions, gs.k)
        steps.done("score production")
        data_gate = drift(candidate_dir, production_dir, ctx.drift)
        # every document's change, PII masked, beside the report: the review shows part of it and links it
        changes = changes_between(candidate_dir, production_dir)
        steps.done("data gate + diff")
    decision = gate(candidate, production, min_recall=gs.min_recall, max_regression=gs.max_regression)
    files = {CHANGES_FILE: unified_diff(changes, production_version.ref, index_ref)} if changes else {}
    warnings = data_gate["warnings"] if data_gate else []
    report = {"candidate": index_ref, "production": production_version.ref if production_version else None,
              "questions": questions_version.ref, "k": gs.k,
              "thresholds": {"min_recall": gs.min_recall, "max_regression": gs.max_regression},
              "candidate_metrics": candidate, "production_metrics": production, "gate": decision.to_json(),
              "drift": data_gate, "changes_file": next(iter(files), None)}
    summary = {"recall_at_k": candidate["recall_at_k"], "mrr": candidate["mrr"], "k": gs.k, "passed": decision.passed,
               "mode": candidate["mode"], "drift_warnings": warnings,
               **{f"{m}_{key}": f[key] for m, f in candidate.get("by_mode", {}).items()
                  for key in ("recall_at_1", "recall_at_5", "ndcg_at_10")}}
    version = ctx.registry.log_artifact(
        ctx.names.report, ARTIFACT_TYPES["report"], write_report(ctx, report, files), run=ctx.run("evaluate_index"),
        uses=[index_ref, questions_version.ref], aliases=ctx.aliases,
        metadata=ctx.metadata(index=index_ref, questions=questions_version.ref, **summary,
                              changes_file=report["changes_file"],
                              production=report["production"],
                              production_recall_at_k=production["recall_at_k"] if production else None,
                              production_mrr=production["mrr"] if production else None, reason=decision.reason))
    ctx.registry.update_metadata(index_ref, {"eval": {**summary, "report": version.ref}})
    steps.done("log")
    against = (f"production {production_version.ref}: recall@{gs.k} {production['recall_at_k']:.3f}, "
               f"MRR {production['mrr']:.3f}" if production_version is not None else "no production index")
    log.info("%s: %s scored recall@%d %.3f, MRR %.3f on %d questions (%s); gate %s; data gate: %d warning(s), "
             "%d document(s) differ%s; %s", version.ref, index_ref, gs.k, candidate["recall_at_k"], candidate["mrr"],
             len(questions), against, "passed" if decision.passed else "FAILED", len(warnings), len(changes),
             f" (full diff: {CHANGES_FILE})" if files else "", steps)
    return EvalOutcome(version.ref, questions_version.ref, decision.passed, decision.reason, headline(candidate),
                       headline(production), report["production"], warnings)


def evaluate_release(ctx: IngestContext, release_ref: str, settings: GateSettings | None = None) -> EvalOutcome:
    """The gate of a release: its index scored with the release's own retrieval settings on the release's eval
    set (against production's, as ``evaluate_index`` does), and every eval question rendered through its prompt
    within the prompt's budget. The verdict goes into the release's metadata (``eval``), where promotion reads it."""
    from dataclasses import replace

    from ragindex.evaluation import QUESTIONS_FILE
    from ragindex.release import check_release_budget, read_release

    release = read_release(ctx.registry, release_ref)
    manifest = release.manifest
    gs = replace(settings or ctx.gate, k=int(manifest.setting("retrieval.k")))
    questions_file = ctx.registry.download(manifest.questions.ref) / QUESTIONS_FILE
    outcome = evaluate_index(ctx, manifest.index.ref, questions_file, gs, mode=manifest.setting("retrieval.mode"))
    budget = check_release_budget(ctx.registry, manifest)
    passed = outcome.passed and budget.passed
    reason = outcome.reason if budget.passed else (
        f"the prompt {manifest.prompt.ref} renders over its budget of {budget.budget} characters for "
        f"{len(budget.over)} of {len(budget.sizes)} eval questions (largest {budget.max_chars})"
        + ("" if outcome.passed else f"; and {outcome.reason}"))
    ctx.registry.update_metadata(release.ref, {"eval": {
        "passed": passed, "reason": reason, "recall_at_k": outcome.candidate["recall_at_k"],
        "mrr": outcome.candidate["mrr"], "k": gs.k, "report": outcome.report, "budget": budget.summary()}})
    return replace(outcome, passed=passed, reason=reason)
