"""Rollback's rules: one step back to a version that held production before; anything else is refused with that
version's decision, unless forced with a reason, and then the record says it was forced."""

from __future__ import annotations

import pytest

from ragindex.errors import GovernanceError, RagindexError
from ragindex.promotion import approve
from ragindex.review import APPROVED, REJECTED, TIMED_OUT, record_review
from ragindex.standing import standing
from ragindex.rollback import previous_production, rollback


def test_rollback_returns_to_the_previous_holder_once_per_run(versions) -> None:
    first, second = versions.index(), versions.index()
    approve(versions.registry, first, actor="alice")
    approve(versions.registry, second, actor="alice")
    assert previous_production(versions.registry, "vector-index") == "v0"
    outcome = rollback(versions.registry, reason="bad answers", actor="ops", pipeline_run="rb-1")
    assert (outcome["from"], outcome["to"], outcome["changed"], outcome["forced"]) == (second, first, True, False)
    again = rollback(versions.registry, reason="bad answers", actor="ops", pipeline_run="rb-1")
    assert again["recorded_before"] is True and again["to"] == first, "a retry never steps back a second time"
    rollbacks = [d for d in versions.registry.decisions("vector-index") if d.kind == "rollback"]
    assert [(d.verdict, d.ref, d.details["from"]) for d in rollbacks] == [("rolled_back", first, second)]
    moves = versions.registry.alias_history("vector-index", "production")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, "v0"), ("v0", "v1"), ("v1", "v0")]
    assert "rollback" in moves[-1].reason and "bad answers" in moves[-1].reason


def test_rollback_to_a_rejected_or_unreviewed_version_is_refused_unless_forced_with_a_reason(versions) -> None:
    good, rejected, unreviewed = versions.index(), versions.index(), versions.index()
    approve(versions.registry, good, actor="alice")
    record_review(versions.registry, rejected, REJECTED, actor="bob", reason="leaks e-mail addresses")
    with pytest.raises(GovernanceError, match=f"rollback to {rejected} refused: .*rejected on .* by bob: "
                                              "“leaks e-mail addresses”"):
        rollback(versions.registry, to_version="v1", reason="try")
    with pytest.raises(GovernanceError, match="never reviewed"):
        rollback(versions.registry, to_version=unreviewed, reason="try")
    with pytest.raises(GovernanceError, match="needs a reason"):
        rollback(versions.registry, to_version="v1", force=True, reason="  ")
    assert versions.registry.get("vector-index:production").ref == good
    forced = rollback(versions.registry, to_version="v1", force=True, reason="incident 7: v0 index corrupt", actor="ops")
    assert forced["forced"] is True and versions.registry.get("vector-index:production").ref == rejected
    last = versions.registry.decisions("vector-index")[-1]
    assert (last.kind, last.verdict, last.actor, last.reason) == ("rollback", "forced_rollback", "ops",
                                                                  "incident 7: v0 index corrupt")


def test_nothing_to_roll_back_to_is_a_clear_error(versions) -> None:
    with pytest.raises(RagindexError, match="no version holds 'production'"):
        rollback(versions.registry)
    approve(versions.registry, versions.index(), actor="alice")
    with pytest.raises(RagindexError, match="first 'production' version"):
        rollback(versions.registry)
    with pytest.raises(RagindexError, match="vector-index:v7.*no such version"):
        rollback(versions.registry, to_version="v7")


def test_a_former_production_version_rejected_since_is_refused_unless_forced(versions) -> None:
    old, new = versions.index(), versions.index()
    approve(versions.registry, old, actor="alice")
    approve(versions.registry, new, actor="alice")
    record_review(versions.registry, old, REJECTED, actor="carol", reason="its policy text was withdrawn")
    with pytest.raises(GovernanceError, match=f"rollback to {old} refused: it was rejected on .* by carol: "
                                              "“its policy text was withdrawn”, after it held 'production'"):
        rollback(versions.registry, to_version="v0", reason="bad answers")
    with pytest.raises(GovernanceError, match=f"rollback to {old} refused: it was rejected on .* by carol: "
                                              "“its policy text was withdrawn”, after it held 'production'"):
        rollback(versions.registry, reason="bad answers")  # undo: the only earlier holder
    assert versions.registry.get("vector-index:production").ref == new
    forced = rollback(versions.registry, force=True, reason="incident 9: new index broken", actor="ops")
    assert (forced["to"], forced["forced"]) == (old, True)
    assert versions.registry.decisions("vector-index")[-1].verdict == "forced_rollback"


def test_a_forced_move_never_makes_a_version_eligible(versions) -> None:
    """Force a never-approved version in, roll back to an approved one, then try to return without force."""
    approved, timed_out = versions.index(), versions.index()
    approve(versions.registry, approved, actor="alice")
    record_review(versions.registry, timed_out, TIMED_OUT, actor="timeout", reason="no answer within 72 h")
    forced = rollback(versions.registry, to_version="v1", force=True, reason="incident 12", actor="ops")
    assert forced["forced"] is True and versions.registry.get("vector-index:production").ref == timed_out
    assert standing(versions.registry, versions.registry.get(timed_out)).label == "forced in"
    back = rollback(versions.registry, to_version="v0", reason="incident over", actor="ops")
    assert back["forced"] is False and versions.registry.get("vector-index:production").ref == approved
    with pytest.raises(GovernanceError, match=f"rollback to {timed_out} refused: it was forced in by ops on .*"
                                              "“incident 12”, never approved since .*timed out"):
        rollback(versions.registry, to_version="v1", reason="try again", actor="ops")
    with pytest.raises(GovernanceError, match=f"rollback to {timed_out} refused: it was forced in"):
        rollback(versions.registry, reason="undo", actor="ops")  # the only earlier holder was forced in
    assert versions.registry.get("vector-index:production").ref == approved
    verdicts = [d.verdict for d in versions.registry.decisions("vector-index") if d.kind == "rollback"]
    assert verdicts == ["forced_rollback", "rolled_back"], "the refused moves left no record"


def test_undo_skips_a_forced_in_holder_for_the_last_eligible_one(versions) -> None:
    v0, v1, v2 = versions.index(), versions.index(), versions.index()
    approve(versions.registry, v0, actor="alice")
    approve(versions.registry, v1, actor="alice")
    rollback(versions.registry, to_version="v2", force=True, reason="hotfix corpus", actor="ops")  # never reviewed
    undo = rollback(versions.registry, reason="hotfix withdrawn", actor="ops")
    assert (undo["from"], undo["to"], undo["forced"]) == (v2, v1, False)
    undo = rollback(versions.registry, reason="v1 bad too", actor="ops")
    assert undo["to"] == v0, "the forced-in v2 is skipped on the way back"


def test_an_approval_after_a_forced_move_makes_the_version_eligible_again(versions) -> None:
    v0, v1 = versions.index(), versions.index()
    approve(versions.registry, v0, actor="alice")
    rollback(versions.registry, to_version="v1", force=True, reason="incident 3", actor="ops")
    rollback(versions.registry, to_version="v0", reason="incident over", actor="ops")
    record_review(versions.registry, v1, APPROVED, actor="bob", reason="checked after the incident")
    assert standing(versions.registry, versions.registry.get(v1)).eligible
    assert rollback(versions.registry, to_version="v1", reason="planned", actor="ops")["forced"] is False
