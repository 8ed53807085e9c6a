"""The decontamination step: drop every document an eval index finds contaminated, saying which eval
and what matched. A plain record step: one document at a time, no files, the index built once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from sdf.steps import StepResult, eval_of, reject_row
from sdf.steps.decontam.index import EvalIndex

__all__ = ["Decontaminate", "contamination_summary", "decontaminate", "eval_of"]


class DecontaminationResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]


class Decontaminate:
    """Reasons: "contaminated" (a shared 13-gram), "eval_entities", "eval_minhash"; the detail is
    ``eval <source> | <evidence>``."""

    stage = "decontaminate"

    def __init__(self, index: EvalIndex) -> None:
        self.index = index

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for doc, finding in zip(batch, self.index.find([str(d.get("text") or "") for d in batch]), strict=True):
            if finding is None:
                kept.append(doc)
            else:
                dropped.append(reject_row(doc, self.stage, finding.reason, finding.detail))
        return StepResult(kept, dropped)


def decontaminate(docs: Iterable[Mapping[str, Any]], index: EvalIndex) -> DecontaminationResult:
    """`Decontaminate` over documents held in memory. counts: input, kept, one per reason, and the
    index's own counts."""
    result = Decontaminate(index)([dict(d) for d in docs])
    counts = Counter(input=len(result.kept) + len(result.dropped), kept=len(result.kept), **index.counts)
    counts.update(r["reason"] for r in result.dropped)
    return DecontaminationResult(result.kept, result.dropped, dict(counts))


def contamination_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Decontamination rejects counted by reason and by eval (then reason), for metrics and the report."""
    by_reason: Counter[str] = Counter()
    by_eval: dict[str, Counter[str]] = {}
    for r in rows:
        by_reason[r["reason"]] += 1
        by_eval.setdefault(eval_of(r["detail"]) or "?", Counter())[r["reason"]] += 1
    return {"by_reason": dict(sorted(by_reason.items())),
            "by_eval": {e: dict(sorted(c.items())) for e, c in sorted(by_eval.items())}}
