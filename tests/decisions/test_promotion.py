"""Promotion's rules: production only for a version that passed its gate and whose latest review approved it;
staging only for a gate-passing candidate that was not rejected; each move on record once per pipeline run."""

from __future__ import annotations

import pytest

from ragindex.errors import GovernanceError
from ragindex.promotion import AGAINST, approve, promote, stage
from ragindex.review import APPROVED, REJECTED, STALE, TIMED_OUT, describe, latest_review, record_review
from ragindex.rollback import rollback
from ragindex.standing import standing


def holder(versions, alias: str) -> str | None:
    found = versions.registry.find(f"vector-index:{alias}")
    return found.ref if found else None


def test_production_needs_a_passed_gate_and_an_approval(versions) -> None:
    unevaluated, failed, passed = versions.index(passed=None), versions.index(passed=False), versions.index()
    with pytest.raises(GovernanceError, match=f"{unevaluated} cannot be promoted: it was never evaluated"):
        promote(versions.registry, unevaluated, actor="ops")
    with pytest.raises(GovernanceError, match="failed its gate"):
        promote(versions.registry, failed, actor="ops")
    with pytest.raises(GovernanceError, match="its review was never reviewed"):
        promote(versions.registry, passed, actor="ops")
    record_review(versions.registry, passed, REJECTED, actor="alice", reason="wrong prices")
    with pytest.raises(GovernanceError, match="rejected on .* by alice: “wrong prices”"):
        promote(versions.registry, passed, actor="ops")
    assert holder(versions, "production") is None


def test_an_approval_promotes_the_index_and_the_versions_it_came_from(versions) -> None:
    first = versions.index()
    approve(versions.registry, first, actor="alice", reason="checked")
    second = versions.index()
    stage(versions.registry, second, actor="dag", pipeline_run="run-2")
    record_review(versions.registry, second, APPROVED, actor="bob", pipeline_run="run-2")
    outcome = promote(versions.registry, second, actor="bob", reason="gate and review", pipeline_run="run-2")
    assert (outcome["promoted"], outcome["previous"], outcome["changed"]) == (second, first, True)
    index = versions.registry.get(second)
    assert "production" in index.aliases and "staging" not in index.aliases, "approval takes staging off"
    for ref in (index.metadata["raw"], index.metadata["chunks_ref"]):
        assert "production" in versions.registry.get(ref).aliases, ref
    again = promote(versions.registry, second, actor="bob", pipeline_run="run-2")
    assert again["recorded_before"] is True and again["previous"] == first, "the retry finds the move on record"
    assert promote(versions.registry, second, actor="bob")["changed"] is False, "already production"
    promotions = [d for d in versions.registry.decisions("vector-index") if d.kind == "promote"]
    assert [(d.ref, d.actor, d.details["previous"]) for d in promotions] == [(first, "alice", None),
                                                                             (second, "bob", first)]


def test_a_later_approval_overrides_a_rejection_as_its_own_decision_and_says_so(versions) -> None:
    ref = versions.index()
    rejection = record_review(versions.registry, ref, REJECTED, actor="alice", reason="not yet")
    with pytest.raises(GovernanceError, match=f"approving {ref} overrides its rejection .*alice.*--reason"):
        approve(versions.registry, ref, actor="carol")
    assert holder(versions, "production") is None and latest_review(versions.registry, versions.registry.get(ref)) \
        == rejection, "a refused override records nothing"
    approve(versions.registry, ref, actor="carol", reason="signed off after the fix to the FAQ")
    assert holder(versions, "production") == ref
    approval = latest_review(versions.registry, versions.registry.get(ref))
    assert approval.details["overrides"]["record_id"] == rejection.record_id
    words = describe(approval)
    assert words.startswith("approved on ") and "by carol: “signed off after the fix to the FAQ”" in words
    assert ", overriding the rejection on " in words and "by alice: “not yet”" in words
    assert standing(versions.registry, versions.registry.get(ref)).label == "approved (overriding a rejection)"


def test_approving_a_version_that_cannot_be_promoted_records_nothing(versions) -> None:
    unevaluated, failed = versions.index(passed=None), versions.index(passed=False)
    with pytest.raises(GovernanceError, match=f"{unevaluated} cannot be approved: it was never evaluated"):
        approve(versions.registry, unevaluated, actor="alice")
    with pytest.raises(GovernanceError, match=f"{failed} cannot be approved: it failed its gate"):
        approve(versions.registry, failed, actor="alice")
    assert versions.registry.decisions("vector-index") == [], "no approval on record for a version never promoted"


def test_an_approval_made_against_a_production_that_moved_since_does_not_promote(versions) -> None:
    v0, v1, v2 = versions.index(), versions.index(), versions.index()
    approve(versions.registry, v0, actor="alice")
    approve(versions.registry, v1, actor="alice")
    stage(versions.registry, v2, actor="dag", pipeline_run="run-3")  # v2 waits for its review against v1
    rollback(versions.registry, to_version="v0", reason="v1 answers wrong prices", actor="ops")
    record_review(versions.registry, v2, APPROVED, actor="bob", pipeline_run="run-3", details={AGAINST: v1})
    with pytest.raises(GovernanceError, match=f"{v2} not promoted: production moved from {v1} to {v0} "
                                              r"\(rollback \(rolled_back\): v1 answers wrong prices, by ops"):
        promote(versions.registry, v2, actor="bob", pipeline_run="run-3")
    assert holder(versions, "production") == v0, "the rollback stands"
    voided = latest_review(versions.registry, versions.registry.get(v2))
    assert (voided.verdict, voided.actor) == (STALE, "bob") and "approval not applied" in voided.reason
    assert not standing(versions.registry, versions.registry.get(v2)).eligible
    with pytest.raises(GovernanceError, match="cannot be promoted: its review was stale"):
        promote(versions.registry, v2, actor="bob", pipeline_run="run-3")
    # reviewed again, against the production that now serves: it promotes
    record_review(versions.registry, v2, APPROVED, actor="bob", pipeline_run="run-4", details={AGAINST: v0})
    assert promote(versions.registry, v2, actor="bob", pipeline_run="run-4")["previous"] == v0


def test_staging_is_for_gate_passing_candidates_that_were_not_rejected(versions) -> None:
    failed, rejected, candidate = versions.index(passed=False), versions.index(), versions.index()
    with pytest.raises(GovernanceError, match="did not pass its gate"):
        stage(versions.registry, failed, actor="dag")
    record_review(versions.registry, rejected, REJECTED, actor="alice", reason="PII")
    with pytest.raises(GovernanceError, match=f"{rejected} cannot take 'staging': it was rejected"):
        stage(versions.registry, rejected, actor="dag")
    first = stage(versions.registry, candidate, actor="dag", pipeline_run="run-9")
    assert stage(versions.registry, candidate, actor="dag", pipeline_run="run-9") == first, "once per run"
    assert holder(versions, "staging") == candidate
    record_review(versions.registry, candidate, TIMED_OUT, actor="timeout", pipeline_run="run-9")
    assert holder(versions, "staging") is None, "a timed-out review takes staging off, as a rejection does"
