"""Parquet rows for Hugging Face `datasets`: fixed-length `input_ids` and the document pieces of each row."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sdf.writers.io import open_parquet, publish, temp_path
from sdf.writers.shards import Files, RowBlock, ShardFormat, ShardSpec

SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("seq_lengths", pa.list_(pa.int32()))])
READ_ROWS = 1024  # rows per batch when reading: a few million tokens at usual seq_len


class ParquetShard:
    """Rows for `datasets`: fixed-length input_ids and the document piece lengths of each row."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.path = stem.with_name(stem.name + ".parquet")
        self.seq_len = spec.seq_len
        self.writer = pq.ParquetWriter(temp_path(self.path), SCHEMA, use_dictionary=False)

    def write(self, block: RowBlock) -> None:
        rows = len(block)
        ids = pa.ListArray.from_arrays(
            pa.array(np.arange(rows + 1, dtype=np.int32) * self.seq_len),
            pa.array(block.tokens.astype(np.int32).ravel()),
        )
        piece_offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum([len(p) for p in block.pieces], out=piece_offsets[1:])
        lengths = pa.ListArray.from_arrays(
            pa.array(piece_offsets), pa.array(list(chain.from_iterable(block.pieces)), type=pa.int32())
        )
        self.writer.write_table(pa.Table.from_arrays([ids, lengths], schema=SCHEMA))

    def close(self) -> list[Path]:
        self.writer.close()
        return publish([self.path])


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    for batch in open_parquet(files[".parquet"]).iter_batches(batch_size=READ_ROWS, columns=["input_ids"]):
        yield batch.column(0).flatten().to_numpy()


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/hf shard {entry['shard']}"
    table = pq.read_table(files[".parquet"], columns=["seq_lengths"])
    problems = []
    if table.num_rows != entry["sequences"]:
        problems.append(f"{name}: {table.num_rows} rows, manifest says {entry['sequences']}")
    pieces = int(pc.sum(table.column(0).combine_chunks().flatten()).as_py() or 0)
    real = entry["tokens"] - entry["padding_tokens"]
    if pieces != real:
        problems.append(f"{name}: seq_lengths sum to {pieces}, manifest says {real} document tokens")
    return problems


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int32)  # input_ids is list<int32> whatever the vocabulary


FORMAT = ShardFormat("hf", "rows", (".parquet",), ParquetShard, read_tokens, check, token_dtype)
