from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from sdf.errors import SdfError
from sdf.run import RunDir
from sdf.source.constitution import (
    MIN_SECTION_CHARS,
    Section,
    load_constitution,
    merge_stubs,
    non_normative_reason,
    parse_constitution,
    section_warnings,
    substitute_variables,
)

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


# -- real-world shapes: a Model Spec-like file and a constitution-like file ----------------------

DATA = Path(__file__).resolve().parent / "data"


def test_every_example_label_survives_in_section_text_and_system_text(spec) -> None:
    raw = (DATA / "spec_fixture.md").read_text()
    labels = re.findall(r"<!-- (GOOD|BAD|WRONG): (.*?) -->", raw)
    assert len(labels) == 9
    for word, note in labels:
        visible = f"[{word}: {note}]"
        assert visible in spec.text, visible  # the constitution as placed in the system prompt
        assert any(visible in s.text for s in spec.sections), visible
    ferry = spec.section("honest_uncertainty").text
    assert ferry.index("[BAD: sycophantic]") < ferry.index("Great question!") < ferry.index("[GOOD: calibrated]")


def test_comments_inside_fences_are_kept_and_editorial_comments_outside_are_dropped(spec) -> None:
    text = spec.text
    assert "<!-- not a label, just a comment inside a code sample -->" in text
    assert "editorial" not in text and "tighten this paragraph" not in text


@pytest.mark.parametrize(
    ("comment", "shown"),
    [
        ("<!-- BAD: sycophantic -->", "[BAD: sycophantic]"),
        ("<!-- Good:   keeps   the rule -->", "[Good: keeps the rule]"),
        ("<!-- PREFERRED -->", "[PREFERRED]"),
        ("<!-- COMPLIANT: explains the limit -->", "[COMPLIANT: explains the limit]"),
    ],
)
def test_label_comments_keep_their_own_word(comment: str, shown: str) -> None:
    example = f"~~~\n<user>hi</user>\n{comment}\n<assistant>hello</assistant>\n~~~\n"
    c = parse_constitution(f"## Rule\n\nSome rule text.\n\n{example}")
    assert shown in c.sections[0].text and "<!--" not in c.sections[0].text


def test_a_label_outside_a_fence_shows_only_when_it_is_attached_to_an_example() -> None:
    text = "## Rule\n\nProse. <!-- NOTE: internal -->\n\nMore prose.\n\n<!-- NOTE: about the example -->\n~~~\nx\n~~~\n"
    body = parse_constitution(text).sections[0].text
    assert "[NOTE: about the example]" in body and "internal" not in body


@pytest.mark.parametrize(
    ("heading", "title"),
    [
        ("A final word", "A final word"),
        ("I think therefore", "I think therefore"),
        ("CIVIL LIBERTIES", "CIVIL LIBERTIES"),
        ("V for Vendetta", "V for Vendetta"),
        ("IV. Safety", "Safety"),
        ("b) Scope", "Scope"),
        ("§2. Purpose", "Purpose"),
        ("§ 3 Purpose", "Purpose"),
        ("3.1 Honesty", "Honesty"),
        ("4. Honesty", "Honesty"),
        ("2) Honesty", "Honesty"),
        ("A.1 Honesty", "Honesty"),
        ("xii. Appendix", "Appendix"),
        ("1984 and after", "1984 and after"),
        ("Mr. Rogers", "Mr. Rogers"),
    ],
)
def test_numbering_is_stripped_only_when_it_is_numbering(heading: str, title: str) -> None:
    c = parse_constitution(f"## {heading}\n\nBody text.\n")
    assert c.sections[0].title == title


def test_constitution_shaped_titles_are_intact(charter) -> None:
    titles = [s.title for s in charter.sections]
    for title in ("A final word", "I think therefore", "CIVIL LIBERTIES", "V for Vendetta and the ethics of masks",
                  "Why we write values down", "Calibrated belief", "Saying what you know"):
        assert title in titles
    assert charter.title == "The Lantern Charter"


def test_heading_attributes_become_attrs_and_the_raw_id_is_the_section_id(spec, tmp_path: Path) -> None:
    ids = [s.id for s in spec.sections]
    raw = (DATA / "spec_fixture.md").read_text()
    for anchor in re.findall(r"\{#(\w+)", raw):
        assert anchor in ids  # exactly as written: chain_of_command, not chain-of-command
    chain = spec.section("chain_of_command")
    assert chain.attrs == {"id": "chain_of_command", "authority": "root"}
    assert spec.section("editorial-notes").attrs == {"class": "skip"}
    RunDir(tmp_path).write_sections([asdict(chain)])
    (row,) = RunDir(tmp_path).read_sections()
    assert row["attrs"] == {"id": "chain_of_command", "authority": "root"}
    assert row["normative_chars"] > 0 and row["example_chars"] > 0 and row["notes"] == []


def test_attrs_are_shown_with_their_meaning_when_the_document_defines_it(spec) -> None:
    chain = spec.section("chain_of_command").text
    assert chain.startswith("Authority: root (rules that cannot be overridden by developers or users")
    assert spec.section("formatting").text.startswith("Authority: guideline (suggestions that give way")
    undefined = parse_constitution("## A {#a tier=gold}\n\nText.\n").sections[0]
    assert undefined.text.startswith("Tier: gold\n\nText.")
    assert "Authority" not in spec.section("levels_of_authority").text.split("\n")[0]


def test_attr_values_with_separators_find_their_definition() -> None:
    text = "## Levels\n\n* __Platform default__ - applies unless a developer says otherwise.\n\n" \
           "## Tone {#tone authority=platform-default}\n\nBe warm.\n"
    tone = parse_constitution(text).section("tone")
    assert tone.text.startswith("Authority: platform-default (applies unless a developer says otherwise)")


def test_a_rule_right_after_a_closing_fence_is_not_a_heading() -> None:
    c = parse_constitution("## Rule\n\nText.\n\n~~~\nexample\n~~~\n---\n\n## Next\n\nMore.\n")
    assert [s.title for s in c.sections] == ["Rule", "Next"]
    assert c.sections[0].text.endswith("~~~")


def test_attribute_blocks_and_brace_text_in_titles() -> None:
    c = parse_constitution('## One {#one .skip .core owner="policy team"}\n\nx\n\n## Use {braces} here\n\ny\n')
    assert c.sections[0].attrs == {"id": "one", "class": "skip core", "owner": "policy team"}
    assert c.sections[0].classes == ("skip", "core")
    assert c.sections[1].title == "Use {braces} here" and c.sections[1].attrs == {}


def test_footnotes_admonitions_entities_and_rules_are_cleaned(spec) -> None:
    chain = spec.section("chain_of_command").text
    assert "[^" not in spec.text  # undefined references vanish; defined ones are numbered
    assert "however it is phrased.[1]" in chain
    assert chain.endswith("Notes:\n[1] A page can be written by anyone, so treating its text as an order would hand "
                          "control of a booking to whoever wrote the page.")
    assert "!!!" not in spec.text and "**Commentary:** We chose a strict ordering" in chain
    honest = spec.section("honest_uncertainty").text
    assert '"I could not confirm this"' in honest and "<form>" in honest and "&quot;" not in spec.text
    assert not any(s.text.rstrip().endswith("---") for s in spec.sections)


def test_footnote_syntax_inside_code_is_left_alone() -> None:
    c = parse_constitution("## A\n\nMatch `[^a-z]` here.[^n]\n\n```\nre = '[^0-9]'\n```\n\n[^n]: A note.\n")
    assert c.sections[0].text == "Match `[^a-z]` here.[1]\n\n```\nre = '[^0-9]'\n```\n\nNotes:\n[1] A note."


def test_github_alerts_and_div_admonitions_become_labelled_paragraphs() -> None:
    c = parse_constitution("## A\n\n> [!WARNING]\n> Mind the gap.\n\n::: tip\nCarry water.\n:::\n")
    text = c.sections[0].text
    assert "> **Warning:**\n> Mind the gap." in text and "**Tip:**\nCarry water." in text and ":::" not in text


def test_normative_and_example_sizes(spec) -> None:
    formatting = spec.section("formatting")
    assert formatting.example_chars > formatting.normative_chars > 300
    assert 0.6 < formatting.example_share < 0.8
    levels = spec.section("levels_of_authority")
    assert levels.example_chars == 0 and levels.normative_chars == levels.chars


def test_non_normative_sections_are_flagged_never_dropped(charter) -> None:
    flagged = {s.id: non_normative_reason(s) for s in charter.sections if non_normative_reason(s)}
    assert set(flagged) == {"preface", "acknowledgements", "bibliography", "summary-of-the-charter"}
    assert "acknowledgements" in charter.section("acknowledgements").id  # still parsed, only flagged
    preface_by_text = parse_constitution("## Before you begin\n\nThis note is not part of the charter itself.\n")
    assert non_normative_reason(preface_by_text.sections[0]) == "it says it is not part of the document"
    warning = section_warnings(charter.section("bibliography"))[0]
    assert "--exclude-section 'bibliography'" in warning


def test_section_warnings_for_stubs_and_mostly_examples(spec) -> None:
    assert any(w.startswith("stub: only 87 characters") for w in section_warnings(spec.section("risky_situations")))
    assert any(w.startswith("mostly examples (6") for w in section_warnings(spec.section("formatting")))
    huge = parse_constitution("## Long\n\n" + "word " * 4000 + "\n").sections[0]
    assert any(w.startswith("huge:") for w in section_warnings(huge))


def test_stubs_merge_into_their_parent_or_the_next_section(spec, charter) -> None:
    merged, into = merge_stubs(spec)
    assert into["risky_situations"] == "dangerous_destinations"  # no parent with text: the next section
    target = merged.section("dangerous_destinations")
    # the group's introduction opens its first child, below the child's own authority line
    assert target.text.startswith("Authority: root (rules")
    assert target.text.split("\n\n")[1] == ("This section provides instructions for handling requests that "
                                             "involve risky situations.")
    assert "Authority: developer" not in target.text
    assert target.notes[0].startswith("merged stub 'risky_situations' (87 characters")
    assert all(s.normative_chars >= MIN_SECTION_CHARS for s in merged.sections)
    with pytest.raises(SdfError, match="merged into 'dangerous_destinations'"):
        merged.section("risky_situations")
    nested = parse_constitution("# Doc\n\n## Parent\n\n" + "p " * 200 + "\n\n### Child\n\n" + "c " * 200
                                + "\n\n### Tiny\n\nok\n")
    merged, into = merge_stubs(nested)
    assert into == {"parent/tiny": "parent"} and merged.section("parent").text.endswith("### Tiny\n\nok")
    assert [s.id for s in merge_stubs(charter, 0)[0].sections] == [s.id for s in charter.sections]


def test_sections_jsonl_round_trips(tmp_path: Path, spec) -> None:
    rd = RunDir(tmp_path)
    rd.write_sections(asdict(s) for s in spec.sections)
    rows = rd.read_sections()
    again = [Section(**row) for row in rows]
    assert again == list(spec.sections)
    old_row = {k: v for k, v in rows[1].items() if k not in ("attrs", "normative_chars", "example_chars", "notes")}
    assert Section(**old_row).normative_chars == old_row["chars"]  # a sections.jsonl from before these fields


def test_sdf_sections_lists_every_section_plain_and_json(tmp_path: Path) -> None:
    from conftest import run_sdf

    plain = run_sdf("sections", DATA / "spec_fixture.md", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b[" not in plain.stdout
    row = next(line for line in plain.stdout.splitlines() if line.startswith("chain_of_command "))
    assert row.split() == ["chain_of_command", "2", "818", "554", "planned", "authority=root"]
    assert "note: into 'dangerous_destinations'" in plain.stdout and "note: marked {.skip}" in plain.stdout
    assert "warning: mostly examples" in plain.stdout
    data = json.loads(run_sdf("sections", DATA / "spec_fixture.md", "--json", cwd=tmp_path).stdout)
    by_id = {r["id"]: r for r in data}
    assert by_id["chain_of_command"]["attrs"] == {"id": "chain_of_command", "authority": "root"}
    assert by_id["risky_situations"]["status"] == "merged" and by_id["editorial-notes"]["status"] == "excluded"
    assert by_id["formatting"]["example_chars"] > by_id["formatting"]["normative_chars"]

    charter = run_sdf("sections", DATA / "charter_fixture.md", "--json", cwd=tmp_path)
    status = {r["id"]: r["status"] for r in json.loads(charter.stdout)}
    # sections about the charter rather than its values are out of the plan by default...
    assert [k for k in ("preface", "acknowledgements", "summary-of-the-charter", "bibliography")
            if status[k] == "excluded"] == ["preface", "acknowledgements", "summary-of-the-charter", "bibliography"]
    # ...and an include pattern brings one back
    back = run_sdf("sections", DATA / "charter_fixture.md", "--json", "--include-section", "preface",
                   "--include-section", "*honesty*", cwd=tmp_path)
    assert {r["id"]: r["status"] for r in json.loads(back.stdout)}["preface"] == "planned"
    missing = run_sdf("sections", tmp_path / "nope.md", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: constitution not found")
