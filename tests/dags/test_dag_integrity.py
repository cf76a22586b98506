"""The DAG files as the dag-processor sees them: they import cleanly and quickly, and wire what the README says."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from tests.dags.conftest import DAGS, REPO

pytestmark = pytest.mark.usefixtures("airflow_db")

INGEST_ORDER = ["pull_documents", "chunk_documents", "embed_chunks", "build_index", "evaluate_index", "review", "promote"]
# Data dependencies (XComs) add edges besides the main chain; these are all of them, exactly.
INGEST_UPSTREAM = {
    "pull_documents": set(),
    "chunk_documents": {"pull_documents"},
    "embed_chunks": {"chunk_documents"},
    "build_index": {"pull_documents", "chunk_documents", "embed_chunks"},
    "evaluate_index": {"pull_documents", "chunk_documents", "build_index"},
    "review": {"evaluate_index"},
    "promote": {"evaluate_index", "review"},
}
HEAVY = ("torch", "faiss", "wandb", "sentence_transformers")


@pytest.fixture(scope="module")
def dagbag_and_warnings():
    import airflow  # noqa: F401  (configuration warnings, if any, are not the DAG files')
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
    return bag, caught


@pytest.fixture(scope="module")
def dagbag(dagbag_and_warnings):
    return dagbag_and_warnings[0]


def test_dags_import_without_errors_or_warnings(dagbag_and_warnings):
    bag, caught = dagbag_and_warnings
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"rag_ingest", "rag_rollback", "rag_deploy"}
    assert bag.captured_warnings == {}
    ours = [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]
    assert ours == []


@pytest.mark.parametrize("dag_id", ["rag_ingest", "rag_rollback"])
def test_every_param_has_title_and_description_and_defaults_validate(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.params, dag_id
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("title"), f"{dag_id}.{name} has no title"
        assert param.description, f"{dag_id}.{name} has no description"
    validated = dag.params.validate()
    assert set(validated) == set(dag.params)


@pytest.mark.parametrize("name, bad", [("chunk_size", 10), ("index_kind", "ivf"), ("min_recall", 1.5),
                                       ("eval_k", 0), ("require_approval", "yes")])
def test_bad_ingest_param_is_rejected(dagbag, name, bad):
    from airflow.sdk import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags["rag_ingest"].params)
    with pytest.raises(ParamValidationError, match=name):
        params[name] = bad
        params.validate()


def test_ingest_tasks_and_order(dagbag):
    dag = dagbag.dags["rag_ingest"]
    assert set(dag.task_ids) == set(INGEST_ORDER)
    assert [t.task_id for t in dag.topological_sort()] == INGEST_ORDER
    for task_id, upstream in INGEST_UPSTREAM.items():
        assert dag.task_dict[task_id].upstream_task_ids == upstream, task_id
    for before, after in zip(INGEST_ORDER, INGEST_ORDER[1:]):
        assert after in dag.task_dict[before].downstream_task_ids, (before, after)
    assert dag.task_dict["promote"].downstream_task_ids == set()
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.task_dict["embed_chunks"], MappedOperator)
    assert not isinstance(dag.task_dict["build_index"], MappedOperator)
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    assert isinstance(dag.task_dict["review"], ApprovalOperator)


def test_prompt_only_runs_branch_past_parsing_and_embedding(dagbag):
    """pull_documents is a branch: a prompt-only run follows only evaluate_index, whose trigger rule lets it run
    over the skipped chunk/build tasks (and still fail when one of them failed)."""
    from ragindex_airflow.tasks import CORPUS_PATH, PROMPT_ONLY_PATH

    dag = dagbag.dags["rag_ingest"]
    assert callable(getattr(dag.task_dict["pull_documents"], "do_branch", None)), "a branch operator"
    assert set(CORPUS_PATH) == dag.task_dict["pull_documents"].downstream_task_ids
    assert PROMPT_ONLY_PATH == ["evaluate_index"]
    assert dag.task_dict["evaluate_index"].trigger_rule == "none_failed_min_one_success"
    assert dag.task_dict["build_index"].trigger_rule == "all_success"


def test_ingest_schedule_and_run_limits(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["rag_ingest"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 3 * * 1"
    assert dag.catchup is False
    assert dag.max_active_runs > 1, "a run waiting for its review must not hold back the next ingestion"


def test_rollback_is_manual_only(dagbag):
    from airflow.timetables.simple import NullTimetable

    dag = dagbag.dags["rag_rollback"]
    assert dag.schedule is None
    assert isinstance(dag.timetable, NullTimetable) or type(dag.timetable).__name__ == "NullTimetable"
    assert [t.task_id for t in dag.tasks] == ["rollback_production"]


def test_deploy_runs_on_every_production_move_and_retries(dagbag):
    """rag_deploy is scheduled on the Asset promotion and rollback update, and nothing else; one task, retried."""
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    from ragindex_airflow.assets import PRODUCTION_INDEX

    dag = dagbag.dags["rag_deploy"]
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [PRODUCTION_INDEX.uri]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["refresh_serving"]
    task = dag.task_dict["refresh_serving"]
    assert task.retries == 2 and task.retry_delay.total_seconds() == 30
    producers = {t.task_id for d in dagbag.dags.values() for t in d.tasks
                 if any(getattr(o, "uri", None) == PRODUCTION_INDEX.uri for o in t.outlets)}
    assert producers == {"promote", "rollback_production"}, "the moves rag_deploy hears of"


def test_governance_moves_take_turns_in_one_pool_of_one_slot(dagbag):
    """promote (rag_ingest) and rollback_production (rag_rollback) read who holds production, then move it: both
    take the one slot of one pool, and no other task does (the review waits for a person for hours)."""
    from airflow.models.pool import Pool

    from ragindex_airflow.pools import GOVERNANCE_POOL

    in_pool = {(d.dag_id, t.task_id): t.pool_slots for d in dagbag.dags.values() for t in d.tasks
               if t.pool == GOVERNANCE_POOL}
    assert in_pool == {("rag_ingest", "promote"): 1, ("rag_rollback", "rollback_production"): 1}
    pool = Pool.get_pool(GOVERNANCE_POOL)
    assert pool is not None and pool.slots == 1, "the test set-up (as main-job.sh) created the pool with one slot"


PARSE_PROBE = r"""
import importlib.util, json, sys
import airflow, airflow.sdk  # already imported by any dag-processor
path = sys.argv[1]
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("probe_dag_module", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
heavy = [m for m in %r if m in sys.modules]
ragindex = sorted(m for m in set(sys.modules) - before if m.startswith("ragindex"))
print(json.dumps({"heavy": heavy, "ragindex": ragindex}))
""" % (HEAVY,)


@pytest.mark.parametrize("dag_file", ["rag_ingest.py", "rag_rollback.py", "rag_deploy.py"])
def test_dag_file_parses_without_heavy_imports(dag_file):
    """What the dag-processor pays for every parse: no model, FAISS or W&B, and of the core only its light
    modules (settings, names, errors, the Params form, the task wrappers)."""
    proc = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(DAGS / dag_file)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"{dag_file} imports {result['heavy']} at parse time"
    heavy_core = {"ragindex.embedding", "ragindex.indexing", "ragindex.pipeline", "ragindex.retrieval",
                  "ragindex.registry.wandb", "ragindex.ingest", "ragindex.gate"}
    assert heavy_core.isdisjoint(result["ragindex"]), result["ragindex"]
