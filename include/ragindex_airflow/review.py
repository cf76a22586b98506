"""The human review step: an ApprovalOperator that knows when no human is needed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from ragindex_airflow.context import is_backfill

AUTO_APPROVER = {"id": "ragindex", "name": "auto-approved (require_approval=false)"}


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
        params = context["params"]
        if is_backfill(context):
            raise AirflowSkipException("backfill runs never move production: review and promotion skipped")
        if not params.get("promote", True):
            raise AirflowSkipException("promote=false: review and promotion skipped")
        if not params.get("require_approval", True):
            self.log.info("require_approval=false: the passing gate promotes without a human review")
            return {"chosen_options": [self.APPROVE], "params_input": {}, "responded_by_user": AUTO_APPROVER,
                    "auto": True}
        self.response_timeout = timedelta(hours=float(params.get("review_timeout_hours") or 72))
        return super().execute(context)
