"""The body of ``rag_deploy``: tell every ``ragindex serve`` endpoint that production moved, so it reads the
alias now instead of at its next poll.

Endpoints are base URLs (``http://serve-a:8000``), comma-separated, from the environment variable
``RAGINDEX_SERVE_ENDPOINTS`` and the Airflow Variable ``ragindex_serve_endpoints`` (both are read; a URL in
both counts once). Each gets ``POST /refresh``, tried ``ATTEMPTS`` times; its answer (the ref and digest it now
serves) is logged, and one that never answered fails the task naming it, after every other endpoint was told.

Imported by the DAG file at parse time: httpx and tenacity are imported inside the functions.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)

ENDPOINTS_ENV = "RAGINDEX_SERVE_ENDPOINTS"
ENDPOINTS_VARIABLE = "ragindex_serve_endpoints"
ATTEMPTS = 3  # per endpoint and task try; the task itself is retried too
RETRY_WAIT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
REFRESH_TIMEOUT_S = 600.0  # a refresh loads the new version before it answers (a W&B download included)


class EndpointsDidNotAnswer(AirflowException):
    """Some endpoints never answered ``POST /refresh`` (retryable: the task is retried)."""


def parse_endpoints(text: str, where: str) -> list[str]:
    """Comma-separated base URLs (http or https, a host, no query), without a trailing slash or repeats; a bad
    one fails at once naming ``where`` it came from."""
    endpoints: list[str] = []
    for raw in text.split(","):
        url = raw.strip().rstrip("/")
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise AirflowFailException(f"{where}: {raw.strip()!r} is not a serving endpoint; expected a base URL "
                                       "such as http://serve:8000 (comma-separated for several)")
        if url not in endpoints:
            endpoints.append(url)
    return endpoints


def configured_endpoints() -> list[str]:
    """The endpoints of the environment variable, then those of the Airflow Variable not already named."""
    from airflow.sdk import Variable

    found = parse_endpoints(os.environ.get(ENDPOINTS_ENV, ""), f"environment variable {ENDPOINTS_ENV}")
    variable = Variable.get(ENDPOINTS_VARIABLE, default=None)
    for url in parse_endpoints(str(variable or ""), f"Airflow Variable {ENDPOINTS_VARIABLE}"):
        if url not in found:
            found.append(url)
    return found


def production_move(context: dict[str, Any]) -> dict[str, Any]:
    """The move that triggered this run (the newest production-index event's extra), {} for a manual run."""
    events = context.get("triggering_asset_events") or {}
    found = [event for queue in events.values() for event in queue]
    return dict(getattr(found[-1], "extra", None) or {}) if found else {}


def refresh_one(endpoint: str, *, attempts: int, wait_s: float) -> dict[str, Any]:
    """``POST {endpoint}/refresh`` until it answers 200 (``attempts`` tries), and its answer."""
    import httpx
    from tenacity import Retrying, stop_after_attempt, wait_fixed

    timeout = httpx.Timeout(REFRESH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)

    def warn(state: Any) -> None:
        log.warning("%s: try %d of %d failed: %s", endpoint, state.attempt_number, attempts,
                    state.outcome.exception())

    for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_fixed(wait_s), reraise=True, after=warn):
        with attempt:
            response = httpx.post(f"{endpoint}/refresh", timeout=timeout)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            return response.json()
    raise AssertionError("unreachable: tenacity re-raises the last failure")


def refresh_endpoints(endpoints: list[str], *, expected_digest: str | None = None, attempts: int | None = None,
                      wait_s: float | None = None) -> list[dict[str, Any]]:
    """Tell each endpoint (every one, even after one failed); log what each serves; fail naming those that never
    answered. Tries and waits default to ``ATTEMPTS`` and ``RETRY_WAIT_S`` as they are when called."""
    attempts = ATTEMPTS if attempts is None else attempts
    wait_s = RETRY_WAIT_S if wait_s is None else wait_s
    answers: list[dict[str, Any]] = []
    silent: list[str] = []
    for endpoint in endpoints:
        try:
            body = refresh_one(endpoint, attempts=attempts, wait_s=wait_s)
        except Exception as exc:  # noqa: BLE001 - whatever it was, this endpoint was not told
            silent.append(f"{endpoint} ({type(exc).__name__}: {exc})")
            continue
        log.info("%s: %s %s (digest %s)", endpoint, "switched to" if body.get("changed") else "already serving",
                 body.get("ref"), body.get("digest"))
        if expected_digest and body.get("digest") != expected_digest:
            log.warning("%s serves digest %s, not %s that production moved to: it follows another registry or "
                        "alias, or production moved again since", endpoint, body.get("digest"), expected_digest)
        answers.append({"endpoint": endpoint, **body})
    if silent:
        raise EndpointsDidNotAnswer(f"{len(silent)} of {len(endpoints)} serving endpoints did not answer "
                                    f"POST /refresh after {attempts} tries: {'; '.join(silent)}")
    return answers


def refresh_serving(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The task: the configured endpoints told of the move (skipped, saying how to configure, when none are)."""
    endpoints = configured_endpoints()
    if not endpoints:
        raise AirflowSkipException(f"no serving endpoints configured: set {ENDPOINTS_ENV} or the Airflow Variable "
                                   f"{ENDPOINTS_VARIABLE} (comma-separated base URLs, e.g. http://serve:8000); "
                                   "servers still follow the move at their next poll")
    move = production_move(context)
    if move:
        log.info("production %s: %s -> %s (digest %s)", move.get("kind"), move.get("previous"), move.get("ref"),
                 move.get("digest"))
    return refresh_endpoints(endpoints, expected_digest=move.get("digest"))
