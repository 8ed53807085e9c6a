"""What was dropped: rejections by stage and reason with what they cost, and contamination by eval."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from sdf.run import STAGES, RunDir, iter_batches, iter_rows
from sdf.steps import eval_of

SAMPLE_CHARS = 450  # characters of each contamination sample shown


def rejections(rejects: pa.Table | None, run_cost: float | None) -> dict[str, Any] | None:
    """Rejected documents by stage and reason, and paid-but-discarded: what generating them cost, in USD and
    as a share of the run's whole cost (every request of the ledger, judge and brainstorm included)."""
    if rejects is None:
        return None
    rows = rejects.select(["stage", "reason", "cost_usd"]).to_pylist()
    total = len(rows)
    by_stage = Counter(r["stage"] for r in rows)
    by_reason = Counter((r["stage"], r["reason"]) for r in rows)
    paid_stage: Counter[str] = Counter()
    paid_reason: Counter[tuple[str, str]] = Counter()
    for r in rows:
        paid_stage[r["stage"]] += r["cost_usd"] or 0.0
        paid_reason[(r["stage"], r["reason"])] += r["cost_usd"] or 0.0

    def share(usd: float) -> float | None:
        return round(usd / run_cost, 6) if run_cost else None

    paid = sum(paid_stage.values())
    return {
        "total": total,
        # what the dropped documents cost to generate: paid for, then discarded
        "paid_usd": round(paid, 6),
        "paid_share": share(paid),
        "by_stage": [{"stage": s, "count": by_stage[s], "paid_usd": round(paid_stage[s], 6),
                      "paid_share": share(paid_stage[s])} for s in STAGES if by_stage[s]],
        "by_reason": [{"stage": s, "reason": r, "count": c, "share": round(c / total, 6),
                       "paid_usd": round(paid_reason[(s, r)], 6), "paid_share": share(paid_reason[(s, r)])}
                      for (s, r), c in sorted(by_reason.items(), key=lambda kv: (STAGES.index(kv[0][0]), -kv[1]))],
    }


def contamination(rd: RunDir, rejects: pa.Table | None, samples: int = 3) -> dict[str, Any] | None:
    """Decontamination drops by reason and by eval file, with a few excerpts of what was caught."""
    path = rd.rejects("decontaminate")
    if rejects is None or not path.is_file():
        return None
    rows = [r for batch in iter_rows(path, ["doc_id", "reason", "detail", "genre"]) for r in batch]
    by_file: Counter[str] = Counter()
    for r in rows:
        source = eval_of(r["detail"]) or "(unknown)"
        by_file[source.rsplit(":", 1)[0] if source[-1:].isdigit() and ":" in source else source] += 1
    excerpts = []
    for batch in iter_batches(path, columns=["doc_id", "genre", "reason", "detail", "text"], batch_size=samples):
        excerpts = [{**r, "text": _clip(r["text"] or "", SAMPLE_CHARS)} for r in batch.to_pylist()]
        break
    return {"total": len(rows), "by_reason": dict(Counter(r["reason"] for r in rows).most_common()),
            "by_eval": dict(by_file.most_common()), "samples": excerpts}


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(None, 1)[0] + " …"
