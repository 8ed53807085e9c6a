"""Spend (issue #12): never pay twice for the same document, never throw away what was paid for.

Real `sdf` subprocesses talk through the real SDK to the local fake API, whose log says what was sent.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from conftest import FIXTURE_CONSTITUTION, fast_config, run_sdf, sdf_env
from fake_anthropic import FakeAnthropic, document_genre, synthetic_reply

from sdf.config import Price


def build(tmp_path: Path, fake: FakeAnthropic, config: Path, *args: str) -> Any:
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                     tmp_path / "corpus", "--name", "run", "--no-progress", *args, cwd=tmp_path,
                     env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    return result


def sent(fake: FakeAnthropic, since: int = 0) -> int:
    """Generation requests the fake answered (messages calls and batch members) after log entry `since`."""
    return sum(1 for e in fake.log[since:] if e["ok"] and e["hash"] is not None)


def ledger_rows(tmp_path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(tmp_path / "corpus" / "run" / "store.sqlite")
    db.row_factory = sqlite3.Row
    return db.execute("SELECT * FROM requests WHERE purpose = 'generate'").fetchall()


def test_a_grown_build_sends_only_the_new_requests(tmp_path: Path, fake: FakeAnthropic) -> None:
    build(tmp_path, fake, fast_config(tmp_path, docs=8))
    first = pq.read_table(tmp_path / "corpus" / "run" / "specs.parquet").to_pylist()
    assert sent(fake) == 8
    mark = len(fake.log)
    out = build(tmp_path, fake, fast_config(tmp_path, docs=16)).stdout
    assert sent(fake, mark) == 8  # the second half only
    assert "8 already in the ledger" in out
    grown = pq.read_table(tmp_path / "corpus" / "run" / "specs.parquet").to_pylist()
    assert grown[:8] == first


def test_a_changed_pack_setting_or_a_larger_limit_sends_nothing(tmp_path: Path, fake: FakeAnthropic) -> None:
    build(tmp_path, fake, fast_config(tmp_path, docs=6))
    mark = len(fake.log)
    repacked = fast_config(tmp_path, docs=6, extra="[dedup]\nthreshold = 0.7\n").read_text()
    (tmp_path / "sdf.toml").write_text(repacked.replace("seq_len = 256", "seq_len = 128"))
    build(tmp_path, fake, tmp_path / "sdf.toml")
    assert sent(fake, mark) == 0
    # answers that ended with end_turn under 8192 tokens are the answers a limit of 16000 gives, or any
    # smaller limit that still holds the longest of them
    longest = max(r["output_tokens"] for r in ledger_rows(tmp_path))
    for limit in (16000, longest + 8):
        out = build(tmp_path, fake, fast_config(tmp_path, docs=6, max_tokens=limit)).stdout
        assert sent(fake, mark) == 0, out
    rows = ledger_rows(tmp_path)
    reused = [r for r in rows if r["reused_from"]]
    assert len(reused) == 12 and all(r["cost_usd"] == 0 and r["mode"] == "reused" for r in reused)
    # an answer longer than a new limit of 20 would have been cut: it is sent again, and cut; its
    # truncation retry (16384) is answered by the old answer, which fits; paying again needs --yes
    build(tmp_path, fake, fast_config(tmp_path, docs=6, max_tokens=20), "--yes")
    assert sent(fake, mark) == 6


def test_batch_bodies_cache_the_prefix_for_an_hour_and_the_ledger_says_so(tmp_path: Path) -> None:
    controls: list[dict] = []

    def responder(params: dict) -> str:
        controls.append(params["system"][0]["cache_control"])
        return synthetic_reply(params)

    with FakeAnthropic(responder=responder) as fake:
        build(tmp_path, fake, fast_config(tmp_path, docs=5), "--batch")
        assert controls and all(c == {"type": "ephemeral", "ttl": "1h"} for c in controls)
        rows = ledger_rows(tmp_path)
        assert {r["cache_ttl"] for r in rows} == {"1h"} and {r["mode"] for r in rows} == {"batch"}
        writes = [r for r in rows if r["cache_creation_tokens"]]
        assert writes and all(r["cache_creation_1h_tokens"] == r["cache_creation_tokens"] for r in writes)
        price = Price(1.0, 5.0)  # claude-haiku-4-5
        for r in writes:
            expected = price.cost(r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"],
                                  r["cache_read_tokens"], batch=True, cache_write_1h=r["cache_creation_tokens"])
            assert r["cost_usd"] == expected
        controls.clear()
        (tmp_path / "messages").mkdir()
        build(tmp_path / "messages", fake, fast_config(tmp_path / "messages", docs=2))
        assert controls == [{"type": "ephemeral", "ttl": "5m"}] * 2  # messages mode keeps the 5-minute cache


def test_plan_prices_cache_writes_at_the_ttl_rule() -> None:
    price = Price(1.0, 5.0)
    assert price.cost(0, 0, cache_write=1_000_000) == 1.25
    assert price.cost(0, 0, cache_write=1_000_000, cache_write_1h=1_000_000) == 2.0
    assert price.cost(0, 0, cache_write=1_000_000, cache_write_1h=1_000_000, batch=True) == 1.0


def test_sdf_plan_on_a_built_run_shows_what_is_paid_and_what_the_increment_costs(
        tmp_path: Path, fake: FakeAnthropic) -> None:
    build(tmp_path, fake, fast_config(tmp_path, docs=6))
    result = run_sdf("plan", "--constitution", FIXTURE_CONSTITUTION, "--config", fast_config(tmp_path, docs=10),
                     "--out", tmp_path / "corpus", "--name", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("already paid"))
    assert line.startswith("already paid: 6 of 10 document requests")
    assert "increment: 4 requests" in result.stdout
    assert sent(fake) == 6  # planning sends nothing


def _counts(rows: list[dict], key: str) -> Counter:
    return Counter(r[key] for r in rows)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_an_answer_without_the_envelope_is_kept_and_counted(tmp_path: Path) -> None:
    def responder(params: dict) -> str:
        reply = synthetic_reply(params)
        if document_genre(params) != "essay":
            return reply
        body = reply.split("<document>")[1].split("</document>")[0].strip()
        return body  # a clean document, only without its envelope

    with FakeAnthropic(responder=responder) as fake:
        build(tmp_path, fake, fast_config(tmp_path, docs=12),
              "--genre", "essay", "--genre", "letter")
    run = tmp_path / "corpus" / "run"
    documents = pq.read_table(run / "documents.parquet").to_pylist()
    essays = [d for d in documents if d["genre"] == "essay"]
    assert essays and all(d["envelope_missing"] for d in essays)
    assert not any(d["envelope_missing"] for d in documents if d["genre"] != "essay")
    corpus = pq.read_table(run / "corpus.parquet").to_pylist()
    assert any(d["envelope_missing"] for d in corpus)  # the filters found nothing wrong with them
    stats = _json(run / "stats.json")
    assert stats["run"]["envelope_missing"] == len(essays)


def test_a_model_that_collapses_onto_one_name_gets_it_renamed_not_dropped(tmp_path: Path) -> None:
    def responder(params: dict) -> str:
        reply = synthetic_reply(params)
        # every document brings in the same invented protagonist after its first sentence, in three forms
        return reply.replace(". ", ". Elara Voss had kept the harbour ledger for years; Elara's habit was to "
                             "read it twice. ", 1)

    with FakeAnthropic(responder=responder) as fake:
        build(tmp_path, fake, fast_config(tmp_path, docs=150))
    run = tmp_path / "corpus" / "run"
    corpus = pq.read_table(run / "corpus.parquet").to_pylist()
    rejected = pq.read_table(run / "rejected" / "diversity.parquet").to_pylist() \
        if (run / "rejected" / "diversity.parquet").exists() else []
    with_name = [d for d in corpus if "Elara" in d["text"]]
    assert len(with_name) <= 0.02 * len(corpus)
    renamed = [d for d in corpus if d["renamed"] and "Elara" in json.loads(d["renamed"])]
    assert len(renamed) >= 0.9 * len(corpus) - len(with_name)  # kept, with another name
    sample = renamed[0]
    new = json.loads(sample["renamed"])["Elara"]
    assert f"{new}'s habit" in sample["text"] and "Elara" not in sample["text"]
    new_names = Counter(json.loads(d["renamed"])["Elara"] for d in renamed)
    assert max(new_names.values()) == 1  # each replacement is a name no other document used
    assert not [r for r in rejected if r["reason"] == "name_cap"]
    assert sum("Voss" in d["text"] for d in corpus) <= max(2, 0.01 * len(corpus))  # the surname too
