"""`sdf build` through the CLI, as a subprocess, against the fake Anthropic server."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, TEST_KEY, fast_config, run_sdf, sdf_env, start_sdf
from fake_anthropic import FakeAnthropic, Faults, content_hash

from sdf.run import RunDir

RUN_FILES = ["config.toml", "sections.jsonl", "specs.parquet", "store.sqlite", "documents.parquet",
             "rejected/generate.parquet", "corpus.parquet", "shards/manifest.json", "report.html"]


def build(tmp_path: Path, base_url: str | None, *extra: str, docs: int = 12, config_extra: str = "",
          name: str = "run", key: str | None = TEST_KEY):
    config = fast_config(tmp_path, docs=docs, extra=config_extra)
    return run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                   "--name", name, *extra, cwd=tmp_path, env=sdf_env(base_url, key))


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_build_produces_the_whole_run_directory(fake, tmp_path: Path) -> None:
    result = build(tmp_path, fake.base_url)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "corpus" / "run"
    for name in RUN_FILES:
        assert (run / name).exists(), name
    corpus = pq.read_table(run / "corpus.parquet")
    assert {"doc_id", "text", "genre", "section_id"} <= set(corpus.column_names)
    assert corpus.num_rows > 0
    assert {"doc_id", "stage", "reason"} <= set(RunDir(run).read_rejects().schema.names)
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["documents"] == corpus.num_rows and manifest["tokens"] > 0
    for text in (corpus.column("text").to_pylist()):
        assert "<document>" not in text and not text.lower().startswith("here is")
    specs = table(run / "specs.parquet")
    documents = {d["doc_id"] for d in table(run / "documents.parquet")}
    failed = {r["doc_id"] for r in RunDir(run).read_rejects().to_pylist() if r["stage"] == "generate"}
    assert documents | failed == {s["spec_id"] for s in specs}  # every spec is accounted for
    assert "cost:" in result.stdout and "cached share" in result.stdout
    for path in run.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes(), path
    assert TEST_KEY not in result.stdout + result.stderr
    # the default formats are the ones trainers read as they are; a clean end leaves no WAL files
    assert manifest["formats"] == ["megatron", "hf"] and (run / "shards" / "READERS.md").is_file()
    assert not (run / "store.sqlite-wal").exists() and not (run / "store.sqlite-shm").exists()
    assert "warning: tokenizer" not in result.stderr  # the fixture's tokenizer.json is the model's own


def test_a_tiktoken_tokenizer_is_warned_about_in_the_summary_and_the_report(fake, tmp_path: Path) -> None:
    result = build(tmp_path, fake.base_url, "--tokenizer", "cl100k_base", docs=3)
    assert result.returncode == 0, result.stderr
    assert "warning: tokenizer cl100k_base is a tiktoken encoding" in result.stderr
    assert "--tokenizer" in result.stderr.split("warning: tokenizer cl100k_base")[1]
    report = (tmp_path / "corpus" / "run" / "report.html").read_text()
    assert "tokenizer cl100k_base is a tiktoken encoding" in report


def test_plan_and_dry_run_call_no_api(tmp_path: Path) -> None:
    config = fast_config(tmp_path, docs=30)
    env = sdf_env(base_url="http://127.0.0.1:9", key=None)  # nothing listens there, and there is no key
    plan = run_sdf("plan", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "p",
                   cwd=tmp_path, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "estimated cost with claude-haiku-4-5 (documents): $" in plan.stdout
    assert "genre" in plan.stdout and "section" in plan.stdout
    extras = run_sdf("plan", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "p",
                     "--judge", "--brainstorm", cwd=tmp_path, env=env)
    assert "+ ideas: 4 requests" in extras.stdout and "+ judge: 30 requests" in extras.stdout
    assert "(documents + ideas + judge)" in extras.stdout
    dry = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "d",
                  "--dry-run", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout
    run = tmp_path / "d" / "fixture_constitution"
    assert (run / "specs.parquet").exists() and not (run / "store.sqlite").exists()


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", [], "is empty"),
        ("binary", [], "binary"),
        ("latin1", [], "not valid UTF-8"),
        ("config", [], "unknown key [plan].docz"),
        ("ok", ["--genre", "sonnet"], "unknown genre 'sonnet'"),
        ("ok", ["--tokenizer", "/no/such/tokenizer.json"], "tokenizer"),
        ("ok", ["--docs", "0"], "docs"),
        ("nokey", [], "ANTHROPIC_API_KEY is not set"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, setup: str, args: list[str],
                                                          message: str) -> None:
    constitution = tmp_path / "c.md"
    constitution.write_bytes({"empty": b"", "binary": b"\x00\x01\x02PK\x03\x04", "latin1": b"caf\xe9"}.get(
        setup, FIXTURE_CONSTITUTION.read_bytes()))
    config = fast_config(tmp_path, extra="")
    if setup == "config":
        config.write_text("[plan]\ndocz = 3\n")
    key = None if setup == "nokey" else TEST_KEY
    result = run_sdf("build", "--constitution", constitution, "--config", config, "--out", tmp_path / "out", *args,
                     cwd=tmp_path, env=sdf_env("http://127.0.0.1:9", key))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def ledger_snapshot(db_path: Path) -> dict[str, str]:
    """Fake-server content hashes of the requests the ledger holds as answered."""
    db = sqlite3.connect(db_path)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'requests'").fetchone() is None:
            return {}  # killed while the ledger was being created: nothing recorded yet
        rows = db.execute(
            "SELECT r.model, r.params, r.prompt, p.text FROM requests r JOIN prefixes p ON p.hash = r.prefix_hash"
            " WHERE r.status = 'ok'"
        ).fetchall()
    finally:
        db.close()
    hashes = {}
    for model, params, prompt, system in rows:
        body = {"model": model, **json.loads(params),
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": prompt}]}
        hashes[content_hash(body)] = prompt
    return hashes


def answered_after(fake: FakeAnthropic, start: int) -> Counter:
    from fake_anthropic import successful_hashes

    return successful_hashes(fake.log[start:])


def corpus_of(run: Path) -> list[tuple[str, str]]:
    return sorted((r["doc_id"], r["text"]) for r in table(run / "corpus.parquet"))


@pytest.mark.parametrize("mode", ["messages", "batch"])
def test_repeated_sigkill_then_resume_never_pays_twice(tmp_path: Path, mode: str) -> None:
    docs = 24
    extra = ["--batch"] if mode == "batch" else []
    faults = Faults(latency_s=0.1, server_error=0.1, rate_limit=0.1, max_failures_per_request=2, seed=1,
                    batch_polls_before_end=15, batch_errored=0.1, batch_expired=0.1)
    rng = random.Random(42)
    with FakeAnthropic(faults=faults) as fake:
        config = fast_config(tmp_path, docs=docs)
        args = ["build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                "--name", "killed", *extra]
        run = tmp_path / "corpus" / "killed"
        kills = 0
        for _ in range(4):
            proc = start_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
            time.sleep(rng.uniform(0.6, 2.0))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            recorded = ledger_snapshot(run / "store.sqlite") if (run / "store.sqlite").exists() else {}
            # Nothing recorded before this kill may be answered again by any later run.
            later_start = len(fake.log)
            resume = start_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
            time.sleep(rng.uniform(0.3, 1.0))
            if resume.poll() is None:
                resume.send_signal(signal.SIGKILL)
                kills += 1
            resume.wait()
            again = answered_after(fake, later_start)
            assert not set(again) & set(recorded), "a recorded response was requested again"
        final = run_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
        assert final.returncode == 0, final.stderr
        assert kills >= 2
        totals = Counter(fake.successful_message_hashes().values())
        specs = {s["spec_id"] for s in table(run / "specs.parquet")}
        documents = {d["doc_id"] for d in table(run / "documents.parquet")}
        failed = {r["doc_id"] for r in RunDir(run).read_rejects().to_pylist() if r["stage"] == "generate"}
        assert documents | failed == specs
        if mode == "batch":
            # a batch in flight at a kill is re-attached, so no request is ever answered twice
            assert set(totals) == {1}, totals

    with FakeAnthropic(faults=Faults(seed=1)) as clean:
        (tmp_path / "clean").mkdir()
        config = fast_config(tmp_path / "clean", docs=docs)
        result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                         tmp_path / "corpus", "--name", "clean", *extra, cwd=tmp_path, env=sdf_env(clean.base_url))
        assert result.returncode == 0, result.stderr
    assert corpus_of(run) == corpus_of(tmp_path / "corpus" / "clean")


def test_ctrl_c_exits_130_and_a_rerun_finishes_without_paying_twice(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(latency_s=0.2)) as fake:
        config = fast_config(tmp_path, docs=20)
        args = ["build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                "--name", "ctrlc"]
        run = tmp_path / "corpus" / "ctrlc"
        proc = start_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ledger_snapshot_safe(run):  # wait for the first answers
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        recorded = ledger_snapshot(run / "store.sqlite")
        assert 0 < len(recorded) < 20
        start = len(fake.log)
        final = run_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
        assert final.returncode == 0, final.stderr
        assert not set(answered_after(fake, start)) & set(recorded)
        assert f"{len(recorded)} already in the ledger" in final.stdout


def ledger_snapshot_safe(run: Path) -> dict[str, str]:
    if not (run / "store.sqlite").exists():
        return {}
    try:
        return ledger_snapshot(run / "store.sqlite")
    except sqlite3.Error:
        return {}


def test_an_api_that_keeps_failing_stops_the_build_cleanly_and_a_rerun_recovers(tmp_path: Path) -> None:
    with FakeAnthropic(faults=Faults(server_error=1.0)) as fake:
        config = fast_config(tmp_path, docs=10, llm_extra="max_retries = 1\nmax_consecutive_failures = 3")
        args = ["build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                "--name", "down"]
        down = run_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
        assert down.returncode == 3, down.stderr
        assert ("stopped early: 10 of 10 specs have no answer yet (every request failed: the API failed 3 requests "
                "in a row") in down.stderr and "Traceback" not in down.stderr
        assert len(down.stderr.strip().splitlines()[-1:]) == 1 and "rerun the same command" in down.stderr
        assert "pack: skipped" in down.stdout
        run = tmp_path / "corpus" / "down"
        assert (run / "report.html").exists() and not (run / "shards" / "manifest.json").exists()
        assert {r["reason"] for r in RunDir(run).read_rejects().to_pylist()} <= {"api_error", "not_generated"}
        fake.set_faults(Faults())
        up = run_sdf(*args, cwd=tmp_path, env=sdf_env(fake.base_url))
        assert up.returncode == 0, up.stderr
        assert len(table(run / "corpus.parquet")) > 0 and (run / "shards" / "manifest.json").exists()
