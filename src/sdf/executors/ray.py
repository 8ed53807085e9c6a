"""The Ray Data executor: the same steps as sdf.executors.local, run as Ray Data tasks; the same artifacts out.

- record steps (quality, decontamination) run in `map_batches`; each task returns its kept rows and
  every dropped row (with its stage and reason) tagged in one batch, and the driver splits them into
  the output table and the rejects, so nothing a step drops is lost;
- dedup and caps (sdf.executors.ray_dedup): features and MinHash signatures per block, candidate
  pairs by grouping on band keys, connected components over the verified pairs, the caps decided
  over the gathered feature table by the local decide functions, then a second pass applies them;
- pack: each block is tokenised by a Ray task, and the driver writes the tokens in corpus order
  (pack_corpus's `tokenize` hook), so shards are byte for byte the local ones.

Order is kept throughout (`preserve_order`), so outputs and rejects come out in the local order.
The judge's scores are read from the run's SQLite ledger, so the judge filter runs on the driver.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

import sdf
from sdf.config import ExecutorConfig, PackConfig
from sdf.errors import SdfError
from sdf.executors.local import Rejects, StageCounts
from sdf.llm import Backend
from sdf.products.context import Run
from sdf.run import FILTERED_SCHEMA, RunDir, TableWriter
from sdf.steps import Step

BLOCK_ROWS = 256  # records per Ray task: small blocks keep every worker busy on a few cores
TAGGED = pa.schema([("kind", pa.string()), ("stage", pa.string()), ("payload", pa.binary())])
KEEP, DROP = "keep", "drop"


@contextmanager
def session(cfg: ExecutorConfig) -> Iterator[None]:
    """Join the cluster at `address`, or start a local one; reuse one already running in this process.

    A cluster this call started is shut down when the stage ends."""
    import ray

    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "logging_level": logging.ERROR, "configure_logging": True}
        if cfg.address:
            options["address"] = cfg.address
        else:  # a local cluster's workers import this very sdf, whatever the environment says
            here = str(Path(sdf.__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
            if cfg.num_cpus:
                options["num_cpus"] = cfg.num_cpus
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = cfg.address or "a local cluster"
            raise SdfError(f"could not start Ray on {where}: {str(e).splitlines()[0] if str(e) else e}") from None
        started = True
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # outputs and rejects in the local executor's order
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def read(path: Path, columns: Sequence[str] | None = None) -> Any:
    import ray

    return ray.data.read_parquet(str(path), columns=list(columns) if columns else None)


def tag_rows(kind: str, stage: str, rows: Sequence[Any]) -> dict[str, list]:
    return {"kind": [kind] * len(rows), "stage": [stage] * len(rows), "payload": [pickle.dumps(r) for r in rows]}


def tagged_table(parts: Sequence[dict[str, list]]) -> pa.Table:
    return pa.table({c: [v for p in parts for v in p[c]] for c in ("kind", "stage", "payload")}, schema=TAGGED)


def apply_tagged(batch: pa.Table, steps: Sequence[Step],
                 then: Callable[[list[dict[str, Any]]], Sequence[Any]] | None = None) -> pa.Table:
    """Run the steps over one block; its drops (per stage, in step order), then what it keeps (or
    `then(kept)`), tagged in one table."""
    rows = batch.to_pylist()
    parts = []
    for step in steps:
        result = step(rows)
        parts.append(tag_rows(DROP, step.stage, result.dropped))
        rows = result.kept
    parts.append(tag_rows(KEEP, "", then(rows) if then is not None else rows))
    return tagged_table(parts)


def split_tagged(ds: Any) -> Iterator[tuple[str, str, list[Any]]]:
    """(kind, stage, objects) for each run of equally tagged rows, in dataset order."""
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        kinds, stages = batch.column("kind").to_pylist(), batch.column("stage").to_pylist()
        payloads = batch.column("payload").to_pylist()
        start = 0
        for i in range(1, len(kinds) + 1):
            if i == len(kinds) or (kinds[i], stages[i]) != (kinds[start], stages[start]):
                yield kinds[start], stages[start], [pickle.loads(p) for p in payloads[start:i]]
                start = i


def stage_counts(steps: Sequence[Step], dropped: dict[str, Counter[str]], n_in: int) -> StageCounts:
    """Per-stage input/kept/dropped of steps run in sequence: each stage's input is the last one's kept."""
    counts = StageCounts()
    for step in steps:
        reasons = dropped.get(step.stage, Counter())
        n_out = n_in - sum(reasons.values())
        counts.add(step.stage, n_in, n_out, [{"reason": r} for r in reasons.elements()])
        n_in = n_out
    return counts


def run_steps(rd: RunDir, source: Path, target: Path, schema: pa.Schema, steps: Sequence[Step]) -> StageCounts:
    """sdf.executors.local.run_steps on Ray: the kept rows into `target`, each drop into its stage's rejects."""
    ds = read(source).map_batches(partial(apply_tagged, steps=steps), batch_format="pyarrow",
                                  batch_size=BLOCK_ROWS)
    dropped: dict[str, Counter[str]] = {}
    n_in = 0
    with Rejects(rd, [s.stage for s in steps]) as rejects, TableWriter(target, schema) as out:
        for kind, stage, rows in split_tagged(ds):
            n_in += len(rows)
            if kind == KEEP:
                out.write(rows)
            else:
                rejects.write(stage, rows)
                dropped.setdefault(stage, Counter()).update(str(r["reason"]) for r in rows)
    return stage_counts(steps, dropped, n_in)


# -- the stages --------------------------------------------------------------------------------------


def filter_stage(run: Run, backend: Backend | None = None, progress: bool = True) -> dict[str, Any]:
    """products.documents.filter_stage with the quality filter on Ray; the judge (ledger-bound) stays here."""
    from sdf.products import documents
    from sdf.products.judging import filter_judged, send_judge
    from sdf.steps.filters.quality import QualityFilter

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.documents, "generate")
    quality = QualityFilter(run.catalog.genres, cfg.quality)
    with session(cfg.executor):
        if not cfg.judge.enabled:
            counts = run_steps(rd, source, rd.filtered, FILTERED_SCHEMA, [quality]).as_dict()
            rd.clear_rejects("judge")
            rd.update_metrics(stages=counts, cleared=["judge"])
            q = counts.get("quality", {"input": 0, "kept": 0})
            return {"input": q["input"], "after_quality": q["kept"], "kept": q["kept"]}
        if backend is None:
            raise SdfError("the judge is enabled but no model backend was given")
        scratch = rd.path / "judge_input.parquet"
        counts = run_steps(rd, source, scratch, FILTERED_SCHEMA, [quality]).as_dict()
    summary = send_judge(run, scratch, lambda doc: documents.judge_request_of(run, doc), backend, progress)
    judged = filter_judged(run, scratch, FILTERED_SCHEMA, lambda doc: documents.judge_request_of(run, doc))
    scratch.unlink()
    rd.update_metrics(stages={**counts, **judged})
    q, j = counts.get("quality", {"input": 0, "kept": 0}), judged.get("judge", {"kept": 0})
    return {"input": q["input"], "after_quality": q["kept"], "after_judge": j["kept"], "kept": j["kept"],
            "judge_cost_usd": round(summary.cost_usd, 6), "stopped": summary.stopped}


def dedup_stage(run: Run) -> dict[str, Any]:
    from sdf.executors.ray_dedup import dedup_stage as dedup_on_ray

    with session(run.settings.executor):
        return dedup_on_ray(run)


def pack_stage(run: Run, progress: bool = True) -> dict[str, Any]:
    """products.documents.pack_stage with each block of the corpus tokenised by a Ray task."""
    from sdf.steps.tokens.pack import pack_corpus

    metrics = run.dir.read_metrics()
    extra = {"diversity": metrics["diversity"], "dedup": metrics["dedup"]}
    with session(run.settings.executor):
        return pack_corpus(run.dir.require(run.dir.corpus, "dedup"), run.dir.shards, run.settings.pack,
                           run.settings.run.seed, run.settings.config_hash(), extra=extra, progress=progress,
                           tokenize=partial(tokenize_corpus, cfg=run.settings.pack))


_TOKENIZERS: dict[tuple, Any] = {}  # per worker process: a tokenizer is loaded once, not once per block


def _encode(batch: pa.Table, cfg: PackConfig) -> pa.Table:
    from sdf.steps.tokens.tokenizer import load_tokenizer

    key = (cfg.tokenizer, cfg.eos_id, cfg.bos_id)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(*key)
    texts = [t or "" for t in batch.column("text").to_pylist()]
    ids = _TOKENIZERS[key].encode_batch(texts) if texts else []
    n = len(texts)
    labels = {c: ([str(v) if v is not None else "unknown" for v in batch.column(c).to_pylist()]
                  if c in batch.schema.names else ["unknown"] * n) for c in ("genre", "section_id")}
    return pa.table({"ids": pa.array(ids, pa.list_(pa.int64())), **labels})


def tokenize_corpus(corpus: Path, spool: Any, progress: bool, cfg: PackConfig) -> Any:
    """sdf.steps.tokens.spool.tokenize_corpus with the encoding done by Ray tasks, block by block; the
    spool is appended in corpus order, so the tokens and the tally are the local ones."""
    from sdf.steps.tokens.spool import TOKENIZE_BATCH, CorpusTally
    from sdf.writers.io import open_parquet

    names = set(open_parquet(corpus).schema_arrow.names)
    columns = ["text"] + [c for c in ("genre", "section_id") if c in names]
    ds = read(corpus, columns).map_batches(partial(_encode, cfg=cfg), batch_format="pyarrow",
                                           batch_size=TOKENIZE_BATCH)
    tally, row = CorpusTally(), 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        lengths = spool.add(batch.column("ids").to_pylist())
        genres, sections = batch.column("genre").to_pylist(), batch.column("section_id").to_pylist()
        for n, genre, section in zip(lengths, genres, sections, strict=True):
            if n:
                tally.rows.append(row)
                tally.genre_tokens[genre] = tally.genre_tokens.get(genre, 0) + n
                tally.section_tokens[section] = tally.section_tokens.get(section, 0) + n
            else:
                tally.dropped_empty += 1
            row += 1
    return tally
