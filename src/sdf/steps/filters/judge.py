"""The LLM judge as a step: keep documents whose 0-5 score reaches `min_score`.

The stage sends the judge requests through the engine first; this step only reads each document's
score through the `score_of` callable it is given, so it knows nothing of the ledger or the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sdf.executor import StepResult
from sdf.run import reject_row

SCORE = re.compile(r"<score>\s*([0-5](?:\.\d+)?)\s*</score>", re.IGNORECASE)


def parse_score(text: str | None) -> float | None:
    """The last <score>N</score> in a judge's answer (0-5), or None when it gave none."""
    found = SCORE.findall(text or "")
    return float(found[-1]) if found else None


class JudgeFilter:
    """Drop documents scored below `min_score` (judge_low) or with no score (judge_missing)."""

    stage = "judge"
    in_process = True  # score_of reads the run's ledger, an SQLite connection that must not cross a fork

    def __init__(self, score_of: Callable[[dict[str, Any]], tuple[float | None, str]], min_score: float) -> None:
        self.score_of, self.min_score = score_of, min_score  # score_of(doc) -> (score or None, request status)

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for doc in batch:
            score, status = self.score_of(doc)
            if score is None:
                dropped.append(reject_row(doc, self.stage, "judge_missing", f"no score (request {status})"))
            elif score < self.min_score:
                dropped.append(reject_row(doc, self.stage, "judge_low", f"score {score:g} < {self.min_score:g}"))
            else:
                kept.append({**doc, "judge_score": score, "quality_score": score})
        return StepResult(kept, dropped)
