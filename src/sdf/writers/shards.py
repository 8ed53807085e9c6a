"""The shard set: one writer per format and split, a new shard every `shard_tokens`, one manifest entry per file.

A format module (megatron, nanotron, hf, npy) plugs in through `ShardFormat`: the suffixes of its files,
a writer class, and a reader (`read_tokens`, `check`) that `verify_run` uses without knowing the format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sdf.steps.tokens.tokenizer import file_sha256

SPLITS = ("train", "validation")


@dataclass
class RowBlock:
    """Consecutive packed rows: tokens plus, per row, its document pieces and whether each ends a document."""

    tokens: np.ndarray  # (rows, seq_len) uint32
    pieces: list[list[int]]
    ends: list[list[bool]]

    def __len__(self) -> int:
        return len(self.pieces)

    def slice(self, start: int, stop: int) -> RowBlock:
        return RowBlock(self.tokens[start:stop], self.pieces[start:stop], self.ends[start:stop])


@dataclass
class PackStats:
    """Counts for a split or one shard; documents counts the documents that end there."""

    documents: int = 0
    tokens: int = 0
    sequences: int = 0
    padding_tokens: int = 0
    split_documents: int = 0
    first_slots: dict[int, int] = field(default_factory=dict)  # watched doc -> its first slot in the split

    def add_block(self, block: RowBlock, seq_len: int) -> None:
        real = sum(sum(p) for p in block.pieces)
        self.sequences += len(block)
        self.tokens += real
        self.padding_tokens += len(block) * seq_len - real
        self.documents += sum(sum(e) for e in block.ends)


@dataclass(frozen=True)
class ShardSpec:
    """What every writer of a pack needs to know besides its own file stem."""

    dtype: np.dtype  # token dtype of the flat formats, chosen by vocabulary size
    seq_len: int
    tokenizer_name: str


class ShardWriter(Protocol):
    def write(self, block: RowBlock) -> None: ...

    def close(self) -> list[Path]: ...


Files = dict[str, Path]  # one shard's files by suffix, e.g. {".bin": ..., ".idx": ...}


@dataclass(frozen=True)
class ShardFormat:
    """One format's writer and reader, the only things the packer and verify know about it."""

    name: str
    suffixes: tuple[str, ...]
    writer: Callable[[Path, ShardSpec], ShardWriter]
    read_tokens: Callable[[Files], Iterator[np.ndarray]]  # the shard's token slots in order, in chunks
    check: Callable[[Files, dict[str, Any], dict[str, Any]], list[str]]  # structure vs entry and manifest


def shard_files(fmt: ShardFormat, paths: list[Path]) -> Files:
    """Map each of a shard's paths to the format suffix it ends with."""
    return {suffix: next(p for p in paths if p.name.endswith(suffix)) for suffix in fmt.suffixes}


class ShardSet:
    """Feeds rows to one writer per format and starts new shards every `rows_per_shard` rows."""

    def __init__(
        self, out_dir: Path, split: str, formats: list[ShardFormat], spec: ShardSpec, shard_tokens: int
    ) -> None:
        self.out_dir = out_dir
        self.split = split
        self.formats = formats
        self.spec = spec
        self.rows_per_shard = max(1, shard_tokens // spec.seq_len)
        self.index = -1
        self.writers: list[ShardWriter] = []
        self.stats = PackStats()
        self.entries: list[dict[str, Any]] = []

    def write(self, block: RowBlock) -> None:
        done = 0
        while done < len(block):
            if not self.writers or self.stats.sequences == self.rows_per_shard:
                self._next_shard()
            take = min(len(block) - done, self.rows_per_shard - self.stats.sequences)
            part = block.slice(done, done + take)
            for writer in self.writers:
                writer.write(part)
            self.stats.add_block(part, self.spec.seq_len)
            done += take

    def close(self) -> list[dict[str, Any]]:
        self._close_shard()
        return self.entries

    def _next_shard(self) -> None:
        self._close_shard()
        self.index += 1
        self.stats = PackStats()
        for fmt in self.formats:
            folder = self.out_dir / self.split / fmt.name
            folder.mkdir(parents=True, exist_ok=True)
            self.writers.append(fmt.writer(folder / f"{self.split}_{self.index:05d}", self.spec))

    def _close_shard(self) -> None:
        if not self.writers:
            return
        for fmt, writer in zip(self.formats, self.writers, strict=True):
            for path in writer.close():
                self.entries.append(
                    {
                        "path": path.relative_to(self.out_dir).as_posix(),
                        "split": self.split,
                        "format": fmt.name,
                        "shard": self.index,
                        "sha256": file_sha256(path),
                        "bytes": path.stat().st_size,
                        "tokens": self.stats.sequences * self.spec.seq_len,
                        "padding_tokens": self.stats.padding_tokens,
                        "sequences": self.stats.sequences,
                        "documents": self.stats.documents,
                    }
                )
        self.writers = []


def remove_stale(out_dir: Path, formats: list[ShardFormat], keep: set[str]) -> None:
    """Delete shard files of earlier packs (other formats, more shards, temp files) that we did not write."""
    suffixes = "|".join(re.escape(s) for fmt in formats for s in fmt.suffixes)
    shard_name = re.compile(rf"^({'|'.join(SPLITS)})_\d{{5}}({suffixes})$")
    for split in SPLITS:
        for fmt in formats:
            folder = out_dir / split / fmt.name
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.removesuffix(".tmp")
                relative = path.relative_to(out_dir).as_posix()
                if shard_name.match(name) and (relative not in keep or path.name.endswith(".tmp")):
                    path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
        if (out_dir / split).is_dir() and not any((out_dir / split).iterdir()):
            (out_dir / split).rmdir()
