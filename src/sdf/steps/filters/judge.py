"""The LLM judge as a step: keep documents whose 0-5 score reaches `min_score`.

The stage sends the judge requests through the engine first, then joins each document's score on as
columns (`judge_score`, None when the judge gave none, and `judge_status`, the request's status);
this step reads only those columns, so it knows nothing of the ledger or the API and runs anywhere.
"""

from __future__ import annotations

import re
from typing import Any

from sdf.steps import StepResult, reject_row

SCORE = re.compile(r"<score>\s*([0-5](?:\.\d+)?)\s*</score>", re.IGNORECASE)


def parse_score(text: str | None) -> float | None:
    """The last <score>N</score> in a judge's answer (0-5), or None when it gave none."""
    found = SCORE.findall(text or "")
    return float(found[-1]) if found else None


class JudgeFilter:
    """Drop documents scored below `min_score` (judge_low) or with no score (judge_missing)."""

    stage = "judge"

    def __init__(self, min_score: float) -> None:
        self.min_score = min_score

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for row in batch:
            doc = {k: v for k, v in row.items() if k != "judge_status"}  # the status is only for the detail
            score = doc.get("judge_score")
            if score is None:
                status = row.get("judge_status") or "pending"
                dropped.append(reject_row(doc, self.stage, "judge_missing", f"no score (request {status})"))
            elif score < self.min_score:
                dropped.append(reject_row(doc, self.stage, "judge_low", f"score {score:g} < {self.min_score:g}"))
            else:
                kept.append({**doc, "quality_score": score})
        return StepResult(kept, dropped)
