"""The shard set: one writer per format and split, a new shard every `shard_tokens`, one manifest entry per file.

A format module (megatron, nanotron, hf, npy) plugs in through `ShardFormat`: what it holds (whole
documents or packed rows), the suffixes of its files, a writer class, and a reader (`read_tokens`,
`check`) that `verify_run` uses without knowing the format.
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

    def fit(self, start: int, free_tokens: int) -> int:
        """How many rows from `start` fit in `free_tokens` token slots."""
        return min(len(self) - start, free_tokens // self.tokens.shape[1])

    def counts(self) -> tuple[int, int, int]:
        """(document tokens, slot tokens, documents that end here)."""
        real = sum(sum(p) for p in self.pieces)
        return real, self.tokens.size, sum(sum(e) for e in self.ends)


@dataclass
class DocBlock:
    """Consecutive whole documents, back to back, with no padding."""

    tokens: np.ndarray  # flat uint32
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.lengths)

    def slice(self, start: int, stop: int) -> DocBlock:
        first = sum(self.lengths[:start])
        return DocBlock(self.tokens[first : first + sum(self.lengths[start:stop])], self.lengths[start:stop])

    def fit(self, start: int, free_tokens: int) -> int:
        """How many documents from `start` fit in `free_tokens` tokens."""
        taken = 0
        for n in self.lengths[start:]:
            if n > free_tokens:
                break
            free_tokens -= n
            taken += 1
        return taken

    def counts(self) -> tuple[int, int, int]:
        total = int(self.tokens.size)
        return total, total, len(self)


Block = RowBlock | DocBlock


@dataclass
class PackStats:
    """Counts for a split or one shard; documents counts the documents that end there."""

    documents: int = 0
    tokens: int = 0  # document tokens
    sequences: int = 0  # rows, or documents for the formats that hold documents
    padding_tokens: int = 0
    split_documents: int = 0
    first_slots: dict[int, int] = field(default_factory=dict)  # watched doc -> its first slot in the split

    @property
    def slot_tokens(self) -> int:
        return self.tokens + self.padding_tokens

    def add_block(self, block: Block) -> None:
        real, slots, ended = block.counts()
        self.sequences += len(block)
        self.tokens += real
        self.padding_tokens += slots - real
        self.documents += ended


def flat_dtype(vocab_size: int) -> np.dtype:
    """Token dtype of the flat formats (nanotron, npy): uint16 while every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True)
class ShardSpec:
    """What every writer of a pack needs to know besides its own file stem."""

    seq_len: int
    tokenizer_name: str
    vocab_size: int


class ShardWriter(Protocol):
    def write(self, block: Any) -> None: ...

    def close(self) -> list[Path]: ...


Files = dict[str, Path]  # one shard's files by suffix, e.g. {".bin": ..., ".idx": ...}
HOLDS = ("documents", "rows")


@dataclass(frozen=True)
class ShardFormat:
    """One format's writer and reader, the only things the packer and verify know about it."""

    name: str
    holds: str  # "documents": whole documents, no padding; "rows": packed rows of seq_len tokens
    suffixes: tuple[str, ...]
    writer: Callable[[Path, ShardSpec], ShardWriter]  # takes DocBlocks or RowBlocks, as `holds` says
    read_tokens: Callable[[Files], Iterator[np.ndarray]]  # the shard's token slots in order, in chunks
    check: Callable[[Files, dict[str, Any], dict[str, Any]], list[str]]  # structure vs entry and manifest
    token_dtype: Callable[[int], np.dtype]  # the dtype it writes for a vocabulary of this size


def shard_files(fmt: ShardFormat, paths: list[Path]) -> Files:
    """Map each of a shard's paths to the format suffix it ends with."""
    return {suffix: next(p for p in paths if p.name.endswith(suffix)) for suffix in fmt.suffixes}


class ShardSet:
    """Feeds blocks to one writer per format and starts a new shard before one would pass `shard_tokens`.

    All its formats hold the same kind (documents or rows). A document longer than a shard gets a shard
    of its own; rows never straddle shards, so a row shard holds shard_tokens // seq_len rows.
    """

    def __init__(
        self, out_dir: Path, split: str, formats: list[ShardFormat], spec: ShardSpec, shard_tokens: int
    ) -> None:
        self.out_dir = out_dir
        self.split = split
        self.formats = formats
        self.spec = spec
        self.shard_tokens = shard_tokens
        self.index = -1
        self.writers: list[ShardWriter] = []
        self.stats = PackStats()
        self.total = PackStats()
        self.entries: list[dict[str, Any]] = []

    def write(self, block: Block) -> None:
        done = 0
        while done < len(block):
            if not self.writers:
                self._next_shard()
            take = block.fit(done, self.shard_tokens - self.stats.slot_tokens)
            if take == 0 and self.stats.sequences:  # this shard is full: the next unit opens a new one
                self._next_shard()
                continue
            take = max(take, 1)  # a document longer than a whole shard gets a shard to itself
            part = block.slice(done, done + take)
            for writer in self.writers:
                writer.write(part)
            self.stats.add_block(part)
            self.total.add_block(part)
            done += take

    def close(self) -> list[dict[str, Any]]:
        self._close_shard()
        return self.entries

    def holdings(self, fmt: ShardFormat) -> dict[str, Any]:
        """What this split's files of `fmt` hold, as the manifest records it."""
        held = {
            "holds": fmt.holds,
            "documents": self.total.documents,
            "document_tokens": self.total.tokens,
            "slot_tokens": self.total.slot_tokens,
            "padding_tokens": self.total.padding_tokens,
            "sequences": self.total.sequences,
            "shards": self.index + 1,
            "token_dtype": fmt.token_dtype(self.spec.vocab_size).name,
            "token_bytes": fmt.token_dtype(self.spec.vocab_size).itemsize,
        }
        return held | ({"rows": self.total.sequences, "seq_len": self.spec.seq_len} if fmt.holds == "rows" else {})

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
                        "tokens": self.stats.slot_tokens,
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
