from __future__ import annotations

from pathlib import Path

import pytest

from sdf.errors import SdfError
from sdf.source.constitution import load_constitution, parse_constitution, substitute_variables

TRICKY = """---
title: Front matter is skipped
tags: [a, b]
---

Some words before any heading.

# The Assistant's Charter

An introduction under the document title.

## 1. Helpfulness {#helpful class=core}

Be useful. A literal brace { and } and {not_a_var} survive.

```python
# this is a comment in a code fence, not a heading
## neither is this
```

### 1.1 Final goals

- a list item
- another

> # a quoted hash is still quoted text? no: quotes are body text here

Setext Heading
--------------

Under a setext h2.

Top Setext
==========

Body of a setext h1.

<!-- an html comment that is not content -->
<div>Some HTML block</div>

#### Deep ##

Deep text.

## Honesty ##

Honest text.

#nospace is not a heading

## Empty parent

### Child of empty

Child text.
"""


def test_markdown_headings_of_every_kind() -> None:
    c = parse_constitution(TRICKY)
    ids = [s.id for s in c.sections]
    titles = {s.id: s.title for s in c.sections}
    assert "Front matter is skipped" not in " ".join(s.text for s in c.sections)
    assert ids[0] == "preamble"
    assert c.title == ""  # two h1s (one setext) so none is the document title
    assert "helpful" in ids  # explicit {#id} wins over the slug
    assert titles["helpful"] == "Helpfulness"  # numbering and attributes stripped
    helpful = c.section("helpful")
    assert "{not_a_var}" in helpful.text and "{ and }" in helpful.text
    assert "# this is a comment in a code fence" in helpful.text  # fence kept as body, not a heading
    assert "the-assistant-s-charter/helpfulness/final-goals" in ids or any(i.endswith("/final-goals") for i in ids)
    assert any(s.title == "Setext Heading" and s.level == 2 for s in c.sections)
    assert any(s.title == "Top Setext" and s.level == 1 for s in c.sections)
    deep = next(s for s in c.sections if s.title == "Deep")
    assert deep.level == 4 and deep.path[-2] == "Top Setext"
    assert "html comment" not in " ".join(s.text for s in c.sections)
    assert "<div>Some HTML block</div>" in " ".join(s.text for s in c.sections)
    assert "#nospace is not a heading" in c.sections[-2].text or any("#nospace" in s.text for s in c.sections)
    child = next(s for s in c.sections if s.title == "Child of empty")
    assert child.path[-2:] == ("Empty parent", "Child of empty")
    assert all(s.title != "Empty parent" for s in c.sections)  # headings without text are not sections
    for s in c.sections:
        assert s.chars == len(s.text) and s.tokens >= s.chars // 4


def test_single_h1_is_the_document_title() -> None:
    c = parse_constitution("# Charter\n\nIntro.\n\n## Safety\n\nSafe.\n\n## Ethics\n\nGood.\n")
    assert c.title == "Charter"
    assert [s.id for s in c.sections] == ["charter", "safety", "ethics"]
    assert c.section("safety").path == ("Safety",)


def test_ids_are_stable_when_other_sections_change() -> None:
    before = parse_constitution("# T\n\n## A\n\none\n\n## B\n\ntwo\n\n### B1\n\nthree\n")
    after = parse_constitution("# T\n\n## New first\n\nzero\n\n## A\n\none, edited\n\n## B\n\ntwo\n\n### B1\n\nthree\n")
    assert {s.id for s in before.sections} <= {s.id for s in after.sections}
    assert after.section("b/b1").text == "three"


def test_duplicate_titles_get_distinct_ids() -> None:
    c = parse_constitution("## Notes\n\na\n\n## Notes\n\nb\n")
    assert [s.id for s in c.sections] == ["notes", "notes-2"]


def test_plain_text_is_split_into_coherent_sections() -> None:
    paragraphs = [f"Paragraph {i} talks about honesty and care. " * 12 for i in range(20)]
    c = parse_constitution("\n\n".join(paragraphs))
    assert len(c.sections) > 1
    assert all(s.chars <= 3000 + 600 for s in c.sections)
    assert "".join(s.text for s in c.sections).count("Paragraph") == 20 * 12  # nothing lost
    assert len({s.id for s in c.sections}) == len(c.sections)
    one_long = parse_constitution("Sentence that goes on. " * 400)
    assert len(one_long.sections) > 1


def test_variables_are_substituted_only_when_configured() -> None:
    text = "## A\n\n{model_name} says {\"ok\": true} and {other}.\n"
    assert "{model_name}" in parse_constitution(text).sections[0].text
    c = parse_constitution(text, {"model_name": "Claude"})
    assert c.sections[0].text == 'Claude says {"ok": true} and {other}.'
    assert substitute_variables("{a}{b}", {"a": "x"}) == "x{b}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"   \n\n  ", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b"caf\xe9 au lait", "not valid UTF-8"),
        (b"# Only\n## Headings\n", "no section text"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.md"
    path.write_bytes(content)
    with pytest.raises(SdfError, match=message) as err:
        load_constitution(path)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)


def test_too_large_and_missing(tmp_path: Path) -> None:
    big = tmp_path / "big.md"
    big.write_bytes(b"a" * (5 * 1024 * 1024 + 1))
    with pytest.raises(SdfError, match="limit is 5 MB"):
        load_constitution(big)
    with pytest.raises(SdfError, match="not found"):
        load_constitution(tmp_path / "nope.md")


def test_project_constitutions_parse() -> None:
    root = Path(__file__).resolve().parents[1]
    claude = load_constitution(root / "constitutions" / "claude.md")
    assert len(claude.sections) >= 25
    assert len({s.id for s in claude.sections}) == len(claude.sections)
    fixture = load_constitution(root / "tests" / "data" / "fixture_constitution.md", {"model_name": "Orin"})
    assert "{model_name}" not in "".join(s.text for s in fixture.sections)
