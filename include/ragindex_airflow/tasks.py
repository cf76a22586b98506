"""The bodies of the DAGs' tasks: each reads the run's context, calls one step of the core and turns its
result into a small XCom value, or its outcome into an Airflow state (skip, fail at once).

Imported by the DAG files at parse time, so only light modules are imported at the top; the core's
steps (and with them numpy, FAISS, the model) are imported inside each body.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ragindex_airflow.context import ingest_context, review_settings, run_type
from ragindex_airflow.params import param_value

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def fail_fast(body: F) -> F:
    """An input error or a governance refusal cannot succeed on retry: fail the task at once, with the core's
    one-line message logged as one line (a refusal is a decision, not a crash: no traceback of the core)."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ragindex.errors import GovernanceError, RagindexError

        try:
            return body(*args, **kwargs)
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
    from ragindex.gate import log_eval_questions
    from ragindex.ingest import log_prompt_folder, release_candidate
    from ragindex.ingest import pull_documents as pull
    from ragindex.names import PRODUCTION

    ctx = ingest_context(context, create_registry=True)  # settings are checked here (SettingsError)
    questions_version, questions = log_eval_questions(ctx, Path(context["params"]["eval_questions"]))
    prompt = log_prompt_folder(ctx, str(param_value(context["params"], "prompts")), questions)
    result = pull(ctx)
    pulled = result.to_json() | {"prompt": prompt, "questions": questions_version.ref}
    if not result.unchanged:
        return pulled
    if not may_promote(ctx.run_type):  # a backfill over an indexed corpus creates nothing, a release neither
        raise AirflowSkipException(result.message)
    release, created = release_candidate(ctx, result.existing_index, prompt, questions_version.ref)
    held = PRODUCTION in ctx.registry.get(release).aliases
    if held or (not created and ctx.run_type != MANUAL):
        raise AirflowSkipException(f"{result.message}; release unchanged: {release}"
                                   + (f" holds '{PRODUCTION}'" if held else " (no new versions)"))
    log.info("prompt-only run: %s reuses %s (nothing parsed or embedded) with %s", release, result.existing_index,
             prompt)
    return pulled | {"index": result.existing_index, "release": release, "reuse_index": True}


@fail_fast
def chunk_documents(context: dict[str, Any], pulled: dict[str, Any]) -> list[dict[str, Any]]:
    """Parse + chunk, log processed-chunks, and plan the embedding: one small work order per shard."""
    from ragindex.ingest import chunk_documents as chunk

    ctx = ingest_context(context)
    if pulled.get("reuse_index"):  # prompt-only: the chunks of the index reused
        chunks = ctx.registry.get(pulled["index"]).metadata["chunks_ref"]
        return [{"shard": 0, "chunks": chunks, "reuse": True}]
    result = chunk(ctx, pulled["raw"])
    return [result.to_json() | {"shard": i} for i in range(result.shards)]


@fail_fast
def embed_chunks(context: dict[str, Any], order: dict[str, Any]) -> int:
    """Embed one shard of new texts (cached texts are never embedded again)."""
    from ragindex.ingest import embed_chunks as embed

    if order.get("reuse"):
        return 0
    return embed(ingest_context(context), int(order["shard"]))


@fail_fast
def build_index(context: dict[str, Any], pulled: dict[str, Any], orders: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the FAISS index + docstore from all shards and log vector-index."""
    from ragindex.ingest import build_index as build

    ctx = ingest_context(context)
    if pulled.get("reuse_index"):
        index = ctx.registry.get(pulled["index"])
        return {"index": index.ref, "embedded": 0, "reused": index.metadata.get("chunks")}
    return build(ctx, pulled["raw"], orders[0]["chunks"]).to_json()


@fail_fast
def evaluate_index(context: dict[str, Any], pulled: dict[str, Any], orders: list[dict[str, Any]],
                   built: dict[str, Any]) -> dict[str, Any]:
    """Pair the index with the run's prompt as a release, score it with its own settings against production (the
    index on the eval set, every question rendered within the prompt's budget), log eval-report, apply the gate."""
    from ragindex.gate import evaluate_release
    from ragindex.ingest import release_candidate

    ctx = ingest_context(context)
    release = pulled.get("release") or release_candidate(ctx, built["index"], pulled["prompt"], pulled["questions"])[0]
    outcome = evaluate_release(ctx, release)
    log.info("gate %s for %s (%s + %s): %s (report %s)", "passed" if outcome.passed else "FAILED", release,
             built["index"], pulled["prompt"], outcome.reason, outcome.report)
    for warning in outcome.warnings:
        log.warning("data gate: %s", warning)
    problem = None
    if not outcome.passed:
        problem = f"evaluation gate failed for {release}: {outcome.reason} (report {outcome.report})"
    elif outcome.warnings and not review_settings(context["params"]).require_approval and context["params"].get(
            "promote", True):
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

    if not may_promote(run_type(context)):
        raise AirflowSkipException(f"{run_type(context)} runs never move production")
    ctx = ingest_context(context)
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

    params = context["params"]
    user = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
    from ragindex_airflow.connections import wandb_registry_uri

    registry = open_registry(wandb_registry_uri(param_value(params, "registry") or ""), create=False)
    outcome = rollback(registry, to_version=param_value(params, "to_version"),
                       reason=param_value(params, "reason", ""), actor=f"{user} via rag_rollback",
                       force=bool(params.get("force", False)), pipeline_run=context["dag_run"].run_id,
                       name=param_value(params, "name") or None)
    if not outcome["changed"]:
        raise AirflowSkipException(f"{outcome['to']} already holds production: nothing moved")
    announce_production_move(context, registry, kind="forced_rollback" if outcome["forced"] else "rollback",
                             to_ref=outcome["to"], digest=outcome["digest"], from_ref=outcome["from"],
                             decision=outcome.get("decision"))
    log.info("production moved %s -> %s (digest %s)%s", outcome["from"], outcome["to"], outcome["digest"],
             " — FORCED" if outcome["forced"] else "")
    return outcome
