"""The executor streams artifacts through steps; a record step runs unchanged under datasets.map."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from conftest import ROOT

from sdf.config import QualityConfig
from sdf.executors.local import columnar, run_steps
from sdf.run import DOCUMENT_SCHEMA, FILTERED_SCHEMA, RunDir, write_rows
from sdf.source.catalog import load_catalog
from sdf.steps.filters.quality import QualityFilter

WORDS = ["river", "harbour", "lantern", "ledger", "orchard", "promise", "honest", "careful", "neighbour",
         "question", "patient", "stubborn", "quiet", "evidence", "reason", "kindness", "trust", "doubt",
         "letter", "morning"]


def documents(n: int, seed: int = 5) -> list[dict]:
    """Essays of ~600 plain words, with every fifth one a placeholder-ridden defect."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(50)]
        text = " ".join(sentences)
        if i % 5 == 0:
            text = "[INSERT NAME HERE] wrote this. " + text
        docs.append({"doc_id": f"d{i:04d}", "genre": "essay", "section_id": "s1", "text": text,
                     "stop_reason": "end_turn", "cost_usd": 0.01})
    return docs


def quality_step() -> QualityFilter:
    # the random word salad is not English prose, so the stopword rule stays out of this test
    return QualityFilter(load_catalog(ROOT / "prompts").genres, QualityConfig(skip_rules=["language", "slop"]))


def test_run_steps_writes_kept_rows_and_each_stages_rejects(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    write_rows(rd.documents, documents(1200), DOCUMENT_SCHEMA)
    counts = run_steps(rd, rd.documents, rd.filtered, FILTERED_SCHEMA, [quality_step()], batch_rows=256)
    kept = pq.read_table(rd.filtered).to_pylist()
    rejected = rd.read_rejects().to_pylist()
    assert len(kept) == 960 and len(rejected) == 240
    assert {r["reason"] for r in rejected} == {"placeholder"} and all(r["cost_usd"] == 0.01 for r in rejected)
    assert counts.as_dict() == {"quality": {"input": 1200, "kept": 960, "dropped": {"placeholder": 240}}}
    assert all(d["quality_score"] is not None for d in kept)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_a_record_step_runs_unchanged_under_datasets_map_with_two_processes() -> None:
    from datasets import Dataset

    docs = documents(400)
    step = quality_step()
    here = step(docs).kept
    assert len(here) == 320  # the defects are dropped, the rest kept
    mapped = Dataset.from_list(docs).map(columnar(step), batched=True, batch_size=64, num_proc=2)
    assert [r["doc_id"] for r in mapped] == [d["doc_id"] for d in here]
    assert [r["quality_score"] for r in mapped] == [d["quality_score"] for d in here]


def test_importing_the_contract_and_the_settings_loads_no_step_code() -> None:
    code = ("import sys, sdf.run, sdf.config; "
            "heavy = [m for m in sys.modules if m.startswith(('sdf.steps', 'sdf.llm', 'datasketch', 'spacy', "
            "'langchain', 'anthropic', 'matplotlib', 'tokenizers', 'tiktoken'))]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src")})
    assert out.stdout.strip() == "[]"


def test_worker_processes_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    outputs = []
    for workers in (1, 2, 3):
        rd = RunDir(tmp_path / f"w{workers}")
        write_rows(rd.documents, documents(700), DOCUMENT_SCHEMA)
        counts = run_steps(rd, rd.documents, rd.filtered, FILTERED_SCHEMA, [quality_step()], batch_rows=64,
                           workers=workers)
        outputs.append((rd.filtered.read_bytes(), (rd.path / "rejected" / "quality.parquet").read_bytes(),
                        counts.as_dict()))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][2]["quality"]["kept"] == 560


def test_a_stage_whose_inputs_settings_and_outputs_are_unchanged_is_skipped(fake, tmp_path: Path) -> None:
    from conftest import FIXTURE_CONSTITUTION, fast_config, run_sdf, sdf_env

    config = fast_config(tmp_path, docs=8)
    built = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                    "--name", "r", "--no-progress", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert built.returncode == 0, built.stderr
    run = tmp_path / "corpus" / "r"
    rd = RunDir(run)
    corpus = rd.corpus.read_bytes()

    def stage(*args: str | Path) -> str:
        result = run_sdf(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # nothing changed: each stage says so and leaves its output alone, with the summary it printed then
    before = rd.corpus.stat().st_mtime_ns
    for command in ("filter", "dedup", "pack"):
        out = stage(command, run)
        assert f"{command}: skipped" in out, out
    assert rd.corpus.stat().st_mtime_ns == before and "dedup: 8 -> " in stage("dedup", run)

    # filter run again writes the same bytes: by content, dedup still has nothing to do
    rd.filtered.unlink()
    assert "filter: skipped" not in stage("filter", run)
    assert "dedup: skipped" in stage("dedup", run)

    # a changed setting, a changed input or a removed output runs the stage again
    evals = tmp_path / "evals.jsonl"
    evals.write_text('{"prompt": "an unrelated question about tide tables and harbour pilots"}\n')
    assert "dedup: skipped" not in stage("dedup", run, "--decontaminate", evals)
    rd.corpus.unlink()
    assert "dedup: skipped" not in stage("dedup", run) and rd.corpus.read_bytes() == corpus
    assert "pack: skipped" in stage("pack", run)  # the corpus came back byte for byte
