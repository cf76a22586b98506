"""The ragindex Airflow UI plugin's code: the FastAPI app (``app``), page data (``views``) and the
"Index version" operator extra link (``links``). Registered by ``plugins/ragindex_plugin.py``."""
