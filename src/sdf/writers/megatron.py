"""Megatron-LM's indexed dataset: `<stem>.bin` tokens and `<stem>.idx` (MMIDIDX v1), written and read here."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdf.writers.io import publish, temp_path
from sdf.writers.shards import Files, RowBlock, ShardFormat, ShardSpec

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
READ_CHUNK = 1 << 22  # tokens per chunk when reading a .bin


def megatron_dtype(flat: np.dtype) -> np.dtype:
    return np.dtype(np.uint16) if flat == np.uint16 else np.dtype(np.int32)


class MegatronShard:
    """.bin holds rows back to back; .idx is written at close: header, lengths, pointers, documents."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.bin_path = stem.with_name(stem.name + ".bin")
        self.idx_path = stem.with_name(stem.name + ".idx")
        self.dtype = megatron_dtype(spec.dtype)
        self.seq_len = spec.seq_len
        self.rows = 0
        self.file = open(temp_path(self.bin_path), "wb")  # noqa: SIM115 - closed in close()

    def write(self, block: RowBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> list[Path]:
        self.file.close()
        lengths = np.full(self.rows, self.seq_len, dtype=np.int32)
        pointers = np.arange(self.rows, dtype=np.int64) * (self.seq_len * self.dtype.itemsize)
        documents = np.arange(self.rows + 1, dtype=np.int64)
        with open(temp_path(self.idx_path), "wb") as f:
            f.write(HEADER.pack(MAGIC, 1, DTYPE_CODES[self.dtype], self.rows, len(documents)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(documents.tobytes())
        return publish([self.bin_path, self.idx_path])


def _index(idx: bytes) -> tuple[bytes, int, int, int, int]:
    return HEADER.unpack_from(idx)


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    code = _index(files[".idx"].read_bytes()[: HEADER.size])[2]
    dtype = next(d for d, c in DTYPE_CODES.items() if c == code)
    with open(files[".bin"], "rb") as f:
        while len(chunk := np.fromfile(f, dtype=dtype, count=READ_CHUNK)):
            yield chunk


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/megatron shard {entry['shard']}"
    idx = files[".idx"].read_bytes()
    magic, version, code, sequences, documents = _index(idx)
    want = DTYPE_CODES[megatron_dtype(np.dtype(manifest["token_dtype"]))]
    problems = []
    if magic != MAGIC or version != 1 or code != want:
        problems.append(f"{name}: .idx header is not MMIDIDX v1 with dtype code {want}")
    if sequences != entry["sequences"] or documents != sequences + 1:
        problems.append(f"{name}: .idx counts {sequences} sequences, manifest says {entry['sequences']}")
    lengths = np.frombuffer(idx, dtype=np.int32, count=sequences, offset=HEADER.size)
    if len(lengths) and (lengths != manifest["seq_len"]).any():
        problems.append(f"{name}: .idx has sequences that are not {manifest['seq_len']} tokens long")
    return problems


FORMAT = ShardFormat("megatron", (".bin", ".idx"), MegatronShard, read_tokens, check)
