"""Where a version stands, read from its decisions alone: may it take ``production`` without force?

One rule for every path that moves production (promotion, rollback, the CLI, the DAGs) and every view that
shows a version (``ragindex versions``, ``lineage``, the plugin): a version is **eligible** when it passed its
gate and its latest review approved it (``approved`` — possibly overriding an earlier rejection, which the
record names — or ``auto_approved``). A rejection, a timeout, a stale approval or a superseded review since
then takes eligibility away. An alias move never gives it: a version put into production by a forced
rollback is "forced in", not approved, and an unforced rollback never goes back to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ragindex.registry import ArtifactVersion, Decision, Registry
from ragindex.review import APPROVING, REJECTED, REVIEW, describe, when

FORCED_ROLLBACK = "forced_rollback"


def gate_passed(version: ArtifactVersion) -> bool | None:
    """The gate's verdict on an index version (None: it was never evaluated)."""
    evaluated = version.metadata.get("eval")
    return None if not isinstance(evaluated, dict) else bool(evaluated.get("passed"))


@dataclass(frozen=True)
class Standing:
    """A version's governance state: its latest review, its gate, and a forced move that put it in production."""

    ref: str
    review: Decision | None
    gate: bool | None
    forced_in: Decision | None = None

    @property
    def eligible(self) -> bool:
        """May take production without force: gate passed and the latest review approved it."""
        return self.gate is True and self.review is not None and self.review.verdict in APPROVING

    @property
    def rejected(self) -> bool:
        """Its latest review rejected it (no approval overrode that since)."""
        return self.review is not None and self.review.verdict == REJECTED

    @property
    def overrides_rejection(self) -> bool:
        """Its latest review is an approval that overrode a rejection."""
        return self.eligible and bool((self.review.details or {}).get("overrides"))  # type: ignore[union-attr]

    @property
    def label(self) -> str:
        """A few words for a badge: "approved", "rejected", "forced in", "never reviewed", …"""
        if self.forced_in is not None and not self.eligible:
            return "forced in"
        if self.review is None:
            return "never reviewed"
        if self.eligible and self.overrides_rejection:
            return "approved (overriding a rejection)"
        if self.review.verdict in APPROVING and self.gate is not True:
            return "approved, but " + ("never evaluated" if self.gate is None else "failed its gate")
        return self.review.verdict.replace("_", " ")

    @property
    def badge(self) -> str:
        """good / bad / neutral, for the pages' colours."""
        if self.eligible:
            return "good"
        return "bad" if self.rejected or self.forced_in is not None else "neutral"

    def words(self) -> str:
        """Its standing in a sentence, as refusals and listings quote it."""
        review = describe(self.review)
        if self.forced_in is not None and not self.eligible:
            forced = self.forced_in
            why = f": “{forced.reason}”" if forced.reason else ""
            return (f"forced in by {forced.actor} on {when(forced.at)}{why}, never approved since "
                    f"(its review: {review})")
        if self.review is not None and self.review.verdict in APPROVING and self.gate is not True:
            return f"{review}, but it " + ("was never evaluated" if self.gate is None else "failed its gate")
        return review


def standings_from(versions: Iterable[ArtifactVersion], decisions: Sequence[Decision]) -> dict[str, Standing]:
    """Each version's standing from one read of its name's versions and decisions (oldest first)."""
    reviews: dict[str, Decision] = {}
    forced: dict[str, Decision] = {}
    for d in decisions:
        if d.kind == REVIEW:
            reviews[d.ref] = d
            if d.verdict in APPROVING:
                forced.pop(d.ref, None)  # an approval after a forced move makes it a governed version again
        elif d.verdict == FORCED_ROLLBACK:
            forced[d.ref] = d
    return {v.ref: Standing(v.ref, reviews.get(v.ref), gate_passed(v), forced.get(v.ref)) for v in versions}


def standings(registry: Registry, name: str) -> dict[str, Standing]:
    """Every version of ``name`` with its standing (two reads: versions and decisions)."""
    return standings_from(registry.versions(name), registry.decisions(name))


def standing(registry: Registry, version: ArtifactVersion) -> Standing:
    """One version's standing (one read of its name's decisions)."""
    return standings_from([version], registry.decisions(version.name))[version.ref]
