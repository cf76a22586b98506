"""ragindex: turn a document corpus into a versioned, reviewable, rollback-able RAG index.

The package imports no Airflow; the DAGs in ``dags/`` only wire its step functions together.
Heavy libraries (torch, faiss, wandb) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
