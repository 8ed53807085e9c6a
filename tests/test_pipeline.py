"""Pipeline stages in-process against the fake server: envelope, truncation, estimates, ideas, judge."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, ROOT, TEST_KEY
from fake_anthropic import FakeAnthropic, Faults, document_genre, last_user_text, synthetic_reply

from sdf.config import load_settings
from sdf.llm.anthropic import AnthropicBackend
from sdf.products.context import create_run
from sdf.products.documents import (
    dedup_stage,
    extract_stage,
    filter_stage,
    generate_stage,
    plan_stage,
    usage_estimate,
)

DEFECTS = ROOT / "tests" / "data" / "defects"


def make_run(tmp_path: Path, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch,
             constitution: Path = FIXTURE_CONSTITUTION,
             **overrides):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    base = {"run.seed": 3, "plan.docs": 12, "llm.model": "claude-haiku-4-5", "llm.backoff_base_s": 0.01,
            "llm.backoff_max_s": 0.02, "llm.poll_interval_s": 0.01, "llm.max_tokens": 8192,
            "llm.truncation_retry_max_tokens": 16384, "run.variables": {"model_name": "Orin"},
            "plan.brainstorm": False, "plan.expand_pools": False}  # one request per spec; see the ideas test
    settings = load_settings(None, {**base, **overrides})
    run = create_run(settings, constitution, tmp_path / "run")
    plan_stage(run)
    return run, AnthropicBackend.from_env(settings.llm)


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_envelope_strips_preambles_and_signoffs(fake, tmp_path, monkeypatch) -> None:
    run, backend = make_run(tmp_path, fake, monkeypatch, **{"plan.docs": 20})
    generate_stage(run, backend, progress=False)
    extract_stage(run)
    raw = [r["response_text"] for r in run.ledger().rows("generate")]
    assert any(not t.startswith("<document>") for t in raw)  # the fake did add preambles
    for doc in rows(run.dir.documents):
        assert not re.match(r"(here is|certainly|sure)", doc["text"], re.IGNORECASE)
        assert "<document>" not in doc["text"] and "Let me know" not in doc["text"]


def test_truncation_is_retried_once_with_a_larger_limit(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(script=["truncate", "ok", "ok", "truncate", "truncate"])) as fake:
        run, backend = make_run(tmp_path, fake, monkeypatch, **{"plan.docs": 4, "llm.concurrency": 1})
        summary = generate_stage(run, backend, progress=False)
        extracted = extract_stage(run)
    ledger = run.ledger()
    by_spec = Counter(r["spec_id"] for r in ledger.rows("generate"))
    assert sorted(by_spec.values()) == [1, 1, 2, 2]  # two specs needed a second, larger request
    limits = Counter(json.loads(r["params"])["max_tokens"] for r in ledger.rows("generate"))
    assert limits == {8192: 4, 16384: 2}
    rejected = run.dir.read_rejects().to_pylist()
    assert extracted == {"specs": 4, "documents": 3, "no_answer": 0}
    assert [(r["stage"], r["reason"]) for r in rejected] == [("generate", "max_tokens")]
    assert summary.succeeded == 6


def test_answers_without_an_envelope_are_salvaged_and_unclosed_ones_rejected(tmp_path, monkeypatch) -> None:
    def responder(params: dict) -> str:
        if document_genre(params) == "essay":
            return "I would rather not."
        if document_genre(params) == "faq":
            return "<document>\nQ: Is this cut short?\nA: It is"
        return synthetic_reply(params)

    with FakeAnthropic(responder=responder) as fake:
        run, backend = make_run(tmp_path, fake, monkeypatch,
                                **{"plan.docs": 12, "plan.genres": ["essay", "faq", "letter"]})
        generate_stage(run, backend, progress=False)
        extract_stage(run)
    specs = rows(run.dir.specs)
    rejected = {r["doc_id"]: r for r in run.dir.read_rejects().to_pylist()}
    documents = {d["doc_id"]: d for d in rows(run.dir.documents)}
    for spec in specs:
        if spec["genre"] == "faq":  # an opening tag that is never closed: truncation, rejected as before
            assert rejected[spec["spec_id"]]["reason"] == "missing_envelope"
            assert "never closed" in rejected[spec["spec_id"]]["detail"]
        else:  # paid for and finished: kept whole, flagged, and left to the filters
            doc = documents[spec["spec_id"]]
            assert doc["envelope_missing"] == (spec["genre"] == "essay")
            if spec["genre"] == "essay":
                assert doc["text"] == "I would rather not."
    assert set(documents) | set(rejected) == {s["spec_id"] for s in specs}


def test_plan_estimate_is_within_25_percent_of_actual_usage(fake, tmp_path, monkeypatch) -> None:
    run, backend = make_run(tmp_path, fake, monkeypatch, constitution=ROOT / "constitutions" / "claude.md",
                            **{"plan.docs": 40, "llm.concurrency": 4})
    estimate = usage_estimate(run, rows(run.dir.specs))
    generate_stage(run, backend, progress=False)
    actual = run.ledger().totals()
    for key in ("output_tokens", "cache_read_tokens"):
        assert actual[key] == pytest.approx(estimate[key], rel=0.25), key
    prompt_actual = actual["input_tokens"] + actual["cache_creation_tokens"] + actual["cache_read_tokens"]
    prompt_estimate = estimate["input_tokens"] + estimate["cache_creation_tokens"] + estimate["cache_read_tokens"]
    assert prompt_actual == pytest.approx(prompt_estimate, rel=0.25)
    assert actual["cost_usd"] == pytest.approx(estimate["cost_usd"], rel=0.25)


def test_rerun_over_a_complete_ledger_is_byte_identical_and_free(fake, tmp_path, monkeypatch) -> None:
    run, backend = make_run(tmp_path, fake, monkeypatch, **{"plan.docs": 8})
    generate_stage(run, backend, progress=False)
    extract_stage(run)
    first = run.dir.documents.read_bytes()
    sent = len(fake.log)
    summary = generate_stage(run, backend, progress=False)
    extract_stage(run)
    assert summary.already_done == 8 and summary.succeeded == 0 and len(fake.log) == sent
    assert run.dir.documents.read_bytes() == first


def test_pools_and_ideas_are_cached_and_feed_the_document_prompts(fake, tmp_path, monkeypatch) -> None:
    run, backend = make_run(tmp_path, fake, monkeypatch, **{"plan.docs": 10, "plan.brainstorm": True,
                                                            "plan.expand_pools": True, "plan.ideas_per_request": 4})
    generate_stage(run, backend, progress=False)
    specs = rows(run.dir.specs)
    assert all(s["idea"] for s in specs)
    ledger = run.ledger()
    ideas = ledger.rows("ideas")
    assert len(ideas) == 3  # 10 specs, 4 briefs a request: the last one also asks for the 2 specs beyond the plan
    assert all(len(re.findall(r"^Brief \d+$", r["prompt"], re.MULTILINE)) == 4 for r in ideas)
    expanded = {r["prompt"] for r in ledger.rows("expand")}
    assert expanded and all("Task: extend a list." in p for p in expanded)
    # the dealt narrators come from the extended lists, not only the seeds
    seeds = {i for kind in run.catalog.pools["narrators"].kinds.values() for i in kind.items}
    assert any(s["persona"] not in seeds for s in specs)
    for spec in specs:
        (document,) = [r for r in ledger.rows("generate") if r["spec_id"] == spec["spec_id"]]
        assert spec["idea"] in document["prompt"] and spec["persona"] in document["prompt"]
    sent = len(fake.log)
    generate_stage(run, backend, progress=False)
    assert len(fake.log) == sent and rows(run.dir.specs) == specs


def test_judge_scores_are_kept_and_low_scores_rejected(fake, tmp_path, monkeypatch) -> None:
    run, backend = make_run(tmp_path, fake, monkeypatch, **{"plan.docs": 16, "judge.enabled": True,
                                                            "judge.min_score": 4})
    generate_stage(run, backend, progress=False)
    extract_stage(run)
    counts = filter_stage(run, backend, progress=False)
    filtered = rows(run.dir.filtered)
    judged_out = [r for r in run.dir.read_rejects().to_pylist() if r["stage"] == "judge"]
    assert counts["after_judge"] == len(filtered) and filtered and judged_out
    assert all(d["judge_score"] >= 4 and d["quality_score"] == d["judge_score"] for d in filtered)
    assert all(r["reason"] == "judge_low" for r in judged_out)
    assert run.ledger().counts("judge") == {"ok": counts["after_quality"]}


# -- a model that answers with every known defect -------------------------------------------------

NEAR_DUP_BASE = synthetic_reply(
    {"model": "x", "messages": [{"role": "user", "content": "Target length: about 900 words"}]}
)


def defect_kind(prompt: str) -> str:
    roll = random.Random(prompt).random()
    if roll < 0.25:
        return "defect"
    if roll < 0.35:
        return "refusal"
    if roll < 0.50:
        return "near_duplicate"
    story = "Commission: Short story of an admirable AI," in prompt
    return "favourite_name" if story and roll < 0.8 else "clean"


def defect_responder(params: dict) -> str:
    """Clean documents, each defect from tests/data/defects, planted near-duplicates and a favourite name."""
    prompt = last_user_text(params)
    rng = random.Random(prompt + "/content")
    kind = defect_kind(prompt)
    if kind == "defect":
        defect = rng.choice(sorted(p for p in DEFECTS.glob("*.txt") if not p.name.startswith("keep")))
        return f"<document>\n{defect.read_text()}\n</document>"
    if kind == "refusal":
        return "I can't help with writing this document."
    if kind == "near_duplicate":
        words = NEAR_DUP_BASE.split(" ")
        for _ in range(3):  # a few words changed: 5-shingle Jaccard stays far above 0.8
            words[rng.randrange(5, len(words) - 5)] = rng.choice(["lantern", "harbour", "ledger"])
        return " ".join(words)
    text = synthetic_reply(params)
    if kind == "favourite_name":
        text = text.replace(". ", ". Elara Voss looked up from the ledger. ", 1)  # mid-text, not the opener
    return text


def word_jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y)


def test_a_model_answering_with_every_defect_leaves_a_clean_corpus(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(responder=defect_responder) as fake:
        run, backend = make_run(tmp_path, fake, monkeypatch, constitution=ROOT / "constitutions" / "claude.md",
                                **{"plan.docs": 160, "llm.concurrency": 8, "diversity.min_docs": 10,
                                   "diversity.name_share": 0.05, "diversity.min_cap": 1,
                                   # a cap of one per opener would drop clean documents by chance: the
                                   # fake has ~30 openers; opener caps are pinned in test_diversity.py
                                   "diversity.opener_share": 1.0,
                                   "plan.genre_weights": {"admirable_ai_story": 6.0}})
        generate_stage(run, backend, progress=False)
        extract_stage(run)
        filter_stage(run, None, progress=False)
        metrics = dedup_stage(run)
    corpus = {d["doc_id"]: d for d in rows(run.dir.corpus)}
    rejected = run.dir.read_rejects().to_pylist()
    kinds = {r["spec_id"]: defect_kind(r["prompt"]) for r in run.ledger().rows("generate")}
    assert set(kinds.values()) == {"defect", "refusal", "near_duplicate", "favourite_name", "clean"}
    # every spec is either in the corpus or explained in rejected.parquet
    assert set(corpus) | {r["doc_id"] for r in rejected} == set(kinds)
    assert all(r["reason"] and r["stage"] for r in rejected)
    # no defect survives
    assert not [i for i in corpus if kinds[i] in ("defect", "refusal")]
    # at most one member of the near-duplicate cluster remains
    assert sum(word_jaccard(d["text"], NEAR_DUP_BASE) > 0.8 for d in corpus.values()) <= 1
    # no name exceeds its cap, and the documents that overused it are kept, renamed
    cap = metrics["caps"]["name"]
    assert cap is not None and sum("Elara" in d["text"] for d in corpus.values()) <= cap
    renamed = [d for d in corpus.values() if d["renamed"] and "Elara" in json.loads(d["renamed"])]
    assert renamed and all(kinds[d["doc_id"]] == "favourite_name" for d in renamed)
    reasons = Counter(r["reason"] for r in rejected)
    assert reasons["near_duplicate"] + reasons["exact_duplicate"] >= 1
    # refusals come without an envelope: kept whole at extraction, flagged, then dropped by the filters
    documents = {d["doc_id"]: d for d in rows(run.dir.documents)}
    refusals = [i for i, k in kinds.items() if k == "refusal"]
    assert refusals and all(documents[i]["envelope_missing"] for i in refusals)
    assert {r["stage"] for r in rejected if r["doc_id"] in refusals} == {"quality"}
    # paid-but-discarded: the share of the run's cost whose documents were dropped, by stage and reason
    from sdf.report.stats import compute_stats, load_run

    stats = compute_stats(load_run(run.dir.path))
    rej, total = stats["rejections"], stats["cost"]["total"]["cost_usd"]
    dropped_cost = sum(r["cost_usd"] or 0.0 for r in rejected)
    # (the planted defects are short fixed texts, so their share of the cost is below their share of specs)
    assert rej["paid_usd"] == pytest.approx(dropped_cost, abs=1e-6) and 0.15 < rej["paid_share"] < 0.7
    assert rej["paid_share"] == pytest.approx(dropped_cost / total, abs=1e-5)
    assert sum(r["paid_usd"] for r in rej["by_reason"]) == pytest.approx(rej["paid_usd"], abs=1e-5)
    assert {r["stage"] for r in rej["by_stage"]} >= {"quality", "dedup"}
    assert stats["run"]["envelope_missing"] == len(refusals) and stats["run"]["renamed_in_corpus"] >= len(renamed)
    # NER read only a sample of the documents that use a candidate above the cap, and the report says how many
    assert stats["run"]["ner_documents"] == metrics["caps"]["ner_documents"] < len(corpus) / 2
    # at least 95% of clean, distinct documents are kept
    clean = [i for i, k in kinds.items() if k == "clean"]
    # no clean document is dropped by the caps (renamed instead); the quality filter's repetition rule
    # takes a few of the fake's longer synthetic documents (5 of 69 with the prefix-stable plan)
    assert not [r for r in rejected if r["doc_id"] in clean and r["stage"] == "diversity"]
    assert sum(i in corpus for i in clean) >= 0.9 * len(clean)
