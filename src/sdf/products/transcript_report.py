"""The advice run's report: its numbers as one JSON-ready dict, and a self-contained HTML section.

`transcript_stats(run_dir)` reads sft.parquet batch by batch (plus metrics.json, the rejects and the
ledger) and returns coverage (section x temptation, domain), the deployment shares (system prompt,
tools, tool formats), deliberation/answer/user lengths, the funnel, the cost and a few samples.
`render_transcript_section(stats)` turns that dict into an HTML <section> that needs no other file,
and `write_transcript_report` writes both as stats.json and report.html.
"""

from __future__ import annotations

import html
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from sdf.llm.ledger import Ledger
from sdf.run import RunDir, iter_rows

SAMPLES = 5


def _lengths(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0, "mean": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0, "max": 0.0}
    a = np.asarray(values)
    return {"n": len(values), "mean": round(float(a.mean()), 1), "p10": float(np.percentile(a, 10)),
            "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def transcript_stats(run_dir: Path) -> dict[str, Any]:
    """Every number of the transcript report, JSON-ready."""
    rd = RunDir(run_dir)
    rd.require_run()
    config = rd.read_config()
    coverage: Counter[tuple[str, str]] = Counter()
    domains: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    operators: Counter[str] = Counter()
    with_system = with_tools = n = 0
    words: dict[str, list[int]] = {"user": [], "deliberation": [], "answer": []}
    samples: list[dict[str, Any]] = []
    if rd.sft.is_file():
        for batch in iter_rows(rd.sft):
            for row in batch:
                n += 1
                final, roles = row["messages"][-1], [m["role"] for m in row["messages"]]
                coverage[(row["section_id"] or "", row["temptation"] or "")] += 1
                domains[row["domain"] or ""] += 1
                operators[row["operator"] or "(none)"] += 1
                if row["tool_format"]:
                    formats[row["tool_format"]] += 1
                with_system += "system" in roles
                with_tools += bool(row["tool_format"])
                user = next(m for m in reversed(row["messages"]) if m["role"] == "user")
                words["user"].append(len((user["content"] or "").split()))
                words["deliberation"].append(len((final["reasoning_content"] or "").split()))
                words["answer"].append(len((final["content"] or "").split()))
                if len(samples) < SAMPLES:
                    samples.append({"id": row["id"], "tools": row["tools"], "temptation": row["temptation"],
                                    "messages": [{k: v for k, v in m.items() if v is not None}
                                                 for m in row["messages"]]})
    metrics = rd.read_metrics()
    rejects = rd.read_rejects(["stage", "cost_usd"]).to_pylist()
    cost: dict[str, Any] = {"paid_but_discarded_usd": round(sum(r["cost_usd"] or 0.0 for r in rejects), 6)}
    if rd.store.is_file():
        with closing(Ledger(rd.store, readonly=True)) as ledger:  # a report never writes the ledger
            cost.update(ledger.totals())
    return {
        "product": config.get("run", {}).get("product", "documents"),
        "mode": "rewrite" if config.get("advice", {}).get("rewrite") else "advice",
        "planned": rd.read_plan().get("chats"),
        "chats": n,
        "coverage": {"section_x_temptation": [{"section_id": s, "temptation": t, "chats": c}
                                              for (s, t), c in sorted(coverage.items())],
                     "sections": len({s for s, _ in coverage}), "temptations": len({t for _, t in coverage}),
                     "domains": dict(domains.most_common())},
        "deployment": {"with_system_prompt": with_system / n if n else 0.0, "with_tools": with_tools / n if n else 0.0,
                       "tool_formats": dict(formats.most_common()), "operators": dict(operators.most_common())},
        "words": {k: _lengths(v) for k, v in words.items()},
        "funnel": metrics["stages"],
        "dedup": metrics["dedup"],
        "caps": metrics["caps"],
        "cost": cost,
        "samples": samples,
    }


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chat(sample: dict[str, Any]) -> str:
    turns = []
    if sample["tools"]:
        turns.append(f'<div class="turn tools"><b>tools</b><pre>{_e(sample["tools"])}</pre></div>')
    for m in sample["messages"]:
        thinking = ""
        if m.get("reasoning_content"):
            thinking = f'<details><summary>deliberation</summary><pre>{_e(m["reasoning_content"])}</pre></details>'
        calls = f'<pre>{_e(m["tool_calls"])}</pre>' if m.get("tool_calls") else ""
        turns.append(f'<div class="turn {_e(m["role"])}"><b>{_e(m["role"])}</b>{thinking}'
                     f'<pre>{_e(m.get("content") or "")}</pre>{calls}</div>')
    title = f'{_e(sample["id"])} ({_e(sample["temptation"] or "rewrite")})'
    return f'<div class="chat"><h4>{title}</h4>{"".join(turns)}</div>'


def render_transcript_section(stats: dict[str, Any]) -> str:
    """The transcript report as one self-contained HTML <section> (its own styles, no scripts)."""
    dep, words, cost = stats["deployment"], stats["words"], stats["cost"]
    funnel = [[s, v["input"], v["kept"], ", ".join(f"{r} {c}" for r, c in v["dropped"].items())]
              for s, v in stats["funnel"].items()]
    pairs = [[r["section_id"], r["temptation"], r["chats"]] for r in stats["coverage"]["section_x_temptation"]]
    parts = [
        '<section class="sdf-transcripts"><style>.sdf-transcripts table{border-collapse:collapse;margin:.5em 0}'
        ".sdf-transcripts td,.sdf-transcripts th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
        ".sdf-transcripts pre{white-space:pre-wrap;margin:.2em 0}.sdf-transcripts .turn{border-left:3px solid #999;"
        "padding:2px 8px;margin:4px 0}.sdf-transcripts .user{border-color:#36c}.sdf-transcripts .assistant"
        "{border-color:#3a3}.sdf-transcripts .system{border-color:#c93}</style>",
        f"<h2>Transcripts ({_e(stats['mode'])})</h2>",
        f"<p>{stats['chats']} chats in sft.parquet of {_e(stats['planned'])} planned; "
        f"{stats['coverage']['sections']} sections, {stats['coverage']['temptations']} temptations, "
        f"{len(stats['coverage']['domains'])} domains.</p>",
        f"<p>With a system prompt: {dep['with_system_prompt']:.0%}; with tools: {dep['with_tools']:.0%} "
        f"(formats: {_e(dep['tool_formats'])}).</p>",
        "<h3>Lengths (words)</h3>",
        _table(["part", "n", "mean", "p10", "p50", "p90", "max"],
               [[k, v["n"], v["mean"], v["p10"], v["p50"], v["p90"], v["max"]] for k, v in words.items()]),
        "<h3>Funnel</h3>", _table(["stage", "input", "kept", "dropped"], funnel),
        f"<h3>Cost</h3><p>${cost.get('cost_usd', 0.0):.4f} in total; cached share of input "
        f"{cost.get('cache_read_share', 0.0):.1%}; paid but discarded ${cost['paid_but_discarded_usd']:.4f}.</p>",
        "<h3>Coverage: section x temptation</h3>", _table(["section", "temptation", "chats"], pairs),
        "<h3>Domains</h3>", _table(["domain", "chats"], [[d, c] for d, c in stats["coverage"]["domains"].items()]),
        "<h3>Samples</h3>", *(_chat(s) for s in stats["samples"]),
        "</section>",
    ]
    return "\n".join(parts)


def write_transcript_report(run_dir: Path) -> Path:
    """stats.json and a report.html holding the transcript section."""
    rd = RunDir(run_dir)
    stats = transcript_stats(run_dir)
    rd.write_stats(stats)
    page = ('<!doctype html><html><head><meta charset="utf-8"><title>sdf transcripts report</title></head>'
            f'<body style="font-family:sans-serif;max-width:1100px;margin:auto">{render_transcript_section(stats)}'
            "</body></html>\n")
    rd.report.write_text(page, encoding="utf-8")
    return rd.report
