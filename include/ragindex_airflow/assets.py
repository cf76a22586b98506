"""The Airflow Asset that stands for "the production index": promotion and rollback update it, so a deploy DAG
or a serving refresh can be scheduled on it (``schedule=[PRODUCTION_INDEX]``), and its events carry the new and
previous refs and digests."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from ragindex.names import DEFAULT_NAMES, PRODUCTION

PRODUCTION_INDEX = Asset(name=f"ragindex.{DEFAULT_NAMES.index}.{PRODUCTION}",
                         uri=f"ragindex://{DEFAULT_NAMES.index}/{PRODUCTION}", group="ragindex")


def announce_production_move(context: dict[str, Any], registry: Any, *, kind: str, to_ref: str, digest: str,
                             from_ref: str | None, decision: str | None) -> dict[str, Any]:
    """Put the move (``to_ref`` and ``digest`` as the move resolved them) on the task's Asset event (the event
    is emitted when the task succeeds)."""
    from ragindex.promotion import is_release

    old = registry.find(from_ref) if from_ref else None
    extra = {"registry": registry.uri, "alias": PRODUCTION, "kind": kind, "ref": to_ref, "digest": digest,
             "previous": old.ref if old else None, "previous_digest": old.digest if old else None,
             "decision": decision, "pipeline_run": context["dag_run"].run_id}
    new = registry.get(to_ref)
    if is_release(new):  # the asset is the production index: say which index, and the release that named it
        index = registry.get(new.metadata["index"])
        old_index = registry.find(old.metadata["index"]) if old is not None and is_release(old) else None
        extra |= {"release": new.ref, "release_digest": new.digest, "prompt": new.metadata.get("prompt"),
                  "ref": index.ref, "digest": index.digest, "previous_release": old.ref if old else None,
                  "previous": old_index.ref if old_index else extra["previous"],
                  "previous_digest": old_index.digest if old_index else extra["previous_digest"]}
    context["outlet_events"][PRODUCTION_INDEX].extra = extra
    return extra
