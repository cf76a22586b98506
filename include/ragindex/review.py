"""The review: a person's decision on a candidate index, on record, and what they read before making it.

Every verdict (approved, rejected, timed out, auto-approved) is a registry decision record with actor, time,
reason and pipeline run, made by ``record_review`` whether it comes from the DAG's review task or from
``ragindex approve`` / ``ragindex reject``. A rejection or timeout also takes ``staging`` off the candidate.
Two more outcomes void a review without judging the content: ``stale`` (production moved while the review
waited, so the approval was made against a production that no longer serves) and ``superseded`` (a newer
candidate reached review first). An approval of a version whose latest review rejected it is its own
decision: its record names the rejection it overrides, and every view says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ragindex.names import DEFAULT_NAMES, PRODUCTION, STAGING, ArtifactNames
from ragindex.registry import AliasChange, ArtifactVersion, Decision, Registry

REVIEW = "review"
APPROVED, REJECTED, TIMED_OUT, AUTO_APPROVED = "approved", "rejected", "timed_out", "auto_approved"
STALE, SUPERSEDED = "stale", "superseded"
VERDICTS = (APPROVED, REJECTED, TIMED_OUT, AUTO_APPROVED, STALE, SUPERSEDED)
APPROVING = frozenset({APPROVED, AUTO_APPROVED})
SAMPLE_DOCUMENTS, SAMPLE_CHARS, PII_SHOWN = 3, 320, 8


# ---------------------------------------------------------------- the record

def review_key(pipeline_run: str, index_ref: str) -> str:
    """One review per candidate per pipeline run: a retried review task finds the answer already given."""
    return f"{REVIEW}/{pipeline_run}/{index_ref}"


def _overridden(registry: Registry, ref: str, verdict: str) -> dict[str, Any] | None:
    """The rejection an approval of ``ref`` overrides (its latest review), as the approval's record names it."""
    if verdict not in APPROVING:
        return None
    previous = latest_reviews(registry, ref.partition(":")[0]).get(ref)
    if previous is None or previous.verdict != REJECTED:
        return None
    return {"record_id": previous.record_id, "actor": previous.actor, "at": previous.at, "reason": previous.reason}


def record_review(registry: Registry, index_ref: str, verdict: str, *, actor: str, reason: str = "",
                  pipeline_run: str | None = None, details: dict[str, Any] | None = None,
                  key: str | None = None) -> Decision:
    """Put a reviewer's verdict on record; anything but approval also takes ``staging`` off the candidate. An
    approval of a rejected version records the rejection it overrides."""
    if verdict not in VERDICTS:
        raise ValueError(f"review verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    ref = registry.get(index_ref).ref
    changes = () if verdict in APPROVING else (AliasChange(ref, STAGING, remove=True),)
    details = dict(details or {})
    overrides = _overridden(registry, ref, verdict)
    if overrides:
        details["overrides"] = overrides
    if key is None:
        key = review_key(pipeline_run, ref) if pipeline_run else ""
    return registry.record_decision(Decision(
        kind=REVIEW, verdict=verdict, ref=ref, actor=actor, reason=reason, pipeline_run=pipeline_run,
        key=key, changes=changes, details=details))


def latest_reviews(registry: Registry, name: str) -> dict[str, Decision]:
    """Each version's most recent review verdict (one read of the decisions of ``name``)."""
    return {d.ref: d for d in registry.decisions(name) if d.kind == REVIEW}


def latest_review(registry: Registry, version: ArtifactVersion) -> Decision | None:
    """The most recent review verdict on one version, or None if it was never reviewed."""
    return latest_reviews(registry, version.name).get(version.ref)


def _when(at: str) -> str:
    """A record's time as messages show it."""
    return at[:16].replace("T", " ") + " UTC" if at else "at an unknown time"


def describe(decision: Decision | None) -> str:
    """A decision in words, as messages and the reviewer's summary quote it (an override names what it
    overrode)."""
    if decision is None:
        return "never reviewed"
    why = f": “{decision.reason}”" if decision.reason else ""
    text = f"{decision.verdict.replace('_', ' ')} on {_when(decision.at)} by {decision.actor}{why}"
    overrides = decision.details.get("overrides") if isinstance(decision.details, dict) else None
    if overrides:
        said = f": “{overrides['reason']}”" if overrides.get("reason") else ""
        text += f", overriding the rejection on {_when(overrides.get('at') or '')} by {overrides.get('actor')}{said}"
    return text


def prior_review_of_corpus(registry: Registry, candidate: ArtifactVersion,
                           names: ArtifactNames = DEFAULT_NAMES) -> Decision | None:
    """The latest review of any index built from the candidate's corpus with its settings (the candidate
    itself included: an unchanged corpus's index is the same version)."""
    corpus = candidate.metadata.get("corpus_digest"), candidate.metadata.get("settings_fingerprint")
    same = {v.ref for v in registry.versions(names.index)
            if (v.metadata.get("corpus_digest"), v.metadata.get("settings_fingerprint")) == corpus}
    reviews = [d for d in registry.decisions(names.index) if d.kind == REVIEW and d.ref in same]
    return reviews[-1] if reviews else None


def review_needed(registry: Registry, index_ref: str, names: ArtifactNames = DEFAULT_NAMES) -> str | None:
    """Why no person needs to be asked about this candidate, or None when one does."""
    candidate = registry.get(index_ref)
    production = registry.find(f"{candidate.name}:{PRODUCTION}")
    if production is not None and production.ref == candidate.ref:
        return f"{production.ref} already holds {PRODUCTION}: nothing to review or promote"
    return None


# ---------------------------------------------------------------- what the reviewer reads

@dataclass(frozen=True)
class ReviewInput:
    """Everything the summary is written from: the run's versions, its gate outcome and its own figures."""

    raw_ref: str
    chunks_ref: str
    index_ref: str
    outcome: dict[str, Any]
    embedded: int | None = None
    reused: int | None = None
    source: str = ""
    as_of: str | None = None
    pipeline_run: str | None = None


def _markdown_text(text: str, limit: int) -> str:
    """Document text quoted safely: PII masked, whitespace folded, Markdown and HTML characters escaped, cut at
    ``limit``."""
    from ragindex.quality import mask_text

    flat = " ".join(mask_text(text).split())
    cut = flat[:limit].rstrip() + (" …" if len(flat) > limit else "")
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", cut)


def _new_part(text: str, old_texts: Sequence[str], at_least: int = 40) -> str:
    """The part of a changed chunk a reviewer has not seen: what follows its longest common beginning with
    a chunk of the document's production version (from the word it starts in), else the whole chunk."""
    common = max((len(os.path.commonprefix([text, old])) for old in old_texts), default=0)
    if common < at_least:
        return text
    start = text.rfind(" ", 0, common) + 1
    return "… " + text[start:]


def _listed(paths: Sequence[str], most: int = 10) -> str:
    """`` (`a`, `b` … (+3))`` after a count, nothing for none."""
    if not paths:
        return ""
    return " (" + ", ".join(f"`{p}`" for p in paths[:most]) + (f" … +{len(paths) - most}" if len(paths) > most else "") + ")"


class _Summary:
    """Reads what the review needs from the registry once, then writes each section."""

    def __init__(self, registry: Registry, given: ReviewInput, names: ArtifactNames) -> None:
        from ragindex.indexing import read_chunks
        from ragindex.pipeline import chunks_by_source, read_chunks_file, read_documents, read_quality

        self.registry, self.given, self.names = registry, given, names
        self.index = registry.get(given.index_ref)
        self.production = registry.find(f"{names.index}:{PRODUCTION}")
        chunks_dir = registry.download(given.chunks_ref)
        self.quality = read_quality(chunks_dir)
        self.chunks = chunks_by_source(read_chunks_file(chunks_dir))
        # documents.jsonl has every document of the snapshot (failed ones too) with its sha256, so the corpora
        # are compared without downloading either raw version.
        self.new_docs = {d["path"]: d["sha256"] for d in read_documents(chunks_dir)}
        self.old_docs: dict[str, str] = {}
        self.old_shas: set[str] = set()
        self.old_texts: dict[str, list[str]] = {}
        self.old_pii: set[str] = set()
        if self.production is not None:
            prod_dir = registry.download(self.production.ref)
            for chunk in read_chunks(prod_dir):
                self.old_shas.add(chunk.sha256)
                self.old_texts.setdefault(chunk.source, []).append(chunk.text)
            old_documents = read_documents(prod_dir)
            self.old_docs = {d["path"]: d["sha256"] for d in old_documents}
            self.old_pii = {d["path"] for d in old_documents if d.get("pii")}
        self.added = sorted(set(self.new_docs) - set(self.old_docs))
        self.removed = sorted(set(self.old_docs) - set(self.new_docs))
        self.changed = sorted(p for p in set(self.new_docs) & set(self.old_docs) if self.new_docs[p] != self.old_docs[p])

    def link(self, ref: str | None) -> str:
        if not ref:
            return "—"
        url = self.registry.web_url(ref)
        return f"[`{ref}`]({url})" if url else f"`{ref}`"

    def header(self) -> list[str]:
        against = f"production is {self.link(self.production.ref)}" if self.production else "no production index yet"
        return [f"### Candidate {self.link(self.index.ref)} — {against}", ""]

    def warnings(self) -> list[str]:
        lines = []
        drift = self.given.outcome.get("warnings") or []
        if drift:
            lines += ["> **Data gate — approve only if you expected this:**", ">"]
            lines += [f"> - {_markdown_text(w, 400)}" for w in drift]
            lines += [""]
        prior = prior_review_of_corpus(self.registry, self.index, self.names)
        if prior is not None and prior.verdict not in APPROVING:
            lines += [f"> **Warning:** this corpus was reviewed before: {self.link(prior.ref)} was {describe(prior)}.", ""]
        return lines

    def gate(self) -> list[str]:
        outcome = self.given.outcome
        cand, prod = outcome["candidate"], outcome.get("production")

        def row(label: str, ours: Any, theirs: Any) -> str:
            return f"| {label} | {ours} | {theirs if theirs is not None else '—'} |"

        prod_chunks = self.production.metadata.get("chunks") if self.production else None
        return [f"**Gate: {'PASSED' if outcome['passed'] else 'FAILED'}** — {outcome['reason']}", "",
                "| | candidate | production |", "|---|---:|---:|",
                row(f"recall@{cand['k']}", f"{cand['recall_at_k']:.3f}", f"{prod['recall_at_k']:.3f}" if prod else None),
                row("MRR", f"{cand['mrr']:.3f}", f"{prod['mrr']:.3f}" if prod else None),
                row("documents", len(self.new_docs), len(self.old_docs) if self.production else None),
                row("chunks", self.index.metadata.get("chunks"), prod_chunks), ""]

    def corpus(self) -> list[str]:
        given = self.given
        since = "Since production" if self.production else "Documents"
        lines = ["#### Corpus", "",
                 f"- Source: `{given.source or self.index.metadata.get('source') or '?'}`"
                 + (f" as of {given.as_of}" if given.as_of else ""),
                 f"- {since}: {len(self.added)} added{_listed(self.added)}, {len(self.removed)} removed"
                 f"{_listed(self.removed)}, {len(self.changed)} changed{_listed(self.changed)}"]
        built_by = self.index.metadata.get("pipeline_run_id")
        if given.embedded is not None:
            lines.append(f"- This run embedded {given.embedded} chunk texts and reused {given.reused}")
        if built_by and given.pipeline_run and built_by != given.pipeline_run:
            lines.append(f"- The index is identical to {self.link(self.index.ref)}, built earlier by run `{built_by}`")
        return [*lines, ""]

    def samples(self) -> list[str]:
        wanted = [(p, "added") for p in self.added] + [(p, "changed") for p in self.changed]
        lines = []
        for path, how in wanted[:SAMPLE_DOCUMENTS]:
            fresh = [c for c in self.chunks.get(path, ()) if c.sha256 not in self.old_shas]
            if fresh:
                page = f", page {fresh[0].page}" if fresh[0].page else ""
                text = _new_part(fresh[0].text, self.old_texts.get(path, ())) if how == "changed" else fresh[0].text
                lines += [f"**`{path}`** ({how}{page}, {len(fresh)} new chunk{'s' if len(fresh) != 1 else ''}):", "",
                          f"> {_markdown_text(text, SAMPLE_CHARS)}", ""]
        if len(wanted) > SAMPLE_DOCUMENTS:
            lines += [f"…and {len(wanted) - SAMPLE_DOCUMENTS} more added or changed documents.", ""]
        return ["#### New text (samples)", "", *lines] if lines else []

    def pii(self) -> list[str]:
        from ragindex.quality import mask_pii, pii_matches

        findings = []
        for path in sorted(self.quality["pii"]):
            for chunk in self.chunks.get(path, ()):
                for kind, start, end in pii_matches(chunk.text):
                    where = f"page {chunk.page}" if chunk.page else f"at character {chunk.start + start}"
                    new = " — **new since production**" if self.production and path not in self.old_pii else ""
                    findings.append(f"- `{path}` {where}: {kind} `{mask_pii(kind, chunk.text[start:end])}`{new}")
        findings = list(dict.fromkeys(findings))
        if not findings:
            return ["#### PII", "", "None found (emails, phone numbers, card numbers).", ""]
        more = [f"- …and {len(findings) - PII_SHOWN} more"] if len(findings) > PII_SHOWN else []
        return ["#### PII (masked)", "", *findings[:PII_SHOWN], *more, ""]

    def checks(self) -> list[str]:
        q = self.quality
        failures = "; ".join(f"`{f['path']}` ({f['reason']})" for f in q["parse_failures"]) or "none"
        refused = "; ".join(f"`{f['path']}` ({f['reason']})" for f in q.get("refused", [])) or "none"
        return ["#### Quality", "",
                f"- Chunk length: median {q['chunk_length']['p50']:.0f}, max {q['chunk_length']['max']} characters; "
                f"{q['duplicate_chunks']} duplicate chunks",
                f"- Parse failures: {failures}", f"- Refused files: {refused}", ""]

    def versions(self) -> list[str]:
        g, o = self.given, self.given.outcome
        return ["#### Versions", "",
                f"raw {self.link(g.raw_ref)} → chunks {self.link(g.chunks_ref)} → index {self.link(g.index_ref)} → "
                f"report {self.link(o['report'])} (questions {self.link(o['questions'])})"]


def review_summary(registry: Registry, given: ReviewInput, *, names: ArtifactNames = DEFAULT_NAMES) -> str:
    """Markdown for the reviewer (Airflow's Required Actions form): the warnings first, then the gate, what
    changed, samples of the new text, where PII was found (masked), quality and the versions."""
    summary = _Summary(registry, given, names)
    sections: Iterable[list[str]] = (summary.header(), summary.warnings(), summary.gate(), summary.corpus(),
                                     summary.samples(), summary.pii(), summary.checks(), summary.versions())
    return "\n".join(line for section in sections for line in section)

