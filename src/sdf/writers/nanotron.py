"""datatrove's tokenized files, which nanotron reads: `.ds` tokens, `.ds.index` ends, `.ds.metadata`."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdf.writers.io import publish, temp_path
from sdf.writers.shards import Files, RowBlock, ShardFormat, ShardSpec

READ_CHUNK = 1 << 22  # tokens per chunk when reading a .ds


class NanotronShard:
    """Raw tokens, uint64 document ends, and a three-line metadata file."""

    def __init__(self, stem: Path, spec: ShardSpec) -> None:
        self.ds_path = stem.with_name(stem.name + ".ds")
        self.dtype = np.dtype(spec.dtype)
        self.seq_len = spec.seq_len
        self.tokenizer_name = spec.tokenizer_name
        self.ends = array("q")  # 8 bytes per document, not a Python int object each
        self.rows = 0
        self.file = open(temp_path(self.ds_path), "wb")  # noqa: SIM115 - closed in close()

    def write(self, block: RowBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        for pieces, ends in zip(block.pieces, block.ends, strict=True):
            base = self.rows * self.seq_len
            col = 0
            for n, ended in zip(pieces, ends, strict=True):
                col += n
                if ended:
                    self.ends.append(base + col)
            if col < self.seq_len:  # the padding run is its own "document" for position resets
                self.ends.append(base + self.seq_len)
            self.rows += 1

    def close(self) -> list[Path]:
        self.file.close()
        index_path = self.ds_path.with_name(self.ds_path.name + ".index")
        meta_path = self.ds_path.with_name(self.ds_path.name + ".metadata")
        np.frombuffer(self.ends, dtype=np.int64).astype("<u8").tofile(temp_path(index_path))
        tokens = self.rows * self.seq_len
        meta = f"{self.tokenizer_name}|{self.dtype.itemsize}\n{tokens}\n{_human_tokens(tokens)}"
        temp_path(meta_path).write_text(meta, encoding="utf-8")
        return publish([self.ds_path, index_path, meta_path])


def _human_tokens(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}T"
    return f"{n} T"


def read_tokens(files: Files) -> Iterator[np.ndarray]:
    size = int(files[".ds.metadata"].read_text(encoding="utf-8").splitlines()[0].rsplit("|", 1)[1])
    with open(files[".ds"], "rb") as f:
        while len(chunk := np.fromfile(f, dtype=f"<u{size}", count=READ_CHUNK)):
            yield chunk


def check(files: Files, entry: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    name = f"{entry['split']}/nanotron shard {entry['shard']}"
    total = files[".ds"].stat().st_size // np.dtype(manifest["token_dtype"]).itemsize
    ends = np.fromfile(files[".ds.index"], dtype="<u8")
    problems = []
    if len(ends) and ((np.diff(ends.astype(np.int64)) <= 0).any() or int(ends[-1]) > total):
        problems.append(f"{name}: .ds.index ends are not increasing within the file")
    meta = files[".ds.metadata"].read_text(encoding="utf-8").splitlines()
    if len(meta) < 2 or meta[1] != str(total):
        problems.append(f"{name}: .ds.metadata token count does not match the .ds file")
    return problems


FORMAT = ShardFormat("nanotron", (".ds", ".ds.index", ".ds.metadata"), NanotronShard, read_tokens, check)
