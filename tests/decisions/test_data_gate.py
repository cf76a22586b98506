"""The data gate on real corpus changes (a real ingest and evaluation each time): it passes a small edit, and
warns, with figures in the eval report, when documents are removed or a document with PII appears; the
warning is the first thing in the reviewer's summary."""

from __future__ import annotations

import json

from ragindex.gate import evaluate_index
from ragindex.promotion import approve
from ragindex.review import review_summary
from tests.decisions.test_review import CORPUS, Handbook


MORE = {f"policy-{i}.md": f"# Policy {i}\n\nRule {i}: forklifts in aisle {i} yield to pedestrians at every "
        f"crossing, and loads above {i + 1} metres need a spotter.\n" for i in range(6)}


def first_production(handbook: Handbook) -> str:
    for name, text in MORE.items():  # eight documents, so one edit is a small change
        (handbook.corpus / name).write_text(text)
    built, _ = handbook.run()
    approve(handbook.registry, built["index"], actor="alice")
    return built["index"]


def report_of(handbook: Handbook, ref: str) -> dict:
    return json.loads((handbook.registry.download(ref) / "report.json").read_text())


def test_a_small_edit_passes_the_data_gate(tmp_path) -> None:
    handbook = Handbook(tmp_path)
    first_production(handbook)
    (handbook.corpus / "shifts.txt").write_text(CORPUS["shifts.txt"] + "Bring your badge.\n")
    built, given = handbook.run()
    assert given.outcome["warnings"] == []
    figures = report_of(handbook, given.outcome["report"])["drift"]["figures"]
    assert figures["documents_removed"] == 0 and figures["new_pii_documents"] == []
    assert "Data gate" not in review_summary(handbook.registry, given)


def test_removed_documents_and_new_pii_are_warnings_on_top_of_the_review(tmp_path) -> None:
    handbook = Handbook(tmp_path)
    first_production(handbook)
    (handbook.corpus / "pallets.md").unlink()
    (handbook.corpus / "contacts.md").write_text("# Contacts\n\nThe night lead is on 0151 496 0732 and "
                                                  "night.lead@example.com for damaged pallets.\n")
    for name in list(MORE)[:2]:
        (handbook.corpus / name).unlink()
    built, given = handbook.run()
    warnings = given.outcome["warnings"]
    assert any("3 of 8 production documents are gone (38%, limit 25%): pallets.md, policy-0.md, policy-1.md" in w
               for w in warnings), warnings
    assert any("1 document(s) newly contain PII (limit 0): contacts.md" in w for w in warnings), warnings
    report = report_of(handbook, given.outcome["report"])
    assert report["drift"]["warnings"] == warnings and report["drift"]["figures"]["documents_removed_share"] == 0.375
    assert handbook.registry.get(given.outcome["report"]).metadata["drift_warnings"] == warnings
    text = review_summary(handbook.registry, given)
    top = text.split("**Gate:")[0]
    assert "**Data gate — approve only if you expected this:**" in top and "newly contain PII" in top


def test_the_thresholds_are_settings(tmp_path) -> None:
    from dataclasses import replace

    handbook = Handbook(tmp_path)
    first_production(handbook)
    for name in ("pallets.md", *list(MORE)[:2]):
        (handbook.corpus / name).unlink()
    built, _ = handbook.run()
    ctx = handbook.context("lenient")
    ctx.drift = replace(ctx.drift, max_documents_removed=0.6)
    assert evaluate_index(ctx, built["index"], handbook.questions).warnings == []
