"""Promotion: the governance aliases. ``staging`` marks the candidate that passed its gate and awaits review;
``production`` moves only onto an eligible version (``ragindex.standing``: gate passed, latest review approving)
and only while production is still the one its review was made against. Each move is a decision record of its
own (kind ``stage`` or ``promote``), made once per pipeline run however often the task is retried.

The governed unit is an index version or a release (``rag-release``): a version's ``production`` is that of its
own name, and the versions it depends on move with it in the same decision (an index: its raw, chunks and
report; a release: its index and prompt, and what the index came from).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from ragindex.errors import ConcurrentMove, GovernanceError
from ragindex.names import ARTIFACT_TYPES, DEFAULT_NAMES, PRODUCTION, STAGING, ArtifactNames
from ragindex.registry import AliasChange, ArtifactVersion, Decision, Registry
from ragindex.review import APPROVED, REVIEW, STALE, SUPERSEDED, describe, record_review, review_key, when
from ragindex.standing import Standing, gate_passed, standing, standings_from

STAGE, PROMOTE = "stage", "promote"
AGAINST = "against"  # a review's details: the production ref (or None) the reviewer compared the candidate with
CONFLICT_ATTEMPTS = 3  # a move checked anew after another mover came first (ConcurrentMove), at most this often
T = TypeVar("T")

__all__ = ["AGAINST", "PROMOTE", "STAGE", "approve", "gate_passed", "governed", "moved_since", "promote",
           "refuse_rejected", "is_release", "related_versions", "stage", "supersede_pending"]


def governed(registry: Registry, move: Callable[[], T]) -> T:
    """Run a governance move (its reads of the holder, its checks, its record) as one step among movers: under the
    registry's governance lock (the processes sharing it take turns), and from the start again when the record's
    compare-and-set finds that a mover the lock does not reach came first (nothing was moved then)."""
    with registry.governance_lock():
        for attempt in Retrying(retry=retry_if_exception_type(ConcurrentMove),
                                stop=stop_after_attempt(CONFLICT_ATTEMPTS), reraise=True):
            with attempt:
                return move()
    raise AssertionError("unreachable: Retrying re-raises the last ConcurrentMove")  # pragma: no cover


def holds(name: str, current: ArtifactVersion | None) -> dict[str, str | None]:
    """The compare-and-set of a move of ``name``'s production: it holds what the checks found (None: nothing)."""
    return {f"{name}:{PRODUCTION}": current.version if current else None}


def refuse_rejected(version: ArtifactVersion, registry: Registry, alias: str,
                    known: Standing | None = None) -> Standing:
    """A rejected version never takes a governance alias (until an approval overrides the rejection)."""
    known = known or standing(registry, version)
    if known.rejected:
        raise GovernanceError(f"{version.ref} cannot take '{alias}': it was {describe(known.review)}")
    return known


def refuse_ungated(version: ArtifactVersion, what: str) -> None:
    """Only a version that passed its gate may be approved or promoted (nothing is recorded otherwise)."""
    passed = gate_passed(version)
    if passed is not True:
        raise GovernanceError(f"{version.ref} cannot be {what}: it "
                              + ("was never evaluated (run `ragindex evaluate` first)" if passed is None
                                 else "failed its gate"))


def stage(registry: Registry, index_ref: str, *, actor: str, pipeline_run: str | None = None,
          reason: str = "passed its gate; awaiting review", details: dict[str, Any] | None = None) -> Decision:
    """Give ``staging`` to a candidate that passed its gate, so a staging service can query exactly it."""
    version = registry.get(index_ref)
    if gate_passed(version) is not True:
        raise GovernanceError(f"{version.ref} cannot take '{STAGING}': it did not pass its gate")
    refuse_rejected(version, registry, STAGING)
    return registry.record_decision(Decision(
        kind=STAGE, verdict="staged", ref=version.ref, actor=actor, reason=reason, pipeline_run=pipeline_run,
        key=f"{STAGE}/{pipeline_run}/{version.ref}" if pipeline_run else "",
        changes=(AliasChange(version.ref, STAGING),), details=dict(details or {})))


def supersede_pending(registry: Registry, candidate_ref: str, *, pipeline_run: str) -> list[Decision]:
    """A newer candidate in review voids every older review still waiting (staged by another run, no verdict on
    record): each is recorded as ``superseded`` under that run's review key, so a late answer to it finds that
    record and is never applied."""
    decisions = registry.decisions(candidate_ref.partition(":")[0])
    answered = {d.key for d in decisions if d.kind == REVIEW}
    voided = []
    for d in decisions:
        if d.kind != STAGE or not d.pipeline_run or d.pipeline_run == pipeline_run:
            continue
        key = review_key(d.pipeline_run, d.ref)
        if key in answered:
            continue
        answered.add(key)
        voided.append(record_review(registry, d.ref, SUPERSEDED, actor=f"rag_ingest {pipeline_run}",
                                    reason=f"superseded by {candidate_ref} (run {pipeline_run}) while it waited for "
                                           "its review", pipeline_run=d.pipeline_run,
                                    details={"superseded_by": candidate_ref, "by_run": pipeline_run}))
    return voided


def is_release(version: ArtifactVersion) -> bool:
    """A release manifest (index + prompt + settings), not an index."""
    return version.type == ARTIFACT_TYPES["release"]


def related_versions(version: ArtifactVersion, report_ref: str | None = None,
                     registry: Registry | None = None) -> list[str]:
    """The versions that move with ``version``: an index's raw, chunks and eval-report versions; a release's
    index and prompt (and, given the registry, what that index came from)."""
    meta = version.metadata
    if is_release(version):
        parts = [r for r in (meta.get("index"), meta.get("prompt"), report_ref or (meta.get("eval") or {}).get("report"))
                 if r]
        index = registry.get(meta["index"]) if registry is not None and meta.get("index") else None
        return list(dict.fromkeys([*parts, *(related_versions(index) if index is not None else [])]))
    return [r for r in (meta.get("raw"), meta.get("chunks_ref"), report_ref or (meta.get("eval") or {}).get("report"))
            if r]


def moved_since(registry: Registry, against: str | None, current: ArtifactVersion | None,
                name: str = DEFAULT_NAMES.index) -> str | None:
    """Why a review made against production ``against`` is stale (production, now ``current``, moved since),
    or None."""
    now = current.ref if current else None
    if now == against:
        return None
    history = registry.alias_history(name, PRODUCTION)
    last = history[-1] if history else None
    how = (f" ({last.reason or 'moved'}, by {last.actor} on {when(last.at)})" if last else "")
    return (f"production moved from {against or 'none'} to {now or 'none'}{how} while the review waited; "
            f"it was made against {against or 'no production'}")


def _stale(registry: Registry, index: ArtifactVersion, review: Decision, why: str,
           pipeline_run: str | None) -> GovernanceError:
    """Void an approval made against a production that has moved: on record as ``stale``, then refused."""
    record_review(registry, index.ref, STALE, actor=review.actor,
                  reason=f"approval not applied: {why}", pipeline_run=pipeline_run,
                  key=f"{review.key or review.record_id}/stale", details={"voids": review.record_id, AGAINST:
                                                                          review.details.get(AGAINST)})
    return GovernanceError(f"{index.ref} not promoted: {why}. Review it again against the current production "
                           "(trigger rag_ingest again: it reuses every version), or `ragindex approve` it")


def promote(registry: Registry, index_ref: str, *, actor: str | None = None, reason: str = "",
            pipeline_run: str | None = None, names: ArtifactNames = DEFAULT_NAMES, report_ref: str | None = None,
            gate_reason: str | None = None) -> dict[str, Any]:
    """Move ``production`` to an approved index (and the versions it came from). Re-running it for the same
    pipeline run returns the move on record (``recorded_before``) and moves nothing. ``actor`` defaults to the
    reviewer whose approval is promoted; with ``gate_reason`` (the DAG's promote task) the record's reason is the
    review's and the gate's. One mover at a time (``governed``): the holder read here is the one moved from."""
    return governed(registry, lambda: _promote(registry, index_ref, actor=actor, reason=reason,
                                               pipeline_run=pipeline_run, report_ref=report_ref,
                                               gate_reason=gate_reason))


def _promote(registry: Registry, index_ref: str, *, actor: str | None, reason: str, pipeline_run: str | None,
             report_ref: str | None, gate_reason: str | None) -> dict[str, Any]:
    """One try of ``promote``; the decisions are read once (the run's record, if any, and the review)."""
    index = registry.get(index_ref)
    key = f"{PROMOTE}/{pipeline_run}/{index.ref}" if pipeline_run else ""
    decisions = registry.decisions(index.name)
    done = next((d for d in decisions if d.key == key), None) if key else None
    if done is not None:
        return {"promoted": index.ref, "previous": done.details.get("previous"), "changed": True,
                "recorded_before": True, "related": related_versions(index, report_ref, registry), "digest": index.digest,
                "decision": done.record_id, "approved_by": done.actor}
    refuse_ungated(index, "promoted")
    known = standings_from([index], decisions)[index.ref]
    if not known.eligible:
        raise GovernanceError(f"{index.ref} cannot be promoted: its review was {known.words()}")
    review = known.review
    assert review is not None  # eligible
    current = registry.find(f"{index.name}:{PRODUCTION}")
    related = related_versions(index, report_ref, registry)

    def resuming() -> bool:  # an earlier try moved the aliases, then died (asked only where it changes the outcome)
        return bool(key) and registry.interrupted(key)

    if current is not None and current.ref == index.ref and not resuming():
        return {"promoted": index.ref, "previous": None, "changed": False, "related": related, "digest": index.digest,
                "approved_by": review.actor}
    if AGAINST in (review.details or {}):
        why = moved_since(registry, review.details[AGAINST], current, index.name)
        if why and not resuming():
            raise _stale(registry, index, review, why, pipeline_run)
    if gate_reason is not None:
        reason = f"review: {review.reason or 'approved'}; gate: {gate_reason}"
    changes = (AliasChange(index.ref, PRODUCTION), *(AliasChange(r, PRODUCTION) for r in related),
               AliasChange(index.ref, STAGING, remove=True))
    decision = registry.record_decision(Decision(
        kind=PROMOTE, verdict="promoted", ref=index.ref, actor=actor or review.actor, reason=reason,
        pipeline_run=pipeline_run, key=key, changes=changes, expect=holds(index.name, current),
        details={"previous": current.ref if current else None, "review": review.record_id}))
    previous = decision.details.get("previous")
    return {"promoted": index.ref, "previous": previous, "changed": True, "recorded_before": False,
            "related": related, "digest": index.digest, "decision": decision.record_id, "approved_by": review.actor}


def approve(registry: Registry, index_ref: str, *, actor: str, reason: str = "",
            names: ArtifactNames = DEFAULT_NAMES) -> dict[str, Any]:
    """``ragindex approve``: check that the approval can promote, put it on record, then promote. A version that
    cannot be promoted (never evaluated, failed its gate) is refused before anything is recorded. The production
    the approval is made against is read under the governance lock, held until the promotion is recorded."""
    with registry.governance_lock():
        return _approve(registry, index_ref, actor=actor, reason=reason, names=names)


def _approve(registry: Registry, index_ref: str, *, actor: str, reason: str, names: ArtifactNames) -> dict[str, Any]:
    index = registry.get(index_ref)
    refuse_ungated(index, "approved")
    current = registry.find(f"{index.name}:{PRODUCTION}")
    if current is not None and current.ref == index.ref:
        return {"promoted": index.ref, "previous": None, "changed": False,
                "related": related_versions(index, registry=registry),
                "digest": index.digest}
    known = standing(registry, index)
    if known.rejected and not reason.strip():
        raise GovernanceError(f"approving {index.ref} overrides its rejection ({describe(known.review)}): "
                              "give the reason with --reason; the record names the rejection it overrides")
    record_review(registry, index.ref, APPROVED, actor=actor, reason=reason,
                  details={AGAINST: current.ref if current else None})
    return promote(registry, index.ref, actor=actor, reason=reason, names=names)
