"""The data gate on real corpus changes (a real ingest and evaluation each time): it passes a small edit, and
warns, with figures in the eval report, when documents are removed or a document with PII appears; the
warning is the first thing in the reviewer's summary. Each of the other thresholds (chunks changed, chunk
length, duplicates) is crossed alone by a real edit and not at its limit, and a document that had PII and gains
more is flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragindex.gate import drift, evaluate_index
from ragindex.promotion import approve
from ragindex.review import review_summary
from ragindex.settings import BuildSettings, ChunkingSettings, DriftSettings
from tests.conftest import write_files
from tests.decisions.test_review import CORPUS, Handbook

SMALL = BuildSettings(chunking=ChunkingSettings(200, 20))


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


# The other thresholds, each crossed alone by a real corpus change: a production index and a candidate built
# from an edited copy of its corpus (real parsing, chunking, model and FAISS), compared by the data gate.
SECTION = ("Section {i}: forklifts in hall {i} keep to the marked lanes, yield to pedestrians at every crossing, "
           "sound the horn at blind corners and park with the forks lowered and the key removed.")
GATES = {f"gate-{i}.txt": f"Gate {i} closes at {i + 1} in the evening; late trucks wait at the barrier."
         for i in range(9)}
PRODUCTION_CORPUS = {  # 14 chunks: four long ones of the handbook, ten short ones
    "handbook.md": "# Handbook\n\n" + "\n\n".join(SECTION.format(i=i) for i in range(4)),
    **GATES,
    "contacts.md": "Write to night.lead@example.com about damaged pallets.\n",
}


class Candidates:
    """A production index, and candidates built from edited copies of its corpus."""

    def __init__(self, root: Path) -> None:
        from ragindex.pipeline import build

        self.root, self.build = root, build
        write_files(root / "production", PRODUCTION_CORPUS)
        result = build(str(root / "production"), root / "production-index", SMALL)
        assert (result.documents, result.chunks, result.failed) == (11, 14, [])

    def drift(self, name: str, edits: dict[str, str | None], settings: DriftSettings | None = None) -> dict:
        corpus = self.root / name
        if not corpus.exists():
            shutil.copytree(self.root / "production", corpus)
            for path, text in edits.items():
                (corpus / path).unlink() if text is None else (corpus / path).write_text(text)
            result = self.build(str(corpus), self.root / f"{name}-index", SMALL,
                                previous=self.root / "production-index")
            assert result.failed == []
        return drift(self.root / f"{name}-index", self.root / "production-index", settings)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> Candidates:
    return Candidates(tmp_path_factory.mktemp("drift"))


def only_warning(report: dict) -> str:
    assert len(report["warnings"]) == 1, report
    return report["warnings"][0]


def test_rewritten_chunks_cross_the_chunks_changed_threshold(candidates) -> None:
    edits = {f"gate-{i}.txt": f"Dock {i} opens at {i + 5} in the morning for parcels and returns alike."
             for i in range(4)}
    report = candidates.drift("rewritten", edits)
    assert report["figures"]["chunks_changed_share"] == round(8 / 14, 4)  # 4 gone plus 4 new, of 14
    assert only_warning(report) == ("chunk texts removed or rewritten (4) plus new ones (4) are 57% of production's "
                                    "14 (limit 50%)")
    at_limit = DriftSettings(max_chunks_changed=report["figures"]["chunks_changed_share"])
    assert candidates.drift("rewritten", edits, at_limit)["warnings"] == [], "the limit itself is allowed"


def test_shorter_chunks_cross_the_chunk_length_threshold(candidates) -> None:
    edits = {"handbook.md": "# Handbook\n\nForklifts keep to the marked lanes."}  # four long chunks become one short
    report = candidates.drift("shortened", edits)
    assert 0.3 < report["figures"]["chunk_length_drop"] < 0.4 and report["figures"]["chunks_changed_share"] < 0.5
    drop = report["figures"]["chunk_length_drop"]
    assert only_warning(report) == f"chunks are {drop:.0%} shorter on average (limit 30%)"
    assert candidates.drift("shortened", edits, DriftSettings(max_chunk_length_drop=drop))["warnings"] == []


def test_copied_documents_cross_the_duplicates_threshold(candidates) -> None:
    edits = {f"copy-{i}.txt": GATES[f"gate-{i}.txt"] for i in range(3)}
    report = candidates.drift("copied", edits)
    assert report["figures"]["duplicate_increase"] == round(3 / 17, 4)  # 3 duplicate chunks of 17, from none
    assert report["figures"]["chunks_changed_share"] == 0.0, "copies add no new chunk text"
    assert only_warning(report) == "duplicate chunks rose by 18% of all chunks (limit 10%)"
    at_limit = DriftSettings(max_duplicate_increase=report["figures"]["duplicate_increase"])
    assert candidates.drift("copied", edits, at_limit)["warnings"] == []


def test_a_document_that_had_pii_and_gains_more_is_flagged(candidates) -> None:
    """Having had an e-mail address in production does not let a phone number in unseen."""
    more = {"contacts.md": "Write to night.lead@example.com about damaged pallets, or call 0151 496 0732.\n"}
    report = candidates.drift("more-pii", more)
    assert report["figures"]["new_pii_documents"] == ["contacts.md"]
    assert only_warning(report) == ("1 document(s) newly contain PII (limit 0): contacts.md (had 1 email; now 1 email, "
                                    "1 phone)")
    same = {"contacts.md": "Please write to night.lead@example.com about any damaged pallets.\n"}
    assert candidates.drift("same-pii", same)["warnings"] == [], "the same PII as production's copy is no drift"
    less = {"contacts.md": "Report damaged pallets to the night lead.\n"}
    assert candidates.drift("less-pii", less)["figures"]["new_pii_documents"] == []
