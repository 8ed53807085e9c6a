"""The local executor: stream an artifact through steps, write what they keep and what they drop.

A step (see `sdf.steps`) is any callable over a batch of records that returns `StepResult(kept,
dropped)`, each dropped row made with `sdf.steps.reject_row`, and has a `stage` name. Steps know
nothing of files, runs or the CLI, so the same step runs here, under `datasets.map` (see `columnar`)
or under Ray Data's `map_batches`. Steps whose decisions are global (clustering, caps) are split in
two: a per-record step that computes a small feature row, and a decision over the feature table,
which the product's stage runs between two streaming passes.

It also remembers what it ran (`skipping`): a stage whose inputs, settings and code are unchanged since it
last completed, and whose outputs are still as it left them, is skipped, and its summary from then returned.

Inputs are compared by content (xxh3 of every byte: an upstream stage that ran again and wrote the same
bytes does not make this one run again); outputs by size and modification time (cheap, and enough to see a
file replaced or removed by hand). Settings are the run's config_hash (every setting but where it runs),
plus the contents of the files settings point to (eval lists, mix sources, tokenizers, the prompts) and
sdf's version. What a stage records goes to `<run>/stages.json` only after it completed; a stage stopped
early (a judge out of budget) records nothing, so the next run resumes it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import xxhash

import sdf
from sdf.run import STAGES, RunDir, TableWriter, iter_rows, write_json
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


# -- skipping a stage that has nothing to do --------------------------------------------------------------

CHUNK = 1 << 20  # bytes read at a time while hashing: memory stays flat however large the input


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                if not name.endswith(".tmp"):
                    yield Path(root) / name


def _hash_into(h: Any, path: Path) -> None:
    h.update(str(path.name).encode() + b"\0")
    for file in _files(path):
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as f:
            while block := f.read(CHUNK):
                h.update(block)


def _setting_files(run: Any) -> list[Path]:
    """Files and folders the settings point to, whose contents shape a stage's output."""
    s = run.settings
    paths = [*s.dedup.decontaminate, *(m.rsplit(":", 1)[0] for m in s.pack.mix), s.pack.tokenizer,
             s.advice.chat_tokenizer, str(run.catalog.root)]
    return [Path(p) for p in paths if p and Path(p).exists()]


def stage_key(run: Any, name: str, reads: tuple[str, ...]) -> str | None:
    """The content key of running stage `name` now; None when an input is missing (the stage will say so)."""
    h = xxhash.xxh3_128()
    h.update(f"{sdf.__version__}\0{run.settings.config_hash()}\0{name}\0".encode())
    for attr in reads:
        path = getattr(run.dir, attr)
        if not path.exists():
            return None
        _hash_into(h, path)
    for path in _setting_files(run):
        _hash_into(h, path)
    return h.hexdigest()


def fingerprint(paths: list[Path]) -> dict[str, list[int] | None]:
    """Size and modification time of every file of `paths` (None for a path that does not exist)."""
    out: dict[str, list[int] | None] = {}
    for path in paths:
        files = list(_files(path))
        if not files:
            out[str(path)] = None
        for file in files:
            st = file.stat()
            out[str(file)] = [st.st_size, st.st_mtime_ns]
    return out


def _records(rd: RunDir) -> dict[str, Any]:
    try:
        return json.loads(rd.stage_keys.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every stage runs, which is always safe


def skipping(run: Any, name: str, reads: tuple[str, ...], writes: Callable[[], list[Path]],
             fn: Callable[..., dict[str, Any] | None]) -> Callable[..., dict[str, Any] | None]:
    """`fn` (a stage over `run`) that returns its recorded summary, marked "skipped", instead of running when
    nothing it depends on has changed; otherwise runs it and records what it ran on."""

    def run_or_skip(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        rd = run.dir
        key = stage_key(run, name, reads)
        done = _records(rd).get(name)
        if key and done and done.get("key") == key and done.get("outputs") == fingerprint(writes()):
            return {**done["summary"], "skipped": True}
        summary = fn(*args, **kwargs)
        if key and isinstance(summary, dict) and not summary.get("stopped"):
            records = _records(rd)
            records[name] = {"key": key, "outputs": fingerprint(writes()), "summary": summary}
            write_json(rd.stage_keys, records)
        return summary

    return run_or_skip
