"""Readers for the shard formats, written from the published layouts and not from sdf.writers.
They let the tests check the files the way a training framework would see them:

- Megatron-LM `MMIDIDX` index (megatron/core/datasets/indexed_dataset.py layout): 9-byte magic,
  u64 version (1), u8 dtype code, u64 sequence count, u64 document count, then int32 sequence lengths,
  int64 byte pointers into .bin, int64 document indices (sequence index ranges, starting at 0).
- datatrove / nanotron tokenized file: `.ds` raw little-endian tokens, `.ds.index` uint64 document ends
  (exclusive, in tokens), `.ds.metadata` lines "tokenizer|token bytes", token count, human count; a
  sample is seq_len + 1 consecutive tokens starting at item * (seq_len + 1).
- Hugging Face parquet, loaded with `datasets.load_dataset("parquet", ...)`.
- `.npy` arrays via `numpy.load`.

tests/test_readers_frameworks.py runs the frameworks' own readers as well (megatron-core, datatrove).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEGATRON_CODES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


@dataclass
class MegatronIndex:
    version: int
    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray


def read_megatron_index(idx_path: Path) -> MegatronIndex:
    raw = Path(idx_path).read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00", "bad magic"
    pos = 9
    (version,) = struct.unpack_from("<Q", raw, pos)
    pos += 8
    (code,) = struct.unpack_from("<B", raw, pos)
    pos += 1
    seq_count, doc_count = struct.unpack_from("<QQ", raw, pos)
    pos += 16
    lengths = np.frombuffer(raw, dtype="<i4", count=seq_count, offset=pos)
    pos += 4 * seq_count
    pointers = np.frombuffer(raw, dtype="<i8", count=seq_count, offset=pos)
    pos += 8 * seq_count
    documents = np.frombuffer(raw, dtype="<i8", count=doc_count, offset=pos)
    pos += 8 * doc_count
    assert pos == len(raw), "trailing bytes after the document indices"
    return MegatronIndex(version, np.dtype(MEGATRON_CODES[code]), lengths, pointers, documents)


def read_megatron_sequences(prefix: Path) -> list[np.ndarray]:
    """Every sequence of a .bin/.idx pair, as IndexedDataset[i] would return it."""
    index = read_megatron_index(Path(f"{prefix}.idx"))
    data = Path(f"{prefix}.bin").read_bytes()
    return [
        np.frombuffer(data, dtype=index.dtype, count=int(n), offset=int(p))
        for n, p in zip(index.sequence_lengths, index.sequence_pointers, strict=True)
    ]


@dataclass
class NanotronFile:
    tokens: np.ndarray
    ends: np.ndarray
    tokenizer: str
    token_size: int
    token_count: int


def read_nanotron(ds_path: Path) -> NanotronFile:
    ds_path = Path(ds_path)
    lines = Path(f"{ds_path}.metadata").read_text(encoding="utf-8").splitlines()
    tokenizer, token_size = lines[0].rsplit("|", 1)
    dtype = {2: "<u2", 4: "<u4"}[int(token_size)]
    tokens = np.fromfile(ds_path, dtype=dtype)
    ends = np.fromfile(f"{ds_path}.index", dtype="<u8")
    return NanotronFile(tokens, ends, tokenizer, int(token_size), int(lines[1]))


def nanotron_samples(ds_path: Path, seq_len: int) -> list[np.ndarray]:
    """Samples the way nanotron's datatrove dataset cuts them: seq_len + 1 tokens, back to back."""
    tokens = read_nanotron(ds_path).tokens
    n = len(tokens) // (seq_len + 1)
    return [tokens[i * (seq_len + 1) : (i + 1) * (seq_len + 1)] for i in range(n)]


def load_hf_rows(files: list[Path], cache_dir: Path):
    import datasets

    return datasets.load_dataset(
        "parquet", data_files={"train": [str(f) for f in files]}, split="train", cache_dir=str(cache_dir)
    )


def split_documents(stream: np.ndarray, eos: int, bos: int | None = None) -> list[list[int]]:
    """Cut a token stream at EOS; empty pieces (padding, which is EOS too) vanish."""
    docs: list[list[int]] = []
    cuts = np.flatnonzero(stream == eos)
    start = 0
    for cut in cuts:
        piece = stream[start:cut].tolist()
        start = cut + 1
        if bos is not None and piece and piece[0] == bos:
            piece = piece[1:]
        if piece:
            docs.append(piece)
    assert start == len(stream) or not stream[start:].size, "stream does not end with EOS"
    return docs
