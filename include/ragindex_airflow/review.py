"""The human review step: an ApprovalOperator that knows when no human is needed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from ragindex_airflow.context import review_settings, run_type

AUTO_APPROVER = {"id": "ragindex", "name": "auto-approved (require_approval=false)"}


def reviewer_actor(decision: dict[str, Any] | None, dag_run_id: str) -> str:
    """Who decided, as the audit trail spells it: the Airflow user and the run whose review it was."""
    who = (decision or {}).get("responded_by_user") or {}
    return f"{who.get('name') or who.get('id') or 'unknown'} (review of {dag_run_id})"


class IndexReviewOperator(ApprovalOperator):
    """Ask a reviewer in the Airflow UI (Required Actions) to approve the candidate index.

    Skips itself (and so the promotion) for backfill runs and when ``promote`` is off; approves
    automatically when ``require_approval`` is off; otherwise waits up to ``review_timeout_hours``,
    after which the default answer, Reject, applies.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        super().__init__(**kwargs)

    def execute(self, context: Any) -> Any:
        from ragindex.context import may_promote

        params = context["params"]
        kind = run_type(context)
        if not may_promote(kind):
            raise AirflowSkipException(f"{kind} runs never move production: review and promotion skipped")
        if not params.get("promote", True):
            raise AirflowSkipException("promote=false: review and promotion skipped")
        settings = review_settings(params)
        if not settings.require_approval:
            self.log.info("require_approval=false: the passing gate promotes without a human review")
            return {"chosen_options": [self.APPROVE], "params_input": {}, "responded_by_user": AUTO_APPROVER,
                    "auto": True}
        self.response_timeout = timedelta(hours=settings.timeout_hours)
        return super().execute(context)
