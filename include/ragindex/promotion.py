"""Promotion: the governance aliases. ``staging`` marks the candidate that passed its gate and awaits review;
``production`` moves only onto a version that passed its gate and whose latest review approved it. Each
move is a decision record of its own (kind ``stage`` or ``promote``), made once per pipeline run however
often the task is retried.
"""

from __future__ import annotations

from typing import Any

from ragindex.errors import GovernanceError
from ragindex.names import DEFAULT_NAMES, PRODUCTION, STAGING, ArtifactNames
from ragindex.registry import AliasChange, ArtifactVersion, Decision, Registry
from ragindex.review import APPROVED, APPROVING, REJECTED, describe, latest_review, record_review

STAGE, PROMOTE = "stage", "promote"


def gate_passed(version: ArtifactVersion) -> bool | None:
    """The gate's verdict on an index version (None: it was never evaluated)."""
    evaluated = version.metadata.get("eval")
    return None if not isinstance(evaluated, dict) else bool(evaluated.get("passed"))


def refuse_rejected(version: ArtifactVersion, registry: Registry, alias: str) -> None:
    """A rejected version never takes a governance alias."""
    review = latest_review(registry, version)
    if review is not None and review.verdict == REJECTED:
        raise GovernanceError(f"{version.ref} cannot take '{alias}': it was {describe(review)}")


def stage(registry: Registry, index_ref: str, *, actor: str, pipeline_run: str | None = None,
          reason: str = "passed its gate; awaiting review") -> Decision:
    """Give ``staging`` to a candidate that passed its gate, so a staging service can query exactly it."""
    version = registry.get(index_ref)
    if gate_passed(version) is not True:
        raise GovernanceError(f"{version.ref} cannot take '{STAGING}': it did not pass its gate")
    refuse_rejected(version, registry, STAGING)
    return registry.record_decision(Decision(
        kind=STAGE, verdict="staged", ref=version.ref, actor=actor, reason=reason, pipeline_run=pipeline_run,
        key=f"{STAGE}/{pipeline_run}/{version.ref}" if pipeline_run else "",
        changes=(AliasChange(version.ref, STAGING),)))


def related_versions(version: ArtifactVersion, report_ref: str | None = None) -> list[str]:
    """The raw, chunks and eval-report versions an index came from, which move with it."""
    meta = version.metadata
    return [r for r in (meta.get("raw"), meta.get("chunks_ref"), report_ref or (meta.get("eval") or {}).get("report"))
            if r]


def promote(registry: Registry, index_ref: str, *, actor: str, reason: str = "", pipeline_run: str | None = None,
            names: ArtifactNames = DEFAULT_NAMES, report_ref: str | None = None) -> dict[str, Any]:
    """Move ``production`` to an approved index (and the versions it came from). Re-running it for the same
    pipeline run returns the move on record (``recorded_before``) and moves nothing."""
    index = registry.get(index_ref)
    key = f"{PROMOTE}/{pipeline_run}/{index.ref}" if pipeline_run else ""
    done = registry.decision(key) if key else None
    if done is not None:
        return {"promoted": index.ref, "previous": done.details.get("previous"), "changed": True,
                "recorded_before": True, "related": related_versions(index, report_ref), "digest": index.digest,
                "decision": done.record_id}
    if gate_passed(index) is not True:
        raise GovernanceError(f"{index.ref} cannot be promoted: it "
                              + ("was never evaluated (run `ragindex evaluate`)" if gate_passed(index) is None
                                 else "failed its gate"))
    review = latest_review(registry, index)
    if review is None or review.verdict not in APPROVING:
        raise GovernanceError(f"{index.ref} cannot be promoted: its review was {describe(review)}")
    current = registry.find(f"{names.index}:{PRODUCTION}")
    related = related_versions(index, report_ref)
    if current is not None and current.ref == index.ref:
        return {"promoted": index.ref, "previous": None, "changed": False, "related": related, "digest": index.digest}
    changes = (AliasChange(index.ref, PRODUCTION), *(AliasChange(r, PRODUCTION) for r in related),
               AliasChange(index.ref, STAGING, remove=True))
    decision = registry.record_decision(Decision(
        kind=PROMOTE, verdict="promoted", ref=index.ref, actor=actor, reason=reason, pipeline_run=pipeline_run,
        key=key, changes=changes,
        details={"previous": current.ref if current else None, "review": review.record_id}))
    previous = decision.details.get("previous")
    return {"promoted": index.ref, "previous": previous, "changed": True, "recorded_before": False,
            "related": related, "digest": index.digest, "decision": decision.record_id}


def approve(registry: Registry, index_ref: str, *, actor: str, reason: str = "",
            names: ArtifactNames = DEFAULT_NAMES) -> dict[str, Any]:
    """``ragindex approve``: the reviewer's approval on record, then the promotion it allows."""
    record_review(registry, index_ref, APPROVED, actor=actor, reason=reason)
    return promote(registry, index_ref, actor=actor, reason=reason, names=names)
