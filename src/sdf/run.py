"""The run directory: where each artifact lives, and atomic reads and writes of its tables."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sdf.errors import SdfError
from sdf.source.plan import SPEC_SCHEMA

DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        *[f for f in SPEC_SCHEMA if f.name != "spec_id"],
        ("text", pa.string()),
        ("model", pa.string()),
        ("stop_reason", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cache_read_tokens", pa.int64()),
        ("cache_creation_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("request_key", pa.string()),
    ]
)
FILTERED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("quality_score", pa.float64())).append(
    pa.field("judge_score", pa.float64())
)
CORPUS_SCHEMA = FILTERED_SCHEMA
REJECTED_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("duplicate_of", pa.string()),
        ("genre", pa.string()),
        ("section_id", pa.string()),
        ("text", pa.string()),
    ]
)
STAGES = ("generate", "quality", "judge", "decontaminate", "dedup", "diversity")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.toml")
    sections = property(lambda self: self.path / "sections.jsonl")
    specs = property(lambda self: self.path / "specs.parquet")
    store = property(lambda self: self.path / "store.sqlite")
    documents = property(lambda self: self.path / "documents.parquet")
    filtered = property(lambda self: self.path / "filtered.parquet")
    rejected = property(lambda self: self.path / "rejected.parquet")
    corpus = property(lambda self: self.path / "corpus.parquet")
    metrics = property(lambda self: self.path / "metrics.json")
    shards = property(lambda self: self.path / "shards")
    manifest = property(lambda self: self.path / "shards" / "manifest.json")
    report = property(lambda self: self.path / "report.html")

    def require(self, artifact: Path, stage: str) -> Path:
        if not artifact.exists():
            raise SdfError(f"{artifact} does not exist yet; run `sdf {stage} {self.path}` (or `sdf build`) first")
        return artifact

    def read_rejected(self) -> list[dict]:
        return read_rows(self.rejected) if self.rejected.exists() else []

    def replace_rejected(self, stages: Sequence[str], rows: Iterable[dict]) -> None:
        """Swap in this stage's rejections, keeping other stages' rows: reruns never double-count."""
        kept = [r for r in self.read_rejected() if r["stage"] not in stages]
        fresh = [{k: r.get(k) for k in REJECTED_SCHEMA.names} for r in rows]
        write_rows(self.rejected, sorted(kept + fresh, key=lambda r: (STAGES.index(r["stage"]), r["doc_id"])),
                   REJECTED_SCHEMA)


def write_rows(path: Path, rows: Sequence[dict], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    write_table(path, table)


def write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    os.replace(tmp, path)


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
