"""Airflow UI plugin "Index versions": the registry's artifact versions, aliases, eval figures and lineage.

Registered through the Airflow 3 plugin interface (3.1+; checked against 3.3.2):

- ``fastapi_apps``: the FastAPI app of ``ragindex_ui.app`` is mounted by the API server at ``/ragindex``
  (server-rendered HTML: ``/ragindex/``, ``/ragindex/lineage/{ref}``; JSON under ``/ragindex/api/``);
- ``external_views``: a "Index versions" entry in the UI's Browse menu that shows ``/ragindex/`` in an iframe
  at the UI route ``/plugin/ragindex`` (``href`` is relative, so a ``[api] base_url`` sub-path works);
- ``global_operator_extra_links``: the "Index version" button on task instances whose return value names a
  version (pull_documents, chunk_documents, build_index, evaluate_index, promote, rollback); it opens
  ``/plugin/ragindex/ragindex/lineage/{ref}`` — the version's page framed in the UI (the UI keeps the
  iframe's path after ``/plugin/{url_route}``), or the W&B page when the registry is W&B.

The registry is ``?registry=URI``, else ``RAGINDEX_REGISTRY``, else the local default. Nothing heavy is
imported here: ``ragindex`` and Jinja2 are imported by the request handlers only.
"""

from __future__ import annotations

import os
import sys

from airflow.plugins_manager import AirflowPlugin

# Airflow puts the plugins folder on sys.path; make the sibling package importable in any case.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from ragindex_ui.app import create_app  # noqa: E402
from ragindex_ui.links import UI_ROUTE, URL_PREFIX, IndexVersionLink  # noqa: E402

app = create_app()


class RagIndexPlugin(AirflowPlugin):
    """Index versions page, its navigation entry and the "Index version" extra link."""

    name = "ragindex"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "ragindex"}]
    external_views = [
        {
            "name": "Index versions",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": UI_ROUTE,
        }
    ]
    global_operator_extra_links = [IndexVersionLink()]
