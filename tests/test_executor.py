"""The executor streams artifacts through steps; a record step runs unchanged under datasets.map."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from conftest import ROOT

from sdf.config import QualityConfig
from sdf.executor import columnar, run_steps
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
