"""Quality figures for a run: counts, chunk lengths, failures, duplicates and PII findings (counts only)."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

from ragindex.chunking import Chunk
from ragindex.parsing import ParsedDocument

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Not part of a longer run of digit groups: "1234 5678 9012" inside the card-shaped "1234 5678 9012 3456"
# (Luhn-invalid, so not a card) is an account or order number, not a phone.
PHONE = re.compile(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w]|[ .-]\d)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)")


def luhn_valid(digits: str) -> bool:
    """Card numbers pass the Luhn check; random digit runs mostly do not."""
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def pii_matches(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every email, phone number and Luhn-valid card number in a text, in order."""
    found: list[tuple[str, int, int]] = []
    card_spans = []
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            card_spans.append(m.span())
            found.append(("card", *m.span()))
    for m in PHONE.finditer(text):
        if not any(a <= m.start() < b for a, b in card_spans) and 7 <= len(re.sub(r"\D", "", m.group())) <= 15:
            found.append(("phone", *m.span()))
    found.extend(("email", *m.span()) for m in EMAIL.finditer(text))
    return sorted(found, key=lambda f: f[1])


def find_pii(text: str) -> dict[str, int]:
    """How many emails, phone numbers and Luhn-valid card numbers a text contains (never the values)."""
    counts = Counter(kind for kind, _, _ in pii_matches(text))
    return {"email": counts["email"], "phone": counts["phone"], "card": counts["card"]}


def mask_pii(kind: str, value: str) -> str:
    """Enough of a finding for a reviewer to recognise it, never the whole value: ``j***@example.com``,
    ``***-***-1234``, ``**** **** **** 4242``."""
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return re.sub(r"\d", "*", value[:-4]) + value[-4:]


def mask_text(text: str) -> str:
    """The text with every PII finding masked, for showing document text to a person."""
    out, last = [], 0
    for kind, start, end in pii_matches(text):
        if start >= last:
            out += [text[last:start], mask_pii(kind, text[start:end])]
            last = end
    return "".join(out) + text[last:]


def _percentile(ordered: Sequence[int], q: float) -> float:
    """numpy's default (linear) percentile to the bit, without importing numpy into a no-op build."""
    at = (len(ordered) - 1) * (q / 100)
    low = math.floor(at)
    a, b, t = ordered[low], ordered[min(low + 1, len(ordered) - 1)], at - low
    return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)


def _distribution(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "p50": 0, "p90": 0, "max": 0, "mean": 0}
    ordered = sorted(values)
    return {"min": int(ordered[0]), "p50": _percentile(ordered, 50), "p90": _percentile(ordered, 90),
            "max": int(ordered[-1]), "mean": round(sum(ordered) / len(ordered), 1)}


def document_summary(doc: ParsedDocument, sha256: str = "", chunks: int = 0) -> dict[str, Any]:
    """What the quality report needs of one parsed document, small enough to keep for the next run."""
    found: Counter = Counter()
    for page in doc.pages:
        found.update(find_pii(page.text))
    return {"path": doc.path, "sha256": sha256, "kind": doc.kind, "pages": len(doc.pages), "chunks": chunks,
            "chars": doc.text_length, "pii": dict(sorted((+found).items())), "failed": None}


def quality_report(
    docs: Iterable[ParsedDocument | dict[str, Any]], chunks: Sequence[Chunk], failures: Sequence[dict[str, str]],
    refused: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """The figures a reviewer looks at before approving an index (documents as parsed or as summaries)."""
    summaries = [d if isinstance(d, dict) else document_summary(d) for d in docs]
    pii = {d["path"]: d["pii"] for d in summaries if d["pii"]}
    by_sha: dict[str, list[str]] = defaultdict(list)
    for c in chunks:
        by_sha[c.sha256].append(c.chunk_id)
    duplicate_groups = [ids for ids in by_sha.values() if len(ids) > 1]
    return {
        "documents": len(summaries),
        "documents_by_kind": dict(sorted(Counter(d["kind"] for d in summaries).items())),
        "chunks": len(chunks),
        "chunk_length": _distribution([len(c.text) for c in chunks]),
        "parse_failures": list(failures),
        "refused": list(refused),
        "duplicate_chunks": sum(len(g) - 1 for g in duplicate_groups),
        "duplicate_groups": len(duplicate_groups),
        "pii": dict(sorted(pii.items())),
        "pii_totals": dict(sum((Counter(v) for v in pii.values()), Counter())),
    }
