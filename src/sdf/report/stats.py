"""Every number of a run's report, read through the run-directory contract (`sdf.run`) and the ledger.

`load_run` reads what a run has; `compute_stats` turns it into plain, JSON-ready numbers that report.html,
its plots and `sdf stats --json` all show, so they never disagree. A missing or unreadable artifact makes
the parts that need it None, with the reason in stats["unavailable"]; it never raises.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sdf.errors import SdfError
from sdf.llm.ledger import USAGE_COLUMNS, Ledger
from sdf.report.rejects import contamination, rejections
from sdf.run import CORPUS_SCHEMA, SPEC_SCHEMA, STAGES, RunDir, count_rows, iter_batches
from sdf.steps.tokens.tokenizer import tokenizer_warning

SAMPLES_PER_GENRE = 2
SAMPLE_CHARS = 900
PLOTTED_LENGTHS = 200  # document lengths per genre that stats.json keeps for the length plot
SPEC_COLUMNS = ("spec_id", "section_id", "section_title", "genre", "audience", "persona", "setting", "idea",
                "redeals", "unsuitable", "ai_self_stakes")
DOC_COLUMNS = ("doc_id", "genre", "section_id", "section_title", "target_words", "audience", "persona",
               "output_tokens")
REJECT_COLUMNS = ("doc_id", "stage", "reason", "duplicate_of", "genre", "cost_usd")
# The run's artifacts (RunDir attributes), in the order the pipeline writes them.
ARTIFACTS = ("config", "sections", "plan", "specs", "store", "documents", "filtered", "rejected_dir", "corpus",
             "metrics", "manifest")
# What each part of the report is computed from, for the "not available" notes.
NEEDS = {
    "genre_mix": ("corpus.parquet", "documents.parquet", "specs.parquet"),
    "coverage": ("corpus.parquet", "documents.parquet", "specs.parquet"),
    "lengths": ("corpus.parquet", "documents.parquet"),
    "funnel": ("specs.parquet", "metrics.json", "shards/manifest.json"),
    "rejections": ("rejected",),
    "contamination": ("rejected",),
    "cost": ("store.sqlite",),
    "dedup_clusters": ("metrics.json", "rejected"),
    "briefs": ("specs.parquet",),
    "diversity": ("metrics.json",),
    "packing": ("shards/manifest.json",),
    "samples": ("corpus.parquet", "documents.parquet"),
}
STAGE_LABELS = {
    "generate": "Documents extracted",
    "quality": "Kept after quality",
    "judge": "Kept after judge",
    "decontaminate": "Kept after decontamination",
    "dedup": "Kept after dedup",
    "diversity": "Corpus (after diversity caps)",
}
READ_ERRORS = (OSError, ValueError, pa.ArrowException, sqlite3.Error, SdfError)


@dataclass
class RunData:
    """What the numbers are computed from: small tables without texts, plus the sample documents."""

    dir: RunDir
    artifacts: dict[str, str] = field(default_factory=dict)  # path in the run -> ok | missing | unreadable: ...
    sections: list[dict[str, Any]] | None = None
    plan: dict[str, Any] | None = None
    specs: pa.Table | None = None
    documents: pa.Table | None = None
    corpus: pa.Table | None = None  # with a `words` column
    rejects: pa.Table | None = None
    metrics: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    usage: list[dict[str, Any]] | None = None
    batches: list[dict[str, Any]] | None = None
    refusals: list[dict[str, Any]] | None = None
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    final_source: str | None = None  # the table that stands for the final documents: corpus, else documents

    @property
    def final(self) -> pa.Table | None:
        return self.corpus if self.corpus is not None else self.documents


def load_run(run_dir: str | Path) -> RunData:
    """Read every artifact the run has; record the missing and unreadable ones instead of failing."""
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise SdfError(f"run directory not found: {rd.path} (pass a run directory such as corpus/<name>)")
    run = RunData(rd)

    def read(attr: str, reader: Callable[[], Any]) -> Any:
        path = getattr(rd, attr)
        name = path.relative_to(rd.path).as_posix()
        if not path.exists():
            run.artifacts[name] = "missing"
            return None
        try:
            value = reader()
        except READ_ERRORS as exc:
            run.artifacts[name] = f"unreadable: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            return None
        run.artifacts[name] = "ok"
        return value

    read("config", rd.read_config)  # read only to say whether it is readable: plan.json holds the targets
    run.sections = read("sections", rd.read_sections)
    run.plan = read("plan", rd.read_plan)
    run.specs = read("specs", lambda: _table(rd.specs, _present(rd.specs, SPEC_COLUMNS), SPEC_SCHEMA))
    run.usage, run.batches, run.refusals = read("store", lambda: _ledger(rd)) or (None, None, None)
    run.rejects = read("rejected_dir", lambda: rd.read_rejects(REJECT_COLUMNS))
    run.corpus = read("corpus", lambda: _final_table(rd.corpus, run.samples))
    # Without a corpus (a build stopped before dedup), the extracted documents are the final ones.
    run.documents = read("documents", lambda: _table(rd.documents, DOC_COLUMNS, CORPUS_SCHEMA)
                         if run.corpus is not None else _final_table(rd.documents, run.samples))
    run.final_source = ("corpus.parquet" if run.corpus is not None
                        else "documents.parquet" if run.documents is not None else None)
    read("filtered", lambda: count_rows(rd.filtered))
    run.metrics = read("metrics", rd.read_metrics)
    run.manifest = read("manifest", rd.read_manifest)
    names = [getattr(rd, a).relative_to(rd.path).as_posix() for a in ARTIFACTS]
    run.artifacts = {name: run.artifacts[name] for name in names}  # in pipeline order, as the table shows them
    return run


def _present(path: Path, columns: Sequence[str]) -> list[str]:
    """The columns a file has (a run planned by an older sdf lacks the brief columns)."""
    names = set(pq.read_schema(path).names)
    return [c for c in columns if c in names]


def _table(path: Path, columns: Sequence[str], schema: pa.Schema) -> pa.Table:
    fields = pa.schema([schema.field(c) for c in columns])
    return pa.Table.from_batches(list(iter_batches(path, columns)), schema=fields)


def _final_table(path: Path, samples: dict[str, list[dict[str, Any]]]) -> pa.Table:
    """The final documents without their texts, plus a `words` column; fills `samples` (file order)."""
    fields = pa.schema([CORPUS_SCHEMA.field(c) for c in DOC_COLUMNS]).append(pa.field("words", pa.int32()))
    samples.clear()  # documents after a corpus that turned out unreadable: start afresh
    parts = []
    for batch in iter_batches(path, [*DOC_COLUMNS, "text"]):
        texts = batch.column("text")
        for i, genre in enumerate(batch.column("genre").to_pylist()):
            bucket = samples.setdefault(str(genre), [])
            if len(bucket) < SAMPLES_PER_GENRE and texts[i].is_valid:
                bucket.append(_sample({c: batch.column(c)[i].as_py() for c in DOC_COLUMNS}, texts[i].as_py()))
        words = pc.count_substring_regex(texts, pattern=r"\S+").cast(pa.int32())
        parts.append(pa.RecordBatch.from_arrays([*batch.drop_columns(["text"]).columns, words], schema=fields))
    return pa.Table.from_batches(parts, schema=fields)


def _sample(doc: dict[str, Any], text: str) -> dict[str, Any]:
    cut = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS].rsplit(None, 1)[0]  # never mid-word
    return {**doc, "words": len(text.split()), "chars": len(text), "text": cut, "truncated": len(cut) < len(text)}


def _ledger(rd: RunDir) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    with closing(Ledger(rd.store, readonly=True)) as ledger:
        return ledger.usage(), [dict(b) for b in ledger.batches()], ledger.refusals()


# ----------------------------------------------------------------------------------------------------
# The numbers: pure functions of RunData.


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
        "rejections": rejections(run.rejects, cost["total"]["cost_usd"] if cost else None),
        "contamination": contamination(run.dir, run.rejects),
        "cost": cost,
        "dedup_clusters": _dedup_clusters(run),
        "briefs": _briefs(run),
        "diversity": _diversity(run),
        "packing": _packing(run),
    }
    stats["unavailable"] = {part: why_unavailable(run.artifacts, NEEDS[part])
                            for part in NEEDS if part != "samples" and stats[part] is None}
    return stats


def why_unavailable(artifacts: dict[str, str], needs: Sequence[str]) -> str:
    readable = [name for name in needs if artifacts.get(name) == "ok"]
    if readable:
        return "no data in " + " or ".join(readable)
    states = [f"{name} {artifacts.get(name, 'missing')}" for name in needs]
    return "needs " + " or ".join(needs) + " (" + "; ".join(states) + ")"


def _counts(table: pa.Table | None, column: str) -> Counter[str]:
    if table is None:
        return Counter()
    return Counter({str(r["values"]): int(r["counts"]) for r in pc.value_counts(table.column(column)).to_pylist()})


def _planned_or_final(run: RunData) -> tuple[pa.Table | None, str | None]:
    if run.final is not None:
        return run.final, run.final_source
    return run.specs, "specs.parquet (planned)" if run.specs is not None else None


def _summary(run: RunData, cost: dict[str, Any] | None) -> dict[str, Any]:
    models: dict[str, set[str]] = defaultdict(set)
    for row in run.usage or []:
        models[row["model"]].add(row["purpose"])
    final = run.final
    if run.manifest is not None:
        tokens, tokens_source = run.manifest["tokens"], "shards/manifest.json"
    elif final is not None:
        tokens, tokens_source = int(pc.sum(final.column("output_tokens")).as_py() or 0), \
            f"{run.final_source} (model output tokens)"
    else:
        tokens, tokens_source = None, None
    stamps = [r["last_at"] for r in run.usage or [] if r["last_at"]]
    if stamps:
        last = max(stamps)
    else:
        mtimes = [getattr(run.dir, a).stat().st_mtime for a in ARTIFACTS if getattr(run.dir, a).exists()]
        last = datetime.fromtimestamp(max(mtimes), timezone.utc).isoformat(timespec="minutes") if mtimes else None
    return {
        "name": run.dir.path.resolve().name,
        "path": str(run.dir.path.resolve()),
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "last_activity": last,
        "models": {m: sorted(p) for m, p in sorted(models.items())},
        "specs": run.specs.num_rows if run.specs is not None else None,
        "documents": run.documents.num_rows if run.documents is not None else None,
        "corpus_docs": run.corpus.num_rows if run.corpus is not None else None,
        "tokens": tokens,
        "tokens_source": tokens_source,
        "total_cost_usd": cost["total"]["cost_usd"] if cost else None,
        # answers without a <document> envelope that were kept whole and left to the filters
        "envelope_missing": _flagged(run.dir.documents, "envelope_missing"),
        "envelope_missing_in_corpus": _flagged(run.dir.corpus, "envelope_missing"),
        "renamed_in_corpus": _flagged(run.dir.corpus, "renamed"),
        # documents spaCy NER read to confirm over-used names (all of them in the "ner" audit mode)
        "ner_documents": ((run.metrics or {}).get("caps") or {}).get("ner_documents"),
    }


def _flagged(path: Path, column: str) -> int | None:
    """Rows of a parquet artifact whose `column` is set (true, or not null); None without the artifact or
    the column (runs written before it existed)."""
    try:
        if not path.exists() or column not in pq.ParquetFile(path).schema_arrow.names:
            return None
        values = [b.column(0) for b in iter_batches(path, [column])]
    except READ_ERRORS:
        return None
    if not values:
        return 0
    column_values = pa.chunked_array(values)
    if pa.types.is_boolean(column_values.type):
        return int(pc.sum(pc.fill_null(column_values, False)).as_py() or 0)
    return len(column_values) - column_values.null_count


def _genre_mix(run: RunData) -> dict[str, Any] | None:
    table, source = _planned_or_final(run)
    if table is None:
        return None
    targets: dict[str, float] = (run.plan or {}).get("genre_targets", {})  # what the planner really aimed at
    counts, specs = _counts(table, "genre"), _counts(run.specs, "genre")
    total = sum(counts.values())
    packed = run.manifest["tokens_per_genre"] if run.manifest else {}
    genres = sorted(set(targets) | set(counts), key=lambda g: (-targets.get(g, 0.0), -counts[g], g))
    rows = []
    for g in genres:
        target, share = targets.get(g), counts[g] / total if total else 0.0
        rows.append({
            "genre": g,
            "target": round(target, 6) if target is not None else None,
            "actual": round(share, 6),
            "gap": round(share - target, 6) if target is not None else None,
            "docs": counts[g],
            "specs": specs[g] if run.specs is not None else None,
            "packed_tokens": packed.get(g, 0) if run.manifest else None,
        })
    gaps = [abs(r["gap"]) for r in rows if r["gap"] is not None]
    return {"target_source": "plan.json genre_targets" if targets else None, "actual_source": source,
            "genres": rows, "max_abs_gap": round(max(gaps), 6) if gaps else None}


def _coverage(run: RunData, genre_order: list[str]) -> dict[str, Any] | None:
    table, source = _planned_or_final(run)
    if table is None or not table.num_rows:
        return None
    pairs = Counter(zip(table.column("section_id").to_pylist(), table.column("genre").to_pylist(), strict=True))
    sections = [{"id": str(s["id"]), "title": str(s["title"] or s["id"])} for s in run.sections or []]
    titles = dict(zip(table.column("section_id").to_pylist(), table.column("section_title").to_pylist(),
                      strict=True))
    known = {s["id"] for s in sections}
    sections += [{"id": sid, "title": str(titles[sid] or sid)} for sid in sorted(titles) if sid not in known]
    present = {g for _, g in pairs}
    genres = genre_order + sorted(present - set(genre_order))  # a planned genre with no document shows empty
    counts = [[pairs.get((s["id"], g), 0) for g in genres] for s in sections]
    for s, row in zip(sections, counts, strict=True):
        s["total"] = sum(row)
    return {"source": source, "genres": genres, "sections": sections, "counts": counts,
            "uncovered": [s["id"] for s in sections if not s["total"]],
            "empty_cells": sum(1 for row in counts for c in row if c == 0)}


def _describe(values: np.ndarray) -> dict[str, Any]:
    bins = int(min(20, max(5, math.ceil(math.sqrt(len(values))))))
    counts, edges = np.histogram(values, bins=bins)
    return {
        "n": len(values),
        "mean": round(float(values.mean()), 2),
        "median": float(np.median(values)),
        "p10": round(float(np.percentile(values, 10)), 2),
        "p90": round(float(np.percentile(values, 90)), 2),
        "min": float(values.min()),
        "max": float(values.max()),
        "hist": {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()},
    }


def _lengths(run: RunData, genre_order: list[str]) -> dict[str, Any] | None:
    """Model output tokens per genre of the final documents, with their words against the spec's target."""
    final = run.final
    if final is None or not final.num_rows:
        return None
    by_genre: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in final.select(["genre", "output_tokens", "words", "target_words"]).to_pylist():
        by_genre[str(d["genre"])].append(d)
    genres = [g for g in genre_order if g in by_genre] + sorted(set(by_genre) - set(genre_order))
    per_genre = {}
    for g in genres:
        docs = by_genre[g]
        tokens = np.array([d["output_tokens"] for d in docs if d["output_tokens"] is not None], dtype=float)
        if not len(tokens):
            continue
        entry = _describe(tokens)
        ranks = np.sort(tokens)
        if len(ranks) > PLOTTED_LENGTHS:  # evenly spaced in rank: the plot keeps its shape, stats.json stays small
            ranks = ranks[np.linspace(0, len(ranks) - 1, PLOTTED_LENGTHS).round().astype(int)]
        entry["values"] = ranks.astype(int).tolist()
        words = [d["words"] for d in docs if d["words"] is not None]
        targets = [d["target_words"] for d in docs if d["target_words"]]
        entry["mean_words"] = round(sum(words) / len(words), 1) if words else None
        entry["mean_target_words"] = round(sum(targets) / len(targets), 1) if targets else None
        entry["words_to_target"] = (round(entry["mean_words"] / entry["mean_target_words"], 3)
                                    if words and targets else None)
        per_genre[g] = entry
    return {"source": run.final_source, "per_genre": per_genre} if per_genre else None


def _funnel(run: RunData) -> list[dict[str, Any]] | None:
    stages = (run.metrics or {}).get("stages", {})
    ok = [r["requests"] for r in run.usage or [] if r["purpose"] == "generate" and r["status"] == "ok"]
    steps = [("specs", "Specs planned", run.specs.num_rows if run.specs is not None else None),
             ("responses", "Responses (ledger ok)", sum(ok) if run.usage is not None else None)]
    steps += [(s, STAGE_LABELS[s], stages[s]["kept"]) for s in STAGES if s in stages]
    steps.append(("packed", "Packed into shards", run.manifest["documents"] if run.manifest else None))
    if all(count is None for _, _, count in steps):
        return None
    return [{"step": s, "label": label, "count": c} for s, label, c in steps]


def _usage_row(groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": sum(g["requests"] for g in groups),
        "ok": sum(g["requests"] for g in groups if g["status"] == "ok"),
        "failed": sum(g["requests"] for g in groups if g["status"] == "failed"),
    }
    for key in USAGE_COLUMNS:
        row[key] = sum(g[key] for g in groups)
    row["cost_usd"] = round(float(row["cost_usd"]), 6)
    prompt = row["input_tokens"] + row["cache_read_tokens"] + row["cache_creation_tokens"]
    # Share of all prompt tokens (uncached + cache reads + cache writes) that were served from the cache.
    row["cache_read_share"] = round(row["cache_read_tokens"] / prompt, 6) if prompt else None
    return row


def _cost(run: RunData) -> dict[str, Any] | None:
    if run.usage is None:
        return None
    groups = run.usage

    def split(*keys: str) -> list[dict[str, Any]]:
        parts: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for g in groups:
            parts[tuple(g[k] for k in keys)].append(g)
        rows = [{**dict(zip(keys, k, strict=True)), **_usage_row(v)} for k, v in parts.items()]
        return sorted(rows, key=lambda r: -r["cost_usd"])

    statuses: Counter[str] = Counter()
    for g in groups:
        statuses[g["status"]] += g["requests"]
    batches: Counter[str] = Counter(b["status"] for b in run.batches or [])
    batched: Counter[str] = Counter()
    for b in run.batches or []:
        batched[b["status"]] += b["request_count"]
    return {
        "source": "store.sqlite",
        "total": _usage_row(groups),
        "by_purpose": split("purpose"),
        "by_model": split("model"),
        "by_purpose_model": split("purpose", "model"),
        "requests_by_status": dict(statuses.most_common()),
        "refusals": run.refusals or [],
        "batches": [{"status": s, "batches": n, "requests": batched[s]} for s, n in sorted(batches.items())],
    }


def _dedup_clusters(run: RunData) -> dict[str, Any] | None:
    if run.metrics is None or "dedup" not in run.metrics["stages"]:
        return None
    sizes = Counter(run.metrics["dedup"]["cluster_sizes"])
    members: Counter[str] = Counter()
    genre: dict[str, str] = {}
    if run.rejects is not None:  # the dedup rejects name the kept document each duplicate points to
        for r in run.rejects.to_pylist():
            genre[r["doc_id"]] = r["genre"]
            if r["stage"] == "dedup" and r["duplicate_of"]:
                members[r["duplicate_of"]] += 1
    if run.final is not None:
        genre.update(zip(run.final.column("doc_id").to_pylist(), run.final.column("genre").to_pylist(),
                         strict=True))
    clusters = sum(sizes.values())
    return {
        "clusters": clusters,
        "duplicates": sum((s - 1) * n for s, n in sizes.items()),
        "largest": max(sizes, default=0),
        "mean_size": round(sum(s * n for s, n in sizes.items()) / clusters, 3) if clusters else None,
        "size_histogram": [{"size": s, "clusters": sizes[s]} for s in sorted(sizes)],
        "largest_clusters": [{"doc_id": d, "size": 1 + n, "genre": genre.get(d)}
                             for d, n in sorted(members.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
    }


def _briefs(run: RunData) -> dict[str, Any] | None:
    """How varied the dealt briefs are, how many carry an idea, and how many were dealt anew or dropped."""
    specs = run.specs
    if specs is None or "persona" not in specs.column_names or not specs.num_rows:
        return None
    n = specs.num_rows
    cols = {c: specs.column(c).to_pylist() for c in specs.column_names}

    def spread(column: str) -> dict[str, Any]:
        counts = Counter(cols[column])
        value, top = counts.most_common(1)[0]
        return {"distinct": len(counts), "distinct_share": len(counts) / n, "top": value, "top_share": top / n}

    plan = run.plan or {}
    return {
        "specs": n,
        "idea_share": sum(1 for i in cols["idea"] if i) / n,
        "narrators": spread("persona"),
        "settings": spread("setting"),
        "audiences": spread("audience"),
        "redealt": sum(1 for r in cols["redeals"] if r),
        "redeals": sum(cols["redeals"]),
        "unsuitable": sum(1 for u in cols["unsuitable"] if u),
        "ai_self_stakes": sum(1 for f in cols["ai_self_stakes"] if f),
        "pool_sizes": plan.get("pool_sizes", {}),
        "pools_extended": plan.get("pools_extended", 0),
    }


def _diversity(run: RunData) -> dict[str, Any] | None:
    div = (run.metrics or {}).get("diversity")
    if not div:
        return None
    return {
        "distinct_n": div["distinct_n"],
        "metrics": {k: div[k] for k in ("compression_ratio", "self_repetition", "name_entropy", "documents",
                                        "sample_documents")},
        "top_names": [{"name": n, "count": c} for n, c in div["top_names"]],
        "top_openers": [{"opener": o, "count": c} for o, c in div["top_openers"]],
    }


def _packing(run: RunData) -> dict[str, Any] | None:
    m = run.manifest
    if not m:
        return None
    return {
        **{k: m[k] for k in ("documents", "tokens", "sequences", "padding_tokens", "seq_len", "strategy",
                             "tokenizer", "token_dtype", "formats")},
        "padding_share": m["packing"]["padding_share"],
        "tokenizer_warning": tokenizer_warning(m["tokenizer"]["name"]),
        "shards": sum(s["shards"] for s in m["splits"].values()),
        "shard_files": len(m["shards"]),
        "splits": {name: {k: s[k] for k in ("documents", "tokens", "sequences")} for name, s in m["splits"].items()},
    }
