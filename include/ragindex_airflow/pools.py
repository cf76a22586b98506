"""The Airflow pool that serialises governance moves across workers and DAG runs.

rag_ingest's ``promote`` and rag_rollback's ``rollback_production`` each read who holds ``production`` and then
move it; two of them at once (two ingest runs, an ingest and a rollback) would each move from the holder they read.
Both take the one slot of this pool, so the scheduler runs one at a time on any worker (the core's governance lock
reaches only processes sharing it, and W&B has no lock). The review task is not in it: it moves only ``staging``,
waits for a person for hours, and its approval is checked against production again by ``promote``, in the pool.

The pool must exist where the DAGs run (a task in a missing pool is never scheduled; ``airflow dags test`` ignores
pools): ``scripts/main-job.sh`` and the compose file's ``airflow-init`` create it with ``airflow pools set``.
"""

from __future__ import annotations

import os

# RAGINDEX_GOVERNANCE_POOL renames it (e.g. to share a pool several deployments already have); read at parse time.
GOVERNANCE_POOL = os.environ.get("RAGINDEX_GOVERNANCE_POOL", "").strip() or "ragindex_governance"
GOVERNANCE_POOL_SLOTS = 1
GOVERNANCE_POOL_DESCRIPTION = "ragindex: one promotion or rollback at a time (they read, then move, production)"
