"""The step vocabulary: what every step is and returns, and the one way a step records a drop.

A `Step` is a callable over a batch of records (a list of dicts) returning `StepResult(kept, dropped)`,
each dropped row made with `reject_row`, and has a `stage` name. A `GlobalStep` decides over the whole
run: a per-record `features` pass, a `decide` over the small feature table, then an `apply` pass.
Steps know nothing of files, runs, executors, products or the CLI, so the same step runs in-process,
under `datasets.map` or under Ray Data's `map_batches`. Nothing here imports anything above it.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

Record = dict[str, Any]


class StepResult(NamedTuple):
    kept: list[Record]
    dropped: list[Record]  # reject_row rows


class Step(Protocol):
    stage: str  # the stage its drops are recorded under (sdf.run.STAGES)

    def __call__(self, batch: list[Record]) -> StepResult: ...


class GlobalStep(Protocol):
    """A decision that needs every record: features per record -> a decision over the feature table -> apply."""

    stage: str

    def features(self, batch: list[Record]) -> list[Record]: ...  # small rows, no texts
    def decide(self, table: list[Record]) -> Any: ...  # the decision, small enough to hold
    def apply(self, batch: list[Record], decision: Any) -> StepResult: ...


class GenreLike(Protocol):
    """What steps need to know about a genre (catalog.Genre satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def fiction(self) -> bool: ...
    @property
    def min_words(self) -> int: ...
    @property
    def max_words(self) -> int: ...


def reject_row(item: Mapping[str, Any], stage: str, reason: str, detail: str,
               duplicate_of: str | None = None) -> Record:
    """One rejects row (sdf.run.REJECT_SCHEMA) for a dropped item; the one way every stage records a drop."""
    return {
        "doc_id": str(item.get("doc_id", item.get("spec_id"))),
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "duplicate_of": duplicate_of,
        "genre": item.get("genre"),
        "section_id": item.get("section_id"),
        "cost_usd": item.get("cost_usd"),
        "text": item.get("text"),
    }


def quality_of(row: Mapping[str, Any]) -> float:
    """A row's ``quality_score`` for choosing between documents; missing, None or NaN count as 0."""
    q = row.get("quality_score")
    if isinstance(q, numbers.Real) and not isinstance(q, bool) and q == q:
        return float(q)
    return 0.0


_EVAL_DETAIL = re.compile(r"^eval (.+?) \| ")


def eval_detail(source: str, evidence: str) -> str:
    """A decontamination reject's detail: ``eval <source> | <evidence>``; `eval_of` reads it back."""
    return f"eval {source} | {evidence}"


def eval_of(detail: str | None) -> str | None:
    """The eval a decontamination reject's detail names, or None for another stage's detail."""
    m = _EVAL_DETAIL.match(detail or "")
    return m.group(1) if m else None
