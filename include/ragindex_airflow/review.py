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

from ragindex_airflow.context import ingest_context
from ragindex_airflow.params import run_settings

AUTO_APPROVER = {"id": "ragindex", "name": "auto-approved (require_approval=false)"}
REASON_PARAM = "reason"
AGAINST_XCOM = "review_against"  # the production ref the reviewer is shown, pushed when the review is asked


def review_body(ctx: Any, evaluated: dict[str, Any], against: str | None) -> str:
    """The review form's Markdown from the evaluate task's XCom: the release (its parts, its prompt and settings
    diff against ``against``) on top of the index's summary."""
    from ragindex.review import ReviewInput, release_section, review_summary

    given = ReviewInput(raw_ref=evaluated["raw"], chunks_ref=evaluated["chunks"], index_ref=evaluated["index"],
                        outcome=evaluated, embedded=evaluated.get("embedded"), reused=evaluated.get("reused"),
                        source=ctx.source, as_of=ctx.as_of, pipeline_run=ctx.pipeline_run_id)
    index_part = review_summary(ctx.registry, given, names=ctx.names)
    release = evaluated.get("release")
    if not release:
        return index_part
    return release_section(ctx.registry, release, against=against, names=ctx.names) + "\n" + index_part


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
                description="Why you approve or reject this release. Recorded with your decision in the registry.")
        kwargs["params"] = params
        super().__init__(**kwargs)

    # -- before asking --------------------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        from ragindex.context import may_promote
        from ragindex.names import PRODUCTION
        from ragindex.promotion import supersede_pending
        from ragindex.registry import split_ref
        from ragindex.review import AUTO_APPROVED, describe, record_review, review_key, review_needed

        run = run_settings(context)  # every Param read here, once; a bad one fails the task at once
        if not may_promote(run.run_type):
            raise AirflowSkipException(f"{run.run_type} runs never move production: review and promotion skipped")
        if not run.promote:
            raise AirflowSkipException("promote=false: review and promotion skipped")
        ctx, evaluated = ingest_context(run), self.evaluated(context)
        candidate = self.candidate(evaluated)
        recorded = ctx.registry.decision(review_key(ctx.pipeline_run_id, candidate))
        if recorded is not None:  # a retry of this task: the reviewer answered already
            self.log.info("the review of %s is on record already (%s): not asking again", candidate,
                          describe(recorded))
            return self.conclude(context, recorded.to_json())
        why_not = review_needed(ctx.registry, candidate, ctx.names)
        if why_not:
            raise AirflowSkipException(why_not)
        settings = run.review
        if not settings.require_approval:
            decision = record_review(ctx.registry, candidate, AUTO_APPROVED, actor=AUTO_APPROVER["id"],
                                     reason="require_approval=false and the gate passed",
                                     pipeline_run=ctx.pipeline_run_id)
            self.log.info("require_approval=false: %s approved automatically, on record as %s", candidate,
                          decision.record_id)
            return self.conclude(context, decision.to_json())
        production = ctx.registry.find(f"{split_ref(candidate)[0]}:{PRODUCTION}")
        against = production.ref if production else None
        context["ti"].xcom_push(key=AGAINST_XCOM, value=against)
        for voided in supersede_pending(ctx.registry, candidate, pipeline_run=ctx.pipeline_run_id):
            self.log.info("the pending review of %s (run %s) is superseded by %s: a late answer to it will not be "
                          "applied", voided.ref, voided.pipeline_run, candidate)
        self.stage(ctx, candidate, against)
        self.body = review_body(ctx, evaluated, against)  # written now, against the production serving now
        self.response_timeout = timedelta(hours=settings.timeout_hours)
        link = self.approve_link(context)
        self.log.info("asking for a review of %s against production %s (timeout %g h, then Reject): %s", candidate,
                      against or "none", settings.timeout_hours, link)
        return super().execute(context)

    @staticmethod
    def candidate(evaluated: dict[str, Any]) -> str:
        """What is reviewed and promoted: the run's release (an index alone for older XComs)."""
        return evaluated.get("release") or evaluated["index"]

    def approve_link(self, context: Any) -> str:
        """The Required Actions page of this review with Approve preselected (drawn as the solid button).

        The UI reads ``_options`` as JSON (``JSON.parse``); ``generate_link_to_ui(options=...)`` writes the
        Python repr of the list (``['Approve']``), which the UI drops, so the option is added here as JSON.
        Without ``[api] base_url`` (as in ``airflow standalone``) the link is built from ``[api] host`` and
        ``port``, and the log says how to set the address users open.
        """
        base = None
        from airflow.sdk.configuration import conf

        if not conf.get("api", "base_url", fallback=None):
            host = conf.get("api", "host", fallback="localhost") or "localhost"
            host = "localhost" if host in ("0.0.0.0", "::", "") else host
            base = f"http://{host}:{conf.get('api', 'port', fallback='8080')}"
            self.log.info("[api] base_url is not set: the link below assumes %s (set AIRFLOW__API__BASE_URL to the "
                          "address your users open)", base)
        page = self.generate_link_to_ui_from_context(context=context, base_url=base)
        return f"{page}&_options={quote(json.dumps([self.APPROVE]))}"

    @staticmethod
    def evaluated(context: Any) -> dict[str, Any]:
        """What the evaluate task handed on (its XCom): the candidate index, the gate's outcome, its warnings."""
        return context["ti"].xcom_pull(task_ids="evaluate_index")

    def stage(self, ctx: Any, candidate: str, against: str | None) -> None:
        """``staging`` marks the candidate while it awaits review (not a version that was rejected)."""
        from ragindex.errors import GovernanceError
        from ragindex.promotion import AGAINST, stage

        try:
            decision = stage(ctx.registry, candidate, actor=f"rag_ingest {ctx.pipeline_run_id}",
                             pipeline_run=ctx.pipeline_run_id, details={AGAINST: against})
            self.log.info("%s takes 'staging' while it awaits review (record %s)", candidate, decision.record_id)
        except GovernanceError as exc:
            self.log.warning("not staged: %s", exc)

    # -- the answer ---------------------------------------------------------------------------------

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from ragindex.names import PRODUCTION
        from ragindex.promotion import AGAINST, moved_since
        from ragindex.registry import split_ref
        from ragindex.review import APPROVED, APPROVING, REJECTED, STALE, TIMED_OUT, describe, record_review

        run = run_settings(context)
        if "error" in event:
            return super().execute_complete(context, event)
        self.validate_chosen_options(event["chosen_options"])
        timed_out = bool(event.get("timedout"))
        verdict = TIMED_OUT if timed_out else APPROVED if event["chosen_options"] == [self.APPROVE] else REJECTED
        who = event.get("responded_by_user") or {}
        actor = who.get("name") or who.get("id") or ("timeout" if timed_out else "unknown")
        reason = ((event.get("params_input") or {}).get(REASON_PARAM) or "").strip()
        if timed_out and not reason:
            reason = f"no answer within {run.review.timeout_hours:g} h"
        ctx, evaluated = ingest_context(run), self.evaluated(context)
        against = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key=AGAINST_XCOM)
        candidate = self.candidate(evaluated)
        if verdict == APPROVED:
            current = ctx.registry.find(f"{split_ref(candidate)[0]}:{PRODUCTION}")
            stale = moved_since(ctx.registry, against, current, split_ref(candidate)[0])
            if stale:  # the reviewer compared the candidate with a production that no longer serves
                verdict, reason = STALE, (f"approval by {actor} not applied: {stale}. Trigger rag_ingest again to "
                                          f"review {candidate} against {current.ref if current else 'none'}"
                                          + (f" (the reviewer said: “{reason}”)" if reason else ""))
        responded = event.get("responded_at")
        decision = record_review(
            ctx.registry, candidate, verdict, actor=actor, reason=reason, pipeline_run=ctx.pipeline_run_id,
            details={"airflow_user": who, "responded_at": responded.isoformat() if responded else None,
                     "task": f"{context['ti'].dag_id}.{context['ti'].task_id}", "try": context["ti"].try_number,
                     "warnings_shown": evaluated.get("warnings") or [], AGAINST: against,
                     "answer": event["chosen_options"]})
        if decision.verdict != verdict:  # recorded before under this run's key: superseded while it waited
            self.log.warning("review of %s: the answer (%s by %s) was not applied: the review was %s", decision.ref,
                             event["chosen_options"][0], actor, describe(decision))
        elif decision.verdict == STALE:
            self.log.warning("review of %s: %s", decision.ref, decision.reason)
        else:
            self.log.info("review of %s: %s (record %s)", decision.ref, describe(decision), decision.record_id)
        if decision.verdict in APPROVING or event["chosen_options"] != [self.APPROVE]:
            return super().execute_complete(context, event) | {"decision": decision.to_json()}
        return self.conclude(context, decision.to_json(), answer=event)

    def conclude(self, context: Any, decision: dict[str, Any], answer: dict[str, Any] | None = None) -> dict[str, Any]:
        """Go on as the decision on record says: approval continues, anything else skips promotion (the
        reviewer's own answer, when there was one, is kept in the return value)."""
        from ragindex.review import APPROVING, AUTO_APPROVED

        approved = decision["verdict"] in APPROVING
        if not approved:
            self.skip(ti=context["ti"], tasks=[t for t in context["task"].get_direct_relatives(upstream=False)
                                               if not t.is_teardown])
        if answer is not None:
            return {"chosen_options": answer["chosen_options"], "params_input": answer.get("params_input") or {},
                    "responded_by_user": answer.get("responded_by_user"), "decision": decision}
        return {"chosen_options": [self.APPROVE if approved else self.REJECT], "params_input": {},
                "responded_by_user": AUTO_APPROVER if decision["verdict"] == AUTO_APPROVED else
                {"name": decision["actor"]}, "decision": decision}
