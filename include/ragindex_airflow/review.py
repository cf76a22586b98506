"""The human review step: an ApprovalOperator whose every outcome is a decision on record.

The verdict (approved, rejected, timed out, auto-approved) goes to the registry through
``ragindex.review.record_review``, the same function ``ragindex approve`` / ``reject`` use. A retried review
task finds the answer already on record and does not ask again. A candidate that already holds production
is never put before a person.

Options: Approve and Reject. The timeout's outcome is Reject (``defaults``), recorded as ``timed_out``.
Airflow's form draws the ``defaults`` option as the solid button; the only way it offers to draw Approve
instead, keeping Reject as the timeout's outcome, is the ``_options`` query of a Required Actions link
(options preselected), which the task log prints (see ``approve_link``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, ParamsDict
from airflow.sdk.exceptions import AirflowSkipException

from ragindex_airflow.context import ingest_context, review_settings, run_type

AUTO_APPROVER = {"id": "ragindex", "name": "auto-approved (require_approval=false)"}
REASON_PARAM = "reason"


class IndexReviewOperator(ApprovalOperator):
    """Ask a reviewer in the Airflow UI (Required Actions) to approve the candidate index.

    Skips itself (and so the promotion) for backfill runs, when ``promote`` is off and when the candidate
    already is production; approves automatically (on record) when ``require_approval`` is off; otherwise
    stages the candidate and waits up to ``review_timeout_hours``, after which the default answer, Reject,
    applies and is recorded as a timeout.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        # The form's one field. Airflow has merged the DAG's params into ``params`` before this runs; a param of
        # source "task" is the only kind HITLOperator shows (the DAG's 16 stay out of the review form).
        params = kwargs.get("params")
        params = params if isinstance(params, ParamsDict) else ParamsDict(params or {})
        if REASON_PARAM not in params:
            params[REASON_PARAM] = Param(
                "", type=["null", "string"], title="Reason", source="task",
                description="Why you approve or reject this index. Recorded with your decision in the registry.")
        kwargs["params"] = params
        super().__init__(**kwargs)

    # -- before asking --------------------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        from ragindex.context import may_promote
        from ragindex.review import AUTO_APPROVED, describe, record_review, review_key, review_needed

        params = context["params"]
        kind = run_type(context)
        if not may_promote(kind):
            raise AirflowSkipException(f"{kind} runs never move production: review and promotion skipped")
        if not params.get("promote", True):
            raise AirflowSkipException("promote=false: review and promotion skipped")
        ctx, candidate = ingest_context(context), self.evaluated(context)["index"]
        recorded = ctx.registry.decision(review_key(ctx.pipeline_run_id, candidate))
        if recorded is not None:  # a retry of this task: the reviewer answered already
            self.log.info("the review of %s is on record already (%s): not asking again", candidate,
                          describe(recorded))
            return self.conclude(context, recorded.to_json())
        why_not = review_needed(ctx.registry, candidate, ctx.names)
        if why_not:
            raise AirflowSkipException(why_not)
        settings = review_settings(params)
        if not settings.require_approval:
            decision = record_review(ctx.registry, candidate, AUTO_APPROVED, actor=AUTO_APPROVER["id"],
                                     reason="require_approval=false and the gate passed",
                                     pipeline_run=ctx.pipeline_run_id)
            self.log.info("require_approval=false: %s approved automatically, on record as %s", candidate,
                          decision.record_id)
            return self.conclude(context, decision.to_json())
        self.stage(ctx, candidate)
        self.response_timeout = timedelta(hours=settings.timeout_hours)
        link = self.approve_link(context)
        self.log.info("asking for a review of %s (timeout %g h, then Reject): %s", candidate, settings.timeout_hours,
                      link)
        return super().execute(context)

    def approve_link(self, context: Any) -> str:
        """The Required Actions page of this review with Approve preselected (drawn as the solid button).

        The UI reads ``_options`` as JSON (``JSON.parse``); ``generate_link_to_ui(options=...)`` writes the
        Python repr of the list (``['Approve']``), which the UI drops, so the option is added here as JSON.
        """
        try:
            page = self.generate_link_to_ui_from_context(context=context)
        except ValueError:  # no [api] base_url configured
            return "the Required Actions page of this task"
        return f"{page}&_options={quote(json.dumps([self.APPROVE]))}"

    @staticmethod
    def evaluated(context: Any) -> dict[str, Any]:
        """What the evaluate task handed on (its XCom): the candidate index, the gate's outcome, its warnings."""
        return context["ti"].xcom_pull(task_ids="evaluate_index")

    def stage(self, ctx: Any, candidate: str) -> None:
        """``staging`` marks the candidate while it awaits review (not a version that was rejected)."""
        from ragindex.errors import GovernanceError
        from ragindex.promotion import stage

        try:
            decision = stage(ctx.registry, candidate, actor=f"rag_ingest {ctx.pipeline_run_id}",
                             pipeline_run=ctx.pipeline_run_id)
            self.log.info("%s takes 'staging' while it awaits review (record %s)", candidate, decision.record_id)
        except GovernanceError as exc:
            self.log.warning("not staged: %s", exc)

    # -- the answer ---------------------------------------------------------------------------------

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from ragindex.review import APPROVED, REJECTED, TIMED_OUT, describe, record_review

        if "error" in event:
            return super().execute_complete(context, event)
        self.validate_chosen_options(event["chosen_options"])
        timed_out = bool(event.get("timedout"))
        verdict = TIMED_OUT if timed_out else APPROVED if event["chosen_options"] == [self.APPROVE] else REJECTED
        who = event.get("responded_by_user") or {}
        reason = ((event.get("params_input") or {}).get(REASON_PARAM) or "").strip()
        if timed_out and not reason:
            reason = f"no answer within {review_settings(context['params']).timeout_hours:g} h"
        ctx, evaluated = ingest_context(context), self.evaluated(context)
        responded = event.get("responded_at")
        decision = record_review(
            ctx.registry, evaluated["index"], verdict,
            actor=who.get("name") or who.get("id") or ("timeout" if timed_out else "unknown"), reason=reason,
            pipeline_run=ctx.pipeline_run_id,
            details={"airflow_user": who, "responded_at": responded.isoformat() if responded else None,
                     "task": f"{context['ti'].dag_id}.{context['ti'].task_id}", "try": context["ti"].try_number,
                     "warnings_shown": evaluated.get("warnings") or []})
        self.log.info("review of %s: %s (record %s)", decision.ref, describe(decision), decision.record_id)
        return super().execute_complete(context, event) | {"decision": decision.to_json()}

    def conclude(self, context: Any, decision: dict[str, Any]) -> dict[str, Any]:
        """Go on as if the reviewer had just answered: approval continues, anything else skips promotion."""
        from ragindex.review import APPROVING, AUTO_APPROVED

        approved = decision["verdict"] in APPROVING
        if not approved:
            self.skip(ti=context["ti"], tasks=[t for t in context["task"].get_direct_relatives(upstream=False)
                                               if not t.is_teardown])
        return {"chosen_options": [self.APPROVE if approved else self.REJECT], "params_input": {},
                "responded_by_user": AUTO_APPROVER if decision["verdict"] == AUTO_APPROVED else
                {"name": decision["actor"]}, "decision": decision}
