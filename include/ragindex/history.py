"""What served when: the holder of ``production`` at a moment, and the decision that made it so.

Read from the alias history and the decisions of one name (two reads), so an incident review can ask "what
answered users at 14:05 on Tuesday" and get the release, the index and prompt it named, and who decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ragindex.errors import SettingsError
from ragindex.names import PRODUCTION
from ragindex.registry import AliasMove, Decision, Registry


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or time (UTC when no zone is given); the error names the input."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"time {text!r}: expected ISO-8601, e.g. 2026-03-02T14:05 or 2026-03-02T14:05:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ServedAt:
    """The production holder at a moment: its ref, the parts it named (a release), and the deciding record."""

    name: str
    at: str
    ref: str | None
    move: AliasMove | None
    decision: Decision | None
    parts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return {"name": self.name, "at": self.at, "production": self.ref, "parts": self.parts,
                "since": self.move.at if self.move else None,
                "decision": self.decision.to_json() if self.decision else None}


def production_at(registry: Registry, name: str, moment: datetime) -> ServedAt:
    """Who held ``production`` of ``name`` at ``moment`` (None before the first promotion)."""
    moves = [m for m in registry.alias_history(name, PRODUCTION) if parse_time(m.at) <= moment]
    last = moves[-1] if moves else None
    ref = f"{name}:{last.to_version}" if last and last.to_version else None
    decision = None
    if last is not None:
        for d in registry.decisions(name):
            if any((m.name, m.alias, m.to_version, m.at) == (name, PRODUCTION, last.to_version, last.at)
                   for m in d.moves):
                decision = d
    parts: dict[str, str] = {}
    if ref is not None:
        meta = registry.get(ref).metadata
        parts = {k: meta[k] for k in ("index", "prompt", "questions") if isinstance(meta.get(k), str)}
    return ServedAt(name, moment.isoformat(), ref, last, decision, parts)
