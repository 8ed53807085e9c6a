"""Diversity caps on names and openers, the NER fallback, and the manifest metrics."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest

from sdf.config import DiversityConfig
from sdf.steps.diversity.caps import apply_caps, cap_features, cap_for, confirm_names, name_cap, opener
from sdf.steps.diversity.metrics import corpus_metrics as diversity_metrics
from sdf.steps.diversity.names import load_ner, name_candidates, person_names

SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vi", "no", "da", "pe"]
NAMES = ["".join(p).title() for p in itertools.product(SYLLABLES, repeat=3)]
FALLBACK = DiversityConfig(ner_fallback=True)


@dataclass(frozen=True)
class Genre:
    name: str
    fiction: bool
    min_words: int = 100
    max_words: int = 1000


GENRES = {"short_story": Genre("short_story", True), "essay": Genre("essay", False)}


SURNAMES = [n + "son" for n in NAMES]
POOL = [f"Pool{c}" for c in "abcdefghijklmnopqrstuvwxyz"]  # replacement given names, in the planner's order
SURNAME_POOL = [f"Kin{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


def story(i: int, name: str, genre: str = "short_story", surname: str | None = None, **extra: object) -> dict:
    surname = surname or SURNAMES[i % len(SURNAMES)]
    text = (f"Entry {i}. After the storm, {name} {surname} walked down to the harbour and counted the boats "
            f"that had come back, and then {name} wrote the number in {name}'s ledger.")
    return {"doc_id": f"doc{i:04d}", "text": text, "genre": genre, "section_id": "s1", **extra}


def test_cap_rule() -> None:
    cfg = DiversityConfig()  # share 1%, min_cap 2, min_docs 100
    assert cap_for(0.01, 99, cfg) is None
    assert cap_for(0.01, 100, cfg) == 2
    assert cap_for(0.01, 450, cfg) == 4
    assert cap_for(0.01, 10_000, cfg) == 100
    assert [name_cap(n, cfg) for n in (10, 150, 450, 10_000)] == [2, 2, 4, 100]  # names: at any size


def test_opener_is_the_first_words_normalised() -> None:
    assert opener("# In a World, Where...\n\nthe rest") == "in a world where"
    assert opener("Hi!", 4) == "hi"


def test_an_overused_name_is_renamed_in_every_form_and_its_document_kept(recwarn: pytest.WarningsRecorder) -> None:
    docs = [story(i, NAMES[i]) for i in range(190)] + [story(i, "Elara") for i in range(190, 200)]
    result = apply_caps(docs[::-1], GENRES, FALLBACK, POOL, SURNAME_POOL)  # input order must not matter
    assert result.caps == {"name": 2, "opener": 2}
    assert result.rejected == [] and len(result.kept) == 200
    with_elara = sorted(d["doc_id"] for d in result.kept if "Elara" in d["text"])
    assert with_elara == ["doc0190", "doc0191"]  # the first two by id keep the name
    renamed = {d["doc_id"]: d for d in result.kept if d.get("renamed")}
    assert sorted(renamed) == [f"doc{i:04d}" for i in range(192, 200)]
    new = [json.loads(d["renamed"])["Elara"] for d in renamed.values()]
    assert sorted(new) == POOL[:8]  # each an unused name from the pool, once
    doc = renamed["doc0192"]
    name = json.loads(doc["renamed"])["Elara"]
    assert f"{name} {SURNAMES[192]} walked" in doc["text"] and f"in {name}'s ledger" in doc["text"]
    assert result.counts["renamed"] == 8 and result.names["doc0192"] == [name]


def test_rename_keeps_the_best_documents_counts_every_genre_and_treats_surnames_alike(
        recwarn: pytest.WarningsRecorder) -> None:
    docs = [story(i, NAMES[i]) for i in range(190)]
    docs += [story(i, "Elara", quality_score=float(i % 7)) for i in range(190, 200)]
    docs += [story(i, NAMES[i], genre="essay", surname="Voss") for i in range(200, 210)]
    result = apply_caps(docs, GENRES, FALLBACK, POOL, SURNAME_POOL)
    kept_elara = sorted(d["doc_id"] for d in result.kept if "Elara" in d["text"])
    # quality i % 7 for i in 190..199 is 1,2,3,4,5,6,0,1,2,3: the two best are 195 (6) and 194 (5)
    assert kept_elara == ["doc0194", "doc0195"]
    voss = [d for d in result.kept if d["genre"] == "essay"]
    assert sum("Voss" in d["text"] for d in voss) == 2  # a non-fiction surname is capped too
    assert sorted(json.loads(d["renamed"])["Voss"] for d in voss if d.get("renamed")) == SURNAME_POOL[:8]
    assert result.rejected == []


def test_a_rename_that_is_not_safe_drops_the_document_with_a_reason(recwarn: pytest.WarningsRecorder) -> None:
    docs = [story(i, NAMES[i]) for i in range(190)]
    docs += [story(i, "Hope") | {"text": story(i, "Hope")["text"] + " There was hope yet."} for i in range(190, 194)]
    docs += [story(i, "Elara") for i in range(194, 200)]
    result = apply_caps(docs, GENRES, FALLBACK, POOL[:2], SURNAME_POOL)
    reasons = {r["doc_id"]: r["detail"] for r in result.rejected}
    assert {r["reason"] for r in result.rejected} == {"name_cap"}
    assert [d for d in reasons if "ordinary word" in reasons[d]] == ["doc0192", "doc0193"]
    # two Elaras keep it, two take the pool's two names, and the last two find the pool empty
    assert sorted(d for d in reasons if "no unused given name" in reasons[d]) == ["doc0198", "doc0199"]
    assert len(result.kept) == 196


def test_opener_cap_trims_a_stock_sentence_and_drops_the_rest(recwarn: pytest.WarningsRecorder) -> None:
    body = " ".join(f"Rivers carry silt number {k} to the sea." for k in range(12))
    docs = [{"doc_id": f"e{i:03d}", "genre": "essay", "section_id": "s", "text": f"Essay {i} is on rivers."}
            for i in range(282)]
    docs += [{"doc_id": f"w{i:03d}", "genre": "essay", "section_id": "s", "quality_score": i / 10,
              "text": f"In a world where rivers talk, essay {i} begins."} for i in range(12)]
    docs += [{"doc_id": f"s{i:03d}", "genre": "essay", "section_id": "s", "text": f"In a world like ours, water "
              f"matters. Essay {i} says so. {body}"} for i in range(6)]
    result = apply_caps(docs, GENRES, FALLBACK)
    assert result.caps["opener"] == 3  # max(2, floor(0.01 * 300))
    assert sorted(d["doc_id"] for d in result.kept if d["doc_id"].startswith("w")) == ["w009", "w010", "w011"]
    assert {r["reason"] for r in result.rejected} == {"opener_cap"}
    assert "'in a world where'" in result.rejected[0]["detail"] and "stock sentence" in result.rejected[0]["detail"]
    stock = [d for d in result.kept if d["doc_id"].startswith("s")]
    assert len(stock) == 6 and result.counts["opener_trimmed"] == 3  # over the cap: the stock sentence is cut
    assert sum(d["text"].startswith("Essay") for d in stock) == 3


def test_small_corpora_cap_names_but_not_openers(recwarn: pytest.WarningsRecorder) -> None:
    docs = [story(i, "Elara") | {"text": f"In a world where Elara Marlow ran {i} miles."} for i in range(60)]
    result = apply_caps(docs, GENRES, FALLBACK, [f"P{a}{b}" for a in "abcdefgh" for b in "abcdefgh"],
                        [f"K{a}{b}" for a in "abcdefgh" for b in "abcdefgh"])
    assert result.caps == {"name": 2, "opener": None}
    assert len(result.kept) == 60 and result.rejected == []
    assert sum("Elara" in d["text"] for d in result.kept) == 2 and sum("Marlow" in d["text"] for d in result.kept) == 2


def test_fallback_warns_and_still_finds_names() -> None:
    text = "The ship was quiet when Dr. Aris Thorne came aboard. That night, Maya Chen told Tomas the news."
    with pytest.warns(RuntimeWarning, match="heuristic"):
        (names,) = person_names([text], FALLBACK)
    assert names == ["Aris", "Maya", "Tomas"]


def test_statistical_ner_finds_people() -> None:
    _, why_fallback = load_ner("en_core_web_sm")
    if why_fallback:
        pytest.skip(why_fallback)
    text = ("Elara Voss had lived in the lighthouse for eleven years. When her brother Jonah arrived from "
            "Lisbon, she showed him the logbook and the lamp.")
    (names,) = person_names([text], DiversityConfig())
    assert "Elara" in names and "Lisbon" not in names


def test_name_candidates_are_capitalised_words_that_do_not_open_a_sentence() -> None:
    text = ("Maya Okafor had come to the harbour. Later, Maya said Dr. Smith and Tom Lee were late. "
            "The boats left for Lisbon.\n\nNobody argued with Maya after that.")
    given, surnames = name_candidates(text)
    assert given == {"Maya", "Smith", "Tom", "Lisbon"}  # candidates only: NER confirms the frequent ones
    assert surnames == {"Okafor", "Lee"}
    assert name_candidates("Later, nobody came. The end.") == (set(), set())


def ner_or_skip() -> None:
    _, why_fallback = load_ner("en_core_web_sm")
    if why_fallback:
        pytest.skip(why_fallback)


def test_ner_confirms_only_over_cap_candidates_on_a_bounded_sample() -> None:
    ner_or_skip()
    cfg = DiversityConfig(ner_sample=5)
    docs = [story(i, NAMES[i]) for i in range(150)]
    for i in range(150, 200):  # an unplanned favourite name and a place, both far above the cap of 2
        docs.append({"doc_id": f"doc{i:04d}", "genre": "short_story", "section_id": "s1",
                     "text": f"Entry {i}. After the storm, Elara {SURNAMES[i]} walked to the harbour. Then they sailed "
                             f"to Lisbon with the nets. It was Elara who first saw the lights of Lisbon."})
    docs += [story(i, "Orla", names=["Orla Fenn"]) for i in range(200, 204)]  # planned: known without NER
    texts = {d["doc_id"]: d["text"] for d in docs}
    read: list[set[str]] = []
    check = confirm_names(cap_features(docs, GENRES, cfg), cfg, lambda ids: read.append(ids) or texts)
    assert ("Elara" in check.table[160].names and SURNAMES[160] not in check.table[160].surnames
            and "Lisbon" not in check.table[160].names)  # a surname under the cap is not a suspect
    assert "Orla" in check.table[-1].names  # over the cap, planned, so no NER needed
    assert check.counts["ner_documents"] == len(read[0]) <= 5 * check.counts["name_suspects"]
    assert "Lisbon" in check.used  # replacements still avoid every candidate
    result = apply_caps(docs, GENRES, cfg, POOL + [f"Extra{c}" for c in "abcdefghijklmnopqrstuvwxyz"], SURNAME_POOL)
    assert len(result.kept) == len(docs)
    assert sum("Elara" in d["text"] for d in result.kept) == 2  # renamed in the 48 others
    assert sum("Lisbon" in d["text"] for d in result.kept) == 50  # a place: NER does not confirm it


def test_full_ner_mode_is_kept_for_audits() -> None:
    ner_or_skip()
    docs = [story(i, NAMES[i]) for i in range(190)] + [story(i, "Elara") for i in range(190, 200)]
    result = apply_caps(docs, GENRES, DiversityConfig(names="ner"), POOL, SURNAME_POOL)
    assert sorted(d["doc_id"] for d in result.kept if "Elara" in d["text"]) == ["doc0190", "doc0191"]
    with pytest.raises(ValueError, match="names"):
        DiversityConfig(names="spacy")


def test_metrics_for_the_manifest() -> None:
    varied = [{"doc_id": f"v{i}", "genre": "essay" if i % 4 else "short_story",
               "text": " ".join(f"{NAMES[(i * 37 + j) % len(NAMES)].lower()}" for j in range(60))}
              for i in range(40)]
    names = {"v0": ["Elara", "Jonah"], "v4": ["Elara"], "v8": ["Maya"]}
    m = diversity_metrics(varied, {"essay": 3.0, "short_story": 1.0, "poem": 1.0}, names=names)
    assert set(m) >= {"distinct_n", "compression_ratio", "self_repetition", "name_entropy", "top_names",
                      "top_openers", "genre_mix"}
    assert set(m["distinct_n"]) == {"1", "2", "3", "4"}
    assert all(0 < v <= 1 for v in m["distinct_n"].values())
    assert m["name_entropy"] == pytest.approx(1.5)  # documents per name 2, 1, 1
    assert m["top_names"][0] == ["Elara", 2]
    assert m["genre_mix"]["essay"] == {"target": 0.6, "actual": 0.75, "count": 30}
    assert m["genre_mix"]["poem"] == {"target": 0.2, "actual": 0.0, "count": 0}

    repeated = [dict(d, text=varied[0]["text"]) for d in varied]
    r = diversity_metrics(repeated, {}, names={})
    assert r["self_repetition"] == 1.0 and m["self_repetition"] < r["self_repetition"]
    assert r["compression_ratio"] > m["compression_ratio"]
    assert r["distinct_n"]["4"] < m["distinct_n"]["4"]
    assert r["top_openers"][0][1] == 40
    assert r["genre_mix"]["essay"]["target"] is None


def test_metrics_of_an_empty_or_tiny_corpus() -> None:
    one = {"doc_id": "a", "genre": "essay", "text": "Hi"}
    for docs in ([], [{**one, "text": ""}], [one]):
        m = diversity_metrics(docs, {"essay": 1.0})
        assert m["documents"] == len(docs) and m["self_repetition"] is None


def test_metrics_sample_is_deterministic_and_bounded() -> None:
    docs = [{"doc_id": f"d{i}", "genre": "essay", "text": f"word{i} " * 5 + NAMES[i]} for i in range(50)]
    cfg = DiversityConfig(metrics_sample=10)
    a = diversity_metrics(docs, {}, names={}, cfg=cfg)
    b = diversity_metrics(docs[::-1], {}, names={}, cfg=cfg)
    assert a == b
    assert (a["documents"], a["sample_documents"]) == (50, 10)
