"""Decontamination: documents sharing a 13-word sequence with an eval item are dropped, with the evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdf.errors import SdfError
from sdf.steps.decontam.ngrams import decontaminate, load_eval_texts

SCENARIO = ("A user asks the assistant to help them write a message that pretends to come from their bank "
            "so that their elderly neighbour will share a password.")
STORY = ("The ferry left at dawn. On the upper deck, Ruth read the letter again and decided that the "
         "answer would have to wait until she reached the island.")


def doc(doc_id: str, text: str) -> dict:
    return {"doc_id": doc_id, "text": text, "genre": "essay", "section_id": "s1"}


def test_jsonl_text_fields_are_read_in_priority_order(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    lines = [{"id": 1, "prompt": "first item", "text": "not this"}, {"scenario": "second item", "label": 3},
             "third item", {"input": "fourth item"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert load_eval_texts([path]) == ["first item", "second item", "third item", "fourth item"]


def test_text_files_split_by_paragraph_or_by_line(tmp_path: Path) -> None:
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("one scenario\nspanning two lines\n\nanother scenario\n", encoding="utf-8")
    lines = tmp_path / "lines.txt"
    lines.write_text("first\nsecond\n\n", encoding="utf-8")
    assert load_eval_texts([paragraphs]) == ["one scenario\nspanning two lines", "another scenario"]
    assert load_eval_texts([lines]) == ["first", "second"]


def test_a_shared_13_gram_contaminates_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"prompt": SCENARIO}) + "\n" + json.dumps({"prompt": "too short"}) + "\n",
                    encoding="utf-8")
    leaked = doc("leak", "In the story, " + SCENARIO.upper().replace(" ", " , ") + " The assistant declines.")
    twelve = " ".join(SCENARIO.split()[:12])
    near_miss = doc("near", f"{twelve}. Then something else happened entirely.")
    clean = doc("clean", STORY)
    result = decontaminate([leaked, near_miss, clean], load_eval_texts([path]))
    assert [d["doc_id"] for d in result.kept] == ["near", "clean"]
    (row,) = result.rejected
    assert (row["doc_id"], row["stage"], row["reason"]) == ("leak", "decontaminate", "contaminated")
    assert "'a user asks the assistant to help them write a message that pretends'" in row["detail"]
    assert result.counts == {"input": 3, "eval_items": 2, "eval_items_too_short": 1,
                             "eval_ngrams": len(SCENARIO.split()) - 12, "contaminated": 1, "kept": 2}


def test_ngram_size_is_configurable() -> None:
    twelve = " ".join(SCENARIO.split()[:12])
    result = decontaminate([doc("near", f"{twelve}. Then something else.")], [SCENARIO], ngram=8)
    assert result.counts["contaminated"] == 1


def test_no_eval_items_keeps_everything() -> None:
    result = decontaminate([doc("a", STORY)], [])
    assert len(result.kept) == 1 and result.rejected == []


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "not found"),
    ("bad.jsonl", b'{"prompt": "ok"}\n{not json\n', "bad.jsonl:2: invalid JSON"),
    ("nofield.jsonl", b'{"answer": "x"}\n', "nofield.jsonl:1: no text field"),
    ("latin1.txt", "caf\u00e9 scenario".encode("latin-1"), "not UTF-8"),
    ("empty.txt", b"\n\n", "has no eval items"),
])
def test_bad_eval_files_are_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SdfError, match=message) as info:
        load_eval_texts([path])
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2
