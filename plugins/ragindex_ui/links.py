"""The "Index version" extra link: a task that logged a version links to that version.

Global operator extra links are evaluated by the API server when the UI asks for a task instance's links
(``GET …/taskInstances/{task_id}/links``): ``get_link`` reads the task's ``return_value`` XCom and finds the
ref it names — ``pull_documents`` → ``{"raw": …}``, ``chunk_documents`` → ``[{"chunks": …}, …]``,
``build_index`` → ``{"index": …}``, ``evaluate_index`` → ``{"report": …, "index": …}``, ``promote`` →
``{"promoted": …}``, ``rag_rollback`` → ``{"to": …}`` — then links to the plugin's page of that version, or to
its W&B page when the registry is W&B. No ref: ``""`` (the UI shows the button disabled).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

URL_PREFIX = "/ragindex"  # where the FastAPI app is mounted
UI_ROUTE = "ragindex"  # the external view's url_route: the UI shows it at /plugin/ragindex
REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*:v\d+$")
# Which key of a return value names "the" version of the task, most specific first.
REF_KEYS = ("report", "index", "promoted", "to", "chunks", "raw")


def ref_from_value(value: Any) -> str | None:
    """The version ref a task's return value names, or None."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value if REF.match(value) else None
    if isinstance(value, list):  # chunk_documents: one work order per shard, all naming the same chunks
        for item in value:
            found = ref_from_value(item) if isinstance(item, dict) else None
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key in REF_KEYS:
            candidate = value.get(key)
            if isinstance(candidate, str) and REF.match(candidate):
                return candidate
    return None


def base_path() -> str:
    """The path part of ``[api] base_url`` (empty when Airflow is served at the root)."""
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # noqa: BLE001
        base = ""
    return urlsplit(base).path.rstrip("/")


def page_url(ref: str, registry: str | None = None, *, embedded: bool = True) -> str:
    """The plugin's page of ``ref``, as an absolute path so it works from any page of the UI.

    ``embedded``: inside the Airflow UI (its navigation around the page). The UI shows the external view
    ``url_route`` at ``/plugin/{url_route}`` and keeps the iframe's own path after that, so
    ``/plugin/ragindex/ragindex/lineage/REF`` opens the framed lineage page. Otherwise the bare page.
    """
    base = base_path()
    page = f"{base}{URL_PREFIX}/lineage/{quote(ref, safe='')}"
    if registry:
        page += f"?{urlencode({'registry': registry})}"
    return f"{base}/plugin/{UI_ROUTE}{page}" if embedded else page


def _return_value(ti_key: Any) -> Any:
    """The task instance's ``return_value`` XCom, read as plain JSON (never instantiating classes)."""
    try:  # API server: the metadata database
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.execute(
                XComModel.get_many(key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                                   task_ids=ti_key.task_id, map_indexes=ti_key.map_index)
                .with_only_columns(XComModel.value)
            ).first()
        if row is None:
            return None
        value = row.value
        if isinstance(value, (str, bytes)):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    except ImportError:  # a task process (Task SDK): through the execution API
        from airflow.sdk import XCom

        return XCom.get_value(ti_key=ti_key, key="return_value")


def _run_registry(ti_key: Any) -> str | None:
    """The ``registry`` param the run was triggered with, if any (blank means the deployment default)."""
    try:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            conf = session.scalar(select(DagRun.conf).where(DagRun.dag_id == ti_key.dag_id,
                                                            DagRun.run_id == ti_key.run_id))
        value = (conf or {}).get("registry") if isinstance(conf, dict) else None
        return value.strip() if isinstance(value, str) and value.strip() else None
    except Exception:  # noqa: BLE001
        return None


def link_for(ref: str, registry: str | None) -> str:
    """W&B page for a W&B registry, else the plugin page."""
    uri = registry or os.environ.get("RAGINDEX_REGISTRY", "").strip()
    if uri.startswith("wandb://"):
        try:
            from ragindex.registry import open_registry
            from ragindex_airflow.connections import wandb_registry_uri

            url = open_registry(wandb_registry_uri(uri)).web_url(ref)
            if url:
                return url
        except Exception:  # noqa: BLE001 - fall back to the plugin's own page
            log.warning("no W&B link for %s in %s", ref, uri, exc_info=True)
    return page_url(ref, registry)


class IndexVersionLink(BaseOperatorLink):
    """Button "Index version" on task instances whose return value names a registry version."""

    name = "Index version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            ref = ref_from_value(_return_value(ti_key))
        except Exception:  # noqa: BLE001 - a link must never break the task instance page
            log.warning("cannot read the return value of %s", ti_key, exc_info=True)
            return ""
        if not ref:
            return ""
        return link_for(ref, _run_registry(ti_key))
