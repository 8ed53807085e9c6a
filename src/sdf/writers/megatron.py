"""Megatron-LM's indexed dataset: `<stem>.bin` tokens and `<stem>.idx` (MMIDIDX v1), written and read here.

As Megatron-LM's own preprocessing writes it: one sequence per document, each ending in EOS, one
document-index entry per document, no padding. GPTDataset shuffles the documents and cuts its own
samples of `--seq-length` tokens from them.

.idx: magic, u64 version 1, u8 dtype code, u64 sequence count, u64 document count, int32 sequence
lengths, int64 byte pointers into .bin, int64 document indices (sequence index ranges, from 0).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdf.writers.io import publish, temp_path
from sdf.writers.shards import DocBlock, Files, ShardFormat, ShardSpec

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
READ_CHUNK = 1 << 22  # tokens per chunk when reading a .bin


def megatron_dtype(vocab_size: int) -> np.dtype:
    """The token dtype Megatron-LM's preprocessing picks for a vocabulary (DType.optimal_dtype)."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class MegatronShard:
    """.bin holds documents back to back; .idx is written at close from their lengths."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.bin_path = stem.with_name(stem.name + ".bin")
        self.idx_path = stem.with_name(stem.name + ".idx")
        self.dtype = megatron_dtype(spec.vocab_size)
        self.lengths = array("i")  # 4 bytes per document
        self.file = open(temp_path(self.bin_path), "wb")  # noqa: SIM115 - closed in close()

    def write(self, block: DocBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        self.lengths.extend(block.lengths)

    def close(self) -> list[Path]:
        self.file.close()
        lengths = np.frombuffer(self.lengths, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=pointers[1:])
        pointers *= self.dtype.itemsize
        documents = np.arange(len(lengths) + 1, dtype=np.int64)
        with open(temp_path(self.idx_path), "wb") as f:
            f.write(HEADER.pack(MAGIC, 1, DTYPE_CODES[self.dtype], len(lengths), len(documents)))
            f.write(lengths.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(documents.astype("<i8").tobytes())
        return publish([self.bin_path, self.idx_path])


def read_index(path: Path) -> tuple[tuple[bytes, int, int, int, int], np.ndarray, np.ndarray, np.ndarray]:
    """(header, sequence lengths, pointers, document indices) of an .idx file."""
    idx = path.read_bytes()
    header = HEADER.unpack_from(idx)
    sequences, documents = header[3], header[4]
    lengths = np.frombuffer(idx, dtype="<i4", count=sequences, offset=HEADER.size)
    pointers = np.frombuffer(idx, dtype="<i8", count=sequences, offset=HEADER.size + 4 * sequences)
    doc_index = np.frombuffer(idx, dtype="<i8", count=documents, offset=HEADER.size + 12 * sequences)
    if HEADER.size + 12 * sequences + 8 * documents != len(idx):
        raise ValueError(f"{path.name} holds bytes past its document indices")
    return header, lengths, pointers, doc_index


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    with open(files[".idx"], "rb") as f:
        code = HEADER.unpack(f.read(HEADER.size))[2]
    dtype = next(d for d, c in DTYPE_CODES.items() if c == code)
    with open(files[".bin"], "rb") as f:
        while len(chunk := np.fromfile(f, dtype=dtype, count=READ_CHUNK)):
            yield chunk


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/megatron shard {entry['shard']}"
    (magic, version, code, sequences, documents), lengths, pointers, doc_index = read_index(files[".idx"])
    dtype = megatron_dtype(manifest["tokenizer"]["vocab_size"])
    problems = []
    if magic != MAGIC or version != 1 or code != DTYPE_CODES[dtype]:
        problems.append(f"{name}: .idx header is not MMIDIDX v1 with dtype code {DTYPE_CODES[dtype]}")
    if sequences != entry["documents"] or documents != sequences + 1:
        problems.append(f"{name}: .idx counts {sequences} sequences, manifest says {entry['documents']} documents")
    if int(lengths.sum()) != entry["tokens"] or (doc_index != np.arange(documents)).any():
        problems.append(f"{name}: .idx lengths or document indices do not give one sequence per document")
    expected = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]) * dtype.itemsize
    if sequences and (pointers != expected).any():
        problems.append(f"{name}: .idx pointers do not follow the sequence lengths")
    return problems


FORMAT = ShardFormat("megatron", "documents", (".bin", ".idx"), MegatronShard, read_tokens, check, megatron_dtype)
