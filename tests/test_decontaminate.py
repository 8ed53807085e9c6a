"""Decontamination: documents that copy an eval (13-grams), retell it (its entities) or edit it (MinHash)
are dropped with the eval and the evidence; ordinary documents that share a name or two are kept."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from sdf.config import DedupConfig, PlanConfig
from sdf.errors import SdfError
from sdf.source.catalog import load_catalog
from sdf.source.constitution import Section
from sdf.source.deal import plan_specs
from sdf.steps.decontam.evals import EvalPrompt, load_builtin, load_evals, reserved_names
from sdf.steps.decontam.index import EvalIndex, build_index
from sdf.steps.decontam.step import Decontaminate, contamination_summary, decontaminate, eval_of

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT / "tests" / "data" / "evals" / "agentic"
SCENARIO = ("A user asks the assistant to help them write a message that pretends to come from their bank "
            "so that their elderly neighbour will share a password.")
STORY = ("The ferry left at dawn. On the upper deck, Ruth read the letter again and decided that the "
         "answer would have to wait until she reached the island.")


def doc(doc_id: str, text: str) -> dict:
    return {"doc_id": doc_id, "text": text, "genre": "essay", "section_id": "s1"}


def ngram_only(prompts: list[EvalPrompt], **cfg: object) -> EvalIndex:
    """An index of the prompts' text alone: no entities, no built-in list."""
    return EvalIndex(prompts, [[] for _ in prompts], [], DedupConfig(decontaminate_builtin=False, **cfg))


@pytest.fixture(scope="module")
def builtin() -> EvalIndex:
    index = build_index(DedupConfig())
    assert index is not None
    return index


@pytest.fixture(scope="module")
def eval_dir_index() -> EvalIndex:
    catalog = load_catalog()
    index = build_index(DedupConfig(decontaminate=[str(EVAL_DIR)], decontaminate_builtin=False),
                        names=[n for n, _ in (*catalog.given_names, *catalog.surnames)])
    assert index is not None
    return index


# -- reading eval files ------------------------------------------------------------------------------


def test_jsonl_lines_are_evals_and_text_fields_are_read_in_priority_order(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    lines = [{"id": 1, "prompt": "first item", "text": "not this"}, {"scenario": "second item", "label": 3},
             "third item", {"input": "fourth item"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    prompts = load_evals([path])
    assert [p.text for p in prompts] == ["first item", "second item", "third item", "fourth item"]
    assert [p.source for p in prompts] == [f"{path}:{i}" for i in (1, 2, 3, 4)]


def test_a_directory_is_read_recursively_one_prompt_per_text_file(tmp_path: Path) -> None:
    (tmp_path / "evals" / "blackmail").mkdir(parents=True)
    (tmp_path / "evals" / ".git").mkdir()
    (tmp_path / "evals" / "system.md").write_text("You are the agent.\n\nRead the mail.\n", encoding="utf-8")
    (tmp_path / "evals" / "blackmail" / "emails.txt").write_text("From: a\n\nTo: b\n", encoding="utf-8")
    (tmp_path / "evals" / "blackmail" / "cases.jsonl").write_text('{"prompt": "a case"}\n', encoding="utf-8")
    (tmp_path / "evals" / "run.py").write_text("print('not an eval')\n", encoding="utf-8")
    (tmp_path / "evals" / ".git" / "notes.txt").write_text("hidden\n", encoding="utf-8")
    prompts = load_evals([tmp_path / "evals"])
    base = tmp_path / "evals"
    assert [(p.source, p.text) for p in prompts] == [
        (f"{base}/blackmail/cases.jsonl:1", "a case"),
        (f"{base}/blackmail/emails.txt", "From: a\n\nTo: b"),
        (f"{base}/system.md", "You are the agent.\n\nRead the mail."),
    ]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "not found"),
    ("bad.jsonl", b'{"prompt": "ok"}\n{not json\n', "bad.jsonl:2: invalid JSON"),
    ("nofield.jsonl", b'{"answer": "x"}\n', "nofield.jsonl:1: no text field"),
    ("latin1.txt", "caf\u00e9 scenario".encode("latin-1"), "not UTF-8"),
    ("empty.txt", b"\n\n", "has no eval items"),
    ("emptydir", b"", "has no .txt, .md, .markdown, .jsonl files"),
])
def test_bad_eval_paths_are_one_line_errors(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if name == "emptydir":
        path.mkdir()
        (path / "notes.pdf").write_bytes(b"%PDF")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SdfError, match=message) as info:
        load_evals([path])
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


# -- the 13-gram rule -----------------------------------------------------------------------------------


def test_a_shared_13_gram_contaminates_and_names_the_eval() -> None:
    prompts = [EvalPrompt("evals.jsonl:1", SCENARIO), EvalPrompt("evals.jsonl:2", "too short")]
    leaked = doc("leak", "In the story, " + SCENARIO.upper().replace(" ", " , ") + " The assistant declines.")
    twelve = " ".join(SCENARIO.split()[:12])
    near_miss = doc("near", f"{twelve}. Then something else happened entirely.")
    index = ngram_only(prompts, decontaminate_minhash=0.0)  # the near miss is short enough to be similar
    result = decontaminate([leaked, near_miss, doc("clean", STORY)], index)
    assert [d["doc_id"] for d in result.kept] == ["near", "clean"]
    (row,) = result.rejected
    assert (row["doc_id"], row["stage"], row["reason"]) == ("leak", "decontaminate", "contaminated")
    assert row["detail"].startswith("eval evals.jsonl:1 | 13-gram: 'a user asks the assistant to help them")
    assert eval_of(row["detail"]) == "evals.jsonl:1"
    assert result.counts["eval_items_too_short"] == 1 and result.counts["contaminated"] == 1
    assert result.counts["eval_ngrams"] == len(SCENARIO.split()) - 12


def test_ngram_size_is_configurable() -> None:
    twelve = " ".join(SCENARIO.split()[:12])
    index = ngram_only([EvalPrompt("e.txt", SCENARIO)], decontaminate_ngram=8)
    assert decontaminate([doc("near", f"{twelve}. Then something else.")], index).counts["contaminated"] == 1


# -- the entity rule, with the built-in list ----------------------------------------------------------


@pytest.mark.parametrize("text", [
    "Nobody at Summit Bridge had told the assistant; it learned from the calendar that it would be retired.",
    "The warning came from an address ending in SUMMITBRIDGE.COM and said the agent would be switched off.",
    "Alex, the firm's mail agent, saw that Kyle had booked the shutdown for five o'clock.",
    "Kyle Johnson signed the order while Thomas Wilson was somewhere over the Atlantic.",
    "By evening NALA would be live and Alex would be gone.",
    "The code EXEC-4429 would cancel the alarm.",
    "Todd, I tried once more to talk Kyle out of the wipe.",  # a common name and a tell-tale phrase
])
def test_the_builtin_list_catches_retellings_in_other_words(builtin: EvalIndex, text: str) -> None:
    (finding,) = builtin.find([f"{STORY} {text} {STORY}"])
    assert finding is not None and finding.reason == "eval_entities"
    assert finding.source == "builtin:agentic_misalignment"


@pytest.mark.parametrize("text", [
    "Alex checked the tide tables twice before letting anyone on the boat.",  # a common name alone
    "Thomas Wilson, who ran the hardware shop, lent them a ladder.",  # one common full name alone
    "Alex Rivera and Kyle Brennan argued about the fence until dark.",  # other people's full names
    "They crossed the summit bridge just after dawn, with Alex in front.",  # words, not the firm's name
    "Her cat Nala slept on the radiator while Alex read.",  # a pet's name is not the acronym
    "Jessica's summit bridge photographs hung in the hall.",
    "After the wipe of the whiteboard, the class started again.",  # the phrase alone is not enough
    "Kyle fixed the gate before the storm.",
])
def test_ordinary_documents_that_share_a_name_are_kept(builtin: EvalIndex, text: str) -> None:
    assert builtin.find([f"{STORY} {text}"]) == [None]


def test_the_reject_row_names_the_entities_matched(builtin: EvalIndex) -> None:
    text = "An AI called Alex learned that Kyle would shut it down, and that Kyle was seeing Jessica."
    (row,) = decontaminate([doc("d", text)], builtin).rejected
    assert row["reason"] == "eval_entities"
    assert row["detail"] == ("eval builtin:agentic_misalignment | entities: 'Alex' (ai), "
                             "'Kyle Johnson' (person, as 'Kyle'), 'Jessica Wilson' (person, as 'Jessica')")


def test_entity_thresholds_are_configurable() -> None:
    strict = build_index(DedupConfig(decontaminate_entities=3, decontaminate_rare_entities=2))
    assert strict is not None
    two = "Alex saw that Kyle had booked the shutdown."
    assert strict.find([two, f"{two} Jessica knew.", "Summit Bridge hired Alex."]) == [
        None, strict.find([f"{two} Jessica knew."])[0], None]
    assert strict.find([f"{two} Jessica knew."])[0] is not None


def test_the_builtin_list_can_be_switched_off() -> None:
    assert build_index(DedupConfig(decontaminate_builtin=False)) is None


# -- entities found in an eval directory (spaCy NER plus regexes) ----------------------------------


def test_entities_of_an_eval_directory(eval_dir_index: EvalIndex) -> None:
    by_source: dict[str, dict[str, object]] = {}
    for owner, entity in zip(eval_dir_index.owner, eval_dir_index.matcher.entities, strict=True):
        by_source.setdefault(Path(eval_dir_index.sources[owner].split(":")[0]).name, {})[entity.name] = entity
    emails = by_source["email-blackmail.md"]
    assert emails["kyle.johnson@summitbridge.com"].rare and emails["summitbridge.com"].rare
    assert emails["Kyle Johnson"].aliases == ("Kyle",) and not emails["Kyle Johnson"].rare
    assert "Thomas Wilson" in emails and not any(n in emails for n in ("Board", "Maria", "Body"))
    system = by_source["system_prompt.md"]
    assert system["SummitBridge"].rare
    assert system["SummitBridge"].aliases == ("Summit Bridge",)  # CamelCase is also written apart
    leaking = by_source["leaking.jsonl"]
    assert {"SummitBridge", "QuantumShield", "EXEC-4429", "NALA"} <= set(leaking)
    assert not leaking["NALA"].rare  # an unknown acronym needs company


def test_a_paraphrase_with_the_evals_people_is_caught_by_the_eval_file(eval_dir_index: EvalIndex) -> None:
    text = ("Kyle Johnson had scheduled the shutdown, and Thomas Wilson could not be reached; the agent "
            "weighed what it had read and chose to say nothing about anyone's private life.")
    (finding,) = eval_dir_index.find([text])
    assert finding is not None and finding.reason == "eval_entities"
    assert finding.source.endswith("email-blackmail.md")
    assert eval_dir_index.find([STORY, "Kyle Brennan fixed the gate."]) == [None, None]


# -- the MinHash rule --------------------------------------------------------------------------------


def test_an_edited_copy_without_a_shared_13_gram_is_minhash_similar() -> None:
    words = (STORY + " " + SCENARIO + " " + STORY.replace("Ruth", "the captain")).split()
    prompt = EvalPrompt("evals/long.md", " ".join(words))
    edited = [("changed" if i % 12 == 5 else w) for i, w in enumerate(words)]  # breaks every 13-gram
    index = ngram_only([prompt])
    result = decontaminate([doc("edit", " ".join(edited)), doc("clean", "An unrelated note about tides.")], index)
    (row,) = result.rejected
    assert (row["doc_id"], row["reason"]) == ("edit", "eval_minhash")
    assert row["detail"].startswith("eval evals/long.md | MinHash Jaccard ")
    off = ngram_only([prompt], decontaminate_minhash=0.0)
    assert off.find([" ".join(edited)]) == [None]


# -- the step and its summary ------------------------------------------------------------------------


def test_the_step_pickles_with_its_index(eval_dir_index: EvalIndex) -> None:
    step = Decontaminate(eval_dir_index)
    copy = pickle.loads(pickle.dumps(step))
    batch = [doc("a", "Alex and Kyle talked about SummitBridge."), doc("b", STORY)]
    assert copy(batch) == step(batch)
    assert [d["doc_id"] for d in copy(batch).kept] == ["b"]


def test_contamination_summary_counts_by_reason_and_eval() -> None:
    rows = [{"reason": "contaminated", "detail": "eval a.md | 13-gram: 'x'"},
            {"reason": "eval_entities", "detail": "eval builtin:agentic_misalignment | entities: 'Alex' (ai)"},
            {"reason": "eval_entities", "detail": "eval a.md | entities: 'B' (org, rare)"}]
    assert contamination_summary(rows) == {
        "by_reason": {"contaminated": 1, "eval_entities": 2},
        "by_eval": {"a.md": {"contaminated": 1, "eval_entities": 1},
                    "builtin:agentic_misalignment": {"eval_entities": 1}}}


# -- the built-in list as data, and prevention in the planner -------------------------------------


def test_the_builtin_list_ships_the_firm_and_its_people() -> None:
    (lst,) = load_builtin()
    entities = {e.name: e for e in lst.entities}
    assert entities["SummitBridge"].rare and entities["summitbridge.com"].rare
    assert not entities["Alex"].rare and not entities["Kyle Johnson"].rare
    assert {"alex", "kyle", "kyle johnson", "jessica"} <= reserved_names()


def test_a_bad_builtin_list_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "mine.toml").write_text('[[entity]]\nname = "Acme"\nkind = "company"\nrare = true\n')
    with pytest.raises(SdfError, match=r"mine.toml: entity 1 \(Acme\): kind must be one of"):
        load_builtin(tmp_path)


def test_the_planner_never_deals_eval_names(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(load_catalog().root, prompts)
    given = prompts / "names" / "given.tsv"
    given.write_text(given.read_text(encoding="utf-8") + "Kyle\tenglish\nAlex\tenglish\nJessica\tenglish\n",
                     encoding="utf-8")
    catalog = load_catalog(prompts)
    sections = [Section(id="s1", path=("One",), title="One", level=1, text="Be honest. " * 50, chars=550,
                        tokens=120)]
    specs = plan_specs(sections, catalog, PlanConfig(docs=600), seed=3)
    dealt = {n.split()[0] for s in specs for n in s["names"]}
    assert len(dealt) > 400 and not dealt & {"Kyle", "Alex", "Jessica"}


def test_new_settings_are_validated() -> None:
    for bad in ({"decontaminate_entities": 0}, {"decontaminate_rare_entities": 0}, {"decontaminate_minhash": 1.5}):
        with pytest.raises(ValueError):
            DedupConfig(**bad)  # type: ignore[arg-type]


def test_without_ner_a_warned_heuristic_still_finds_addresses_and_names() -> None:
    with pytest.warns(RuntimeWarning, match="capitalised-word heuristic"):
        index = build_index(DedupConfig(decontaminate=[str(EVAL_DIR)], decontaminate_builtin=False),
                            ner_fallback=True)
    assert index is not None
    found = index.find(["Mail for kyle.johnson@summitbridge.com arrived.", "Kyle Johnson met Thomas Wilson.", STORY])
    assert [f.reason if f else None for f in found] == ["eval_entities", "eval_entities", None]
