"""File primitives every shard writer and reader shares: atomic publication, streamed parquet, JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def temp_path(path: Path) -> Path:
    """Where `path` is written before `publish` renames it into place."""
    return path.with_name(path.name + ".tmp")


def publish(paths: list[Path]) -> list[Path]:
    """Rename each finished temp file over its final name; a reader never sees a half-written file."""
    for path in paths:
        os.replace(temp_path(path), path)
    return paths


def open_parquet(path: Path) -> pq.ParquetFile:
    # a buffered stream reads a row group page by page; otherwise a corpus written as one big row
    # group would be loaded whole and memory would grow with the corpus
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    publish([path])
