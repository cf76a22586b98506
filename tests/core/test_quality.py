"""The quality report: PII counted per document (never the values), duplicates, lengths, failures."""

from __future__ import annotations

import json

import pytest

from ragindex.chunking import chunk_documents
from ragindex.parsing import Page, ParsedDocument
from ragindex.quality import find_pii, luhn_valid, quality_report
from ragindex.settings import ChunkingSettings

EMAILS = ["jane.doe@example.com", "ops+alerts@warehouse.example.org"]
PHONES = ["+1 415-555-0134", "(030) 1234-5678"]
VALID_CARD = "4111 1111 1111 1111"      # Luhn-valid test Visa number
VALID_CARD_PLAIN = "5500005555555559"  # Luhn-valid test Mastercard number
INVALID_CARD = "1234 5678 9012 3456"   # 16 digits, fails the Luhn check
INVALID_CARD_PLAIN = "4111111111111112"


def doc(path: str, *pages: str, kind: str = "text") -> ParsedDocument:
    numbers = range(1, len(pages) + 1) if kind == "pdf" else [None]
    return ParsedDocument(path, kind, tuple(Page(n, t) for n, t in zip(numbers, pages)))


def test_luhn_check() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("5500005555555559") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("1234567890123456")


def test_find_pii_counts_emails_phones_and_luhn_valid_cards_only() -> None:
    assert find_pii(f"Card {VALID_CARD} on file.") == {"email": 0, "phone": 0, "card": 1}
    assert find_pii(f"Card {VALID_CARD_PLAIN}.") == {"email": 0, "phone": 0, "card": 1}
    assert find_pii(f"Order {INVALID_CARD} shipped.") == {"email": 0, "phone": 0, "card": 0}
    assert find_pii(f"Order {INVALID_CARD_PLAIN}.") == {"email": 0, "phone": 0, "card": 0}
    assert find_pii(f"Call {PHONES[0]} or {PHONES[1]}.") == {"email": 0, "phone": 2, "card": 0}
    assert find_pii(f"Write to {EMAILS[0]}.") == {"email": 1, "phone": 0, "card": 0}
    assert find_pii("Shipped on 2024-01-15 at 10:30, 12 pallets, invoice 2024/117.") == {"email": 0, "phone": 0, "card": 0}


def test_report_counts_pii_per_document_and_never_contains_the_values() -> None:
    docs = [
        doc("contacts.txt", f"Escalations go to {EMAILS[0]} or {EMAILS[1]}. Night desk: {PHONES[0]}."),
        doc("billing.pdf", f"Customer card {VALID_CARD} was charged.", f"Reference {INVALID_CARD} is not a card. "
            f"Backup card {VALID_CARD_PLAIN}. Office {PHONES[1]}.", kind="pdf"),
        doc("clean.md", "Pallets are wrapped twice before loading.", kind="markdown"),
    ]
    chunks = chunk_documents(docs, ChunkingSettings(100, 10))
    report = quality_report(docs, chunks, failures=[], refused=[])

    assert report["pii"] == {
        "contacts.txt": {"email": 2, "phone": 1},
        "billing.pdf": {"card": 2, "phone": 1},
    }
    assert report["pii_totals"] == {"email": 2, "phone": 2, "card": 2}
    dumped = json.dumps(report)
    for value in EMAILS + PHONES + [VALID_CARD, VALID_CARD_PLAIN, INVALID_CARD, "4111", "jane.doe", "415-555"]:
        assert value not in dumped
    assert report["documents"] == 3
    assert report["documents_by_kind"] == {"markdown": 1, "pdf": 1, "text": 1}


def test_duplicate_chunks_are_counted() -> None:
    boiler = "This document is confidential and intended for internal use by warehouse staff only."
    docs = [
        doc("a.txt", f"Alpha procedures for loading.\n\n{boiler}"),
        doc("b.txt", f"Bravo procedures for unloading.\n\n{boiler}"),
        doc("c.txt", f"Charlie procedures for stacking.\n\n{boiler}"),
        doc("d.txt", "Delta has its own unique text and no footer at all."),
    ]
    chunks = chunk_documents(docs, ChunkingSettings(90, 0))
    assert sum(c.text == boiler for c in chunks) == 3  # the fixture does put the footer in a chunk of its own
    report = quality_report(docs, chunks, failures=[])
    assert report["duplicate_groups"] == 1
    assert report["duplicate_chunks"] == 2
    assert report["chunks"] == len(chunks)

    unique = quality_report(docs[3:], chunk_documents(docs[3:], ChunkingSettings(90, 0)), failures=[])
    assert unique["duplicate_chunks"] == 0 and unique["duplicate_groups"] == 0


def test_chunk_length_distribution_failures_and_refusals_are_reported() -> None:
    docs = [doc("a.txt", "x" * 10), doc("b.txt", "y" * 30)]
    chunks = chunk_documents(docs, ChunkingSettings(100, 0))
    failures = [{"path": "bad.pdf", "reason": "encrypted PDF (a password is required)"}]
    refused = [{"path": "link.txt", "reason": "symlink resolves outside the source root (/etc/passwd)"}]
    report = quality_report(docs, chunks, failures, refused)
    assert report["chunk_length"]["min"] == 10 and report["chunk_length"]["max"] == 30
    assert report["chunk_length"]["mean"] == pytest.approx(20.0)
    assert report["parse_failures"] == failures and report["refused"] == refused
    assert report["pii"] == {} and report["pii_totals"] == {}
    empty = quality_report([], [], [])
    assert empty["chunk_length"]["max"] == 0 and empty["documents"] == 0


def test_the_length_distribution_equals_numpys_to_the_bit() -> None:
    """The report's percentiles are computed without numpy (a no-op build never imports it); a changed figure
    would change the chunks artifact's record for the same corpus."""
    import random

    import numpy as np

    from ragindex.quality import _distribution

    rng = random.Random(7)
    for n in [1, 2, 3, 4, 5, 9, 10, 11, 99, 100, 101, 318, 1053, 2786]:
        values = [rng.randint(1, 2000) for _ in range(n)]
        got = _distribution(values)
        arr = np.asarray(values)
        assert got == {"min": int(arr.min()), "p50": float(np.percentile(arr, 50)),
                       "p90": float(np.percentile(arr, 90)), "max": int(arr.max()),
                       "mean": round(float(arr.mean()), 1)}, n
