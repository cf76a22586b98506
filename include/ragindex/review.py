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

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ragindex.names import DEFAULT_NAMES, PRODUCTION, STAGING, ArtifactNames
from ragindex.registry import AliasChange, ArtifactVersion, Decision, Registry, split_ref
from ragindex.registry.rules import VERSION_TAG

if TYPE_CHECKING:
    from ragindex.changes import DocumentChange

REVIEW = "review"
APPROVED, REJECTED, TIMED_OUT, AUTO_APPROVED = "approved", "rejected", "timed_out", "auto_approved"
STALE, SUPERSEDED = "stale", "superseded"
VERDICTS = (APPROVED, REJECTED, TIMED_OUT, AUTO_APPROVED, STALE, SUPERSEDED)
APPROVING = frozenset({APPROVED, AUTO_APPROVED})
SAMPLE_DOCUMENTS, SAMPLE_CHARS, PII_SHOWN = 3, 320, 8
SECTIONS_SHOWN, SECTION_CHARS = 8, 120


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
    # A version ref is already the ref recorded (record_decision resolves and checks it): no lookup of it here.
    ref = index_ref if VERSION_TAG.match(split_ref(index_ref)[1]) else registry.get(index_ref).ref
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


def when(at: str) -> str:
    """A record's time as messages show it (one wording for every message that dates a record)."""
    return at[:16].replace("T", " ") + " UTC" if at else "at an unknown time"


def describe(decision: Decision | None) -> str:
    """A decision in words, as messages and the reviewer's summary quote it (an override names what it
    overrode)."""
    if decision is None:
        return "never reviewed"
    why = f": “{decision.reason}”" if decision.reason else ""
    text = f"{decision.verdict.replace('_', ' ')} on {when(decision.at)} by {decision.actor}{why}"
    overrides = decision.details.get("overrides") if isinstance(decision.details, dict) else None
    if overrides:
        said = f": “{overrides['reason']}”" if overrides.get("reason") else ""
        text += f", overriding the rejection on {when(overrides.get('at') or '')} by {overrides.get('actor')}{said}"
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

# What the change view may take of the summary (Airflow stores the body): per changed document, in all, the
# width of a diff line, and how many removed documents are named.
DIFF_DOCUMENT_CHARS, DIFF_TOTAL_CHARS, DIFF_WIDTH, REMOVED_SHOWN = 1500, 6000, 100, 10


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


def _section_text(section: Sequence[str]) -> str:
    """A section path as the review shows it (``Install › On Linux``), quoted safely like document text."""
    from ragindex.chunking import section_label

    return _markdown_text(section_label(section), SECTION_CHARS)


def _sections_line(chunks: Sequence[Any]) -> list[str]:
    """The sections a document's chunks lie in, in order (a few; nothing when it has at most one)."""
    sections = list(dict.fromkeys(c.section for c in chunks if c.section))
    if len(sections) < 2:
        return []
    more = f" … +{len(sections) - SECTIONS_SHOWN}" if len(sections) > SECTIONS_SHOWN else ""
    return [f"Sections: {'; '.join(_section_text(s) for s in sections[:SECTIONS_SHOWN])}{more}", ""]


def _diff_lines(change: DocumentChange) -> list[str]:
    """A document's change as the lines of a ``diff`` code block: each sentence marked ``+``, ``-`` or `` ``
    and wrapped at ``DIFF_WIDTH``, PII masked, a ``@@ where @@`` line before each run of changes."""
    import textwrap

    from ragindex.quality import mask_text

    lines: list[str] = []
    for hunk in change.hunks:
        lines.append(f"@@ {hunk.where()} @@")
        for mark, unit in hunk.lines:
            wrapped = textwrap.wrap(mask_text(unit.folded), DIFF_WIDTH - 2, break_on_hyphens=False) or [""]
            lines += [f"{mark} {part}" for part in wrapped]
    return lines


def _code_block(lines: Sequence[str], language: str = "") -> list[str]:
    """Lines as a fenced code block whose fence no backtick run inside can close (Markdown-safe)."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, *lines, fence]


def _share(change: DocumentChange) -> str:
    """``44% of the text changed: +2 sentences, −1 (+113 / −41 characters)``."""
    plural = "s" if change.added_units != 1 else ""
    return (f"{change.share:.0%} of the text changed: +{change.added_units} sentence{plural}, "
            f"−{change.removed_units} (+{change.added_chars:,} / −{change.removed_chars:,} characters)")


def _listed(paths: Sequence[str], most: int = 10) -> str:
    """`` (`a`, `b` … (+3))`` after a count, nothing for none."""
    if not paths:
        return ""
    return " (" + ", ".join(f"`{p}`" for p in paths[:most]) + (f" … +{len(paths) - most}" if len(paths) > most else "") + ")"


class _Summary:
    """Reads what the review needs from the registry once, then writes each section."""

    def __init__(self, registry: Registry, given: ReviewInput, names: ArtifactNames) -> None:
        from ragindex.changes import CorpusText, corpus_changes
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
        new_documents = {d["path"]: d for d in read_documents(chunks_dir)}
        self.new_docs = {p: d["sha256"] for p, d in new_documents.items()}
        self.old_documents: dict[str, dict[str, Any]] = {}
        self.changes: list[DocumentChange] = []
        if self.production is not None:
            prod_dir = registry.download(self.production.ref)
            self.old_documents = {d["path"]: d for d in read_documents(prod_dir)}
            if self.production.ref != self.index.ref:
                self.changes = corpus_changes(CorpusText(chunks_by_source(read_chunks(prod_dir)), self.old_documents),
                                              CorpusText(self.chunks, new_documents))
        self.old_docs = {p: d["sha256"] for p, d in self.old_documents.items()}
        self.old_pii = {p for p, d in self.old_documents.items() if d.get("pii")}
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
                row("chunks", self.index.metadata.get("chunks"), prod_chunks), "", *self.modes(cand)]

    @staticmethod
    def modes(cand: dict[str, Any]) -> list[str]:
        """The candidate's figures in each retrieval mode it can answer (its default one marked)."""
        by_mode = cand.get("by_mode") or {}
        if not by_mode:
            return []
        lines = ["| mode | recall@1 | recall@5 | MRR@10 | nDCG@10 |", "|---|---:|---:|---:|---:|"]
        for mode, f in by_mode.items():
            label = f"{mode} (default)" if mode == cand.get("mode") else mode
            lines.append(f"| {label} | {f['recall_at_1']:.3f} | {f['recall_at_5']:.3f} | {f['mrr_at_10']:.3f} | "
                         f"{f['ndcg_at_10']:.3f} |")
        return [*lines, ""]

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

    def full_diff(self) -> str | None:
        """Where the whole change is (``changes.diff`` in the eval-report): its W&B file page, or on the local
        registry the file's path on the machine that ran the evaluation; None when the report has none."""
        ref = self.given.outcome.get("report")
        name = self.registry.get(ref).metadata.get("changes_file") if ref else None
        if not name:
            return None
        url = self.registry.web_url(ref)
        if url:
            return f"[`{ref}` › `{name}`]({url}/files/{name})"
        return f"`{self.registry.download(ref) / name}` (in {self.link(ref)})"

    def what_changed(self) -> list[str]:
        """Per changed document the share changed and its added and removed sentences as a diff, within the
        budgets; then the first lines of added documents, and the removed ones by name and size."""
        from ragindex.changes import CHANGED

        changed = [c for c in self.changes if c.status == CHANGED]
        lines: list[str] = []
        link = self.full_diff() if self.changes else None
        if link:
            lines += [f"Full diff, PII masked: {link}", ""]
        budget, shown = DIFF_TOTAL_CHARS, 0
        for change in changed:
            if budget < DIFF_DOCUMENT_CHARS // 4:
                break
            block = self.changed_document(change, min(DIFF_DOCUMENT_CHARS, budget))
            lines += block
            budget -= sum(len(line) + 1 for line in block)
            shown += 1
        if shown < len(changed):
            rest = [c.path for c in changed[shown:]]
            lines += [f"…and {len(rest)} more changed documents{_listed(rest)}, in the full diff.", ""]
        lines += self.added_documents() + self.removed_documents()
        return ["#### What changed", "", *lines] if lines else []

    def changed_document(self, change: DocumentChange, budget: int) -> list[str]:
        """One changed document: its share changed, its diff cut at ``budget`` characters with a '…N more
        lines' line, and where PII is in the text it adds."""
        note = f" — {_markdown_text(change.note, 300)}" if change.note else ""
        head = f"**`{change.path}`** — {_share(change)}{note}"
        if not change.hunks:
            return [f"**`{change.path}`** — its bytes changed, its text did not{note}", ""]
        diff, kept, used = _diff_lines(change), [], 0
        for line in diff:
            if used + len(line) + 1 > budget:
                break
            kept.append(line)
            used += len(line) + 1
        if len(kept) < len(diff):
            kept.append(f"… {len(diff) - len(kept)} more lines")
        block = [head, "", *_code_block(kept, "diff"), ""]
        found = change.added_pii()
        if found:
            listed = "; ".join(f"{kind} `{masked}` at {where}" for kind, masked, where in found[:PII_SHOWN])
            more = f"; …and {len(found) - PII_SHOWN} more" if len(found) > PII_SHOWN else ""
            block += [f"PII in the added text (masked): {listed}{more}", ""]
        return block

    def added_documents(self) -> list[str]:
        """The first lines of the first added documents."""
        from ragindex.changes import page_texts

        lines, shown = [], 0
        for path in self.added:
            chunks = self.chunks.get(path, ())
            if not chunks or shown == SAMPLE_DOCUMENTS:
                continue
            shown += 1
            first = page_texts([c for c in chunks[:4] if c.page == chunks[0].page])[0][1]
            page = f", page {chunks[0].page}" if chunks[0].page else ""
            section = f", § {_section_text(chunks[0].section)}" if chunks[0].section else ""
            lines += [f"**`{path}`** (added{page}{section}, {len(chunks)} chunk{'s' if len(chunks) != 1 else ''}):",
                      "", f"> {_markdown_text(first, SAMPLE_CHARS)}", ""]
            lines += _sections_line(chunks)
        with_text = sum(1 for p in self.added if self.chunks.get(p))
        if with_text > shown:
            lines += [f"…and {with_text - shown} more added documents.", ""]
        return lines

    def removed_documents(self) -> list[str]:
        """The removed documents by name and size."""
        if not self.removed:
            return []

        def size(path: str) -> str:
            doc = self.old_documents.get(path, {})
            if doc.get("failed"):
                return "not parsed in production"
            return f"{doc.get('chars', 0):,} characters, {doc.get('chunks', 0)} chunks"

        named = [f"`{p}` ({size(p)})" for p in self.removed[:REMOVED_SHOWN]]
        more = f" … +{len(self.removed) - REMOVED_SHOWN}" if len(self.removed) > REMOVED_SHOWN else ""
        return [f"Removed: {', '.join(named)}{more}", ""]

    def pii(self) -> list[str]:
        from ragindex.quality import mask_pii, pii_matches

        findings = []
        for path in sorted(self.quality["pii"]):
            for chunk in self.chunks.get(path, ()):
                for kind, start, end in pii_matches(chunk.text):
                    where = f"page {chunk.page}" if chunk.page else f"at character {chunk.start + start}"
                    where += f" (§ {_section_text(chunk.section)})" if chunk.section else ""
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
    changed (per document, as a bounded diff; the full diff is linked), where PII was found (masked), quality
    and the versions."""
    summary = _Summary(registry, given, names)
    sections: Iterable[list[str]] = (summary.header(), summary.warnings(), summary.gate(), summary.corpus(),
                                     summary.what_changed(), summary.pii(), summary.checks(), summary.versions())
    return "\n".join(line for section in sections for line in section)



PROMPT_DIFF_LINES = 80


def release_section(registry: Registry, release_ref: str, *, against: str | None,
                    names: ArtifactNames = DEFAULT_NAMES) -> str:
    """Markdown on top of the index summary when the candidate is a release: what it pairs, and what changed
    against the production release the review is made against (the prompt as a bounded diff, the settings)."""
    from ragindex.release import diff_releases, read_release

    release = read_release(registry, release_ref)
    manifest = release.manifest
    link = lambda ref: f"[`{ref}`]({registry.web_url(ref)})" if ref and registry.web_url(ref) else f"`{ref}`"  # noqa: E731
    head = f"production is {link(against)}" if against else "no production release yet"
    prior = latest_review(registry, registry.get(release.ref))
    warning = ([f"> **Warning:** this release was reviewed before: it was {describe(prior)}.", ""]
               if prior is not None and prior.verdict not in APPROVING else [])
    lines = [f"### Release {link(release.ref)} — {head}", "", *warning,
             f"- Index {link(manifest.index.ref)}, prompt {link(manifest.prompt.ref)}, eval set "
             f"{link(manifest.questions.ref)}",
             "- Settings: " + ", ".join(f"`{g}.{k}={v}`" for g, values in manifest.settings.items()
                                        for k, v in values.items())]
    budget = (registry.get(release.ref).metadata.get("eval") or {}).get("budget")
    if budget:
        lines.append(f"- Prompt size: largest {budget['max_chars']} of {budget['budget']} characters over "
                     f"{budget['questions']} eval questions with k={budget['k']}"
                     + ("" if budget.get("passed") else f" — **{budget.get('over')} over budget**"))
    if against:
        diff = diff_releases(registry, against, release.ref)
        changed = [part for part, p in diff.parts.items() if not p["same"]]
        lines.append(f"- Changed since production: {', '.join(changed) or 'no part'}"
                     + (f"; settings {', '.join(diff.settings)}" if diff.settings else ""))
        if diff.settings:
            lines += [f"  - `{key}`: `{old!r}` → `{new!r}`" for key, (old, new) in diff.settings.items()]
        if diff.prompt:
            body = diff.prompt.rstrip("\n").split("\n")
            cut = body[:PROMPT_DIFF_LINES]
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", diff.prompt)), default=0) + 1)
            lines += ["", "#### Prompt diff", "", f"{fence}diff", *cut, fence]
            if len(body) > len(cut):
                lines.append(f"… {len(body) - len(cut)} more lines (`ragindex release diff {against} {release.ref}`)")
        if not changed and not diff.settings:
            lines.append("- Nothing changed but the review is asked again (a previous review did not conclude)")
    return "\n".join([*lines, ""])
