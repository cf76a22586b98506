"""Chunks that know their section: the section path of Markdown and reST headings, HTML h1-h6 and a PDF's outline
(with its page); every chunk lies in one section; a chunk's id stays the same when unrelated sections move; the
incremental build embeds each indexed text (section path + text) once; indexes from before sections still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragindex.chunking import Chunk, chunk_document, indexed_text
from ragindex.indexing import DOCSTORE_FILE, SETTINGS_FILE, read_chunks
from ragindex.parsing import parse_document
from ragindex.pipeline import build
from ragindex.retrieval import Retriever
from ragindex.sections import markdown_sections, rest_sections
from ragindex.settings import ChunkingSettings

from .conftest import SMALL, write_files

MARKDOWN = """# Handbook

Welcome to the handbook of the depot.

## Forklifts

Operators hold a certificate valid for three years.

```sh
# not a heading: a comment in a code block
renew --certificate
```

### Charging

Batteries are charged in bay 2 overnight.

Returns
-------

Parcels come back through door 7 with a return number.
"""

REST = """==========
 Handbook
==========

Welcome to the handbook of the depot.

Forklifts
=========

Operators hold a certificate valid for three years.

--------------

Charging
--------

Batteries are charged in bay 2 overnight.

Returns
=======

Parcels come back through door 7 with a return number.
"""

HTML = """<html><head><title>Depot</title></head><body><nav><h2>Menu</h2></nav>
<h1>Handbook</h1><p>Welcome to the handbook of the depot.</p>
<h2>Forklifts</h2><p>Operators hold a certificate valid for three years.</p>
<h3>Charging</h3><p>Batteries are charged in bay 2 overnight.</p>
<h2>Returns</h2><p>Parcels come back through door 7 with a return number.</p></body></html>"""

EXPECTED = {"Welcome": ("Handbook",), "Operators": ("Handbook", "Forklifts"),
            "Batteries": ("Handbook", "Forklifts", "Charging"), "Parcels": ("Handbook", "Returns")}


def sections_by_sentence(chunks: list[Chunk]) -> dict[str, tuple[str, ...]]:
    """The section of the chunk holding each expected sentence."""
    return {word: next(c.section for c in chunks if word in c.text) for word in EXPECTED}


@pytest.mark.parametrize("name, text", [("handbook.md", MARKDOWN), ("handbook.rst.txt", REST),
                                        ("handbook.html", HTML)])
def test_markdown_rest_and_html_headings_give_every_chunk_its_section_path(tmp_path: Path, name: str,
                                                                          text: str) -> None:
    (tmp_path / name).write_text(text)
    chunks = chunk_document(parse_document(tmp_path / name, name), ChunkingSettings(400, 40))
    assert sections_by_sentence(chunks) == EXPECTED
    assert len(chunks) >= 4, "sections never share a chunk"
    assert all(c.page is None for c in chunks)


def test_code_blocks_transitions_and_underlined_paragraph_lines_are_not_headings() -> None:
    paths = [m.path[-1] for m in markdown_sections(MARKDOWN)]
    assert paths == ["Handbook", "Forklifts", "Charging", "Returns"], "not the comment in the fenced block"
    assert [m.path for m in rest_sections(REST)][1:] == [("Handbook", "Forklifts"),
                                                       ("Handbook", "Forklifts", "Charging"), ("Handbook", "Returns")]
    assert rest_sections("A paragraph line\nright above a rule that is too short\n---\n") == []
    assert rest_sections("Text.\n\n----------\n\nMore text.\n") == [], "a transition is not a title"
    roles = rest_sections(":mod:`smtplib` --- SMTP protocol client\n=======================================\n")
    assert roles[0].path == ("smtplib --- SMTP protocol client",), "inline markup is not part of the title"


def write_outlined_pdf(path: Path) -> Path:
    """A real three-page PDF with bookmarks: 1 Introduction (p1), 2 Loading (p2) with 2.1 Pallets (p2, lower
    on the page) and 2.2 Trucks (p3)."""
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path))
    pages = [[("1 Introduction", 0), ("The depot opens at six in the morning every weekday.", None)],
             [("2 Loading", 0), ("Loading starts after the morning briefing.", None), ("2.1 Pallets", 1),
              ("Pallets are wrapped twice before they leave the dock.", None)],
             [("2.2 Trucks", 1), ("Trucks are sealed and the seal number is written down.", None)]]
    for number, lines in enumerate(pages, 1):
        y = 720
        for text, level in lines:
            if level is not None:
                key = f"k{number}-{y}"
                pdf.bookmarkHorizontal(key, 72, y + 12)
                pdf.addOutlineEntry(text, key, level=level)
            pdf.drawString(72, y, text)
            y -= 40
        pdf.showPage()
    pdf.save()
    return path


def test_a_pdf_outline_gives_chunks_their_section_and_page(tmp_path: Path) -> None:
    doc = parse_document(write_outlined_pdf(tmp_path / "depot.pdf"), "depot.pdf")
    chunks = chunk_document(doc, ChunkingSettings(400, 40))
    where = {word: (c.page, c.section) for word in ("opens", "briefing", "wrapped", "sealed")
             for c in chunks if word in c.text}
    assert where == {"opens": (1, ("1 Introduction",)), "briefing": (2, ("2 Loading",)),
                     "wrapped": (2, ("2 Loading", "2.1 Pallets")), "sealed": (3, ("2 Loading", "2.2 Trucks"))}


def test_a_pdf_without_an_outline_has_pages_and_no_sections(tmp_path: Path) -> None:
    from .conftest import write_pdf

    doc = parse_document(write_pdf(tmp_path / "plain.pdf", ["Page one text here.", "Page two text here."]),
                         "plain.pdf")
    chunks = chunk_document(doc, ChunkingSettings(400, 40))
    assert [(c.page, c.section) for c in chunks] == [(1, ()), (2, ())]


def sections_of(text: str) -> dict[str, str]:
    return {title: body for title, body in (part.split("\n", 1) for part in text.split("\n## ")[1:])}


def test_chunk_ids_stay_the_same_when_unrelated_sections_move_or_are_inserted(tmp_path: Path) -> None:
    body = "Long paragraph about {0} that fills a chunk or two. " * 6
    parts = {name: body.format(name) for name in ("forklifts", "returns", "charging", "security")}
    before = "# Depot\n\nIntro.\n\n" + "".join(f"## {n}\n\n{t}\n\n" for n, t in parts.items())
    moved = "# Depot\n\nIntro.\n\n## new rules\n\nA section added at the top.\n\n" + "".join(
        f"## {n}\n\n{parts[n]}\n\n" for n in ("security", "charging", "forklifts", "returns"))
    settings = ChunkingSettings(200, 20)
    ids = {}
    for label, text in (("before", before), ("moved", moved)):
        (tmp_path / f"{label}.md").write_text(text)
        chunks = chunk_document(parse_document(tmp_path / f"{label}.md", "depot.md"), settings)
        ids[label] = {(c.section, c.text): (c.chunk_id, c.start) for c in chunks}
    kept = ids["before"].keys() & ids["moved"].keys()
    assert len(kept) == len(ids["before"]) >= 10, "every chunk of the old document is still there, text and section"
    assert all(ids["before"][k][0] == ids["moved"][k][0] for k in kept), "same id"
    assert any(ids["before"][k][1] != ids["moved"][k][1] for k in kept), "though the offsets changed"
    assert len({i for i, _ in ids["moved"].values()}) == len(ids["moved"]), "ids are unique"


def test_the_same_text_in_two_sections_has_two_ids(tmp_path: Path) -> None:
    (tmp_path / "twice.md").write_text("# A\n\nSee the notice board.\n\n# B\n\nSee the notice board.\n")
    chunks = chunk_document(parse_document(tmp_path / "twice.md", "twice.md"), ChunkingSettings(400, 40))
    assert [c.section for c in chunks] == [("A",), ("B",)] and len({c.chunk_id for c in chunks}) == 2


def test_the_section_path_is_indexed_and_each_indexed_text_embedded_once(tmp_path: Path) -> None:
    """Unchanged, moved: nothing embedded. A renamed heading: only its chunks (same text, new path) again."""
    body = "Operators of line {0} keep their area clear and report every fault to the shift lead at once. " * 3
    names = {"forklifts": 1, "charging": 2, "returns": 3}

    def depot(order: list[str], charging: str = "Charging") -> str:
        return "# Depot\n\n" + "".join(f"## {charging if n == 'charging' else n}\n\n{body.format(names[n])}\n\n"
                                       for n in order)

    corpus = write_files(tmp_path / "corpus", {"depot.md": depot(["forklifts", "charging", "returns"])})
    first = build(str(corpus), tmp_path / "i1", SMALL)
    chunks = read_chunks(tmp_path / "i1")
    assert first.embedded == len({indexed_text(c, True) for c in chunks}) == len(chunks)
    in_charging = [c for c in chunks if c.section == ("Depot", "Charging")]
    assert any("Charging" not in c.text for c in in_charging), "chunks below the heading line"
    hits = Retriever(tmp_path / "i1").search("charging", k=len(chunks), mode="sparse")
    assert {h.chunk_id for h in hits} == {c.chunk_id for c in in_charging}, "BM25 indexes the section path"
    assert {h.text for h in hits} == {c.text for c in in_charging}, "a hit shows the chunk's own text"

    (corpus / "depot.md").write_text(depot(["returns", "charging", "forklifts"]))
    moved = build(str(corpus), tmp_path / "i2", SMALL, previous=tmp_path / "i1")
    assert moved.embedded == 0 and moved.reused == len(chunks)
    assert {c.chunk_id for c in read_chunks(tmp_path / "i2")} == {c.chunk_id for c in chunks}

    (corpus / "depot.md").write_text(depot(["returns", "charging", "forklifts"], charging="Battery charging"))
    renamed = build(str(corpus), tmp_path / "i3", SMALL, previous=tmp_path / "i2")
    changed = [c for c in read_chunks(tmp_path / "i3") if c.section == ("Depot", "Battery charging")]
    assert len(changed) == len(in_charging) == renamed.embedded, "only the chunks whose path changed, again"


def test_an_index_from_before_sections_still_loads_searches_and_feeds_the_cache(tmp_path: Path) -> None:
    corpus = write_files(tmp_path / "corpus", {"a.md": "# Forklifts\n\nCertificates last three years.\n",
                                               "b.txt": "Night shifts start at ten.\n"})
    build(str(corpus), tmp_path / "old", SMALL)
    old = tmp_path / "old"
    records = [json.loads(line) for line in (old / DOCSTORE_FILE).read_text().splitlines()]
    for r in records:  # what an index written before sections holds: no section, no indexed key
        r.pop("section"), r.pop("indexed_sha256", None)
    (old / DOCSTORE_FILE).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    meta = json.loads((old / SETTINGS_FILE).read_text())
    meta["index"].pop("section_path_in_text")
    meta["parser_version"] = 3  # its chunks were made by the parser before sections
    (old / SETTINGS_FILE).write_text(json.dumps(meta))
    hits = Retriever(old).search("night shifts", k=2)
    assert {h.source for h in hits} == {"a.md", "b.txt"} and all(h.section == () for h in hits)
    assert [c.section for c in read_chunks(old)] == [(), ()]
    again = build(str(corpus), tmp_path / "new", SMALL, previous=old)
    assert (again.embedded, again.reused) == (1, 1), "a.md's chunk is indexed with its section path now; b.txt's not"
    assert [c.section for c in read_chunks(tmp_path / "new")] == [("Forklifts",), ()]
