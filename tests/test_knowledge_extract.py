"""Knowledge files into sections and chunks: every format extracts, along its own structure;
chunks keep their source and fit the embedder (counted by its own tokenizer); bad files are
refused with one sentence naming the file."""

from __future__ import annotations

import json

import pytest
from knowledge_files import encrypted, pdf

from assistants import InvalidInput
from assistants.knowledge.chunks import CHUNK_TOKENS, chunk
from assistants.knowledge.extract import Section, extract
from storage.embeddings import MAX_TOKENS


def located(name: str, data: bytes) -> list[tuple[str, str]]:
    return [(s.location, s.text) for s in extract(name, data).sections]


# -- every format --------------------------------------------------------------------------------


def test_text_is_one_section_of_the_whole_file():
    found = extract("notes.txt", "\ufeffFirst line.\r\n\r\nSecond paragraph.".encode())
    assert found.kind == "txt"
    assert located("notes.txt", b"a\r\n\r\nb") == [("", "a\n\nb")]
    assert found.sections[0].text == "First line.\n\nSecond paragraph."  # BOM and CRLF gone


def test_markdown_splits_at_headings_and_keeps_their_path():
    text = (
        "Intro words.\n\n# Install\nGet it.\n\n## Linux\nUse apt.\n\n"
        "```sh\n# not a heading, a comment\n```\n## Mac\nUse brew.\n# Usage\nRun it.\n"
    )
    found = located("guide.md", text.encode())
    assert [loc for loc, _ in found] == [
        "",
        "Install",
        "Install > Linux",
        "Install > Mac",
        "Usage",
    ]
    linux = dict(found)["Install > Linux"]
    assert linux.startswith("Linux\nUse apt.")  # the heading's words come along
    assert "# not a heading, a comment" in linux


def test_html_splits_at_headings_and_drops_scripts():
    page = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Before any heading.</p><h1>Prices</h1><p>Tea costs 3 &euro;.</p>"
        "<script>var secret = 1;</script><h2>Discounts</h2><ul><li>Students</li>"
        "<li>Seniors</li></ul></body></html>"
    )
    found = located("page.html", page.encode())
    assert [loc for loc, _ in found] == ["", "Prices", "Prices > Discounts"]
    assert dict(found)["Prices"] == "Prices\n\nTea costs 3 €."
    assert "secret" not in " ".join(t for _, t in found)
    assert dict(found)["Prices > Discounts"].split("\n\n") == ["Discounts", "Students", "Seniors"]


def test_pdf_pages_keep_their_numbers_and_blank_pages_are_skipped():
    data = pdf(["The first page talks about tea.", None, "The third page about coffee."])
    found = located("report.pdf", data)
    assert found == [
        ("page 1", "The first page talks about tea."),
        ("page 3", "The third page about coffee."),
    ]


def test_a_pdf_locked_only_for_its_owner_is_read():
    data = encrypted(pdf(["Open to everyone."]), user_password="")
    assert located("open.pdf", data) == [("page 1", "Open to everyone.")]


def test_csv_rows_come_in_groups_led_by_the_header():
    rows = ["name,price"] + [f"item{i},{i}" for i in range(1, 26)]
    sections = extract("prices.csv", "\n".join(rows).encode()).sections
    assert [s.location for s in sections] == ["rows 2-21", "rows 22-26"]
    assert all(s.lead == "name, price" for s in sections)
    assert sections[1].text.split("\n")[0] == "item21, 21"
    pieces = chunk(sections, lambda texts: [len(t.split()) for t in texts])
    assert all(p.text.startswith("name, price\n") for p in pieces)


def test_json_top_level_items_are_sections():
    items = [{"q": "opening hours", "a": "9 to 5"}, "plain text item"]
    found = located("faq.json", json.dumps(items).encode())
    assert [loc for loc, _ in found] == ["item 1", "item 2"]
    assert json.loads(found[0][1]) == items[0]
    assert found[1][1] == "plain text item"
    keyed = located("kb.json", json.dumps({"refunds": "Within 30 days."}).encode())
    assert keyed == [("refunds", "refunds: Within 30 days.")]


# -- chunks --------------------------------------------------------------------------------------


def test_chunks_fit_the_embedder_and_never_cross_a_section(embedder):
    long_paragraph = " ".join(f"Sentence number {i} says something about tea." for i in range(120))
    blob = "x" * 5000  # one "word" longer than a chunk: cut in parts
    sections = [
        Section("page 1", f"Short intro.\n\n{long_paragraph}\n\n{blob}"),
        Section("page 2", "A small page."),
    ]
    pieces = chunk(sections, embedder.count_tokens)
    counts = embedder.count_tokens([p.text for p in pieces])
    assert max(counts) <= CHUNK_TOKENS <= MAX_TOKENS - 2
    # Measured with the model's own tokenizer as it embeds (special tokens and all): no chunk is
    # truncated by the embedder.
    tokenizer = embedder._counter
    assert all(len(tokenizer.encode(p.text).ids) <= MAX_TOKENS for p in pieces)
    assert [p.location for p in pieces][-1] == "page 2"
    assert pieces[-1].text == "A small page."
    page_one = [p.text for p in pieces if p.location == "page 1"]
    assert len(page_one) > 3
    assert "".join(page_one).replace(" ", "").count("x") == 5000  # nothing lost in the cut


def test_neighbouring_chunks_overlap_by_a_sentence_or_two(embedder):
    sentences = [f"Fact {i} is that the number {i} comes after {i - 1}." for i in range(1, 80)]
    pieces = chunk([Section("", " ".join(sentences))], embedder.count_tokens)
    assert len(pieces) >= 3
    for before, after in zip(pieces, pieces[1:], strict=False):
        shared = [s for s in sentences if s in before.text and s in after.text]
        assert 1 <= len(shared) <= 3
        assert before.text.endswith(" ".join(shared))
        assert after.text.startswith(" ".join(shared))
    assert all(any(s in p.text for p in pieces) for s in sentences)


def test_paragraphs_stay_whole_when_they_fit(embedder):
    paragraphs = [f"Paragraph {i}: " + "tea and biscuits " * 20 for i in range(10)]
    pieces = chunk([Section("", "\n\n".join(paragraphs))], embedder.count_tokens)
    for piece in pieces:
        for part in piece.text.split("\n\n"):
            assert part.strip() in [p.strip() for p in paragraphs]


def test_a_real_document_chunks_within_the_limit(embedder):
    from pathlib import Path

    data = (Path(__file__).parent.parent / "docs" / "design.md").read_bytes()
    sections = extract("design.md", data).sections
    pieces = chunk(sections, embedder.count_tokens)
    assert max(embedder.count_tokens([p.text for p in pieces])) <= CHUNK_TOKENS
    assert {p.location for p in pieces} <= {s.location for s in sections}
    assert any(p.location.endswith("> Decisions") or "Decisions" in p.location for p in pieces)


# -- bad files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "photo.png",
            b"\x89PNG",
            "photo.png: fewtune reads .txt, .md, .pdf, .html, .csv and .json",
        ),
        ("latin.txt", "café".encode("latin-1"), "latin.txt is not UTF-8 text (byte 3)"),
        ("nul.md", b"text\x00more", "nul.md holds binary data, not text"),
        ("blank.md", b"\n\n   \n", "blank.md has no text to answer from"),
        ("scan.pdf", pdf([None, None]), "scan.pdf has no text layer (a scanned PDF?); run OCR"),
        ("locked.pdf", encrypted(pdf(["secret"]), "pw"), "locked.pdf is encrypted with a password"),
        ("cut.pdf", pdf(["text"])[:150], "cut.pdf is not a readable PDF"),
        ("fake.pdf", b"hello, not a pdf", "fake.pdf is not a readable PDF"),
        ("bad.json", b'{"a": 1,', "bad.json is not valid JSON (line 1)"),
        ("empty.json", b"[]", "empty.json has no text to answer from"),
        ("quote.csv", b'a,b\n"unclosed,1\n', None),  # the csv module reads it: not an error
        ("lone.json", b'"\\ud800"', "lone.json: character 1 (U+D800) is not valid UTF-8"),
    ],
)
def test_bad_files_are_one_sentence_naming_them(name, data, message):
    if message is None:
        assert extract(name, data).sections
        return
    with pytest.raises(InvalidInput) as raised:
        extract(name, data)
    text = str(raised.value)
    assert text.startswith(message), text
    assert "\n" not in text
