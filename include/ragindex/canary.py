"""The canary: a deterministic share of requests answered by the ``staging`` release, and the comparison of the
two arms from serving's trace log (requests, latency, top score, empty results, feedback).

A request's arm comes from a hash of its ``key`` (the caller's user or session id), else of its trace id, so
the same user stays in one arm and the split is reproducible from the log alone.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from ragindex.errors import SettingsError

CANARY, PRODUCTION_ARM = "canary", "production"


@dataclass(frozen=True)
class CanarySpec:
    """``ALIAS:PERCENT`` from ``--canary staging:10``."""

    alias: str
    percent: float

    @classmethod
    def parse(cls, text: str) -> "CanarySpec":
        """Refuse anything but ``alias:percent`` with 0 < percent < 100, naming the input."""
        alias, sep, share = text.partition(":")
        try:
            percent = float(share)
        except ValueError:
            percent = -1.0
        if not sep or not alias or not 0 < percent < 100:
            raise SettingsError(f"--canary {text!r}: expected ALIAS:PERCENT with 0 < PERCENT < 100, e.g. staging:10")
        return cls(alias, percent)


def in_canary(key: str, percent: float) -> bool:
    """Whether ``key`` falls in the canary's share (stable for a key, uniform over keys)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 10_000
    return bucket < percent * 100


def _percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def report(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each arm's figures from trace-log lines (answers and ``feedback`` lines)."""
    answers: dict[str, list[dict[str, Any]]] = {}
    feedback: dict[str, list[float]] = {}
    arm_of: dict[str, str] = {}
    for entry in entries:
        if entry.get("endpoint") == "feedback":
            feedback.setdefault(entry["trace_id"], []).append(float(entry["rating"]))
        elif entry.get("trace_id"):
            arm = entry.get("arm") or PRODUCTION_ARM
            answers.setdefault(arm, []).append(entry)
            arm_of[entry["trace_id"]] = arm
    rated: dict[str, list[float]] = {}
    for trace_id, ratings in feedback.items():
        if trace_id in arm_of:
            rated.setdefault(arm_of[trace_id], []).extend(ratings)
    out = {}
    for arm, rows in sorted(answers.items()):
        latency = [float(r["latency_ms"]) for r in rows if r.get("latency_ms") is not None]
        tops = [r["hits"][0]["score"] for r in rows if r.get("hits")]
        ratings = rated.get(arm, [])
        out[arm] = {"requests": len(rows), "releases": sorted({(r.get("release") or {}).get("ref") or r.get("ref")
                                                                for r in rows}),
                    "p50_ms": _percentile(latency, 50), "p99_ms": _percentile(latency, 99),
                    "mean_top_score": statistics.fmean(tops) if tops else None,
                    "empty_share": sum(1 for r in rows if not r.get("hits")) / len(rows),
                    "feedback": len(ratings), "mean_rating": statistics.fmean(ratings) if ratings else None,
                    "feedback_rate": len(ratings) / len(rows)}
    return out


REPORT_COLUMNS = ("arm", "requests", "p50_ms", "p99_ms", "mean_top_score", "empty_share", "feedback",
                  "feedback_rate", "mean_rating", "releases")


def report_rows(arms: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """The report as table rows, one per arm, in ``REPORT_COLUMNS`` order."""
    return [[arm, *(f[c] for c in REPORT_COLUMNS[1:-1]), ", ".join(r for r in f["releases"] if r)]
            for arm, f in arms.items()]


def log_report(registry: Any, arms: dict[str, dict[str, Any]], *, log_digest: str, log_name: str) -> str:
    """The comparison as a W&B run with a table, using the releases it compares (so it sits in their lineage);
    one run per trace-log content, so reporting the same log twice logs once. Returns the run's page."""
    from ragindex.errors import RagindexError

    log_run = getattr(registry, "log_report_run", None)
    if log_run is None:
        raise RagindexError(f"canary report --log-to-wandb: the registry {registry.uri} is not a W&B registry "
                            "(wandb://ENTITY/PROJECT): the report is logged as a W&B run")
    releases = sorted({r for f in arms.values() for r in f["releases"] if r})
    summary = {f"{arm}/{key}": f[key] for arm, f in arms.items() for key in REPORT_COLUMNS[1:-1]}
    return log_run(job_type="canary-report", key=f"canary-report:{log_digest}", name=f"canary-report/{log_name}",
                   table="canary", columns=REPORT_COLUMNS, rows=report_rows(arms), summary=summary, uses=releases)
