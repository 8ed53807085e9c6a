"""The judge loop, once for every product: send a judge request per item, then filter on the scores.

The filter step (`JudgeFilter`) never sees the ledger: each batch gets `judge_score` and
`judge_status` joined on from the ledger before the step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa

from sdf.executors.local import run_steps
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger, LLMRequest
from sdf.products.context import Run
from sdf.run import iter_rows
from sdf.steps.filters.judge import JudgeFilter, parse_score

JUDGE_CHUNK = 5000  # judge requests handed to the engine at a time
RequestOf = Callable[[dict[str, Any]], LLMRequest]


def send_judge(run: Run, source: Path, request_of: RequestOf, backend: Any, progress: bool) -> RunSummary:
    """Send a judge request for every item of `source` that the ledger has not answered, a chunk at a time."""
    total = RunSummary()
    with closing(run.ledger()) as ledger:
        for chunk in iter_rows(source, batch_size=JUDGE_CHUNK):
            total.add(run.send(ledger, [request_of(item) for item in chunk], "judge", progress, backend))
            if total.stopped:
                break
    return total


def judge_scores(ledger: Ledger, request_of: RequestOf) -> Callable[[list[dict]], list[dict]]:
    """Join each item's judge score and request status on from the ledger, for `JudgeFilter`."""

    def join(batch: list[dict]) -> list[dict]:
        out = []
        for item in batch:
            row = ledger.get(request_of(item).key)
            status = row["status"] if row is not None else "pending"
            score = parse_score(row["response_text"]) if status == "ok" else None
            out.append({**item, "judge_score": score, "judge_status": status})
        return out

    return join


def filter_judged(run: Run, source: Path, schema: pa.Schema, request_of: RequestOf) -> dict[str, Any]:
    """Stream `source` through the judge's filter into filtered.parquet; returns the stage counts."""
    with closing(run.ledger()) as ledger:
        return run_steps(run.dir, source, run.dir.filtered, schema, [JudgeFilter(run.settings.judge.min_score)],
                         before_batch=judge_scores(ledger, request_of)).as_dict()
