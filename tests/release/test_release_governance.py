"""Governance on releases, in a real local registry over real indexes: a release is evaluated with its own
settings, takes staging and production only by decision records, moves its index and prompt with it in the same
decision, and rolls back as one step; the rules of the index (eligibility, forced-in, stale reviews) hold."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ragindex.context import IngestContext
from ragindex.errors import GovernanceError
from ragindex.gate import evaluate_release
from ragindex.history import production_at
from ragindex.promotion import approve, stage
from ragindex.review import REJECTED, record_review
from ragindex.rollback import rollback
from ragindex.standing import standing
from tests.release.conftest import write_prompt
from tests.release.test_release import logged_prompt, release, world  # noqa: F401 - the fixture

RELEASE = "rag-release"


def holders(registry) -> dict[str, str | None]:
    found = {name: registry.find(f"{name}:production") for name in (RELEASE, "vector-index", "prompt-template")}
    return {name: v.ref if v else None for name, v in found.items()}


def evaluated(registry, ref: str) -> str:
    outcome = evaluate_release(IngestContext(registry, f"eval-{ref}"), ref)
    assert outcome.passed, outcome.reason
    return ref


def test_a_release_is_gated_on_its_own_settings_and_its_prompt_budget(registry, world, tmp_path):
    ref = release(registry, world["index_a"], world["prompt_a"], k=2).ref
    outcome = evaluate_release(IngestContext(registry, "eval-1"), ref)
    meta = registry.get(ref).metadata["eval"]
    assert outcome.passed and meta["passed"] and meta["k"] == 2 and meta["budget"]["k"] == 2
    assert meta["budget"]["questions"] == 2 and 0 < meta["budget"]["max_chars"] <= meta["budget"]["budget"]
    report = registry.get(meta["report"]).metadata
    assert report["k"] == 2 and report["index"] == world["index_a"], "the index scored with the release's k"
    # a prompt that fits one short hit (as it was logged) but not the release's five real ones
    small = logged_prompt(registry, write_prompt(tmp_path / "small", context_budget=420), k=1)
    over = release(registry, world["index_a"], small, k=5).ref
    failed = evaluate_release(IngestContext(registry, "eval-3"), over)
    assert not failed.passed and "renders over its budget of 420 characters" in failed.reason, failed.reason
    assert registry.get(over).metadata["eval"]["passed"] is False
    with pytest.raises(GovernanceError, match="failed its gate"):
        approve(registry, over, actor="alice")


def test_promoting_a_release_moves_its_index_and_prompt_in_one_decision_and_rollback_moves_all_back(registry, world):
    first = evaluated(registry, release(registry, world["index_a"], world["prompt_a"]).ref)
    approve(registry, first, actor="alice", reason="first release")
    assert holders(registry) == {RELEASE: first, "vector-index": world["index_a"], "prompt-template": world["prompt_a"]}
    second = evaluated(registry, release(registry, world["index_b"], world["prompt_b"]).ref)
    stage(registry, second, actor="dag", pipeline_run="run-2")
    assert registry.get(f"{RELEASE}:staging").ref == second
    outcome = approve(registry, second, actor="bob", reason="new corpus and prompt")
    assert outcome["previous"] == first and world["index_b"] in outcome["related"]
    assert holders(registry) == {RELEASE: second, "vector-index": world["index_b"], "prompt-template": world["prompt_b"]}
    promotion = registry.decisions(RELEASE)[-1]
    moved = {(m.name, m.to_version) for m in promotion.moves if m.alias == "production"}
    assert {(RELEASE, "v1"), ("vector-index", "v1"), ("prompt-template", "v1")} <= moved, "one decision moves all"
    back = rollback(registry, name=RELEASE, reason="prompt makes answers too long", actor="ops")
    assert (back["from"], back["to"], back["forced"]) == (second, first, False)
    assert holders(registry) == {RELEASE: first, "vector-index": world["index_a"], "prompt-template": world["prompt_a"]}


def test_a_rejected_release_is_refused_and_a_forced_one_is_forced_in(registry, world):
    first = evaluated(registry, release(registry, world["index_a"], world["prompt_a"]).ref)
    approve(registry, first, actor="alice")
    bad = evaluated(registry, release(registry, world["index_a"], world["prompt_b"]).ref)
    record_review(registry, bad, REJECTED, actor="carol", reason="prompt drops the citations")
    with pytest.raises(GovernanceError, match=f"rollback to {bad} refused: it was rejected .* by carol"):
        rollback(registry, name=RELEASE, to_version="v1", reason="try")
    rollback(registry, name=RELEASE, to_version="v1", force=True, reason="incident 4", actor="ops")
    assert standing(registry, registry.get(bad)).label == "forced in"
    assert holders(registry)["prompt-template"] == world["prompt_b"], "the forced release's prompt serves"
    rollback(registry, name=RELEASE, to_version="v0", reason="over", actor="ops")
    with pytest.raises(GovernanceError, match="forced in"):
        rollback(registry, name=RELEASE, to_version="v1", reason="again", actor="ops")


def test_at_a_moment_says_which_release_served_and_which_decision_put_it_there(registry, world):
    before = datetime.now(timezone.utc)
    first = evaluated(registry, release(registry, world["index_a"], world["prompt_a"]).ref)
    approve(registry, first, actor="alice", reason="first release")
    between = datetime.now(timezone.utc)
    second = evaluated(registry, release(registry, world["index_b"], world["prompt_b"]).ref)
    approve(registry, second, actor="bob", reason="second")
    assert production_at(registry, RELEASE, before).ref is None
    served = production_at(registry, RELEASE, between)
    assert served.ref == first and served.parts["index"] == world["index_a"] and served.parts["prompt"] == \
        world["prompt_a"]
    assert served.decision is not None and (served.decision.kind, served.decision.actor) == ("promote", "alice")
    now = production_at(registry, RELEASE, datetime.now(timezone.utc))
    assert now.ref == second and now.decision.actor == "bob"


def test_the_gate_scores_the_index_in_the_releases_own_mode(registry, world, monkeypatch):
    from ragindex.evaluation import evaluate, load_questions
    from ragindex.retrieval import Retriever

    searched: list[str] = []
    per_mode: list[str] = []
    original = Retriever.search

    def recording(self, question, k=5, mode=None, filters=None):
        (searched if mode is None else per_mode).append(mode or self.mode)
        return original(self, question, k=k, mode=mode, filters=filters)

    ref = release(registry, world["index_a"], world["prompt_a"], k=1, overrides={"retrieval.mode": "sparse"}).ref
    monkeypatch.setattr(Retriever, "search", recording)
    evaluate_release(IngestContext(registry, "eval-sparse"), ref)
    monkeypatch.undo()
    assert searched and set(searched) == {"sparse"}, f"every gated query in the release's mode: {set(searched)}"
    assert set(per_mode) == {"dense", "hybrid"}, "the other modes scored beside it, the release's own not twice"
    meta = registry.get(ref).metadata["eval"]
    questions = load_questions(registry.download(world["questions"]))
    sparse = evaluate(Retriever(registry.download(world["index_a"]), mode="sparse"), questions, 1)
    assert (meta["recall_at_k"], meta["mrr"]) == (sparse["recall_at_k"], sparse["mrr"])
    report = registry.get(meta["report"]).metadata
    assert (report["recall_at_k"], report["k"], report["mode"]) == (sparse["recall_at_k"], 1, "sparse")
    assert report["sparse_recall_at_1"] == sparse["recall_at_1"], "the per-mode figures are the mode's own"
    hybrid = evaluate(Retriever(registry.download(world["index_a"]), mode="hybrid"), questions, 1)
    assert report["hybrid_recall_at_1"] == hybrid["recall_at_1"] and report["dense_recall_at_1"] is not None
