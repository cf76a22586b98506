"""The bodies of the DAGs' tasks: each reads its run's settings from the context once, at entry (``run_settings``:
Params checked, a bad one fails at once), calls one step of the core and turns its result into a small XCom
value, or its outcome into an Airflow state (skip, fail at once).

Imported by the DAG files at parse time, so only light modules are imported at the top; the core's
steps (and with them numpy, FAISS, the model) are imported inside each body.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ragindex_airflow.context import ingest_context
from ragindex_airflow.params import InvalidParam, rollback_settings, run_settings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def fail_fast(body: F) -> F:
    """An input error (a Param among them) or a governance refusal cannot succeed on retry: fail the task at
    once, with the one-line message logged as one line (a refusal is a decision, not a crash: no traceback)."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ragindex.errors import GovernanceError, RagindexError

        try:
            return body(*args, **kwargs)
        except InvalidParam as exc:
            log.error("failed: %s", exc)
            failure = exc
        except RagindexError as exc:
            if exc.retryable:
                raise
            message = str(exc)
            log.error("%s: %s", "refused" if isinstance(exc, GovernanceError) else "failed", message)
            failure = AirflowFailException(message)
        raise failure.with_traceback(None) from None

    return wrapper  # type: ignore[return-value]


@fail_fast
def pull_documents(context: dict[str, Any]) -> dict[str, Any]:
    """Check what can be checked before any work (settings, eval set, prompt, registry), snapshot the corpus and
    log raw-documents and the prompt; skip the rest when neither the corpus nor the release changed. A corpus
    that already has an index with a changed prompt goes on as a prompt-only run: the index is reused (nothing
    parsed or embedded) and a new release pairs it with the prompt."""
    from ragindex.context import MANUAL, may_promote
    from ragindex.evaluation import load_questions
    from ragindex.gate import log_eval_questions
    from ragindex.ingest import check_prompt_folder, log_checked_prompt, release_candidate
    from ragindex.ingest import pull_documents as pull
    from ragindex.names import PRODUCTION

    settings = run_settings(context)  # every Param checked here, before any work
    ctx = ingest_context(settings, create_registry=True)
    checked = check_prompt_folder(ctx, settings.prompts, load_questions(settings.eval_questions))  # not logged yet
    result = pull(ctx)
    if result.unchanged and not may_promote(ctx.run_type):
        raise AirflowSkipException(result.message)  # a backfill over an indexed corpus creates nothing at all
    questions_version, _questions = log_eval_questions(ctx, settings.eval_questions)
    prompt = log_checked_prompt(ctx, checked)
    pulled = result.to_json() | {"prompt": prompt, "questions": questions_version.ref}
    if not result.unchanged:
        return pulled
    release, created = release_candidate(ctx, result.existing_index, prompt, questions_version.ref)
    held = PRODUCTION in ctx.registry.get(release).aliases
    if held or (not created and ctx.run_type != MANUAL):
        raise AirflowSkipException(f"{result.message}; release unchanged: {release}"
                                   + (f" holds '{PRODUCTION}'" if held else " (no new versions)"))
    log.info("prompt-only run: %s reuses %s (nothing parsed or embedded) with %s", release, result.existing_index,
             prompt)
    return pulled | {"index": result.existing_index, "release": release, "reuse_index": True}


CORPUS_PATH = ["chunk_documents", "build_index", "evaluate_index"]
PROMPT_ONLY_PATH = ["evaluate_index"]


def route(context: dict[str, Any], pulled: dict[str, Any]) -> list[str]:
    """The branch pull_documents takes: a prompt-only run goes straight to the gate, so the parse, embed and
    build tasks are skipped by the scheduler instead of each starting a process only to do nothing."""
    context["ti"].xcom_push(key="pulled", value=pulled)
    return PROMPT_ONLY_PATH if pulled.get("reuse_index") else CORPUS_PATH


@fail_fast
def chunk_documents(context: dict[str, Any], pulled: dict[str, Any]) -> list[dict[str, Any]]:
    """Parse + chunk, log processed-chunks, and plan the embedding: one small work order per shard."""
    from ragindex.ingest import chunk_documents as chunk

    ctx = ingest_context(run_settings(context))
    result = chunk(ctx, pulled["raw"])
    return [result.to_json() | {"shard": i} for i in range(result.shards)]


@fail_fast
def embed_chunks(context: dict[str, Any], order: dict[str, Any]) -> int:
    """Embed one shard of new texts (cached texts are never embedded again)."""
    from ragindex.ingest import embed_chunks as embed

    return embed(ingest_context(run_settings(context)), int(order["shard"]))


@fail_fast
def build_index(context: dict[str, Any], pulled: dict[str, Any], orders: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the FAISS index + docstore from all shards and log vector-index."""
    from ragindex.ingest import build_index as build

    return build(ingest_context(run_settings(context)), pulled["raw"], orders[0]["chunks"]).to_json()


@fail_fast
def evaluate_index(context: dict[str, Any], pulled: dict[str, Any], orders: list[dict[str, Any]] | None,
                   built: dict[str, Any] | None) -> dict[str, Any]:
    """Pair the index with the run's prompt as a release, score it with its own settings against production (the
    index on the eval set, every question rendered within the prompt's budget), log eval-report, apply the gate.
    A prompt-only run comes here straight from pull_documents (``orders``/``built`` None: those tasks skipped)."""
    from ragindex.gate import evaluate_release
    from ragindex.ingest import release_candidate

    settings = run_settings(context)
    ctx = ingest_context(settings)
    if pulled.get("reuse_index"):
        index = ctx.registry.get(pulled["index"])
        orders = [{"chunks": index.metadata["chunks_ref"]}]
        built = {"index": index.ref, "embedded": 0, "reused": index.metadata.get("chunks")}
    assert orders is not None and built is not None, "a corpus run evaluates what build_index built"
    release = pulled.get("release") or release_candidate(ctx, built["index"], pulled["prompt"], pulled["questions"])[0]
    outcome = evaluate_release(ctx, release)
    log.info("gate %s for %s (%s + %s): %s (report %s)", "passed" if outcome.passed else "FAILED", release,
             built["index"], pulled["prompt"], outcome.reason, outcome.report)
    for warning in outcome.warnings:
        log.warning("data gate: %s", warning)
    problem = None
    if not outcome.passed:
        problem = f"evaluation gate failed for {release}: {outcome.reason} (report {outcome.report})"
    elif outcome.warnings and not settings.review.require_approval and settings.promote:
        problem = (f"data gate for {built['index']}: {'; '.join(outcome.warnings)} (report {outcome.report}); "
                   "require_approval=false, so nobody can approve it explicitly")
    if problem:
        if ctx.promotes:
            raise AirflowFailException(f"{problem}; not promoted")
        # A backfill rebuilds a past corpus, which may well score below today's production or drift from
        # it; it never promotes (review and promote skip themselves), so this is recorded, not a failure.
        log.warning("%s; %s run: recorded, never promoted", problem, ctx.run_type)
    # Small on purpose: the review task writes the reviewer's summary itself, against the production of that moment.
    return outcome.to_json() | {"release": release, "index": built["index"], "prompt": pulled["prompt"],
                                "raw": pulled["raw"], "chunks": orders[0]["chunks"], "embedded": built["embedded"],
                                "reused": built["reused"]}


@fail_fast
def promote(context: dict[str, Any], evaluated: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """Move production to the approved index (and the versions it came from); announce it on the Asset."""
    from ragindex.context import may_promote
    from ragindex.promotion import promote as move
    from ragindex_airflow.assets import announce_production_move

    settings = run_settings(context)
    if not may_promote(settings.run_type):
        raise AirflowSkipException(f"{settings.run_type} runs never move production")
    ctx = ingest_context(settings)
    candidate = evaluated.get("release") or evaluated["index"]
    # The approving reviewer is the record's actor, and the review's reason and the gate's its reason (promote
    # reads the review itself, in the one read of the decisions it makes anyway).
    outcome = move(ctx.registry, candidate, gate_reason=evaluated["reason"], pipeline_run=ctx.pipeline_run_id,
                   names=ctx.names, report_ref=evaluated["report"])
    if not outcome["changed"]:
        raise AirflowSkipException(f"{outcome['promoted']} already holds production: nothing moved")
    announce_production_move(context, ctx.registry, kind="promote", to_ref=outcome["promoted"],
                             digest=outcome["digest"], from_ref=outcome["previous"], decision=outcome.get("decision"))
    log.info("production: %s -> %s (approved by %s)", outcome["previous"] or "none", outcome["promoted"],
             outcome.get("approved_by") or "?")
    return outcome


@fail_fast
def rollback_production(context: dict[str, Any]) -> dict[str, Any]:
    """Move production back; refused (at once) for a version that was never approved unless forced."""
    from ragindex.registry import open_registry
    from ragindex.rollback import rollback
    from ragindex_airflow.assets import announce_production_move
    from ragindex_airflow.connections import wandb_registry_uri

    settings = rollback_settings(context)
    registry = open_registry(wandb_registry_uri(settings.registry), create=False)
    outcome = rollback(registry, to_version=settings.to_version, reason=settings.reason, actor=settings.actor,
                       force=settings.force, pipeline_run=settings.run_id, name=settings.name)
    if not outcome["changed"]:
        raise AirflowSkipException(f"{outcome['to']} already holds production: nothing moved")
    announce_production_move(context, registry, kind="forced_rollback" if outcome["forced"] else "rollback",
                             to_ref=outcome["to"], digest=outcome["digest"], from_ref=outcome["from"],
                             decision=outcome.get("decision"))
    log.info("production moved %s -> %s (digest %s)%s", outcome["from"], outcome["to"], outcome["digest"],
             " — FORCED" if outcome["forced"] else "")
    return outcome
