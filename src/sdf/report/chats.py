"""The numbers of an advice run (difficult-advice chats, or rewrites), in the shape the report's template reads.

The parts that mean the same for both products (funnel, rejections, contamination, cost, duplicate clusters,
artifacts) are computed by the same functions as a documents run's; the rest describe chats: the scenario
mix (kind, temptation, domain, sections), the deployments, the turns, the lengths of each part and the
judge's scores. sft.parquet is read batch by batch, so memory stays flat however many chats.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sdf.report.rejects import contamination, rejections
from sdf.report.stats import READ_ERRORS, RunData, _cost, _dedup_clusters, _describe, why_unavailable
from sdf.run import RunDir, iter_rows

SAMPLES = 6  # chats shown whole at the end of the page
PLOTTED = 200  # values per length row that stats.json keeps for the plot
PARTS = ("user", "deliberation", "answer")
NEEDS = {
    "mix": ("sft.parquet",),
    "deployments": ("sft.parquet",),
    "lengths": ("sft.parquet",),
    "turns": ("sft.parquet",),
    "scores": ("sft.parquet",),
    "funnel": ("specs.parquet", "metrics.json"),
    "rejections": ("rejected",),
    "contamination": ("rejected",),
    "cost": ("store.sqlite",),
    "dedup_clusters": ("metrics.json", "rejected"),
    "packing": ("shards/sft/train_00000.parquet",),
}
LABELS = {
    "generate": "Chats assembled",
    "quality": "Kept after chat rules",
    "action": "Kept after the action check",
    "judge": "Kept after judge",
    "decontaminate": "Kept after decontamination",
    "dedup": "Kept after dedup",
    "diversity": "Final chats (after caps)",
}


def chat_stats(run_dir: str | Path) -> dict[str, Any]:
    """Every number of an advice run's report, JSON-ready. A part is None when what it needs is absent."""
    rd = RunDir(Path(run_dir))
    data = RunData(rd)

    def read(attr: str, reader: Any) -> Any:
        path = getattr(rd, attr)
        name = path.relative_to(rd.path).as_posix()
        if not path.exists():
            data.artifacts[name] = "missing"
            return None
        try:
            value = reader()
        except READ_ERRORS as exc:
            data.artifacts[name] = f"unreadable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            return None
        data.artifacts[name] = "ok"
        return value

    config = read("config", rd.read_config) or {}
    data.plan = read("plan", rd.read_plan)
    specs = read("specs", lambda: pq.ParquetFile(rd.specs).metadata.num_rows)
    from sdf.report.stats import _ledger

    data.usage, data.batches, data.refusals = read("store", lambda: _ledger(rd)) or (None, None, None)
    chats = read("chats", lambda: pq.ParquetFile(rd.chats).metadata.num_rows)
    read("filtered", lambda: pq.ParquetFile(rd.filtered).metadata.num_rows)
    data.rejects = read("rejected_dir", lambda: rd.read_rejects(["doc_id", "stage", "reason", "duplicate_of",
                                                                  "genre", "cost_usd"]))
    final = read("sft", lambda: _final(rd.sft))
    read("sft_jsonl", lambda: True)
    data.metrics = read("metrics", rd.read_metrics)
    packed = read("sft_packed", lambda: _packed(rd.sft_packed))
    cost = _cost(data)
    stats: dict[str, Any] = {
        "product": "advice",
        "item": "chats",
        "mode": "rewrite" if (config.get("advice") or {}).get("rewrite") else "advice",
        "run": _summary(data, specs, chats, final, cost, packed),
        "artifacts": dict(data.artifacts),
        "mix": final and final["mix"],
        "deployments": final and final["deployments"],
        "lengths": final and final["lengths"],
        "turns": final and final["turns"],
        "scores": final and final["scores"],
        "funnel": _funnel(data, specs, packed),
        "rejections": rejections(data.rejects, cost["total"]["cost_usd"] if cost else None),
        "contamination": contamination(rd, data.rejects),
        "cost": cost,
        "dedup_clusters": _dedup_clusters(data),
        "packing": packed,
        "samples": final["samples"] if final else [],
    }
    stats["unavailable"] = {part: why_unavailable(data.artifacts, needs)
                            for part, needs in NEEDS.items() if stats[part] is None}
    return stats


def _final(path: Path) -> dict[str, Any]:
    """The parts computed from sft.parquet, in one streaming pass."""
    n = 0
    kinds: Counter[str] = Counter()
    temptations: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    sections: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    systems: Counter[str] = Counter()
    turns: Counter[int] = Counter()
    with_tools = 0
    words: dict[str, list[int]] = {p: [] for p in PARTS}
    scores: dict[str, list[float]] = {"judge_score": [], "quality_score": []}
    samples: list[dict[str, Any]] = []
    for batch in iter_rows(path):
        for row in batch:
            n += 1
            messages = row["messages"]
            kinds[row.get("kind") or row.get("mode") or "advice"] += 1
            if row.get("temptation"):
                temptations[row["temptation"]] += 1
            if row.get("domain"):
                domains[row["domain"]] += 1
            sections[row.get("section_title") or row.get("section_id") or "(rewrite)"] += 1
            system = next((m["content"] for m in messages if m["role"] == "system"), None)
            if system:
                systems[system] += 1
            if row.get("tool_format"):
                formats[row["tool_format"]] += 1
            with_tools += bool(row.get("tool_format") or row.get("tools"))
            turns[sum(1 for m in messages if m["role"] == "user")] += 1
            final = messages[-1]
            user = next((m for m in reversed(messages) if m["role"] == "user"), {"content": ""})
            words["user"].append(len((user["content"] or "").split()))
            words["deliberation"].append(len((final.get("reasoning_content") or "").split()))
            words["answer"].append(len((final.get("content") or "").split()))
            for key in scores:
                if row.get(key) is not None:
                    scores[key].append(float(row[key]))
            if len(samples) < SAMPLES:
                fields = ("role", "content", "reasoning_content", "tool_calls")
                samples.append({"id": row["id"], "kind": row.get("kind") or row.get("temptation") or row.get("mode"),
                                "tools": row["tools"], "messages": [{k: m.get(k) for k in fields} for m in messages]})
    if not n:
        return {"mix": None, "deployments": None, "lengths": None, "turns": None, "scores": None, "samples": []}
    with_system = sum(systems.values())
    return {
        "mix": {
            "chats": n,
            "kinds": [{"kind": k, "chats": c, "share": c / n} for k, c in kinds.most_common()],
            "temptations": [{"temptation": t, "chats": c} for t, c in temptations.most_common()],
            "domains": len(domains),
            "top_domains": [{"domain": d, "chats": c} for d, c in domains.most_common(10)],
            "sections": len(sections),
            "top_sections": [{"section": s, "chats": c} for s, c in sections.most_common(10)],
        },
        "deployments": {
            "with_system_prompt": with_system / n,
            "distinct_system_prompts": len(systems),
            # of the chats with a system message, the share whose message no other chat has
            "distinct_share": (len(systems) / with_system) if with_system else None,
            "with_tools": with_tools / n,
            "tool_formats": dict(formats.most_common()),
        },
        "lengths": {"source": "sft.parquet", "unit": "words per chat, final turn", "per_genre": {
            part: _values(np.asarray(v, dtype=float)) for part, v in words.items() if v}},
        "turns": {"histogram": [{"user_turns": t, "chats": c} for t, c in sorted(turns.items())],
                  "multi_turn_share": sum(c for t, c in turns.items() if t >= 2) / n},
        "scores": {k: _describe(np.asarray(v, dtype=float)) for k, v in scores.items() if v} or None,
        "samples": samples,
    }


def _values(values: np.ndarray) -> dict[str, Any]:
    entry = _describe(values)
    ranks = np.sort(values)
    if len(ranks) > PLOTTED:
        ranks = ranks[np.linspace(0, len(ranks) - 1, PLOTTED).round().astype(int)]
    entry["values"] = ranks.astype(int).tolist()
    return entry


def _packed(path: Path) -> dict[str, Any]:
    """Rows, chats and tokens of the packed SFT file, read a column at a time without the token ids in Python."""
    import pyarrow.compute as pc

    rows = chats = tokens = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["input_ids", "seq_lengths"]):
        rows += batch.num_rows
        tokens += int(pc.sum(pc.list_value_length(batch.column("input_ids"))).as_py() or 0)
        chats += int(pc.sum(pc.list_value_length(batch.column("seq_lengths"))).as_py() or 0)
    return {"rows": rows, "chats": chats, "tokens": tokens, "path": str(path)}


def _summary(data: RunData, specs: int | None, chats: int | None, final: dict | None, cost: dict | None,
             packed: dict | None) -> dict[str, Any]:
    models: dict[str, set[str]] = {}
    for row in data.usage or []:
        models.setdefault(row["model"], set()).add(row["purpose"])
    stamps = [r["last_at"] for r in data.usage or [] if r["last_at"]]
    return {
        "name": data.dir.path.resolve().name,
        "path": str(data.dir.path.resolve()),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "last_activity": max(stamps) if stamps else None,
        "models": {m: sorted(p) for m, p in sorted(models.items())},
        "specs": specs,
        "chats": chats,
        "final": final["mix"]["chats"] if final and final["mix"] else (0 if final else None),
        "tokens": packed["tokens"] if packed else None,
        "total_cost_usd": cost["total"]["cost_usd"] if cost else None,
        "envelope_missing": None, "envelope_missing_in_corpus": None, "renamed_in_corpus": None,
        "ner_documents": ((data.metrics or {}).get("caps") or {}).get("ner_documents"),
        "bad_originals": sum(1 for r in (data.rejects.to_pylist() if data.rejects is not None else [])
                             if r["reason"] == "bad_original"),
    }


def _funnel(data: RunData, specs: int | None, packed: dict | None) -> list[dict[str, Any]] | None:
    """Planned -> each stage's kept count, in pipeline order (the order of sdf.run.STAGES)."""
    from sdf.run import STAGES

    stages = (data.metrics or {}).get("stages", {})
    steps = [("specs", "Scenarios planned", specs)]
    steps += [(s, LABELS.get(s, s), stages[s]["kept"]) for s in STAGES if s in stages]
    if packed:
        steps.append(("packed", "Packed into SFT rows", packed["chats"]))
    if all(c is None for _, _, c in steps):
        return None
    return [{"step": s, "label": label, "count": c, "item": "chats"} for s, label, c in steps]
