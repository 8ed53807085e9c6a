"""The token spool: corpus documents tokenized once into a temporary uint32 file, then read back by offset.

Every document is framed as `[BOS] ids EOS` (BOS only with `add_bos`); empty documents are dropped and
counted. RAM holds one int64 offset per document, never the corpus' tokens.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from sdf.steps.tokens.tokenizer import Tokenizer
from sdf.writers.io import open_parquet
from sdf.writers.shards import RowBlock

TOKENIZE_BATCH = 1024  # most documents per encode_batch call
TOKENIZE_CHARS = 1 << 20  # most characters per call: bounds the tokenizer's working memory (~100 B/token)
READ_ROWS = 256  # parquet rows decoded at a time

U32 = next(code for code in "IL" if array(code).itemsize == 4)  # the array typecode of a uint32
Piece = tuple[int, int, int]  # (document, first token within it, token count)


class TokenSpool:
    """Framed documents appended to one uint32 file; RAM keeps only each document's start offset."""

    def __init__(self, path: Path, tokenizer: Tokenizer, add_bos: bool) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_id
        self.bos = tokenizer.bos_id if add_bos else None
        self.offsets = array("q", [0])
        self.file: BinaryIO = open(path, "wb")  # noqa: SIM115 - lives until finish_writing()
        self.fd = -1

    def add(self, encoded: list[list[int]]) -> list[int]:
        """Append encoded texts; return each one's framed length (0 = empty text, not stored)."""
        # array('I', ids) converts a list in one C loop, twice as fast as numpy over a chained iterator;
        # this runs under the GIL while the tokenizer encodes the next batch on every core
        flat = array(U32)
        lengths = []
        end = self.offsets[-1]
        for ids in encoded:
            if not ids:
                lengths.append(0)
                continue
            if self.bos is not None:
                flat.append(self.bos)
            flat.extend(array(U32, ids))
            flat.append(self.eos)
            n = len(ids) + 1 + (self.bos is not None)
            lengths.append(n)
            end += n
            self.offsets.append(end)
        self.file.write(flat.tobytes())
        return lengths

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """Framed length of every document, in spool order."""
        return np.diff(np.frombuffer(self.offsets, dtype=np.int64))

    def finish_writing(self) -> None:
        self.file.close()
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, doc: int, start: int = 0, count: int | None = None) -> np.ndarray:
        # pread, not memmap: mapped pages would count towards RSS and grow with the corpus
        begin = self.offsets[doc] + start
        n = self.offsets[doc + 1] - begin if count is None else count
        return np.frombuffer(os.pread(self.fd, 4 * n, 4 * begin), dtype=np.uint32)

    def rows(self, rows: list[list[Piece]], seq_len: int) -> RowBlock:
        """Read planned rows of document pieces into a block of seq_len tokens each, padded with EOS."""
        tokens = np.full((len(rows), seq_len), self.eos, dtype=np.uint32)
        pieces, ends = [], []
        offsets = self.offsets
        for r, row in enumerate(rows):
            col = 0
            for doc, start, n in row:
                tokens[r, col : col + n] = self.read(doc, start, n)
                col += n
            pieces.append([n for _, _, n in row])
            ends.append([start + n == offsets[doc + 1] - offsets[doc] for doc, start, n in row])
        return RowBlock(tokens, pieces, ends)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class CorpusTally:
    """What tokenizing the SDF corpus learned: each kept document's corpus row and tokens per label."""

    rows: array = field(default_factory=lambda: array("q"))  # corpus row of each kept document
    genre_tokens: dict[str, int] = field(default_factory=dict)
    section_tokens: dict[str, int] = field(default_factory=dict)
    dropped_empty: int = 0


def tokenize_corpus(corpus: Path, spool: TokenSpool, progress: bool) -> CorpusTally:
    """Append every document of corpus.parquet to the spool, counting tokens per genre and section."""
    parquet = open_parquet(corpus)
    names = set(parquet.schema_arrow.names)
    columns = ["text"] + [c for c in ("genre", "section_id") if c in names]

    def records() -> Iterator[tuple[str, str, str]]:
        for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=columns):
            texts = [t or "" for t in batch.column("text").to_pylist()]
            n = len(texts)
            yield from zip(texts, _labels(batch, "genre", n), _labels(batch, "section_id", n), strict=True)

    tally = CorpusTally()
    row = 0
    with tqdm(total=parquet.metadata.num_rows, desc="tokenize", unit="doc",
              disable=None if progress else True) as bar:
        for batch, encoded in encode_ahead(text_batches(records()), spool.tokenizer):
            lengths = spool.add(encoded)
            for n, (_, genre, section) in zip(lengths, batch, strict=True):
                if n:
                    tally.rows.append(row)
                    tally.genre_tokens[genre] = tally.genre_tokens.get(genre, 0) + n
                    tally.section_tokens[section] = tally.section_tokens.get(section, 0) + n
                else:
                    tally.dropped_empty += 1
                row += 1
            bar.update(len(batch))
    return tally


def encode_ahead(
    batches: Iterator[list[tuple[str, ...]]], tokenizer: Tokenizer
) -> Iterator[tuple[list[tuple[str, ...]], list[list[int]]]]:
    """Yield (batch, token ids) while the next batch is already encoding in a worker thread.

    Both tokenizer backends release the GIL while they encode, so writing one batch overlaps with
    encoding the next. The worker thread only encodes: the ids become Python lists here, under the GIL,
    so that the next encode never waits for the GIL to start.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(tokenizer.encode_native, [record[0] for record in batch])
            if pending is not None:
                yield pending[0], tokenizer.ids_of(pending[1].result())
            pending = (batch, future)
        if pending is not None:
            yield pending[0], tokenizer.ids_of(pending[1].result())


def text_batches(records: Iterator[tuple[str, ...]]) -> Iterator[list[tuple[str, ...]]]:
    """Group records (text first) into encode calls of at most TOKENIZE_BATCH docs or TOKENIZE_CHARS chars."""
    batch: list[tuple[str, ...]] = []
    chars = 0
    for record in records:
        batch.append(record)
        chars += len(record[0])
        if len(batch) >= TOKENIZE_BATCH or chars >= TOKENIZE_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _labels(batch: pa.RecordBatch, column: str, n: int) -> list[str]:
    if column not in batch.schema.names:
        return ["unknown"] * n
    return [str(v) if v is not None else "unknown" for v in batch.column(column).to_pylist()]
