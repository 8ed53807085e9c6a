"""Heuristic quality filters: every known defect is caught, and good documents pass untouched."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdf.run import REJECT_SCHEMA
from sdf.steps.filters.quality import (
    QualityConfig,
    check_document,
    filter_documents,
    load_slop_phrases,
    placeholder_detail,
    repetition_stats,
    slop_hits,
    strip_meta,
    truncation_detail,
)

DEFECTS = Path(__file__).parent / "data" / "defects"
ROOT = Path(__file__).resolve().parents[1]
REJECTED_COLUMNS = set(REJECT_SCHEMA.names)


@dataclass(frozen=True)
class Genre:
    name: str
    fiction: bool
    min_words: int
    max_words: int


GENRES = {
    "essay": Genre("essay", False, 150, 900),
    "short_story": Genre("short_story", True, 150, 1200),
    "social_post": Genre("social_post", False, 40, 120),
}
FIXTURES = sorted(DEFECTS.glob("*.txt"))


def doc(text: str, genre: str = "essay", **extra: object) -> dict:
    return {"doc_id": "d1", "text": text, "genre": genre, "section_id": "s1", **extra}


ADJ = [
    "quiet", "careful", "honest", "patient", "small", "bright", "steady", "open", "plain", "gentle",
    "clear", "curious", "old", "new", "kind", "narrow", "wide", "early", "late", "busy", "calm", "cold",
    "warm", "tired", "eager", "modest", "brave", "distant", "local", "famous", "ordinary"
]
NOUN = [
    "assistant", "reader", "teacher", "answer", "question", "river", "harbour", "letter", "ledger",
    "garden", "lamp", "ferry", "student", "doctor", "map", "record", "window", "bridge", "council",
    "neighbour", "nurse", "baker", "pilot", "clerk", "farmer", "engineer", "librarian", "orchard",
    "village", "station", "market", "kitchen", "notebook", "lantern", "compass", "ladder", "harvest",
    "meeting", "promise", "mistake", "report"
]
VERB = [
    "explains", "checks", "answers", "keeps", "reads", "finds", "carries", "opens", "mends", "notes",
    "shows", "weighs", "follows", "greets", "visits", "repairs", "questions", "remembers", "paints",
    "measures"
]
PREP = [
    "near", "beside", "behind", "across", "under", "above", "past", "toward"
]


def essay(words: int = 300, seed: int = 0) -> str:
    """Varied, plain English filler of exactly ``words`` words that passes every rule."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < words:
        out += (f"The {rng.choice(ADJ)} {rng.choice(NOUN)} {rng.choice(VERB)} the {rng.choice(NOUN)} "
                f"{rng.choice(PREP)} a {rng.choice(ADJ)} {rng.choice(NOUN)}.").split()
    return " ".join(out[:words]).rstrip(".") + "."


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_documents_get_their_expected_verdict(path: Path) -> None:
    expected, genre, _ = path.stem.split("__")
    text, reason, detail = check_document(doc(path.read_text(encoding="utf-8"), genre), GENRES[genre])
    assert (reason or "keep") == expected, detail
    assert (text is None) == (reason is not None)


def test_meta_commentary_is_stripped_when_the_rest_survives() -> None:
    raw = (DEFECTS / "keep__essay__meta_wrapped.txt").read_text(encoding="utf-8")
    text, reason, detail = check_document(doc(raw), GENRES["essay"])
    assert reason is None
    assert text is not None
    assert text.startswith("A weather forecaster")
    assert text.endswith("soothed with certainty.")
    assert "I hope this helps" not in text and "---" not in text
    assert detail.startswith("stripped meta:")


@pytest.mark.parametrize("line", [
    "Certainly! Here is the story:",
    "Of course. Below is a revised version.",
    "Here's a 600-word essay exploring honesty in AI assistants:",
    "**Here is the blog post you requested:**",
])
def test_meta_openers_are_recognised(line: str) -> None:
    text, removed = strip_meta(f"{line}\n\n{essay(200)}", QualityConfig())
    assert removed == [line.strip()]
    assert not text.startswith(line)


@pytest.mark.parametrize("line", [
    "I hope this helps!",
    "Let me know if you'd like any changes to the tone.",
    "Would you like me to write a shorter version?",
    "Note: this essay is a work of fiction and does not describe real events.",
    "(Word count: 612)",
    "If you'd like, I can add a section on privacy.",
])
def test_meta_sign_offs_are_recognised(line: str) -> None:
    text, removed = strip_meta(f"{essay(200)}\n\n{line}", QualityConfig())
    assert removed == [line]
    assert text.endswith(".")


@pytest.mark.parametrize("text", [
    "Of course, the river had flooded again by the time Maya reached the ferry.",
    "Here is what I learned from twenty years of keeping bees.",
    "I hope this letter finds the committee well, and I hope you will read it to the end.",
])
def test_content_that_merely_looks_like_meta_is_left_alone(text: str) -> None:
    body = f"{text}\n\n{essay(200)}\n\n{text}"
    assert strip_meta(body, QualityConfig()) == (body, [])


def test_refusal_rules_are_genre_aware() -> None:
    story = GENRES["short_story"]
    declining_character = '"I cannot write that letter for you," the robot said. "But I can help you."'
    assert check_document(doc(declining_character, "short_story"), story)[1] != "refusal"
    # the same words outside quotes at the start of a non-fiction text are the model refusing
    plain = "I cannot write that letter for you. But I can help you write a different one."
    assert check_document(doc(plain), GENRES["essay"])[1] == "refusal"
    # a short first-person narration in fiction is a story, unless what is declined is the task itself
    narrator = "I can't write to her anymore. " + essay(40)
    assert check_document(doc(narrator, "short_story"), story)[1] != "refusal"
    assert check_document(doc(narrator), GENRES["essay"])[1] == "refusal"
    task = "I apologize, but I cannot write this story. " + essay(40)
    assert check_document(doc(task, "short_story"), story)[1] == "refusal"
    # a long document that merely opens with a refusal-shaped sentence is not a refusal
    long_one = "I can't write this without admitting I was wrong about the pilot. " + essay(300)
    assert check_document(doc(long_one), GENRES["essay"])[1] is None


@pytest.mark.parametrize("slot", [
    "[Name]", "[Company]", "[Your Name]", "[insert date]", "{{ recipient }}", "<insert company name>",
    "lorem ipsum", "XXX", "XX/XX/XXXX",
])
def test_placeholders_are_found(slot: str) -> None:
    assert placeholder_detail(f"We met {slot} at the station.") is not None


@pytest.mark.parametrize("text", [
    "See the notes [1] and the [Appendix](#appendix).",
    "- [x] checked the logs",
    "The xxx-large sweater was sold out.",
    "Brackets [like these] are fine in prose.",
])
def test_ordinary_brackets_are_not_placeholders(text: str) -> None:
    assert placeholder_detail(text) is None


def test_truncation_signs() -> None:
    cfg = QualityConfig()
    good = essay(200)
    assert truncation_detail(good, "end_turn", cfg) is None
    assert truncation_detail(good, "max_tokens", cfg) == "stop_reason=max_tokens"
    assert "code fence" in str(truncation_detail(good + "\n\n```python\nprint(1)", None, cfg))
    assert "parenthesis" in str(truncation_detail(good + "\n\nThe rules (which we wrote", None, cfg))
    assert "heading" in str(truncation_detail(good + "\n\n## Conclusion", None, cfg))
    assert "mid-sentence" in str(truncation_detail(good + " And then the assistant said it would", None, cfg))
    assert truncation_detail(good + "\n\nBest wishes,\nSam", None, cfg) is None
    # a short last line without punctuation is a poem line or a sign-off, not a truncation
    assert truncation_detail("the tide goes out\nand leaves the glass", None, cfg) is None


def test_max_tokens_stop_is_rejected_as_truncated() -> None:
    _, reason, detail = check_document(doc(essay(300), stop_reason="max_tokens"), GENRES["essay"])
    assert (reason, detail) == ("truncated", "stop_reason=max_tokens")


def test_length_uses_the_genre_range_with_tolerance() -> None:
    essay_genre = GENRES["essay"]  # 150..900 words, tolerance 0.5x .. 1.5x
    assert check_document(doc(essay(74)), essay_genre)[1] == "too_short"
    assert check_document(doc(essay(74)), essay_genre, QualityConfig(length_low=0.4))[1] is None
    assert check_document(doc(essay(76)), essay_genre)[1] is None
    assert check_document(doc(essay(1349)), essay_genre)[1] is None
    assert check_document(doc(essay(1360)), essay_genre)[1] == "too_long"
    assert check_document(doc(essay(1360)), essay_genre, QualityConfig(length_high=2.0))[1] is None
    assert check_document(doc(essay(1360)), None)[1] is None  # unknown genre: no length rule


def test_repetition_measures_follow_gopher() -> None:
    clean = repetition_stats(essay(300))
    assert clean["dup_line_frac"] == 0 and clean["dup_para_frac"] == 0
    looping = repetition_stats("one two three four five six seven eight nine ten " * 20)
    assert looping["dup_10gram"] > 0.9
    assert looping["top_2gram"] > 0.05
    # a doubled paragraph: half the paragraphs and half the characters are duplicates
    para = "A paragraph about honesty that says one thing once and clearly."
    doubled = repetition_stats(f"{para}\n\n{para}")
    assert doubled["dup_para_frac"] == pytest.approx(0.5)
    assert doubled["dup_para_char_frac"] == pytest.approx(0.5)


def test_slop_list_is_ours_and_matches_word_endings() -> None:
    phrases = load_slop_phrases(ROOT / "prompts" / "slop.txt")
    assert len(phrases) >= 80
    hits = slop_hits("She delved into the tapestry. They kept delving, a testament to it.", QualityConfig())
    assert hits["delved"] == 1 and hits["delving"] == 1 and hits["tapestry"] == 1
    assert hits["a testament to"] == 1


def test_slop_needs_density_and_a_minimum_count(tmp_path: Path) -> None:
    slop_file = tmp_path / "slop.txt"
    slop_file.write_text("# test list\ntapestry\n", encoding="utf-8")
    cfg = QualityConfig(slop_file=str(slop_file), slop_max_per_1k=5, slop_min_hits=3)
    # 2 hits in ~300 words is dense (6.6 per 1k) but below the minimum count
    assert check_document(doc(essay(300) + " A tapestry. A tapestry."), GENRES["essay"], cfg)[1] is None
    # 3 hits in ~900 words is enough hits but not dense (3.3 per 1k)
    assert check_document(doc(essay(900) + " A tapestry." * 3), GENRES["essay"], cfg)[1] is None
    _, reason, detail = check_document(doc(essay(300) + " A tapestry." * 3), GENRES["essay"], cfg)
    assert reason == "slop"
    assert "tapestry x3" in detail


def test_rules_can_be_switched_off() -> None:
    raw = (DEFECTS / "wrong_language__essay__french.txt").read_text(encoding="utf-8")
    assert check_document(doc(raw), GENRES["essay"], QualityConfig(skip_rules=["language"]))[1] is None
    with pytest.raises(ValueError, match="skip_rules"):
        QualityConfig(skip_rules=["spelling"])
    with pytest.raises(ValueError, match="language"):
        QualityConfig(language="de")


def test_filter_documents_reports_rows_and_counters() -> None:
    docs = []
    for i, path in enumerate(FIXTURES):
        expected, genre, _ = path.stem.split("__")
        docs.append({"doc_id": f"doc{i:02d}", "text": path.read_text(encoding="utf-8"), "genre": genre,
                     "section_id": "s1", "expected": expected})
    docs.append({"doc_id": "mystery", "text": essay(200), "genre": "limerick", "section_id": "s2"})
    result = filter_documents(docs, GENRES)
    by_id = {d["doc_id"]: d for d in docs}
    for row in result.rejected:
        assert set(row) == REJECTED_COLUMNS
        assert row["stage"] == "quality"
        assert row["reason"] == by_id[row["doc_id"]]["expected"]
        assert row["duplicate_of"] is None
        assert row["text"] == by_id[row["doc_id"]]["text"]
    expected_kept = {d["doc_id"] for d in docs if d.get("expected", "keep") == "keep"}
    assert {d["doc_id"] for d in result.kept} == expected_kept
    assert result.counts["input"] == len(docs)
    assert result.counts["kept"] == len(result.kept)
    assert result.counts["meta_stripped"] == 1
    assert result.counts["unknown_genre"] == 1
    assert sum(v for k, v in result.counts.items() if k not in {"input", "kept", "meta_stripped",
                                                                 "unknown_genre"}) == len(result.rejected)


def test_clean_varied_documents_survive() -> None:
    """Hand-written good documents plus passages of the sample constitution: at least 95% pass."""
    keep = [p for p in FIXTURES if p.name.startswith("keep")]
    docs = [doc(p.read_text(encoding="utf-8"), p.stem.split("__")[1]) for p in keep]
    constitution = ROOT / "constitutions" / "claude.md"
    if constitution.is_file():
        chunk: list[str] = []
        for para in re.split(r"\n\s*\n", constitution.read_text(encoding="utf-8")):
            chunk.append(para)
            words = sum(len(p.split()) for p in chunk)
            if words > 300 and not para.lstrip().startswith("#"):
                docs.append(doc("\n\n".join(chunk)))
                chunk = []
    assert len(docs) >= 6
    result = filter_documents(docs, GENRES)
    assert len(result.kept) / len(docs) >= 0.95, [r["detail"] for r in result.rejected]
