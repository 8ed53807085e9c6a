"""Replay mix sources: jsonl or parquet files (or folders of them) with a `text` column, streamed into train.

Each source adds whole documents until it holds `ratio x` the SDF train tokens (ratio 1.0 = as many
replay tokens as SDF train tokens), so a source overshoots by at most one document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from sdf.errors import SdfError
from sdf.steps.tokens.spool import READ_ROWS, TokenSpool, encode_ahead, text_batches
from sdf.writers.io import open_parquet


@dataclass
class MixSource:
    path: str
    ratio: float
    files: list[Path]
    target_tokens: int = 0
    tokens: int = 0
    documents: int = 0
    exhausted: bool = False


def mix_sources(mix: list[tuple[str, float]]) -> list[MixSource]:
    """Resolve and validate every mix path before any work starts, so a bad path fails in a second."""
    sources = []
    for path, ratio in mix:
        root = Path(path).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and _mix_kind(p))
            if not files:
                raise SdfError(f"mix folder {path} holds no .jsonl or .parquet files")
        elif root.is_file():
            if not _mix_kind(root):
                raise SdfError(f"mix file {path} must be .jsonl or .parquet")
            files = [root]
        else:
            raise SdfError(f"mix file not found: {path}")
        for file in files:
            _check_mix_file(file)
        sources.append(MixSource(path, ratio, files))
    return sources


def _mix_kind(path: Path) -> str | None:
    if path.name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if path.name.endswith(".parquet"):
        return "parquet"
    return None


def _check_mix_file(path: Path) -> None:
    if _mix_kind(path) == "parquet":
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:
            raise SdfError(f"mix file {path} is not a readable parquet file: {exc}") from exc
        if "text" not in names:
            raise SdfError(f"mix file {path} has no 'text' column (columns: {', '.join(names)})")
        return
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                if line.strip():
                    _jsonl_text(line, path, number)
                    return
        except UnicodeDecodeError:
            raise SdfError(f"mix file {path} is not valid UTF-8 text") from None


def _jsonl_text(line: str, path: Path, number: int) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise SdfError(f"mix file {path} line {number}: expected a JSON object with a 'text' string")
    return record["text"]


def _mix_records(source: MixSource) -> Iterator[tuple[str]]:
    for file in source.files:
        if _mix_kind(file) == "parquet":
            parquet = open_parquet(file)
            for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=["text"]):
                yield from ((t,) for t in batch.column("text").to_pylist() if t)
            continue
        with open(file, encoding="utf-8") as f:
            try:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield (_jsonl_text(line, file, number),)
            except UnicodeDecodeError:
                raise SdfError(f"mix file {file} is not valid UTF-8 text") from None


def tokenize_mix(source: MixSource, spool: TokenSpool, progress: bool) -> list[int]:
    """Append documents of `source` until it reaches its target; return their spool indices."""
    docs: list[int] = []
    with tqdm(total=source.target_tokens, desc=f"mix {source.path}", unit="tok",
              disable=None if progress else True) as bar:
        for _, encoded in encode_ahead(text_batches(_mix_records(source)), spool.tokenizer):
            if source.tokens >= source.target_tokens:
                break
            first = spool.documents
            lengths = [n for n in spool.add(encoded) if n]
            for i, n in enumerate(lengths):
                if source.tokens >= source.target_tokens:
                    break
                docs.append(first + i)
                source.tokens += n
                bar.update(n)
        else:
            source.exhausted = source.tokens < source.target_tokens
    source.documents = len(docs)
    return docs

