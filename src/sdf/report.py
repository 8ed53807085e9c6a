"""Statistics, plots and a self-contained HTML report of a run: see the corpus before training on it.

`collect_stats` reads whatever artifacts a run has and returns plain, JSON-ready numbers;
`write_report` renders report.html FROM those numbers, so the report and `sdf stats` never disagree.
A missing or unreadable artifact makes its part of the report "not available"; it never raises.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sqlite3
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Figure objects render through Agg without touching pyplot's global backend (safe inside notebooks).
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, StrMethodFormatter

from sdf.errors import SdfError
from sdf.run import STAGES, RunDir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SAMPLES_PER_GENRE = 2
SAMPLE_CHARS = 900
STAGE_ORDER = list(STAGES)  # the order in which the pipeline's stages drop documents
TOKEN_COLUMNS = ("tokens", "n_tokens", "num_tokens", "token_count")
ARTIFACTS = (
    "config.toml",
    "sections.jsonl",
    "specs.parquet",
    "store.sqlite",
    "documents.parquet",
    "rejected",
    "corpus.parquet",
    "shards/manifest.json",
)
# What each part of the report is computed from, for the "not available" notes.
NEEDS = {
    "genre_mix": ("corpus.parquet", "documents.parquet", "specs.parquet", "shards/manifest.json"),
    "coverage": ("corpus.parquet", "documents.parquet", "specs.parquet"),
    "lengths": ("corpus.parquet", "documents.parquet"),
    "funnel": (
        "specs.parquet",
        "store.sqlite",
        "documents.parquet",
        "corpus.parquet",
        "shards/manifest.json",
    ),
    "rejections": ("rejected",),
    "cost": ("store.sqlite", "documents.parquet"),
    "dedup_clusters": ("rejected",),
    "diversity": ("shards/manifest.json",),
    "packing": ("shards/manifest.json",),
    "samples": ("corpus.parquet", "documents.parquet"),
}
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, pa.ArrowException, sqlite3.Error)


# ----------------------------------------------------------------------------------------------------
# Loading: the only part that touches the run directory.


@dataclass
class RunData:
    """The parts of a run's artifacts that statistics need (texts only for samples and word counts)."""

    path: Path
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> "ok" | "missing" | "unreadable: ..."
    config: dict[str, Any] | None = None
    sections: list[dict[str, Any]] | None = None
    specs: list[dict[str, Any]] | None = None
    documents: list[dict[str, Any]] | None = None
    rejected: list[dict[str, Any]] | None = None
    corpus: list[dict[str, Any]] | None = None
    ledger: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    final_source: str | None = None  # which file `samples` and word counts come from


def load_run(run_dir: str | Path) -> RunData:
    """Read every artifact that exists; record the missing and unreadable ones instead of failing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise SdfError(f"run directory not found: {path} (pass a run directory such as corpus/<name>)")
    run = RunData(path=path)

    def attempt(name: str, read: Callable[[Path], Any]) -> Any:
        file = path / name
        if not file.exists():
            run.artifacts[name] = "missing"
            return None
        try:
            value = read(file)
        except _READ_ERRORS as exc:
            run.artifacts[name] = f"unreadable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            return None
        run.artifacts[name] = "ok"
        return value

    run.config = attempt("config.toml", lambda f: tomllib.loads(f.read_text(encoding="utf-8")))
    run.sections = attempt("sections.jsonl", _read_jsonl)
    run.specs = attempt(
        "specs.parquet",
        lambda f: _read_rows(f, ["spec_id", "section_id", "section_title", "genre", "target_words"]),
    )
    run.rejected = attempt(
        "rejected",
        lambda f: RunDir(path).read_rejects(["doc_id", "stage", "reason", "duplicate_of", "genre", "section_id"])
        .to_pylist(),
    )
    run.ledger = attempt("store.sqlite", _read_ledger)
    run.manifest = attempt("shards/manifest.json", lambda f: _json_object(f.read_text(encoding="utf-8")))
    doc_columns = [
        "doc_id",
        "genre",
        "section_id",
        "section_title",
        "target_words",
        "audience",
        "persona",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cost_usd",
        *TOKEN_COLUMNS,
    ]
    # Texts are scanned (word counts, samples) only for the final documents: the corpus, else all documents.
    corpus_samples: dict[str, list[dict[str, Any]]] = {}
    doc_samples: dict[str, list[dict[str, Any]]] = {}
    run.corpus = attempt("corpus.parquet", lambda f: _read_rows(f, doc_columns, samples=corpus_samples))
    run.documents = attempt(
        "documents.parquet",
        lambda f: _read_rows(f, doc_columns, samples=None if run.corpus is not None else doc_samples),
    )
    if run.corpus is not None:
        run.final_source, run.samples = "corpus.parquet", corpus_samples
    elif run.documents is not None:
        run.final_source, run.samples = "documents.parquet", doc_samples
    return run


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _read_rows(
    path: Path, columns: Sequence[str], samples: dict[str, list[dict]] | None = None
) -> list[dict[str, Any]]:
    """Rows with the wanted columns that exist; when `samples` is given, also scan texts for word counts
    and keep the first few documents of each genre (file order) as samples."""
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    read = [c for c in columns if c in names]
    scan_text = samples is not None and "text" in names
    if scan_text:
        read.append("text")
    rows: list[dict[str, Any]] = []
    if not read:
        return [{} for _ in range(pf.metadata.num_rows)]
    for batch in pf.iter_batches(columns=read, batch_size=2048):
        for row in batch.to_pylist():
            if scan_text:
                text = row.pop("text")
                row["words"] = len(text.split()) if isinstance(text, str) else None
                bucket = samples.setdefault(str(row.get("genre")), [])  # type: ignore[union-attr]
                if isinstance(text, str) and len(bucket) < SAMPLES_PER_GENRE:
                    bucket.append(
                        {
                            **row,
                            "chars": len(text),
                            # Cut on a word boundary so the excerpt never ends mid-word.
                            "text": text
                            if len(text) <= SAMPLE_CHARS
                            else text[:SAMPLE_CHARS].rsplit(None, 1)[0],
                            "truncated": len(text) > SAMPLE_CHARS,
                        }
                    )
            rows.append(row)
    return rows


def _read_ledger(path: Path) -> dict[str, Any]:
    """Aggregate the `requests` (and `batches`) tables in SQL, so a large ledger stays cheap to report on."""
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(requests)")}
        if not cols:
            raise ValueError("no `requests` table")

        empty = "''"  # SQL literal for a missing text column

        def col(name: str, default: str = "0") -> str:
            return f"COALESCE({name}, {default})" if name in cols else default

        groups = [
            dict(
                zip(
                    (
                        "purpose",
                        "model",
                        "status",
                        "requests",
                        "input_tokens",
                        "output_tokens",
                        "cache_read_tokens",
                        "cache_creation_tokens",
                        "cost_usd",
                    ),
                    row,
                    strict=True,
                )
            )
            for row in con.execute(
                f"SELECT {col('purpose', empty)}, {col('model', empty)}, {col('status', empty)}, COUNT(*), "
                f"SUM({col('input_tokens')}), SUM({col('output_tokens')}), SUM({col('cache_read_tokens')}), "
                f"SUM({col('cache_creation_tokens')}), SUM({col('cost_usd')}) FROM requests GROUP BY 1, 2, 3"
            )
        ]
        responses = None
        if {"purpose", "status", "spec_id"} <= cols:
            responses = con.execute(
                "SELECT COUNT(DISTINCT spec_id) FROM requests WHERE purpose = 'generate' AND status = 'ok'"
            ).fetchone()[0]
        last = None
        if "updated_at" in cols or "created_at" in cols:
            last = con.execute(f"SELECT MAX({col('updated_at', 'created_at')}) FROM requests").fetchone()[0]
        batches = None
        if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'").fetchone():
            bcols = {r[1] for r in con.execute("PRAGMA table_info(batches)")}
            if "status" in bcols:
                count = "SUM(COALESCE(request_count, 0))" if "request_count" in bcols else "0"
                batches = [
                    {"status": s, "batches": n, "requests": int(r or 0)}
                    for s, n, r in con.execute(
                        f"SELECT COALESCE(status, ''), COUNT(*), {count} FROM batches GROUP BY 1"
                    )
                ]
    finally:
        con.close()
    return {"groups": groups, "responses_ok": responses, "last_activity": last, "batches": batches}


# ----------------------------------------------------------------------------------------------------
# Statistics: pure functions of RunData.


def collect_stats(run_dir: str | Path) -> dict[str, Any]:
    """The run's numbers as a JSON-serialisable dict; also written to `<run>/stats.json`."""
    run = load_run(run_dir)
    stats = compute_stats(run)
    _write_stats(run.path, stats)
    return stats


def compute_stats(run: RunData) -> dict[str, Any]:
    """Every number the report shows. A part is None when the artifacts it needs are absent."""
    genre_mix = _genre_mix(run)
    order = [g["genre"] for g in genre_mix["genres"]] if genre_mix else []
    cost = _cost(run)
    stats: dict[str, Any] = {
        "run": _summary(run, cost),
        "artifacts": dict(run.artifacts),
        "genre_mix": genre_mix,
        "coverage": _coverage(run, order),
        "lengths": _lengths(run, order),
        "funnel": _funnel(run),
        "rejections": _rejections(run),
        "cost": cost,
        "dedup_clusters": _dedup_clusters(run),
        "diversity": _diversity(run.manifest),
        "packing": _packing(run.manifest),
    }
    stats["unavailable"] = {
        part: _why_unavailable(run.artifacts, NEEDS[part])
        for part in NEEDS
        if part != "samples" and stats.get(part) is None
    }
    return stats


def _why_unavailable(artifacts: dict[str, str], needs: Sequence[str]) -> str:
    readable = [name for name in needs if artifacts.get(name) == "ok"]
    if readable:
        return "no data in " + " or ".join(readable)
    states = [f"{name} {artifacts.get(name, 'missing')}" for name in needs]
    return "needs " + " or ".join(needs) + " (" + "; ".join(states) + ")"


def _first(mapping: dict[str, Any] | None, *keys: str) -> Any:
    """The first present, non-null value among alias keys (the manifest's key names may vary)."""
    for key in keys:
        if mapping and mapping.get(key) is not None:
            return mapping[key]
    return None


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _final_docs(run: RunData) -> list[dict[str, Any]] | None:
    return run.corpus if run.corpus is not None else run.documents


def _summary(run: RunData, cost: dict[str, Any] | None) -> dict[str, Any]:
    models: dict[str, set[str]] = defaultdict(set)
    if run.ledger:
        for g in run.ledger["groups"]:
            if g["model"]:
                models[g["model"]].add(g["purpose"] or "?")
    elif run.documents:
        for d in run.documents:
            if d.get("model"):
                models[d["model"]].add("generate")
    final = _final_docs(run)
    doc_tokens = _doc_tokens(run)
    tokens = _first(run.manifest, "total_tokens", "tokens")
    tokens_source = "shards/manifest.json" if tokens is not None else None
    if tokens is None and doc_tokens[0] and final is not None:
        tokens = sum(doc_tokens[0].get(d.get("doc_id"), 0) for d in final)
        tokens_source = f"{run.final_source} ({doc_tokens[1]})"
    last = run.ledger.get("last_activity") if run.ledger else None
    if not last:
        mtimes = [(run.path / a).stat().st_mtime for a in ARTIFACTS if (run.path / a).exists()]
        last = (
            datetime.fromtimestamp(max(mtimes), timezone.utc).isoformat(timespec="minutes")
            if mtimes
            else None
        )
    return {
        "name": run.path.resolve().name,
        "path": str(run.path.resolve()),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "last_activity": last,
        "models": {m: sorted(p) for m, p in sorted(models.items())},
        "specs": len(run.specs) if run.specs is not None else None,
        "documents": len(run.documents) if run.documents is not None else None,
        "corpus_docs": len(run.corpus) if run.corpus is not None else None,
        "tokens": int(tokens) if _num(tokens) is not None else None,
        "tokens_source": tokens_source,
        "total_cost_usd": cost["total"]["cost_usd"] if cost else None,
    }


def _shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def _genre_targets(run: RunData) -> tuple[dict[str, float], str | None]:
    weights = ((run.config or {}).get("plan") or {}).get("genre_weights")
    if isinstance(weights, dict):
        clean = {str(g): float(w) for g, w in weights.items() if _num(w) is not None and float(w) >= 0}
        total = sum(clean.values())
        if total > 0:
            return {g: w / total for g, w in clean.items()}, "config.toml [plan].genre_weights"
    mix = _first((run.manifest or {}).get("diversity"), "genre_mix")
    if isinstance(mix, dict):
        targets = {g: _num(v.get("target")) for g, v in mix.items() if isinstance(v, dict)}
        targets = {g: t for g, t in targets.items() if t is not None}
        if targets:
            return targets, "shards/manifest.json diversity.genre_mix"
    return {}, None


def _genre_mix(run: RunData) -> dict[str, Any] | None:
    targets, target_source = _genre_targets(run)
    actual_counts: Counter[str] | None = None
    actual_source = None
    for rows, source in (
        (run.corpus, "corpus.parquet"),
        (run.documents, "documents.parquet"),
        (run.specs, "specs.parquet (planned)"),
    ):
        if rows is not None:
            actual_counts, actual_source = Counter(str(r.get("genre")) for r in rows), source
            break
    actual: dict[str, float] = _shares(actual_counts) if actual_counts is not None else {}
    if actual_counts is None:
        mix = _first((run.manifest or {}).get("diversity"), "genre_mix")
        if isinstance(mix, dict):
            actual = {
                g: v
                for g, v in ((g, _num(v.get("actual"))) for g, v in mix.items() if isinstance(v, dict))
                if v is not None
            }
            actual_source = "shards/manifest.json diversity.genre_mix"
    if not actual and not targets and actual_counts is None:
        return None
    spec_counts = Counter(str(r.get("genre")) for r in run.specs) if run.specs is not None else None
    packed = _first(run.manifest, "tokens_per_genre")
    genres = sorted(
        set(targets) | set(actual) | set(actual_counts or {}),
        key=lambda g: (-(targets.get(g) or 0.0), -actual.get(g, 0.0), g),
    )
    rows = []
    for g in genres:
        target = targets.get(g) if targets else None
        share = actual.get(g, 0.0)
        rows.append(
            {
                "genre": g,
                "target": round(target, 6) if target is not None else None,
                "actual": round(share, 6),
                "gap": round(share - target, 6) if target is not None else None,
                "docs": actual_counts.get(g, 0) if actual_counts is not None else None,
                "specs": spec_counts.get(g, 0) if spec_counts is not None else None,
                "packed_tokens": int(packed[g])
                if isinstance(packed, dict) and _num(packed.get(g)) is not None
                else None,
            }
        )
    gaps = [abs(r["gap"]) for r in rows if r["gap"] is not None]
    return {
        "target_source": target_source,
        "actual_source": actual_source,
        "genres": rows,
        "max_abs_gap": round(max(gaps), 6) if gaps else None,
    }


def _coverage(run: RunData, genre_order: list[str]) -> dict[str, Any] | None:
    source_rows = None
    for rows, source in (
        (run.corpus, "corpus.parquet"),
        (run.documents, "documents.parquet"),
        (run.specs, "specs.parquet (planned)"),
    ):
        if rows is not None:
            source_rows = (rows, source)
            break
    if source_rows is None:
        return None
    rows, source = source_rows
    cells = Counter((str(r.get("section_id")), str(r.get("genre"))) for r in rows)
    sections: list[dict[str, str]] = []
    seen: set[str] = set()
    for s in run.sections or []:
        sid = str(s.get("id"))
        if sid not in seen:
            seen.add(sid)
            sections.append({"id": sid, "title": str(s.get("title") or sid)})
    titles = {str(r.get("section_id")): r.get("section_title") for r in (run.specs or []) + rows}
    for sid, _ in cells:
        if sid not in seen:
            seen.add(sid)
            sections.append({"id": sid, "title": str(titles.get(sid) or sid)})
    genres = [g for g in genre_order if any(g == cg for _, cg in cells)] or sorted({g for _, g in cells})
    genres += sorted({g for _, g in cells} - set(genres))
    if not genres:
        return None
    counts = [[cells.get((s["id"], g), 0) for g in genres] for s in sections]
    for s, row in zip(sections, counts, strict=True):
        s["total"] = sum(row)  # type: ignore[assignment]
    return {
        "source": source,
        "genres": genres,
        "sections": sections,
        "counts": counts,
        "uncovered": [s["id"] for s in sections if not s["total"]],
        "empty_cells": sum(1 for row in counts for c in row if c == 0),
    }


def _doc_tokens(run: RunData) -> tuple[dict[str, int], str]:
    """Per-document token counts: a token column of the final docs, else the generation's output tokens."""
    final = _final_docs(run) or []
    for name in TOKEN_COLUMNS:
        values = {d.get("doc_id"): d.get(name) for d in final if _num(d.get(name)) is not None}
        if values:
            return {k: int(v) for k, v in values.items()}, f"{name} column"
    usage = {
        d.get("doc_id"): d.get("output_tokens")
        for d in (run.documents or []) + final
        if _num(d.get("output_tokens")) is not None
    }
    if usage:
        return {k: int(v) for k, v in usage.items()}, "model output tokens"
    return {}, ""


def _describe(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    bins = int(min(20, max(5, math.ceil(math.sqrt(len(arr))))))
    counts, edges = np.histogram(arr, bins=bins)
    return {
        "n": int(len(arr)),
        "mean": round(float(arr.mean()), 2),
        "median": float(np.median(arr)),
        "p10": round(float(np.percentile(arr, 10)), 2),
        "p90": round(float(np.percentile(arr, 90)), 2),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "hist": {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]},
    }


def _lengths(run: RunData, genre_order: list[str]) -> dict[str, Any] | None:
    final = _final_docs(run)
    if not final:
        return None
    tokens, token_source = _doc_tokens(run)
    unit = "tokens" if tokens else "words"
    by_genre: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in final:
        by_genre[str(d.get("genre"))].append(d)
    genres = [g for g in genre_order if g in by_genre] + sorted(set(by_genre) - set(genre_order))
    per_genre: dict[str, Any] = {}
    for g in genres:
        docs = by_genre[g]
        if unit == "tokens":
            values = [tokens[d["doc_id"]] for d in docs if d.get("doc_id") in tokens]
        else:
            values = [d["words"] for d in docs if d.get("words") is not None]
        if not values:
            continue
        entry = _describe(values)
        words = [d["words"] for d in docs if d.get("words") is not None]
        targets = [d["target_words"] for d in docs if _num(d.get("target_words")) is not None]
        entry["mean_words"] = round(sum(words) / len(words), 1) if words else None
        entry["mean_target_words"] = round(sum(targets) / len(targets), 1) if targets else None
        entry["words_to_target"] = (
            round(entry["mean_words"] / entry["mean_target_words"], 3)
            if words and targets and entry["mean_target_words"]
            else None
        )
        per_genre[g] = entry
    if not per_genre:
        return None
    return {
        "unit": unit,
        "unit_source": token_source if unit == "tokens" else "whitespace words of text",
        "source": run.final_source,
        "per_genre": per_genre,
    }


def _funnel(run: RunData) -> list[dict[str, Any]] | None:
    docs = run.documents
    doc_ids = {d.get("doc_id") for d in docs} if docs is not None else set()
    dropped: Counter[str] = Counter()
    if run.rejected is not None:
        dropped = Counter(str(r.get("stage")) for r in run.rejected if r.get("doc_id") in doc_ids)
    after_quality = after_dedup = None
    if docs is not None and run.rejected is not None:
        after_quality = len(docs) - dropped["quality"] - dropped["judge"]
        after_dedup = after_quality - dropped["decontaminate"] - dropped["dedup"]
    packed = _first(run.manifest, "total_docs", "docs", "n_docs", "documents")
    steps = [
        ("specs", "Specs planned", len(run.specs) if run.specs is not None else None),
        ("responses", "Responses (ledger ok)", run.ledger.get("responses_ok") if run.ledger else None),
        ("documents", "Documents extracted", len(docs) if docs is not None else None),
        ("after_quality", "Kept after quality + judge", after_quality),
        ("after_dedup", "Kept after decontam. + dedup", after_dedup),
        ("corpus", "Corpus (after diversity caps)", len(run.corpus) if run.corpus is not None else None),
        ("packed", "Packed into shards", int(packed) if _num(packed) is not None else None),
    ]
    if all(count is None for _, _, count in steps):
        return None
    return [{"step": s, "label": label, "count": c} for s, label, c in steps]


def _stage_key(stage: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _rejections(run: RunData) -> dict[str, Any] | None:
    if run.rejected is None:
        return None
    total = len(run.rejected)
    by_stage = Counter(str(r.get("stage")) for r in run.rejected)
    by_reason = Counter((str(r.get("stage")), str(r.get("reason"))) for r in run.rejected)
    return {
        "total": total,
        "by_stage": [{"stage": s, "count": by_stage[s]} for s in sorted(by_stage, key=_stage_key)],
        "by_reason": [
            {"stage": s, "reason": r, "count": c, "share": round(c / total, 6)}
            for (s, r), c in sorted(by_reason.items(), key=lambda kv: (_stage_key(kv[0][0]), -kv[1]))
        ],
    }


_USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def _usage_row(groups: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": sum(int(g["requests"]) for g in groups),
        "ok": sum(int(g["requests"]) for g in groups if g["status"] == "ok"),
        "failed": sum(int(g["requests"]) for g in groups if g["status"] == "failed"),
    }
    for key in _USAGE:
        row[key] = int(sum(g[key] or 0 for g in groups))
    row["cost_usd"] = round(float(sum(g["cost_usd"] or 0 for g in groups)), 6)
    prompt = row["input_tokens"] + row["cache_read_tokens"] + row["cache_creation_tokens"]
    # Share of all prompt tokens (uncached + cache reads + cache writes) that were served from the cache.
    row["cache_read_share"] = round(row["cache_read_tokens"] / prompt, 6) if prompt else None
    return row


def _cost(run: RunData) -> dict[str, Any] | None:
    if run.ledger is not None:
        groups, source = run.ledger["groups"], "store.sqlite requests"
    elif run.documents is not None and any("cost_usd" in d for d in run.documents):
        merged: dict[str, dict[str, Any]] = {}
        for d in run.documents:
            g = merged.setdefault(
                str(d.get("model") or ""),
                {
                    "purpose": "generate",
                    "model": str(d.get("model") or ""),
                    "status": "ok",
                    "requests": 0,
                    **{k: 0 for k in _USAGE},
                    "cost_usd": 0.0,
                },
            )
            g["requests"] += 1
            for k in (*_USAGE, "cost_usd"):
                g[k] += d.get(k) or 0
        groups, source = list(merged.values()), "documents.parquet (generation only)"
    else:
        return None

    def split(key: str) -> list[dict[str, Any]]:
        parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for g in groups:
            parts[g[key] or "?"].append(g)
        return sorted(({key: k, **_usage_row(v)} for k, v in parts.items()), key=lambda r: -r["cost_usd"])

    pairs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for g in groups:
        pairs[(g["purpose"] or "?", g["model"] or "?")].append(g)
    statuses = Counter()
    for g in groups:
        statuses[g["status"] or "?"] += int(g["requests"])
    return {
        "source": source,
        "total": _usage_row(groups),
        "by_purpose": split("purpose"),
        "by_model": split("model"),
        "by_purpose_model": sorted(
            ({"purpose": p, "model": m, **_usage_row(v)} for (p, m), v in pairs.items()),
            key=lambda r: -r["cost_usd"],
        ),
        "requests_by_status": dict(statuses.most_common()),
        "batches": run.ledger.get("batches") if run.ledger else None,
    }


def _dedup_clusters(run: RunData) -> dict[str, Any] | None:
    if run.rejected is None:
        return None
    points = {r["doc_id"]: r["duplicate_of"] for r in run.rejected if r.get("duplicate_of")}
    genre = {r.get("doc_id"): r.get("genre") for r in (_final_docs(run) or []) + run.rejected}

    def root(doc: str) -> str:
        seen = {doc}
        while doc in points and points[doc] not in seen:  # follow chains to the kept document
            doc = points[doc]
            seen.add(doc)
        return doc

    members = Counter(root(d) for d in points)
    sizes = Counter(1 + n for n in members.values())
    return {
        "clusters": len(members),
        "duplicates": len(points),
        "largest": max(sizes) if sizes else 0,
        "mean_size": round(sum(s * c for s, c in sizes.items()) / len(members), 3) if members else None,
        "size_histogram": [{"size": s, "clusters": sizes[s]} for s in sorted(sizes)],
        "largest_clusters": [
            {"doc_id": d, "size": 1 + n, "genre": genre.get(d)}
            for d, n in sorted(members.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
    }


def _ranked(value: Any, label: str) -> list[dict[str, Any]]:
    """Top-k lists arrive as {item: n}, [[item, n]], [{label: item, count: n}] or [item]; normalise them."""
    out: list[dict[str, Any]] = []
    if isinstance(value, dict):
        value = list(value.items())
    for item in value if isinstance(value, list) else []:
        if isinstance(item, (list, tuple)) and item:
            out.append({label: str(item[0]), "count": _num(item[1]) if len(item) > 1 else None})
        elif isinstance(item, dict):
            name = _first(item, label, "name", "text", "opener", "value", "key")
            out.append({label: str(name), "count": _num(_first(item, "count", "n", "freq", "share"))})
        else:
            out.append({label: str(item), "count": None})
    return out


def _diversity(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    block = (manifest or {}).get("diversity")
    if not isinstance(block, dict):
        return None
    distinct = block.get("distinct_n")
    if isinstance(distinct, list):
        distinct = {str(i + 1): v for i, v in enumerate(distinct)}
    if not isinstance(distinct, dict):
        distinct = {k.split("_")[-1]: v for k, v in block.items() if k.startswith("distinct_")}
    metrics = {
        k: _num(v)
        for k, v in block.items()
        if _num(v) is not None and not isinstance(v, bool) and not k.startswith("distinct_")
    }
    return {
        "distinct_n": {str(k): _num(v) for k, v in distinct.items()},
        "metrics": metrics,
        "top_names": _ranked(block.get("top_names"), "name"),
        "top_openers": _ranked(block.get("top_openers"), "opener"),
    }


def _packing(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    if not manifest:
        return None
    tokenizer = manifest.get("tokenizer")
    files = [s for s in manifest.get("shards") or [] if isinstance(s, dict)]
    # A shard may be several files (e.g. .bin + .idx) and be written in several formats: count it once.
    shards = {(s.get("split"), s.get("shard", s.get("path"))) for s in files}
    formats = manifest.get("formats") if isinstance(manifest.get("formats"), list) else None
    formats = sorted({str(f) for f in formats or [s.get("format") for s in files] if f})
    splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}
    packing = manifest.get("packing") if isinstance(manifest.get("packing"), dict) else {}

    def integer(*keys: str) -> int | None:
        v = _num(_first(manifest, *keys))
        return int(v) if v is not None else None

    per_source = manifest.get("tokens_per_source")
    return {
        "total_docs": integer("total_docs", "docs", "n_docs", "documents"),
        "total_tokens": integer("total_tokens", "tokens"),
        "total_sequences": integer("total_sequences", "sequences", "n_sequences"),
        "seq_len": integer("seq_len", "sequence_length"),
        "strategy": _first(manifest, "strategy"),
        "tokenizer": tokenizer if isinstance(tokenizer, (dict, str)) else None,
        "shards": len(shards),
        "shard_files": len(files),
        "shard_formats": formats,
        "splits": {
            str(k): {f: v.get(f) for f in ("documents", "tokens", "sequences") if _num(v.get(f)) is not None}
            for k, v in splits.items()
            if isinstance(v, dict)
        },
        "padding_share": _num(_first(packing, "padding_share")),
        "tokens_per_source": per_source if isinstance(per_source, dict) else None,
        "config_hash": _first(manifest, "config_hash"),
    }


def _write_stats(run_dir: Path, stats: dict[str, Any]) -> Path:
    path = run_dir / "stats.json"
    try:
        path.write_text(
            json.dumps(stats, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise SdfError(f"cannot write {path}: {exc.strerror or exc}", exit_code=1) from exc
    return path


# ----------------------------------------------------------------------------------------------------
# Plots: each takes one part of the stats and returns a Figure (or None when there is nothing to draw).

TARGET_COLOR = "#b8c2cc"
ACTUAL_COLOR = "#2f6690"
STAGE_COLORS = {
    "generate": "#8e6c8a",
    "quality": "#d1495b",
    "judge": "#edae49",
    "dedup": "#00798c",
    "decontaminate": "#30638e",
    "diversity": "#66a182",
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_genre_mix(mix: dict[str, Any]) -> Figure:
    rows = mix["genres"]
    y = np.arange(len(rows))
    fig = _figure(8, 1.4 + 0.34 * len(rows))
    ax = fig.add_subplot()
    has_target = any(r["target"] is not None for r in rows)
    h = 0.4 if has_target else 0.7
    if has_target:
        ax.barh(y - h / 2, [100 * (r["target"] or 0) for r in rows], h, color=TARGET_COLOR, label="target")
    ax.barh(
        y + (h / 2 if has_target else 0),
        [100 * r["actual"] for r in rows],
        h,
        color=ACTUAL_COLOR,
        label="actual",
    )
    ax.set_yticks(y, [r["genre"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("share of documents (%)")
    ax.set_title(f"Genre mix: target vs actual ({mix['actual_source']})")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_coverage(cov: dict[str, Any]) -> Figure | None:
    if not cov["sections"] or not cov["genres"]:
        return None
    counts = np.asarray(cov["counts"], dtype=float)
    n_rows, n_cols = counts.shape
    fig = _figure(max(7.0, 4.6 + 0.42 * n_cols), max(3.0, 1.9 + 0.3 * n_rows))
    ax = fig.add_subplot()
    vmax = max(1.0, float(counts.max()) if counts.size else 1.0)
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
    labels = [_clip(f"{s['id']}  {s['title']}", 44) for s in cov["sections"]]
    ax.set_yticks(np.arange(n_rows), labels, fontsize=8)
    ax.set_xticks(np.arange(n_cols), cov["genres"], rotation=45, ha="right", fontsize=8)
    for tick, s in zip(ax.get_yticklabels(), cov["sections"], strict=True):
        if not s["total"]:
            tick.set_color("#c0392b")  # sections with no documents at all stand out
    if counts.size <= 1500:
        for (i, j), v in np.ndenumerate(counts):
            if v:
                ax.text(
                    j,
                    i,
                    f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.6 * vmax else "#1b2631",
                )
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("genre")
    ax.set_title("Documents per section × genre")
    fig.colorbar(image, ax=ax, shrink=0.6, pad=0.01, label="documents")
    return fig


def plot_lengths(lengths: dict[str, Any]) -> Figure:
    items = list(lengths["per_genre"].items())
    ncols = min(4, len(items))
    nrows = math.ceil(len(items) / ncols)
    height = 0.7 + 2.2 * nrows
    # Fixed margins: constrained layout costs seconds once there are ~20 small axes.
    fig = Figure(figsize=(3.3 * ncols, height), dpi=100)
    fig.subplots_adjust(
        left=0.07, right=0.98, bottom=0.5 / height, top=1 - 0.8 / height, hspace=0.75, wspace=0.3
    )
    unit = lengths["unit"]
    for k, (genre, entry) in enumerate(items):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        edges = np.asarray(entry["hist"]["edges"])
        # One filled step patch per histogram: far cheaper to draw than a bar per bin.
        ax.stairs(entry["hist"]["counts"], edges, fill=True, color=ACTUAL_COLOR)
        ax.axvline(entry["median"], color="#d1495b", linewidth=1)
        ax.set_title(f"{genre} (n={entry['n']}, median {entry['median']:,.0f})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
        ax.spines[["top", "right"]].set_visible(False)
        if k // ncols == nrows - 1 or k + ncols >= len(items):
            ax.set_xlabel(unit, fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("documents", fontsize=8)
    fig.suptitle(f"Length per genre in {unit} ({lengths['source']}); red line = median", fontsize=11)
    return fig


def plot_funnel(funnel: list[dict[str, Any]]) -> Figure | None:
    steps = [s for s in funnel if s["count"] is not None]
    if len(steps) < 2:
        return None  # one bar is no funnel; the table says the same
    fig = _figure(8, 1.2 + 0.45 * len(steps))
    ax = fig.add_subplot()
    y = np.arange(len(steps))
    counts = [s["count"] for s in steps]
    ax.barh(y, counts, color=ACTUAL_COLOR, height=0.6)
    top = max(counts) if counts and max(counts) > 0 else 1
    for i, c in enumerate(counts):
        ax.text(c + top * 0.01, i, f"{c:,}  ({100 * c / top:.0f}%)", va="center", fontsize=9)
    ax.set_yticks(y, [s["label"] for s in steps])
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.22)
    ax.set_xlabel("documents")
    ax.set_title("From plan to packed shards")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_rejections(rej: dict[str, Any]) -> Figure | None:
    rows = rej["by_reason"]
    if not rows:
        return None
    fig = _figure(8, 1.3 + 0.32 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, [r["count"] for r in rows], color=[STAGE_COLORS.get(r["stage"], "#7f8c8d") for r in rows])
    ax.set_yticks(y, [f"{r['stage']}: {r['reason']}" for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("rejected documents")
    ax.set_title(f"Rejections by stage and reason ({rej['total']:,} total)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_cost(cost: dict[str, Any]) -> Figure | None:
    if not cost["total"]["requests"]:
        return None
    fig = _figure(13, 3.6)
    for k, (key, title) in enumerate((("purpose", "Cost by stage"), ("model", "Cost by model"))):
        ax = fig.add_subplot(1, 3, k + 1)
        rows = cost[f"by_{key}"]
        ax.barh(np.arange(len(rows)), [r["cost_usd"] for r in rows], color=ACTUAL_COLOR, height=0.6)
        ax.xaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
        ax.set_yticks(np.arange(len(rows)), [_clip(str(r[key]), 24) for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("cost")
        ax.set_title(title)
        ax.spines[["top", "right"]].set_visible(False)
    ax = fig.add_subplot(1, 3, 3)
    rows = cost["by_purpose"]
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for key, label, color in (
        ("cache_read_tokens", "cache read", "#66a182"),
        ("cache_creation_tokens", "cache write", "#edae49"),
        ("input_tokens", "uncached", "#b8c2cc"),
    ):
        values = np.asarray([r[key] for r in rows], dtype=float)
        ax.barh(y, values, left=left, color=color, label=label, height=0.6)
        left += values
    ax.set_yticks(y, [r["purpose"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel("prompt tokens")
    share = cost["total"]["cache_read_share"]
    ax.set_title("Prompt tokens" + (f" ({100 * share:.0f}% cache reads)" if share is not None else ""))
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_dedup_clusters(dedup: dict[str, Any]) -> Figure | None:
    hist = dedup["size_histogram"]
    if not hist:
        return None
    fig = _figure(6, 3.2)
    ax = fig.add_subplot()
    ax.bar([h["size"] for h in hist], [h["clusters"] for h in hist], color="#00798c", width=0.7)
    ax.set_xticks([h["size"] for h in hist])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cluster size (kept document + its duplicates)")
    ax.set_ylabel("clusters")
    ax.set_title(f"Duplicate clusters ({dedup['clusters']:,} clusters, {dedup['duplicates']:,} dropped)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_diversity(div: dict[str, Any]) -> Figure | None:
    panels = [
        (key, label, title)
        for key, label, title in (
            ("top_names", "name", "Most frequent names"),
            ("top_openers", "opener", "Most frequent openers"),
        )
        if div[key] and any(r["count"] is not None for r in div[key])
    ]
    if not panels:
        return None
    n = max(len(div[key]) for key, _, _ in panels)
    fig = _figure(6 * len(panels), 1.2 + 0.3 * n)
    for k, (key, label, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        rows = div[key]
        ax.barh(np.arange(len(rows)), [r["count"] or 0 for r in rows], color=ACTUAL_COLOR)
        ax.set_yticks(np.arange(len(rows)), [_clip(r[label], 34) for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("documents")
        ax.set_title(title)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def render_plots(stats: dict[str, Any]) -> dict[str, Figure]:
    """Figures keyed by plot name, for every part of the stats that has something to draw."""
    makers: list[tuple[str, str, Callable[[Any], Figure | None]]] = [
        ("genre_mix", "genre_mix", plot_genre_mix),
        ("coverage", "coverage", plot_coverage),
        ("lengths", "lengths", plot_lengths),
        ("funnel", "funnel", plot_funnel),
        ("rejections", "rejections", plot_rejections),
        ("cost", "cost", plot_cost),
        ("dedup_clusters", "dedup_clusters", plot_dedup_clusters),
        ("diversity", "diversity", plot_diversity),
    ]
    figures = {}
    for name, part, make in makers:
        if stats.get(part):
            fig = make(stats[part])
            if fig is not None:
                figures[name] = fig
    return figures


PLOT_NAMES = (
    "genre_mix",
    "coverage",
    "lengths",
    "funnel",
    "rejections",
    "cost",
    "dedup_clusters",
    "diversity",
)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# HTML: rendered from the stats dict (plus samples and PNGs); every dynamic string is escaped.

SECTIONS = [
    ("summary", "Summary"),
    ("genre-mix", "Genre mix"),
    ("coverage", "Section coverage"),
    ("lengths", "Document lengths"),
    ("funnel", "Funnel"),
    ("rejections", "Rejections"),
    ("cost", "Cost and caching"),
    ("dedup", "Duplicate clusters"),
    ("diversity", "Diversity"),
    ("samples", "Sample documents"),
    ("artifacts", "Artifacts"),
]

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b2631;margin:0;
 background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{margin:0 0 4px;font-size:26px}
h2{margin:40px 0 12px;padding-top:8px;border-top:1px solid #e3e7eb;font-size:20px}
h3{font-size:16px;margin:20px 0 8px}.muted{color:#5d6d7e;font-size:13px}
nav ol{columns:3;margin:8px 0 0;padding-left:20px}nav a{color:#2f6690;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#f2f5f8;border-radius:8px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#5d6d7e;text-transform:uppercase}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e7eb;text-align:left;vertical-align:top}
th{background:#f2f5f8;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.na{background:#fdf2e9;border-left:4px solid #e67e22;padding:8px 12px;color:#6e2c00}
.doc{border:1px solid #e3e7eb;border-radius:8px;margin:6px 0;overflow:hidden}
.doc header{background:#f2f5f8;padding:6px 12px;font-size:12px;color:#34495e}
.doc pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;padding:10px 12px;font:13px/1.5 Georgia,serif}
.bad{color:#c0392b}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px 24px;align-items:start}
.grid2>*,.grid3>*{min-width:0}
.grid3{display:grid;grid-template-columns:1fr 1fr 1fr;gap:24px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _int(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _pct(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _usd(value: Any) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3f}" if abs(value) >= 0.01 else f"${value:.4f}"


def _fnum(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()) -> str:
    num = set(numeric)
    head = "".join(
        f'<th class="n">{_e(h)}</th>' if i in num else f"<th>{_e(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(c)}</td>' if i in num else f"<td>{_e(c)}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _img(images: dict[str, str], name: str, alt: str) -> str:
    if name not in images:
        return ""
    return f'<img src="data:image/png;base64,{images[name]}" alt="{_e(alt)}">'


def _na(stats: dict[str, Any], part: str) -> str:
    why = stats.get("unavailable", {}).get(part) or "no data"
    return f'<p class="na">Not available: {_e(why)}.</p>'


def render_html(
    stats: dict[str, Any], samples: dict[str, list[dict[str, Any]]], images: dict[str, str]
) -> str:
    """The whole report as one HTML page; `images` maps plot names to base64-encoded PNGs."""
    run = stats["run"]
    body = [
        f"<h1>sdf report — {_e(run['name'])}</h1>",
        f'<p class="muted">{_e(run["path"])} · generated {_e(run["generated_at"])}</p>',
        "<nav><ol>"
        + "".join(f'<li><a href="#{sid}">{_e(t)}</a></li>' for sid, t in SECTIONS)
        + "</ol></nav>",
    ]
    for sid, title in SECTIONS:
        body.append(
            f'<section id="{sid}"><h2>{_e(title)}</h2>{_SECTION_RENDERERS[sid](stats, samples, images)}'
            "</section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>sdf report — {_e(run['name'])}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _tokenizer_text(tok: Any) -> str | None:
    if not isinstance(tok, dict):
        return None if tok is None else str(tok)
    name = tok.get("name") or tok.get("spec") or "?"
    parts = [f"{name} ({tok['kind']})" if tok.get("kind") else str(name)]
    if _num(tok.get("vocab_size")) is not None:
        parts.append(f"vocabulary {int(tok['vocab_size']):,}")
    parts += [f"{k.split('_')[0].upper()} {tok[k]}" for k in ("eos_id", "bos_id") if tok.get(k) is not None]
    return ", ".join(parts)


def _section_summary(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    run, pack = stats["run"], stats["packing"]
    models = "; ".join(f"{m} ({', '.join(p)})" for m, p in run["models"].items()) or "—"
    cards = [
        ("documents in corpus", _int(run["corpus_docs"])),
        ("tokens", _int(run["tokens"])),
        ("total cost", _usd(run["total_cost_usd"])),
        ("specs", _int(run["specs"])),
        ("run date", _e((run["last_activity"] or "—")[:16].replace("T", " "))),
    ]
    out = [
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in cards)
        + "</div>",
        f"<p><b>Models:</b> {_e(models)}</p>",
    ]
    if run["tokens_source"]:
        out.append(f'<p class="muted">Tokens from {_e(run["tokens_source"])}.</p>')
    if pack:
        tok = pack["tokenizer"]
        tok_text = _tokenizer_text(tok)
        rows = [
            ("tokenizer", tok_text or "—"),
            ("sequence length", _int(pack["seq_len"])),
            ("strategy", pack["strategy"] or "—"),
            ("packed documents", _int(pack["total_docs"])),
            ("packed tokens", _int(pack["total_tokens"])),
            ("sequences", _int(pack["total_sequences"])),
            (
                "shards",
                f"{pack['shards']:,} in {', '.join(pack['shard_formats']) or 'unrecorded formats'} "
                f"({pack['shard_files']:,} files)",
            ),
            ("padding", _pct(pack["padding_share"], 2)),
        ]
        if pack["tokens_per_source"]:
            rows.append(
                (
                    "tokens per source",
                    ", ".join(f"{k}: {_int(v)}" for k, v in pack["tokens_per_source"].items()),
                )
            )
        for split, numbers in pack["splits"].items():
            rows.append((f"split {split}", ", ".join(f"{_int(v)} {k}" for k, v in numbers.items())))
        out += ["<h3>Packing</h3>", _table([], rows)]
    else:
        out += ["<h3>Packing</h3>", _na(stats, "packing")]
    return "".join(out)


def _section_genre_mix(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    mix = stats["genre_mix"]
    if not mix:
        return _na(stats, "genre_mix")
    note = (
        f"Targets from {mix['target_source']}; actual shares of {mix['actual_source']}."
        if mix["target_source"]
        else f"No targets recorded; actual shares of {mix['actual_source']}."
    )
    rows = [
        (
            g["genre"],
            _pct(g["target"]),
            _pct(g["actual"]),
            "—" if g["gap"] is None else f"{100 * g['gap']:+.1f} pt",
            _int(g["docs"]),
            _int(g["specs"]),
            _int(g["packed_tokens"]),
        )
        for g in mix["genres"]
    ]
    return (
        f'<p class="muted">{_e(note)}</p>'
        + _img(images, "genre_mix", "genre mix")
        + _table(
            ["genre", "target", "actual", "gap", "docs", "specs", "packed tokens"], rows, numeric=range(1, 7)
        )
    )


def _section_coverage(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    cov = stats["coverage"]
    if not cov:
        return _na(stats, "coverage")
    by_id = {s["id"]: s["title"] for s in cov["sections"]}
    gaps = ", ".join(f"{sid} {by_id[sid]}" for sid in cov["uncovered"])
    return (
        f'<p class="muted">Counts of {_e(cov["source"])} by section (rows) and genre (columns); '
        f"{len(cov['sections'])} sections × {len(cov['genres'])} genres, "
        f"{cov['empty_cells']:,} empty cells; sections in red have no document at all.</p>"
        + _img(images, "coverage", "section coverage heatmap")
        + (
            f'<p class="bad">Sections without any document: {_e(gaps)}</p>'
            if gaps
            else "<p>Every section has at least one document.</p>"
        )
    )


def _section_lengths(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    lengths = stats["lengths"]
    if not lengths:
        return _na(stats, "lengths")
    unit = lengths["unit"]
    rows = [
        (
            g,
            _int(e["n"]),
            _fnum(e["mean"]),
            _fnum(e["median"]),
            _fnum(e["p10"]),
            _fnum(e["p90"]),
            _fnum(e["mean_words"]),
            _fnum(e["mean_target_words"]),
            "—" if e["words_to_target"] is None else f"{e['words_to_target']:.2f}",
        )
        for g, e in lengths["per_genre"].items()
    ]
    return (
        f'<p class="muted">Lengths in {_e(unit)} ({_e(lengths["unit_source"])}) '
        f"of {_e(lengths['source'])}.</p>"
        + _img(images, "lengths", "length histograms per genre")
        + _table(
            [
                "genre",
                "docs",
                f"mean {unit}",
                "median",
                "p10",
                "p90",
                "mean words",
                "target words",
                "words / target",
            ],
            rows,
            numeric=range(1, 9),
        )
    )


def _section_funnel(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    funnel = stats["funnel"]
    if not funnel:
        return _na(stats, "funnel")
    rows, prev = [], None
    for s in funnel:
        lost = "" if prev is None or s["count"] is None else f"{s['count'] - prev:+,}"
        rows.append((s["label"], _int(s["count"]), lost))
        prev = s["count"] if s["count"] is not None else prev
    return _img(images, "funnel", "funnel") + _table(["step", "documents", "change"], rows, numeric=(1, 2))


def _section_rejections(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    rej = stats["rejections"]
    if not rej:
        return _na(stats, "rejections")
    if not rej["total"]:
        return "<p>No document was rejected.</p>"
    stage_rows = [(s["stage"], _int(s["count"]), _pct(s["count"] / rej["total"])) for s in rej["by_stage"]]
    reason_rows = [(r["stage"], r["reason"], _int(r["count"]), _pct(r["share"])) for r in rej["by_reason"]]
    return (
        _img(images, "rejections", "rejections by stage and reason")
        + '<div class="grid2"><div><h3>By stage</h3>'
        + _table(["stage", "rejected", "share"], stage_rows, numeric=(1, 2))
        + "</div><div><h3>By reason</h3>"
        + _table(["stage", "reason", "rejected", "share"], reason_rows, numeric=(2, 3))
        + "</div></div>"
    )


def _section_cost(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    cost = stats["cost"]
    if not cost:
        return _na(stats, "cost")
    total = cost["total"]
    headers = [
        "requests",
        "ok",
        "failed",
        "uncached input",
        "cache read",
        "cache write",
        "output",
        "cost",
        "cache-read share",
    ]

    def cells(r: dict[str, Any]) -> list[str]:
        return [
            _int(r["requests"]),
            _int(r["ok"]),
            _int(r["failed"]),
            _int(r["input_tokens"]),
            _int(r["cache_read_tokens"]),
            _int(r["cache_creation_tokens"]),
            _int(r["output_tokens"]),
            _usd(r["cost_usd"]),
            _pct(r["cache_read_share"]),
        ]

    rows = [(r["purpose"], r["model"], *cells(r)) for r in cost["by_purpose_model"]]
    rows.append(("all", "", *cells(total)))
    out = [
        f"<p>Total <b>{_e(_usd(total['cost_usd']))}</b> over {_e(_int(total['requests']))} requests; "
        f"<b>{_e(_pct(total['cache_read_share']))}</b> of prompt tokens were cache reads "
        f"(cache reads ÷ (uncached input + cache reads + cache writes)). Source: {_e(cost['source'])}.</p>",
        _img(images, "cost", "cost by stage and model"),
        _table(["stage", "model", *headers], rows, numeric=range(2, 11)),
    ]
    status = ", ".join(f"{k}: {v:,}" for k, v in cost["requests_by_status"].items())
    out.append(f'<p class="muted">Requests by status: {_e(status)}.</p>')
    if cost["batches"]:
        batches = ", ".join(
            f"{b['status']}: {b['batches']:,} ({b['requests']:,} requests)" for b in cost["batches"]
        )
        out.append(f'<p class="muted">Batches by status: {_e(batches)}.</p>')
    return "".join(out)


def _section_dedup(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    dedup = stats["dedup_clusters"]
    if not dedup:
        return _na(stats, "dedup_clusters")
    if not dedup["clusters"]:
        return "<p>No duplicates were found.</p>"
    rows = [(c["doc_id"], c["genre"] or "—", _int(c["size"])) for c in dedup["largest_clusters"]]
    return (
        f"<p>{dedup['clusters']:,} clusters; {dedup['duplicates']:,} duplicates dropped; "
        f"largest cluster {dedup['largest']:,} documents, mean {dedup['mean_size']:.2f}. "
        "Size = the kept document plus every rejected document whose duplicate_of points to it.</p>"
        + _img(images, "dedup_clusters", "duplicate cluster sizes")
        + "<h3>Largest clusters</h3>"
        + _table(["kept doc_id", "genre", "size"], rows, numeric=(2,))
    )


def _section_diversity(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    div = stats["diversity"]
    if not div:
        return _na(stats, "diversity")
    metrics = [(f"distinct-{n}", _fnum(v)) for n, v in div["distinct_n"].items()]
    metrics += [(k.replace("_", " "), _fnum(v)) for k, v in div["metrics"].items()]
    names = [(r["name"], _fnum(r["count"])) for r in div["top_names"]]
    openers = [(r["opener"], _fnum(r["count"])) for r in div["top_openers"]]
    return (
        _img(images, "diversity", "top names and openers")
        + '<div class="grid3"><div><h3>Metrics</h3>'
        + _table(["metric", "value"], metrics, numeric=(1,))
        + "</div><div><h3>Top names</h3>"
        + (_table(["name", "documents"], names, numeric=(1,)) if names else "<p>None recorded.</p>")
        + "</div><div><h3>Top openers</h3>"
        + (_table(["opener", "documents"], openers, numeric=(1,)) if openers else "<p>None recorded.</p>")
        + "</div></div>"
    )


def _section_samples(
    stats: dict[str, Any], samples: dict[str, list[dict[str, Any]]], images: dict[str, str]
) -> str:
    if not samples:
        return (
            f'<p class="na">Not available: {_e(_why_unavailable(stats["artifacts"], NEEDS["samples"]))}.</p>'
        )
    order = [g["genre"] for g in (stats["genre_mix"] or {}).get("genres", [])]
    out = []
    for genre in [g for g in order if g in samples] + sorted(set(samples) - set(order)):
        out.append(f'<h3>{_e(genre)}</h3><div class="grid2">')
        for d in samples[genre]:
            section = f"§{d.get('section_id')} {d.get('section_title') or ''}".strip()
            words = f"{d['words']:,} words" if d.get("words") is not None else None
            meta = " · ".join(
                str(v) for v in (d.get("doc_id"), section, d.get("audience"), d.get("persona"), words) if v
            )
            more = f"\n\n… ({d['chars'] - len(d['text']):,} more characters)" if d["truncated"] else ""
            out.append(
                f'<article class="doc"><header>{_e(meta)}</header><pre>{_e(d["text"] + more)}</pre></article>'
            )
        out.append("</div>")
    return "".join(out)


def _section_artifacts(stats: dict[str, Any], samples: Any, images: dict[str, str]) -> str:
    rows = [(name, state) for name, state in stats["artifacts"].items()]
    return _table(["artifact", "state"], rows) + (
        '<p class="muted">Numbers on this page are also in stats.json beside it.</p>'
    )


_SECTION_RENDERERS: dict[
    str, Callable[[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, str]], str]
] = {
    "summary": _section_summary,
    "genre-mix": _section_genre_mix,
    "coverage": _section_coverage,
    "lengths": _section_lengths,
    "funnel": _section_funnel,
    "rejections": _section_rejections,
    "cost": _section_cost,
    "dedup": _section_dedup,
    "diversity": _section_diversity,
    "samples": _section_samples,
    "artifacts": _section_artifacts,
}


def write_report(run_dir: str | Path) -> Path:
    """Write `<run>/report.html` (plots embedded), `plots/*.png` and `stats.json`; return the HTML path."""
    run = load_run(run_dir)
    stats = compute_stats(run)
    _write_stats(run.path, stats)
    plots_dir = run.path / "plots"
    plots_dir.mkdir(exist_ok=True)
    images: dict[str, str] = {}
    for name, fig in render_plots(stats).items():
        png = _png(fig)
        (plots_dir / f"{name}.png").write_bytes(png)
        images[name] = base64.b64encode(png).decode("ascii")
    for name in PLOT_NAMES:
        if name not in images:  # a plot from an earlier build must not outlive its data
            (plots_dir / f"{name}.png").unlink(missing_ok=True)
    out = run.path / "report.html"
    out.write_text(render_html(stats, run.samples, images), encoding="utf-8")
    return out
