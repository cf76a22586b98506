"""rag_ingest and rag_rollback run end to end with ``dag.test()``: real Airflow (SQLite metadata DB), the real
model, real FAISS, a local registry in tmp. One scenario test over one registry (so the number of full DAG
runs stays small), in named phases, each building on the one before:

1. first run: every artifact v0, lineage, production on rag-release:v0 (vector-index:v0 + prompt-template:v0);
2. same corpus and prompt again: pull_documents skipped, everything after it skipped, no new versions;
2b. a prompt-only change: a new prompt-template and rag-release on the same index, nothing parsed or embedded;
3. one document changed: only its changed chunks are embedded, production moves to v1;
4. another change, but a gate that cannot pass: run fails, eval-report passed=false, production stays;
5. a run whose run type is patched to backfill: review and promote skipped, production stays;
6. rag_rollback (the release, by default once one serves): back to the previous release, index and prompt
   with it; a version that does not exist fails the run;
7. rag_rollback to a release that was never approved (it failed its gate): refused, needs a reason when
   forced, and is recorded as a forced rollback;
8. every move of production (two promotions, two rollbacks) was an event of the production-index Asset;
9. a document with PII appears and no reviewer is asked (require_approval=false): the data gate fails the run.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import phase
from tests.dags.conftest import DAGS, SAMPLE_CORPUS, SAMPLE_QUESTIONS, copy_corpus

pytestmark = pytest.mark.usefixtures("airflow_db")

NAMES = ("raw-documents", "processed-chunks", "vector-index", "eval-questions", "eval-report", "prompt-template",
         "rag-release")
SAMPLE_PROMPTS = Path(__file__).resolve().parents[2] / "include" / "sample_data" / "prompts"
DOWNSTREAM_OF_PULL = ("chunk_documents", "embed_chunks", "build_index", "evaluate_index", "review", "promote")


class Scenario:
    """The corpus, registry and figures the phases hand on to each other."""

    def __init__(self, root: Path) -> None:
        # The documents are older than any data interval a test uses; a change made by a test is "now".
        self.corpus = copy_corpus(root / "corpus", mtime=time.time() - 60 * 86400)
        self.registry_path = root / "registry"
        self.questions = SAMPLE_QUESTIONS
        self.prompts = SAMPLE_PROMPTS
        self.production_digests: list[str] = []

    def conf(self, **extra) -> dict:
        return {"source": str(self.corpus), "registry": str(self.registry_path), "require_approval": False,
                "eval_questions": str(self.questions), "prompts": str(self.prompts), **extra}

    @property
    def registry(self):
        from ragindex.registry import open_registry

        return open_registry(str(self.registry_path))

    def counts(self) -> dict[str, int]:
        reg = self.registry
        return {name: len(reg.versions(name)) for name in NAMES}

    def production(self):
        return self.registry.get("vector-index:production")


def corpus_documents(folder: Path) -> int:
    """How many documents a folder holds (what a snapshot of it keeps)."""
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


class FreshDags:
    """Each run gets freshly parsed DAG objects, as each worker would: ``dag.test()`` runs the tasks in this
    process, and a run's conf is merged into the task objects' params in place, so a DAG object reused for a
    second run would see the first run's conf for every key the second conf leaves out."""

    def __getitem__(self, dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
        assert bag.import_errors == {}
        return bag.dags[dag_id]


def run_dag(dag, conf: dict, **kwargs) -> tuple[str, dict[str, list[str]], object]:
    """``dag.test()`` and what it left in the metadata DB: run state and the states of each task id."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dr = dag.test(run_conf=conf, **kwargs)
    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id)).all()
    states: dict[str, list[str]] = {}
    for task_id, _, state in sorted(rows, key=lambda r: (r[0], r[1])):
        states.setdefault(task_id, []).append(str(getattr(state, "value", state)))
    return str(getattr(dr.state, "value", dr.state)), states, dr


def try_numbers(dr) -> dict[str, int]:
    """How many times each task of a run was started (0: the scheduler skipped it without starting it)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.try_number).where(
            TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id)).all()
    return {task_id: max(n for t, n in rows if t == task_id) for task_id, _ in rows}


def task_xcom(dr, task_id: str, map_index: int = -1, key: str = "return_value"):
    """A task's return value (or another XCom key) in a finished run, from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.execute(select(XComModel.value).where(
            XComModel.dag_id == dr.dag_id, XComModel.run_id == dr.run_id, XComModel.task_id == task_id,
            XComModel.map_index == map_index, XComModel.key == key)).scalar_one()
    return json.loads(value) if isinstance(value, str) else value


def chunk_texts(registry, ref: str) -> list[str]:
    from ragindex.pipeline import CHUNKS_FILE

    with open(registry.download(ref) / CHUNKS_FILE, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def first_run_logs_every_version_with_lineage_and_promotes(dags, scenario):
    state, tis, dr = run_dag(dags["rag_ingest"], scenario.conf())
    assert state == "success", tis
    assert all(s == ["success"] for t, s in tis.items() if t != "embed_chunks"), tis
    assert tis["embed_chunks"] and set(tis["embed_chunks"]) == {"success"}

    reg = scenario.registry
    assert scenario.counts() == {name: 1 for name in NAMES}
    index = reg.get("vector-index:v0")
    report = reg.get("eval-report:v0")
    assert set(report.consumed) == {"vector-index:v0", "eval-questions:v0"}
    assert index.consumed == ("processed-chunks:v0",)
    assert reg.get("processed-chunks:v0").consumed == ("raw-documents:v0",)
    assert reg.get("raw-documents:v0").consumed == ()
    assert report.metadata["passed"] is True
    assert index.metadata["documents"] == corpus_documents(SAMPLE_CORPUS) and index.metadata["reused"] == 0
    assert index.metadata["embedded"] == len(set(chunk_texts(reg, "processed-chunks:v0")))
    assert index.metadata["run_type"] == "manual"

    graph = reg.lineage("eval-report:v0")
    edges = {tuple(e) for e in graph["edges"]}
    assert {("vector-index:v0", "eval-report:v0"), ("eval-questions:v0", "eval-report:v0"),
            ("processed-chunks:v0", "vector-index:v0"), ("raw-documents:v0", "processed-chunks:v0")} <= edges

    production = scenario.production()
    assert production.ref == "vector-index:v0"
    assert "production" in index.aliases
    scenario.production_digests.append(production.digest)
    release = reg.get("rag-release:production")
    assert release.ref == "rag-release:v0" and "production" in reg.get("prompt-template:v0").aliases
    assert set(release.consumed) == {"vector-index:v0", "prompt-template:v0", "eval-questions:v0"}
    assert release.metadata["eval"]["passed"] and release.metadata["eval"]["budget"]["passed"]
    run_id = index.metadata["pipeline_run_id"]
    decisions = [(d.kind, d.verdict, d.ref, d.pipeline_run) for d in reg.decisions("rag-release")]
    assert decisions == [("review", "auto_approved", "rag-release:v0", run_id),
                         ("promote", "promoted", "rag-release:v0", run_id)], "require_approval=false is on record"
    # the review form a person would get is written from the evaluate task's XCom (small: no summary in it)
    from ragindex.context import IngestContext
    from ragindex_airflow.review import review_body

    evaluated = task_xcom(dr, "evaluate_index")
    assert evaluated["release"] == "rag-release:v0" and len(json.dumps(evaluated)) < 1500
    body = review_body(IngestContext(reg, run_id, source=str(scenario.corpus)), evaluated, None)
    assert body.startswith("### Release `rag-release:v0` — no production release yet") and "Gate: PASSED" in body


def second_run_on_unchanged_corpus_is_a_noop(dags, scenario):
    before = scenario.counts()
    state, tis, _ = run_dag(dags["rag_ingest"], scenario.conf())
    assert state == "success", tis
    assert tis["pull_documents"] == ["skipped"]
    for task_id in DOWNSTREAM_OF_PULL:
        assert set(tis[task_id]) == {"skipped"}, (task_id, tis)
    assert scenario.counts() == before
    assert scenario.production().ref == "vector-index:v0"


def prompt_only_change_makes_a_release_on_the_same_index(dags, scenario, tmp_path, capfd):
    import shutil

    prompts = tmp_path / "prompts-v2"
    shutil.copytree(SAMPLE_PROMPTS, prompts)
    user = prompts / "user.j2"
    user.write_text(user.read_text(encoding="utf-8") + "\nAnswer in at most three sentences.\n", encoding="utf-8")
    scenario.prompts = prompts
    before = scenario.counts()
    state, tis, dr = run_dag(dags["rag_ingest"], scenario.conf())
    assert state == "success", tis
    after = scenario.counts()
    assert {n: after[n] - before[n] for n in NAMES} == {
        "raw-documents": 0, "processed-chunks": 0, "vector-index": 0, "eval-questions": 0, "eval-report": 1,
        "prompt-template": 1, "rag-release": 1}, "the prompt, the release and its evaluation are new, nothing else"
    pulled = task_xcom(dr, "pull_documents", key="pulled")
    assert pulled["reuse_index"] is True and pulled["index"] == "vector-index:v0"
    started = try_numbers(dr)
    for task_id in ("chunk_documents", "embed_chunks", "build_index"):
        assert set(tis[task_id]) == {"skipped"} and started[task_id] == 0, (
            "skipped by the branch, never started: nothing parsed, chunked or embedded", task_id, tis, started)
    assert started["pull_documents"] == 1 and started["evaluate_index"] == 1, started
    assert tis["evaluate_index"] == ["success"] and tis["promote"] == ["success"], tis
    evaluated = task_xcom(dr, "evaluate_index")
    assert evaluated["index"] == "vector-index:v0" and evaluated["embedded"] == 0
    assert evaluated["chunks"] == scenario.registry.get("vector-index:v0").metadata["chunks_ref"]
    reg = scenario.registry
    release = reg.get("rag-release:production")
    assert release.ref == "rag-release:v1" and release.metadata["index"] == "vector-index:v0"
    assert release.metadata["prompt"] == "prompt-template:v1" and "production" in reg.get("prompt-template:v1").aliases
    assert scenario.production().ref == "vector-index:v0", "the same index serves"


def changed_document_embeds_only_its_changed_chunks(dags, scenario):
    doc = scenario.corpus / "forklift_certification.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\n## Night shifts\n\nOperators on the night shift must "
                   "carry a torch and report every near miss to the shift supervisor before leaving the site.\n",
                   encoding="utf-8")
    state, tis, _ = run_dag(dags["rag_ingest"], scenario.conf())
    assert state == "success", tis
    reg = scenario.registry
    old, new = chunk_texts(reg, "processed-chunks:v0"), chunk_texts(reg, "processed-chunks:v1")
    old_set = set(old)
    changed = {t for t in new if t not in old_set}
    assert 0 < len(changed) < len(set(new)) / 4
    index = reg.get("vector-index:v1")
    assert index.metadata["embedded"] == len(changed)
    assert index.metadata["reused"] == sum(1 for t in new if t in old_set)
    assert index.metadata["chunks"] == len(new)
    assert index.metadata["raw"] == "raw-documents:v1"
    assert scenario.production().ref == "vector-index:v1"
    report = reg.get(index.metadata["eval"]["report"])
    assert report.metadata["production"] == "vector-index:v0"  # compared with the old one
    assert reg.get("rag-release:production").metadata["index"] == "vector-index:v1"
    assert reg.get("rag-release:production").metadata["prompt"] == "prompt-template:v1", "the prompt stays"
    scenario.production_digests.append(index.digest)


def gate_that_cannot_pass_fails_the_run_and_does_not_promote(dags, scenario, tmp_path):
    doc = scenario.corpus / "returns_policy.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n\nGift cards are never refunded in cash.\n", encoding="utf-8")
    impossible = tmp_path / "impossible.jsonl"
    impossible.write_text("".join(json.dumps({"question": q, "expected_source": "no_such_document.md"}) + "\n"
                                  for q in ("How long is a forklift certificate valid?", "Who pays for returns?")))
    state, tis, _ = run_dag(dags["rag_ingest"], scenario.conf(eval_questions=str(impossible), min_recall=1.0))
    assert state == "failed", tis
    assert tis["build_index"] == ["success"]
    assert tis["evaluate_index"] == ["failed"]
    assert tis["review"] == ["upstream_failed"] and tis["promote"] == ["upstream_failed"]
    reg = scenario.registry
    report = reg.get("eval-report:latest")
    assert report.metadata["index"] == "vector-index:v2"
    assert report.metadata["passed"] is False
    assert "below the threshold" in report.metadata["reason"]
    assert reg.get("vector-index:v2").metadata["eval"]["passed"] is False
    assert scenario.production().ref == "vector-index:v1"
    assert "production" not in reg.get("vector-index:v2").aliases


def backfill_type_run_does_not_promote(dags, scenario, monkeypatch):
    """dag.test() always creates a MANUAL run; the run type is patched to BACKFILL_JOB right after creation,
    so the tasks read 'backfill' from their context as they would in a run made by ``airflow backfill``."""
    import airflow.models.dagrun as dagrun_module
    from airflow.utils.types import DagRunType

    original = dagrun_module.get_or_create_dagrun

    def as_backfill(**kwargs):
        dr = original(**kwargs)
        dr.run_type = DagRunType.BACKFILL_JOB
        kwargs["session"].merge(dr)
        kwargs["session"].commit()
        return dr

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", as_backfill)
    # A past week: its data interval ends before the changes above, so the snapshot is the older corpus.
    logical_date = (datetime.now(timezone.utc) - timedelta(days=14)).replace(microsecond=0)
    before = scenario.counts()
    state, tis, dr = run_dag(dags["rag_ingest"], scenario.conf(), logical_date=logical_date)
    assert str(getattr(dr.run_type, "value", dr.run_type)) == "backfill"
    assert state == "success", tis
    assert tis["evaluate_index"] == ["success"]
    assert tis["review"] == ["skipped"] and tis["promote"] == ["skipped"]
    reg = scenario.registry
    index = reg.get("vector-index:latest")
    report = reg.get("eval-report:latest")
    assert report.metadata["index"] == index.ref and report.metadata["run_type"] == "backfill"
    # The past corpus lacks two documents the questions ask about: below production, recorded, no failure.
    assert report.metadata["passed"] is False and "worse than production" in report.metadata["reason"]
    assert scenario.counts()["vector-index"] == before["vector-index"] + 1
    assert index.metadata["run_type"] == "backfill"
    assert index.metadata["as_of"] is not None and index.metadata["as_of"] < logical_date.isoformat()
    # the two documents the phases above changed "now" are not in the past snapshot
    assert index.metadata["documents"] == corpus_documents(SAMPLE_CORPUS) - 2
    assert index.metadata["embedded"] == 0  # every text of the older corpus is in the cache
    assert any(a.startswith("snapshot-") and a == f"snapshot-{logical_date:%Y-%m-%d}" for a in index.aliases)
    assert scenario.production().ref == "vector-index:v1"

    # The same past week again, with a prompt never seen: the corpus has its index, so the backfill stops at
    # pull_documents and logs nothing, not even the prompt (a backfill never makes a release of it either).
    import shutil

    prompts = scenario.prompts.parent / "prompts-backfill"
    shutil.copytree(SAMPLE_PROMPTS, prompts)
    (prompts / "user.j2").write_text((prompts / "user.j2").read_text(encoding="utf-8") + "\nBe brief.\n",
                                     encoding="utf-8")
    before = scenario.counts()
    state, tis, _ = run_dag(dags["rag_ingest"], scenario.conf(prompts=str(prompts)), logical_date=logical_date)
    assert state == "success" and tis["pull_documents"] == ["skipped"], tis
    assert scenario.counts() == before, "no prompt, eval set or any other version from a backfill that did nothing"


def rollback_restores_previous_production(dags, scenario):
    state, tis, _ = run_dag(dags["rag_rollback"], {"registry": str(scenario.registry_path), "reason": "test"})
    assert state == "success", tis
    release = scenario.registry.get("rag-release:production")
    assert release.ref == "rag-release:v1", "the previous release, with its index and prompt"
    assert "production" in scenario.registry.get("prompt-template:v1").aliases
    production = scenario.production()
    assert production.ref == "vector-index:v0"
    assert production.digest == scenario.production_digests[0]
    last = scenario.registry.alias_history("vector-index", "production")[-1]
    assert (last.from_version, last.to_version) == ("v1", "v0")
    assert "rollback" in last.reason


def rollback_to_missing_version_fails_and_names_it(dags, scenario, capfd):
    state, tis, _ = run_dag(dags["rag_rollback"], {"registry": str(scenario.registry_path), "to_version": "v99"})
    assert state == "failed", tis
    assert tis["rollback_production"] == ["failed"]
    out, err = capfd.readouterr()
    assert "rag-release:v99" in out + err and "no such version" in out + err
    assert scenario.production().ref == "vector-index:v0"


def rollback_to_a_version_never_approved_is_refused_unless_forced(dags, scenario, capfd):
    """rag-release:v3 (vector-index:v2) failed its gate in phase 4 and never held production."""
    conf = {"registry": str(scenario.registry_path), "to_version": "v3"}
    state, tis, _ = run_dag(dags["rag_rollback"], conf)
    assert state == "failed" and tis["rollback_production"] == ["failed"], tis
    out, err = capfd.readouterr()
    assert "rollback to rag-release:v3 refused" in out + err and "never reviewed" in out + err
    assert "ragindex/rollback.py" not in out + err, "a refusal, not a crash: no traceback through the core"
    state, tis, _ = run_dag(dags["rag_rollback"], conf | {"force": True})
    assert state == "failed", "a forced rollback needs a reason"
    assert "needs a reason" in "".join(capfd.readouterr())
    assert scenario.production().ref == "vector-index:v0"
    state, tis, dr = run_dag(dags["rag_rollback"], conf | {"force": True, "reason": "incident 42: v0 misroutes"})
    assert state == "success", tis
    assert scenario.production().ref == "vector-index:v2"
    last = scenario.registry.decisions("rag-release")[-1]
    assert (last.kind, last.verdict, last.ref, last.reason) == ("rollback", "forced_rollback", "rag-release:v3",
                                                                "incident 42: v0 misroutes")
    assert last.pipeline_run == dr.run_id and last.actor.endswith("via rag_rollback")


def production_asset_events() -> list[dict]:
    """The extras of the production-index Asset's events, oldest first (Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ragindex_airflow.assets import PRODUCTION_INDEX

    with create_session() as session:
        rows = session.execute(select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.uri == PRODUCTION_INDEX.uri).order_by(AssetEvent.id)).all()
    return [dict(r[0]) for r in rows]


def every_production_move_was_announced(scenario, events_before: int):
    reg = scenario.registry
    events = production_asset_events()[events_before:]
    assert [(e["kind"], e["previous"], e["ref"], e["release"]) for e in events] == [
        ("promote", None, "vector-index:v0", "rag-release:v0"),
        ("promote", "vector-index:v0", "vector-index:v0", "rag-release:v1"),  # the prompt-only release
        ("promote", "vector-index:v0", "vector-index:v1", "rag-release:v2"),
        ("rollback", "vector-index:v1", "vector-index:v0", "rag-release:v1"),
        ("forced_rollback", "vector-index:v0", "vector-index:v2", "rag-release:v3")]
    assert all(e["digest"] == reg.get(e["ref"]).digest and e["registry"] == reg.uri for e in events)
    assert events[2]["previous_digest"] == reg.get("vector-index:v0").digest
    assert events[1]["prompt"] == "prompt-template:v1" and events[1]["previous_release"] == "rag-release:v0"


def data_gate_fails_a_run_that_nobody_reviews(dags, scenario, capfd):
    (scenario.corpus / "contacts.md").write_text("# Contacts\n\nFor damaged pallets call the night lead on "
                                                 "0151 496 0732 or write to night.lead@example.com.\n")
    production = scenario.production().ref
    state, tis, _ = run_dag(dags["rag_ingest"], scenario.conf())
    assert state == "failed" and tis["evaluate_index"] == ["failed"], tis
    out, err = capfd.readouterr()
    assert "data gate" in out + err and "newly contain PII" in out + err and "contacts.md" in out + err
    report = scenario.registry.get("eval-report:latest")
    assert any("contacts.md" in w for w in report.metadata["drift_warnings"])
    assert scenario.production().ref == production


def test_weekly_lifecycle_of_the_real_dags(tmp_path, monkeypatch, capfd):
    """The phases of the module docstring, in order; a failure names its phase."""
    dags, scenario = FreshDags(), Scenario(tmp_path / "scenario")
    events_before = len(production_asset_events())
    with phase("1 first run"):
        first_run_logs_every_version_with_lineage_and_promotes(dags, scenario)
    with phase("2 unchanged corpus"):
        second_run_on_unchanged_corpus_is_a_noop(dags, scenario)
    with phase("2b a prompt-only change"):
        prompt_only_change_makes_a_release_on_the_same_index(dags, scenario, tmp_path, capfd)
    with phase("3 one document changed"):
        changed_document_embeds_only_its_changed_chunks(dags, scenario)
    with phase("4 gate that cannot pass"):
        gate_that_cannot_pass_fails_the_run_and_does_not_promote(dags, scenario, tmp_path)
    with phase("5 backfill run"), monkeypatch.context() as patch:
        backfill_type_run_does_not_promote(dags, scenario, patch)
    with phase("6 rollback"):
        rollback_restores_previous_production(dags, scenario)
    with phase("6 rollback to a missing version"):
        rollback_to_missing_version_fails_and_names_it(dags, scenario, capfd)
    with phase("7 rollback to a version that was never approved"):
        rollback_to_a_version_never_approved_is_refused_unless_forced(dags, scenario, capfd)
    with phase("8 every production move is an Asset event"):
        every_production_move_was_announced(scenario, events_before)
    with phase("9 a document with PII, nobody to review it: the data gate fails the run"):
        data_gate_fails_a_run_that_nobody_reviews(dags, scenario, capfd)
