"""Parquet rows for Hugging Face `datasets` and `transformers.Trainer`, ready to train as loaded.

Each row holds seq_len tokens of packed document pieces, then EOS padding:
- `input_ids`: the tokens;
- `labels`: the tokens, with -100 on padding and on the first token of every piece, so no token is
  learnt from the previous document (the same rule as DataCollatorWithFlattening's separator);
- `attention_mask`: 1 on document tokens, 0 on padding;
- `position_ids`: 0, 1, 2, ... restarting at every piece (and at the padding), so attention that follows
  position_ids (flash-attention varlen, or any attention in transformers when no attention_mask is given)
  keeps documents apart;
- `seq_lengths`: the piece lengths, in order; padding is the rest of the row.
"""

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

IGNORE_INDEX = -100  # the label that carries no loss (PyTorch cross-entropy's ignore_index)
SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),
    ("labels", pa.list_(pa.int32())),
    ("attention_mask", pa.list_(pa.int8())),
    ("position_ids", pa.list_(pa.int32())),
    ("seq_lengths", pa.list_(pa.int32())),
])  # fmt: skip
READ_ROWS = 1024  # rows per batch when reading: a few million tokens at usual seq_len


def row_columns(tokens: np.ndarray, pieces: list[list[int]]) -> dict[str, np.ndarray]:
    """labels, attention_mask and position_ids of packed rows, each shaped like `tokens` (rows, seq_len)."""
    rows, seq_len = tokens.shape
    labels = tokens.astype(np.int32)
    mask = np.zeros((rows, seq_len), dtype=np.int8)
    positions = np.empty((rows, seq_len), dtype=np.int32)
    ramp = np.arange(seq_len, dtype=np.int32)
    for r, lengths in enumerate(pieces):
        starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        used = int(starts[-1])
        mask[r, :used] = 1
        labels[r, used:] = IGNORE_INDEX
        labels[r, starts[:-1]] = IGNORE_INDEX
        # each slot's position is its distance from the start of its piece (the padding is one more piece)
        segment_start = np.repeat(starts, np.diff(np.append(starts, seq_len)))
        positions[r] = ramp - segment_start
    return {"labels": labels, "attention_mask": mask, "position_ids": positions}


def _lists(values: np.ndarray, seq_len: int, kind: pa.DataType) -> pa.ListArray:
    offsets = pa.array(np.arange(values.shape[0] + 1, dtype=np.int32) * seq_len)
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=kind))


class ParquetShard:
    """Rows for `datasets`, with the training columns Trainer's default collator passes to the model."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.path = stem.with_name(stem.name + ".parquet")
        self.seq_len = spec.seq_len
        self.writer = pq.ParquetWriter(temp_path(self.path), SCHEMA, use_dictionary=False)

    def write(self, block: RowBlock) -> None:
        rows = len(block)
        extra = row_columns(block.tokens, block.pieces)
        piece_offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum([len(p) for p in block.pieces], out=piece_offsets[1:])
        lengths = pa.ListArray.from_arrays(
            pa.array(piece_offsets), pa.array(list(chain.from_iterable(block.pieces)), type=pa.int32())
        )
        columns = [
            _lists(block.tokens.astype(np.int32), self.seq_len, pa.int32()),
            _lists(extra["labels"], self.seq_len, pa.int32()),
            _lists(extra["attention_mask"], self.seq_len, pa.int8()),
            _lists(extra["position_ids"], self.seq_len, pa.int32()),
            lengths,
        ]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=SCHEMA))

    def close(self) -> list[Path]:
        self.writer.close()
        return publish([self.path])


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    for batch in open_parquet(files[".parquet"]).iter_batches(batch_size=READ_ROWS, columns=["input_ids"]):
        yield batch.column(0).flatten().to_numpy()


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/hf shard {entry['shard']}"
    parquet = open_parquet(files[".parquet"])
    problems = []
    if parquet.metadata.num_rows != entry["sequences"]:
        problems.append(f"{name}: {parquet.metadata.num_rows} rows, manifest says {entry['sequences']}")
    pieces = 0
    wrong_columns = 0
    for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=list(SCHEMA.names)):
        lengths = batch.column("seq_lengths").to_pylist()
        pieces += int(pc.sum(batch.column("seq_lengths").flatten()).as_py() or 0)
        tokens = batch.column("input_ids").flatten().to_numpy().reshape(len(lengths), -1)
        want = row_columns(tokens, lengths)
        for column, expected in want.items():
            got = batch.column(column).flatten().to_numpy().reshape(expected.shape)
            wrong_columns += int(not np.array_equal(got, expected))
    real = entry["tokens"] - entry["padding_tokens"]
    if pieces != real:
        problems.append(f"{name}: seq_lengths sum to {pieces}, manifest says {real} document tokens")
    if wrong_columns:
        problems.append(f"{name}: labels, attention_mask or position_ids disagree with seq_lengths")
    return problems


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int32)  # input_ids is list<int32> whatever the vocabulary


FORMAT = ShardFormat("hf", "rows", (".parquet",), ParquetShard, read_tokens, check, token_dtype)
