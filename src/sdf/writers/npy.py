"""Flat `.npy` token arrays with a `[start, end)` index of document pieces, for numpy-fed trainers."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdf.writers.io import publish, temp_path
from sdf.writers.shards import Files, RowBlock, ShardFormat, ShardSpec, flat_dtype

HEADER_BYTES = 128
READ_CHUNK = 1 << 22  # tokens per chunk when reading


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version 1.0 .npy header for a 1-D little-endian array, padded to HEADER_BYTES."""
    descr = np.dtype(dtype).newbyteorder("<").str
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({length},), }}"
    body_len = HEADER_BYTES - 10
    body = text.ljust(body_len - 1).encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + body


class NpyShard:
    """A flat .npy token array (header written last, once the length is known) and a [start, end) index."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.path = stem.with_name(stem.name + ".tokens.npy")
        self.docs_path = stem.with_name(stem.name + ".docs.npy")
        self.dtype = flat_dtype(spec.vocab_size)
        self.seq_len = spec.seq_len
        self.rows = 0
        self.starts, self.stops = array("q"), array("q")
        self.continues = False  # the last piece written runs on into the next row
        self.file = open(temp_path(self.path), "wb")  # noqa: SIM115 - closed in close()
        self.file.write(b"\0" * HEADER_BYTES)

    def write(self, block: RowBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        for pieces, ends in zip(block.pieces, block.ends, strict=True):
            col = 0
            for n, ended in zip(pieces, ends, strict=True):
                start = self.rows * self.seq_len + col
                if self.continues and col == 0 and self.stops:
                    self.stops[-1] = start + n
                else:
                    self.starts.append(start)
                    self.stops.append(start + n)
                self.continues = not ended
                col += n
            self.rows += 1

    def close(self) -> list[Path]:
        self.file.seek(0)
        self.file.write(npy_header(self.dtype, self.rows * self.seq_len))
        self.file.close()
        with open(temp_path(self.docs_path), "wb") as f:
            np.save(f, np.stack([np.frombuffer(self.starts, np.int64), np.frombuffer(self.stops, np.int64)], axis=1))
        return publish([self.path, self.docs_path])


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    with open(files[".tokens.npy"], "rb") as f:
        np.lib.format.read_magic(f)
        _, _, dtype = np.lib.format.read_array_header_1_0(f)
        while len(chunk := np.fromfile(f, dtype=dtype, count=READ_CHUNK)):
            yield chunk


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/npy shard {entry['shard']}"
    total = int(np.load(files[".tokens.npy"], mmap_mode="r").shape[0])
    spans = np.load(files[".docs.npy"])
    covered = int((spans[:, 1] - spans[:, 0]).sum()) if len(spans) else 0
    real = entry["tokens"] - entry["padding_tokens"]
    if covered != real or (len(spans) and (spans.min() < 0 or spans.max() > total)):
        return [f"{name}: .docs.npy spans cover {covered} tokens, manifest says {real}"]
    return []


FORMAT = ShardFormat("npy", "rows", (".tokens.npy", ".docs.npy"), NpyShard, read_tokens, check, flat_dtype)
