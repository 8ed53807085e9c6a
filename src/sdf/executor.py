"""The in-process executor: stream an artifact through steps, write what they keep and what they drop.

A step (see `sdf.steps`) is any callable over a batch of records that returns `StepResult(kept,
dropped)`, each dropped row made with `sdf.steps.reject_row`, and has a `stage` name. Steps know
nothing of files, runs or the CLI, so the same step runs here, under `datasets.map` (see `columnar`)
or under Ray Data's `map_batches`. Steps whose decisions are global (clustering, caps) are split in
two: a per-record step that computes a small feature row, and a decision over the feature table,
which the product's stage runs between two streaming passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

from sdf.run import STAGES, RunDir, TableWriter, iter_rows
from sdf.steps import Step
from sdf.workers import ordered_map

BATCH_ROWS = 512  # records per batch: bounds memory whatever the corpus size


class StageCounts:
    """input / kept / dropped-by-reason per stage, as metrics.json records them."""

    def __init__(self) -> None:
        self.input: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.dropped: dict[str, Counter[str]] = {}

    def add(self, stage: str, n_in: int, kept: int, dropped: Iterable[Mapping[str, Any]]) -> None:
        self.input[stage] += n_in
        self.kept[stage] += kept
        reasons = self.dropped.setdefault(stage, Counter())
        reasons.update(str(r["reason"]) for r in dropped)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: {"input": self.input[s], "kept": self.kept[s], "dropped": dict(sorted(self.dropped[s].items()))}
                for s in STAGES if s in self.dropped}


class Rejects:
    """One rejects writer per stage, opened on first use; each stage's file is rewritten whole."""

    def __init__(self, rd: RunDir, stages: Sequence[str]) -> None:
        # each file is replaced only when the stage closes cleanly, so a crash keeps the last good one
        self.rd, self.writers, self.stages = rd, {}, tuple(stages)

    def write(self, stage: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if stage not in self.writers:
            self.writers[stage] = self.rd.reject_writer(stage)
        self.writers[stage].write(rows)

    def close(self) -> None:
        for stage in self.stages:  # an empty file says the stage ran and dropped nothing
            if stage not in self.writers:
                self.writers[stage] = self.rd.reject_writer(stage)
            self.writers[stage].close()

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.abort() if exc_type else self.close()


class BatchOutcome(NamedTuple):
    kept: list[dict[str, Any]]
    steps: list[tuple[str, int, int, list[dict[str, Any]]]]  # per step: stage, input, kept, dropped rows


def run_batch(steps: Sequence[Step], batch: list[dict[str, Any]]) -> BatchOutcome:
    """One batch through the steps in order (pure: it runs in a worker process as well as here)."""
    done = []
    for step in steps:
        result = step(batch)
        done.append((step.stage, len(batch), len(result.kept), result.dropped))
        batch = result.kept
    return BatchOutcome(batch, done)


def record(outcome: BatchOutcome, rejects: Rejects, counts: StageCounts) -> list[dict[str, Any]]:
    """Count a batch's outcome and write its drops, in step order; returns what it kept."""
    for stage, n_in, kept, dropped in outcome.steps:
        counts.add(stage, n_in, kept, dropped)
        if dropped:
            rejects.write(stage, dropped)
    return outcome.kept


def apply_steps(batch: list[dict[str, Any]], steps: Sequence[Step], rejects: Rejects, counts: StageCounts
                ) -> list[dict[str, Any]]:
    """Run one batch through the steps in order; drops are written as they happen."""
    return record(run_batch(steps, batch), rejects, counts)


def run_steps(rd: RunDir, source: Path, target: Path, schema: pa.Schema, steps: Sequence[Step],
              batch_rows: int = BATCH_ROWS, after_batch: Callable[[list[dict]], list[dict]] | None = None,
              workers: int | None = None,
              before_batch: Callable[[list[dict]], list[dict]] | None = None) -> StageCounts:
    """Stream `source` through `steps` into `target`; each step's drops go to rejected/<stage>.parquet.

    The steps run on `sdf.workers.count(workers)` processes, batch by batch in order, so the output is the
    same for any number. `before_batch`, when given, joins columns onto each batch here, before the steps
    (the judge's scores, read from the ledger); `after_batch` maps each batch of kept rows before it is
    written. Nothing is replaced unless the whole stream succeeds.
    """
    counts = StageCounts()
    if any(getattr(s, "in_process", False) for s in steps):  # a step holding a handle stays here
        workers = 1
    with Rejects(rd, [s.stage for s in steps]) as rejects, TableWriter(target, schema) as out:
        batches = iter_rows(source, batch_size=batch_rows)
        if before_batch is not None:
            batches = map(before_batch, batches)
        for outcome in ordered_map(run_batch, batches, steps, workers):
            kept = record(outcome, rejects, counts)
            if after_batch is not None:
                kept = after_batch(kept)
            out.write(kept)
    return counts


def extract_answers(rd: RunDir, target: Path, schema: pa.Schema,
                    item_from: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, dict[str, Any]]],
                    ) -> dict[str, int]:
    """Every planned spec becomes an item of `target` or a generate reject, streaming.

    `item_from(spec)` returns (item, {}) or (None, its reject row). Returns {"specs", "documents"
    (items, under the key the CLI's verdict reads), "no_answer"}: specs the API never answered
    (api_error, not_generated), which a rerun sends again."""
    counts = StageCounts()
    with Rejects(rd, ["generate"]) as rejects, TableWriter(target, schema) as out:
        batch: list[dict[str, Any]] = []
        for spec in rd.read_specs():
            item, failure = item_from(spec)
            if item is not None:
                batch.append(item)
            else:
                rejects.write("generate", [failure])
            counts.add("generate", 1, item is not None, [failure] if failure else [])
            if len(batch) >= BATCH_ROWS:
                out.write(batch)
                batch = []
        out.write(batch)
    rd.update_metrics(stages=counts.as_dict())
    stage = counts.as_dict().get("generate", {"kept": 0, "input": 0, "dropped": {}})
    no_answer = sum(n for reason, n in stage["dropped"].items() if reason in ("api_error", "not_generated"))
    return {"specs": stage["input"], "documents": stage["kept"], "no_answer": no_answer}


def texts_of(source: Path, doc_ids: set[str]) -> dict[str, str]:
    """The texts of a few documents of an artifact, by doc_id, in one streaming read."""
    found: dict[str, str] = {}
    for batch in iter_rows(source, ["doc_id", "text"], batch_size=4 * BATCH_ROWS):
        found.update((d["doc_id"], d["text"] or "") for d in batch if d["doc_id"] in doc_ids)
    return found


def columnar(step: Step) -> Callable[[dict[str, list]], dict[str, list]]:
    """The step as a function of a column batch, for `datasets.Dataset.map(batched=True)` or Ray's
    `map_batches`: dropped records simply leave the batch."""

    def apply(columns: dict[str, list]) -> dict[str, list]:
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        kept = step(rows).kept
        added = [k for k in (kept[0] if kept else {}) if k not in columns]  # columns the step adds
        return {name: [r.get(name) for r in kept] for name in names + added}

    return apply
