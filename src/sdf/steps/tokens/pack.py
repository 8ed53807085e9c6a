"""Pack corpus.parquet into token shards that training frameworks read as they are.

How a pack runs (every step streams; RAM holds a few integers per document, never the corpus' tokens):

1. tokenize corpus.parquet record batch by record batch into a temporary token file, every document
   framed as `[BOS] ids EOS` (BOS only with `add_bos`); empty documents are dropped and counted;
2. split documents into train/validation with a seeded permutation (exactly round(n * val_share) go to
   validation) and shuffle each split;
3. stream each mix source (jsonl or parquet with a `text` column, or a directory of them) into the train
   split until it holds `ratio x` the SDF train tokens: ratio 1.0 = as many replay tokens as SDF train
   tokens, whole documents, so a source may overshoot by at most one document;
4. pack each split into rows of exactly `seq_len` tokens, padded with EOS:
   - `concat` streams the documents and cuts the stream every seq_len tokens (only the last row pads);
   - `bfd` bins documents best-fit-decreasing within windows of BFD_WINDOW documents and never splits a
     document unless it is longer than seq_len; such a document fills whole rows and its tail opens the
     next bin, so every document stays contiguous in the token stream;
5. write the rows to every selected format, each file via a temp file and os.replace, and write
   manifest.json last: a shard set without a manifest is incomplete; a rerun redoes the pack and produces
   the same bytes, and skips the work when the manifest's pack_key (inputs + settings) still matches.

Layout under `out_dir` (normally `<run>/shards`); split is `train` or `validation`, and shard k of every
format holds the same rows (shard_tokens // seq_len rows per shard):

    manifest.json
    <split>/megatron/<split>_00000.bin, .idx   Megatron-LM MMIDIDX v1: one sequence per row, each row
                                               its own document; dtype uint16 (code 8) or int32 (code 4)
    <split>/nanotron/<split>_00000.ds          datatrove/nanotron tokens, little-endian uint16 or uint32
    <split>/nanotron/<split>_00000.ds.index    uint64 ends of each document and of each padding run
    <split>/nanotron/<split>_00000.ds.metadata "<tokenizer>|<token bytes>", token count, human count
    <split>/hf/<split>_00000.parquet           rows: input_ids list<int32> (seq_len), seq_lengths
                                               list<int32> (document pieces; padding = the rest)
    <split>/npy/<split>_00000.tokens.npy       flat uint16 or uint32 tokens (np.load(mmap_mode="r"))
    <split>/npy/<split>_00000.docs.npy         int64 [n, 2]: [start, end) of each document piece

Rows are contiguous in every flat format, so `tokens.reshape(-1, seq_len)` gives the packed rows back.
nanotron reads back-to-back samples of sequence_length + 1 tokens, so sequence_length = seq_len - 1 gives
exactly one packed row per sample (give its folder dataset the `*.ds` files only). Megatron's GPTDataset
shuffles rows and cuts its own overlapping samples from them, so for Megatron the rows are a document
stream and `concat` wastes nothing; `bfd` rows suit trainers that take rows as they are (hf, npy).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import sdf
from sdf.config import PACK_FORMATS, PACK_STRATEGIES, PackConfig
from sdf.errors import SdfError
from sdf.steps.tokens.tokenizer import Tokenizer, file_sha256, load_tokenizer

FORMATS = PACK_FORMATS
STRATEGIES = PACK_STRATEGIES
SPLITS = ("train", "validation")
TOKENIZE_BATCH = 1024  # most documents per encode_batch call
TOKENIZE_CHARS = 1 << 20  # most characters per call: bounds the tokenizer's working memory (~100 B/token)
READ_ROWS = 256  # parquet rows decoded at a time
BFD_WINDOW = 8192  # documents binned together: bounds memory, costs a little fill at window edges
ROW_BLOCK = 256  # rows handed to the shard writers at a time
SAMPLES_PER_SPLIT = 3  # SDF documents per split that verify_run decodes back to text
PACK_FORMAT_VERSION = 1  # bump when the bytes written for the same inputs change

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
NPY_HEADER_BYTES = 128
SHARD_NAME = re.compile(
    r"^(train|validation)_\d{5}\.(bin|idx|ds|ds\.index|ds\.metadata|parquet|tokens\.npy|docs\.npy)$"
)




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
        lengths = []
        for ids in encoded:
            if not ids:
                lengths.append(0)
                continue
            ids.append(self.eos)
            if self.bos is not None:
                ids.insert(0, self.bos)
            lengths.append(len(ids))
        kept = [ids for ids in encoded if ids]
        total = sum(lengths)
        flat = np.fromiter(chain.from_iterable(kept), dtype=np.uint32, count=total)
        self.file.write(flat.tobytes())
        end = self.offsets[-1]
        for n in lengths:
            if n:
                end += n
                self.offsets.append(end)
        return lengths

    @property
    def documents(self) -> int:
        return len(self.offsets) - 1

    def finish_writing(self) -> None:
        self.file.close()
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, doc: int, start: int = 0, count: int | None = None) -> np.ndarray:
        # pread, not memmap: mapped pages would count towards RSS and grow with the corpus
        begin = self.offsets[doc] + start
        n = self.offsets[doc + 1] - begin if count is None else count
        return np.frombuffer(os.pread(self.fd, 4 * n, 4 * begin), dtype=np.uint32)

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


def open_parquet(path: Path) -> pq.ParquetFile:
    # a buffered stream reads a row group page by page; otherwise a corpus written as one big row
    # group would be loaded whole and memory would grow with the corpus
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def tokenize_corpus(corpus: Path, spool: TokenSpool, progress: bool) -> CorpusTally:
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
    with tqdm(total=parquet.metadata.num_rows, desc="tokenize", unit="doc", disable=not progress) as bar:
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
    encoding the next.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(tokenizer.encode_batch, [record[0] for record in batch])
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


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


# ---------------------------------------------------------------- mix sources


@dataclass
class MixSource:
    path: str
    ratio: float
    files: list[Path]
    target_tokens: int = 0
    tokens: int = 0
    documents: int = 0
    exhausted: bool = False


def mix_sources(mix: list[tuple[str, float]]) -> list[MixSource]:
    """Resolve and validate every mix path before any work starts, so a bad path fails in a second."""
    sources = []
    for path, ratio in mix:
        root = Path(path).expanduser()
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and _mix_kind(p))
            if not files:
                raise SdfError(f"mix folder {path} holds no .jsonl or .parquet files")
        elif root.is_file():
            if not _mix_kind(root):
                raise SdfError(f"mix file {path} must be .jsonl or .parquet")
            files = [root]
        else:
            raise SdfError(f"mix file not found: {path}")
        for file in files:
            _check_mix_file(file)
        sources.append(MixSource(path, ratio, files))
    return sources


def _mix_kind(path: Path) -> str | None:
    if path.name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if path.name.endswith(".parquet"):
        return "parquet"
    return None


def _check_mix_file(path: Path) -> None:
    if _mix_kind(path) == "parquet":
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:
            raise SdfError(f"mix file {path} is not a readable parquet file: {exc}") from exc
        if "text" not in names:
            raise SdfError(f"mix file {path} has no 'text' column (columns: {', '.join(names)})")
        return
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                if line.strip():
                    _jsonl_text(line, path, number)
                    return
        except UnicodeDecodeError:
            raise SdfError(f"mix file {path} is not valid UTF-8 text") from None


def _jsonl_text(line: str, path: Path, number: int) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise SdfError(f"mix file {path} line {number}: expected a JSON object with a 'text' string")
    return record["text"]


def _mix_records(source: MixSource) -> Iterator[tuple[str]]:
    for file in source.files:
        if _mix_kind(file) == "parquet":
            parquet = open_parquet(file)
            for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=["text"]):
                yield from ((t,) for t in batch.column("text").to_pylist() if t)
            continue
        with open(file, encoding="utf-8") as f:
            try:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield (_jsonl_text(line, file, number),)
            except UnicodeDecodeError:
                raise SdfError(f"mix file {file} is not valid UTF-8 text") from None


def tokenize_mix(source: MixSource, spool: TokenSpool, progress: bool) -> list[int]:
    """Append documents of `source` until it reaches its target; return their spool indices."""
    docs: list[int] = []
    with tqdm(total=source.target_tokens, desc=f"mix {source.path}", unit="tok", disable=not progress) as bar:
        for _, encoded in encode_ahead(text_batches(_mix_records(source)), spool.tokenizer):
            if source.tokens >= source.target_tokens:
                break
            first = spool.documents
            lengths = [n for n in spool.add(encoded) if n]
            for i, n in enumerate(lengths):
                if source.tokens >= source.target_tokens:
                    break
                docs.append(first + i)
                source.tokens += n
                bar.update(n)
        else:
            source.exhausted = source.tokens < source.target_tokens
    source.documents = len(docs)
    return docs


# ---------------------------------------------------------------- packing documents into rows


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


def concat_rows(
    order: np.ndarray, spool: TokenSpool, seq_len: int, stats: PackStats, watch: set[int]
) -> Iterator[RowBlock]:
    """Stream documents in `order` and cut the stream every seq_len tokens; pad only the final row."""
    parts: list[np.ndarray] = []
    rows_pieces: list[list[int]] = [[]]
    rows_ends: list[list[bool]] = [[]]
    pos = 0  # tokens gathered since the first row not yet handed out
    slot = 0  # position of that row in the split's token stream
    for doc in order.tolist():
        data = spool.read(doc)
        parts.append(data)
        if doc in watch:
            stats.first_slots[doc] = slot + pos
        remaining = len(data)
        if remaining > seq_len - pos % seq_len:
            stats.split_documents += 1
        while remaining:
            take = min(remaining, seq_len - pos % seq_len)
            rows_pieces[-1].append(take)
            rows_ends[-1].append(take == remaining)
            pos += take
            remaining -= take
            if pos % seq_len == 0:
                rows_pieces.append([])
                rows_ends.append([])
        if pos >= ROW_BLOCK * seq_len:
            full = pos // seq_len
            flat = np.concatenate(parts)
            rows = flat[: full * seq_len].reshape(full, seq_len)
            yield RowBlock(rows, rows_pieces[:full], rows_ends[:full])
            parts = [flat[full * seq_len :]]
            rows_pieces, rows_ends = rows_pieces[full:], rows_ends[full:]
            pos -= full * seq_len
            slot += full * seq_len
    if pos:
        rows = -(-pos // seq_len)
        tokens = np.full(rows * seq_len, spool.eos, dtype=np.uint32)
        tokens[:pos] = np.concatenate(parts)
        yield RowBlock(tokens.reshape(rows, seq_len), rows_pieces[:rows], rows_ends[:rows])


Piece = tuple[int, int, int]  # (document, first token within it, token count)


def bfd_units(docs: list[int], lengths: list[int], seq_len: int) -> list[list[list[Piece]]]:
    """Best-fit-decreasing bins for one window of documents, as units of rows that must stay together.

    A document longer than seq_len becomes whole rows plus a tail; the tail opens its own bin (no other
    tail may join it) and that bin follows the whole rows, so the document stays contiguous.
    """
    units: list[list[list[Piece]]] = []
    leading_rows: dict[int, list[list[Piece]]] = {}
    items: list[tuple[int, int, int, bool]] = []  # (length, doc, start, is_tail)
    for doc, n in zip(docs, lengths, strict=True):
        if n <= seq_len:
            items.append((n, doc, 0, False))
            continue
        whole = n // seq_len
        rows = [[(doc, i * seq_len, seq_len)] for i in range(whole)]
        if n == whole * seq_len:
            units.append(rows)
        else:
            leading_rows[doc] = rows
            items.append((n - whole * seq_len, doc, whole * seq_len, True))
    items.sort(key=lambda item: -item[0])

    bins: list[list[Piece]] = []
    bin_lead: list[int | None] = []
    free: list[int] = []
    by_space: list[list[int]] = [[] for _ in range(seq_len + 1)]  # open bins by free space
    open_count = np.zeros(seq_len + 1, dtype=np.int64)
    for n, doc, start, is_tail in items:
        chosen = -1
        if not is_tail:
            fits = np.flatnonzero(open_count[n:])
            if fits.size:
                space = n + int(fits[0])
                chosen = by_space[space].pop()
                open_count[space] -= 1
        if chosen < 0:
            chosen = len(bins)
            bins.append([])
            bin_lead.append(doc if is_tail else None)
            free.append(seq_len)
        bins[chosen].append((doc, start, n))
        free[chosen] -= n
        if free[chosen]:
            by_space[free[chosen]].append(chosen)
            open_count[free[chosen]] += 1
    for lead, pieces in zip(bin_lead, bins, strict=True):
        units.append((leading_rows[lead] if lead is not None else []) + [pieces])
    return units


def bfd_rows(
    order: np.ndarray,
    spool: TokenSpool,
    seq_len: int,
    stats: PackStats,
    watch: set[int],
    rng: np.random.Generator,
) -> Iterator[RowBlock]:
    """Bin each window of documents best-fit-decreasing, then emit its units in a seeded random order."""
    offsets = spool.offsets
    slot = 0
    pending: list[list[Piece]] = []
    for begin in range(0, len(order), BFD_WINDOW):
        docs = order[begin : begin + BFD_WINDOW].tolist()
        lengths = [offsets[d + 1] - offsets[d] for d in docs]
        stats.split_documents += sum(1 for n in lengths if n > seq_len)
        units = bfd_units(docs, lengths, seq_len)
        # shuffle units so rows do not come out sorted by document length
        for u in rng.permutation(len(units)).tolist():
            for row in units[u]:
                col = 0
                for doc, start, n in row:
                    if start == 0 and doc in watch:
                        stats.first_slots[doc] = slot + col
                    col += n
                pending.append(row)
                slot += seq_len
                if len(pending) == ROW_BLOCK:
                    yield _materialize(pending, spool, seq_len)
                    pending = []
    if pending:
        yield _materialize(pending, spool, seq_len)


def _materialize(rows: list[list[Piece]], spool: TokenSpool, seq_len: int) -> RowBlock:
    tokens = np.full((len(rows), seq_len), spool.eos, dtype=np.uint32)
    pieces, ends = [], []
    offsets = spool.offsets
    for r, row in enumerate(rows):
        col = 0
        for doc, start, n in row:
            tokens[r, col : col + n] = spool.read(doc, start, n)
            col += n
        pieces.append([n for _, _, n in row])
        ends.append([start + n == offsets[doc + 1] - offsets[doc] for doc, start, n in row])
    return RowBlock(tokens, pieces, ends)


# ---------------------------------------------------------------- shard writers (one shard of one format)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


class MegatronShard:
    """.bin holds rows back to back; .idx is written at close: header, lengths, pointers, documents."""

    def __init__(self, stem: Path, dtype: np.dtype, seq_len: int, tokenizer_name: str) -> None:
        self.bin_path = stem.with_name(stem.name + ".bin")
        self.idx_path = stem.with_name(stem.name + ".idx")
        self.dtype = np.dtype(np.uint16) if dtype == np.uint16 else np.dtype(np.int32)
        self.seq_len = seq_len
        self.rows = 0
        self.file = open(_tmp(self.bin_path), "wb")  # noqa: SIM115 - closed in close()

    def write(self, block: RowBlock) -> None:
        self.file.write(block.tokens.astype(self.dtype).tobytes())
        self.rows += len(block)

    def close(self) -> list[Path]:
        self.file.close()
        lengths = np.full(self.rows, self.seq_len, dtype=np.int32)
        pointers = np.arange(self.rows, dtype=np.int64) * (self.seq_len * self.dtype.itemsize)
        documents = np.arange(self.rows + 1, dtype=np.int64)
        with open(_tmp(self.idx_path), "wb") as f:
            f.write(MEGATRON_MAGIC)
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<B", MEGATRON_DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", self.rows))
            f.write(struct.pack("<Q", len(documents)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(documents.tobytes())
        for path in (self.bin_path, self.idx_path):
            os.replace(_tmp(path), path)
        return [self.bin_path, self.idx_path]


class NanotronShard:
    """datatrove's tokenized file: raw tokens, uint64 document ends, and a three-line metadata file."""

    def __init__(self, stem: Path, dtype: np.dtype, seq_len: int, tokenizer_name: str) -> None:
        self.ds_path = stem.with_name(stem.name + ".ds")
        self.dtype = np.dtype(dtype)
        self.seq_len = seq_len
        self.tokenizer_name = tokenizer_name
        self.ends = array("q")  # 8 bytes per document, not a Python int object each
        self.rows = 0
        self.file = open(_tmp(self.ds_path), "wb")  # noqa: SIM115 - closed in close()

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
        np.frombuffer(self.ends, dtype=np.int64).astype("<u8").tofile(_tmp(index_path))
        tokens = self.rows * self.seq_len
        meta = f"{self.tokenizer_name}|{self.dtype.itemsize}\n{tokens}\n{_human_tokens(tokens)}"
        _tmp(meta_path).write_text(meta, encoding="utf-8")
        paths = [self.ds_path, index_path, meta_path]
        for path in paths:
            os.replace(_tmp(path), path)
        return paths


class ParquetShard:
    """Rows for `datasets`: fixed-length input_ids and the document piece lengths of each row."""

    SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("seq_lengths", pa.list_(pa.int32()))])

    def __init__(self, stem: Path, dtype: np.dtype, seq_len: int, tokenizer_name: str) -> None:
        self.path = stem.with_name(stem.name + ".parquet")
        self.seq_len = seq_len
        self.writer = pq.ParquetWriter(_tmp(self.path), self.SCHEMA, use_dictionary=False)

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
        self.writer.write_table(pa.Table.from_arrays([ids, lengths], schema=self.SCHEMA))

    def close(self) -> list[Path]:
        self.writer.close()
        os.replace(_tmp(self.path), self.path)
        return [self.path]


class NpyShard:
    """A flat .npy token array (header written last, once the length is known) and a [start, end) index."""

    def __init__(self, stem: Path, dtype: np.dtype, seq_len: int, tokenizer_name: str) -> None:
        self.path = stem.with_name(stem.name + ".tokens.npy")
        self.docs_path = stem.with_name(stem.name + ".docs.npy")
        self.dtype = np.dtype(dtype)
        self.seq_len = seq_len
        self.rows = 0
        self.starts, self.stops = array("q"), array("q")
        self.continues = False  # the last piece written runs on into the next row
        self.file = open(_tmp(self.path), "wb")  # noqa: SIM115 - closed in close()
        self.file.write(b"\0" * NPY_HEADER_BYTES)

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
        with open(_tmp(self.docs_path), "wb") as f:
            np.save(f, np.stack([np.frombuffer(self.starts, np.int64), np.frombuffer(self.stops, np.int64)], axis=1))
        for path in (self.path, self.docs_path):
            os.replace(_tmp(path), path)
        return [self.path, self.docs_path]


WRITERS = {"megatron": MegatronShard, "nanotron": NanotronShard, "hf": ParquetShard, "npy": NpyShard}


def npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version 1.0 .npy header for a 1-D little-endian array, padded to NPY_HEADER_BYTES."""
    descr = np.dtype(dtype).newbyteorder("<").str
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({length},), }}"
    body_len = NPY_HEADER_BYTES - 10
    body = text.ljust(body_len - 1).encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + body


def _human_tokens(n: int) -> str:
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}T"
    return f"{n} T"


class ShardSet:
    """Feeds rows to one writer per format and starts new shards every `rows_per_shard` rows."""

    def __init__(self, out_dir: Path, split: str, cfg: PackConfig, dtype: np.dtype, tokenizer_name: str) -> None:
        self.out_dir = out_dir
        self.split = split
        self.cfg = cfg
        self.dtype = dtype
        self.tokenizer_name = tokenizer_name
        self.rows_per_shard = max(1, cfg.shard_tokens // cfg.seq_len)
        self.index = -1
        self.writers: list[Any] = []
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
            self.stats.add_block(part, self.cfg.seq_len)
            done += take

    def close(self) -> list[dict[str, Any]]:
        self._close_shard()
        return self.entries

    def _next_shard(self) -> None:
        self._close_shard()
        self.index += 1
        self.stats = PackStats()
        for fmt in self.cfg.formats:
            folder = self.out_dir / self.split / fmt
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / f"{self.split}_{self.index:05d}"
            self.writers.append(WRITERS[fmt](stem, self.dtype, self.cfg.seq_len, self.tokenizer_name))

    def _close_shard(self) -> None:
        if not self.writers:
            return
        for fmt, writer in zip(self.cfg.formats, self.writers, strict=True):
            for path in writer.close():
                self.entries.append(
                    {
                        "path": path.relative_to(self.out_dir).as_posix(),
                        "split": self.split,
                        "format": fmt,
                        "shard": self.index,
                        "sha256": file_sha256(path),
                        "bytes": path.stat().st_size,
                        "tokens": self.stats.sequences * self.cfg.seq_len,
                        "padding_tokens": self.stats.padding_tokens,
                        "sequences": self.stats.sequences,
                        "documents": self.stats.documents,
                    }
                )
        self.writers = []


# ---------------------------------------------------------------- the pack


CORE_KEYS = (
    "sdf_version", "pack_format_version", "config_hash", "pack_key", "seed", "tokenizer", "seq_len",
    "strategy", "formats", "shard_tokens", "val_share", "add_bos", "eos_id", "bos_id", "pad_id",
    "token_dtype", "documents", "tokens", "sequences", "padding_tokens", "packing", "splits",
    "tokens_per_genre", "tokens_per_section", "tokens_per_source", "documents_per_source", "mix",
    "samples", "shards", "corpus_sha256",
)  # fmt: skip


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def pack_corpus(
    corpus_path: Path,
    out_dir: Path,
    cfg: PackConfig,
    seed: int,
    config_hash: str,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize, split, mix and pack `corpus_path` into shards under `out_dir`; return the manifest."""
    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(CORE_KEYS))
    if clash:
        raise SdfError(f"pack: extra manifest keys {', '.join(clash)} would overwrite the packer's own", 1)
    _check_corpus(corpus_path)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.eos_id, cfg.bos_id)
    if tokenizer.eos_id is None:
        raise SdfError(f"tokenizer {tokenizer.name} has no EOS token; set [pack].eos_id")
    if cfg.add_bos and tokenizer.bos_id is None:
        raise SdfError(f"tokenizer {tokenizer.name} has no BOS token; set [pack].bos_id or add_bos = false")
    if cfg.add_bos and tokenizer.bos_id == tokenizer.eos_id:
        raise SdfError(f"tokenizer {tokenizer.name} uses one id for BOS and EOS; set add_bos = false (EOS already "
                       "separates documents) or give a distinct [pack].bos_id")  # fmt: skip
    sources = mix_sources(cfg.mix_ratios())
    corpus_sha256 = file_sha256(corpus_path)
    key = _pack_key(corpus_sha256, cfg, seed, config_hash, tokenizer, sources)

    manifest_path = out_dir / "manifest.json"
    previous = _read_json(manifest_path)
    if previous and previous.get("pack_key") == key and _shards_present(out_dir, previous):
        manifest = {k: previous[k] for k in CORE_KEYS if k in previous} | extra
        if manifest != previous:
            _write_json(manifest_path, manifest)
        return manifest

    # an old manifest next to half-rewritten shards would claim a finished pack
    manifest_path.unlink(missing_ok=True)
    work = out_dir / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spool = TokenSpool(work / "tokens.u32", tokenizer, cfg.add_bos)
    try:
        manifest = _pack(corpus_path, out_dir, cfg, seed, tokenizer, spool, sources, progress)
    finally:
        spool.close()
        shutil.rmtree(work, ignore_errors=True)
    manifest.update(
        sdf_version=sdf.__version__,
        pack_format_version=PACK_FORMAT_VERSION,
        config_hash=config_hash,
        pack_key=key,
        seed=seed,
        corpus_sha256=corpus_sha256,
    )
    manifest = {k: manifest[k] for k in CORE_KEYS} | extra
    _remove_stale(out_dir, {e["path"] for e in manifest["shards"]})
    _write_json(manifest_path, manifest)
    return manifest


def _pack(
    corpus_path: Path,
    out_dir: Path,
    cfg: PackConfig,
    seed: int,
    tokenizer: Tokenizer,
    spool: TokenSpool,
    sources: list[MixSource],
    progress: bool,
) -> dict[str, Any]:
    tally = tokenize_corpus(corpus_path, spool, progress)
    n_sdf = spool.documents
    if n_sdf == 0:
        raise SdfError(f"{corpus_path} has no non-empty documents to pack")
    rng = np.random.default_rng([seed, 0x5DF])
    perm = rng.permutation(n_sdf)
    n_val = round(n_sdf * cfg.val_share)
    if cfg.val_share > 0 and n_sdf > 1:
        n_val = min(max(n_val, 1), n_sdf - 1)
    orders = {"train": perm[n_val:], "validation": perm[:n_val]}
    lengths = np.diff(np.frombuffer(spool.offsets, dtype=np.int64))
    sdf_train_tokens = int(lengths[orders["train"]].sum())

    mix_docs: list[int] = []
    for source in sources:
        source.target_tokens = int(np.ceil(source.ratio * sdf_train_tokens))
        mix_docs += tokenize_mix(source, spool, progress)
    spool.finish_writing()
    lengths = np.diff(np.frombuffer(spool.offsets, dtype=np.int64))
    if mix_docs:
        orders["train"] = rng.permutation(np.concatenate([orders["train"], np.asarray(mix_docs, np.int64)]))

    dtype = token_dtype(tokenizer.vocab_size)
    splits: dict[str, dict[str, Any]] = {}
    shards: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for split, order in orders.items():
        if len(order) == 0:
            continue
        watch = order[order < n_sdf][:SAMPLES_PER_SPLIT].tolist()
        stats = PackStats()
        writer = ShardSet(out_dir, split, cfg, dtype, tokenizer.name)
        total = int(lengths[order].sum())
        if cfg.strategy == "concat":
            blocks = concat_rows(order, spool, cfg.seq_len, stats, set(watch))
        else:
            rng_bins = np.random.default_rng([seed, 0xBFD])
            blocks = bfd_rows(order, spool, cfg.seq_len, stats, set(watch), rng_bins)
        bar = tqdm(total=total, desc=f"pack {split}", unit="tok", unit_scale=True, disable=not progress)
        with bar:
            for block in blocks:
                writer.write(block)
                before = stats.tokens
                stats.add_block(block, cfg.seq_len)
                bar.update(stats.tokens - before)
        shards += writer.close()
        splits[split] = {
            "documents": stats.documents,
            "tokens": stats.tokens,
            "sequences": stats.sequences,
            "padding_tokens": stats.padding_tokens,
            "split_documents": stats.split_documents,
            "shards": writer.index + 1,
        }
        for doc in watch:
            place = {"offset": stats.first_slots[doc], "length": int(lengths[doc])}
            samples.append({"split": split, "row": int(tally.rows[doc])} | place)
    _attach_sample_texts(corpus_path, samples)

    slots = sum(s["sequences"] for s in splits.values()) * cfg.seq_len
    padding = sum(s["padding_tokens"] for s in splits.values())
    sdf_tokens = int(lengths[:n_sdf].sum())
    documents = sum(s["documents"] for s in splits.values())
    split_docs = sum(s["split_documents"] for s in splits.values())
    return {
        "tokenizer": tokenizer.identity(),
        "seq_len": cfg.seq_len,
        "strategy": cfg.strategy,
        "formats": list(cfg.formats),
        "shard_tokens": cfg.shard_tokens,
        "val_share": cfg.val_share,
        "add_bos": cfg.add_bos,
        "eos_id": tokenizer.eos_id,
        "bos_id": tokenizer.bos_id,
        "pad_id": tokenizer.eos_id,
        "token_dtype": dtype.name,
        "documents": documents,
        "tokens": sum(s["tokens"] for s in splits.values()),
        "sequences": sum(s["sequences"] for s in splits.values()),
        "padding_tokens": padding,
        # waste: padding is compute spent on nothing; split documents lose context across rows
        "packing": {
            "padding_share": round(padding / slots, 6) if slots else 0.0,
            "split_documents": split_docs,
            "split_share": round(split_docs / documents, 6) if documents else 0.0,
            "empty_documents_dropped": tally.dropped_empty,
        },
        "splits": splits,
        "tokens_per_genre": dict(sorted(tally.genre_tokens.items())),
        "tokens_per_section": dict(sorted(tally.section_tokens.items())),
        "tokens_per_source": {"sdf": sdf_tokens} | {s.path: s.tokens for s in sources},
        "documents_per_source": {"sdf": n_sdf} | {s.path: s.documents for s in sources},
        "mix": [
            {
                "path": s.path,
                "ratio": s.ratio,
                "target_tokens": s.target_tokens,
                "tokens": s.tokens,
                "documents": s.documents,
                "exhausted": s.exhausted,
            }
            for s in sources
        ],
        "samples": samples,
        "shards": shards,
    }


def _attach_sample_texts(corpus: Path, samples: list[dict[str, Any]]) -> None:
    """Give each sample its doc_id and the sha256 of its text, read back from the corpus by row."""
    wanted = {s.pop("row"): s for s in samples}
    row = 0
    parquet = open_parquet(corpus)
    for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text"]):
        for r in [r for r in wanted if row <= r < row + batch.num_rows]:
            wanted[r]["doc_id"] = str(batch.column("doc_id")[r - row].as_py())
            text = batch.column("text")[r - row].as_py()
            wanted[r]["text_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        row += batch.num_rows


def _check_corpus(corpus: Path) -> None:
    if not corpus.is_file():
        raise SdfError(f"corpus not found: {corpus} (run the earlier stages first)")
    try:
        names = pq.ParquetFile(corpus).schema_arrow.names
    except Exception as exc:
        raise SdfError(f"{corpus} is not a readable parquet file: {exc}") from exc
    missing = [c for c in ("doc_id", "text") if c not in names]
    if missing:
        raise SdfError(f"{corpus} lacks column(s) {', '.join(missing)}")


def _pack_key(
    corpus_sha256: str,
    cfg: PackConfig,
    seed: int,
    config_hash: str,
    tokenizer: Tokenizer,
    sources: list[MixSource],
) -> str:
    inputs = {
        "pack_format_version": PACK_FORMAT_VERSION,
        "sdf_version": sdf.__version__,
        "config": asdict(cfg),
        "seed": seed,
        "config_hash": config_hash,
        "tokenizer": tokenizer.identity(),
        "corpus": corpus_sha256,
        "mix": [[str(f), file_sha256(f)] for s in sources for f in s.files],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _shards_present(out_dir: Path, manifest: dict[str, Any]) -> bool:
    try:
        return all((out_dir / e["path"]).stat().st_size == e["bytes"] for e in manifest["shards"])
    except (OSError, KeyError, TypeError):
        return False


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete shard files of earlier packs (other formats, more shards, temp files) that we did not write."""
    for split in SPLITS:
        for fmt in FORMATS:
            folder = out_dir / split / fmt
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name.removesuffix(".tmp")
                relative = path.relative_to(out_dir).as_posix()
                if SHARD_NAME.match(name) and (relative not in keep or path.name.endswith(".tmp")):
                    path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
        if (out_dir / split).is_dir() and not any((out_dir / split).iterdir()):
            (out_dir / split).rmdir()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _tmp(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(_tmp(path), path)


# ---------------------------------------------------------------- verification


def verify_run(run_dir: Path) -> list[str]:
    """Re-check a finished pack: checksums, counts, structure, and sample documents decoded back to text.

    `run_dir` is a run directory (holding shards/) or the shards directory itself. Returns the problems
    found, one line each; an empty list means the shards are what the manifest says.
    """
    run_dir = Path(run_dir)
    shards_dir = run_dir if (run_dir / "manifest.json").is_file() else run_dir / "shards"
    manifest_path = shards_dir / "manifest.json"
    manifest = _read_json(manifest_path)
    if manifest is None:
        return [f"{manifest_path}: missing or not valid JSON (the pack did not finish; run `sdf pack` again)"]
    missing = [k for k in CORE_KEYS if k not in manifest]
    if missing:
        return [f"{manifest_path}: lacks {', '.join(missing)}"]
    try:
        return _verify(shards_dir, run_dir, manifest)
    except (KeyError, TypeError, ValueError) as exc:  # a hand-edited manifest must not crash verify
        return [f"{manifest_path}: malformed ({type(exc).__name__}: {exc})"]


def _verify(shards_dir: Path, run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    damaged: set[tuple[str, str, int]] = set()
    for entry in manifest["shards"]:
        group = (entry["split"], entry["format"], entry["shard"])
        groups.setdefault(group, []).append(entry)
        path = shards_dir / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest (file changed or corrupted)")
        else:
            continue
        damaged.add(group)

    for group, entries in sorted(groups.items()):
        if group not in damaged:
            try:
                problems += _check_shard(shards_dir, entries, manifest)
            except Exception as exc:  # a damaged file must become a report line, not a crash
                problems.append(f"{entries[0]['path']}: unreadable ({type(exc).__name__}: {exc})")

    for split, numbers in manifest["splits"].items():
        for fmt in manifest["formats"]:
            firsts = [e[0] for (s, f, _), e in sorted(groups.items()) if s == split and f == fmt]
            for key in ("tokens", "documents", "sequences", "padding_tokens"):
                counted = sum(e[key] for e in firsts)
                expected = numbers[key] + (numbers["padding_tokens"] if key == "tokens" else 0)
                if counted != expected:
                    problems.append(f"{split}/{fmt}: shards hold {counted} {key}, manifest says {expected}")

    if not damaged:
        problems += _check_samples(shards_dir, run_dir, manifest, groups)
    return problems


def _flat_tokens(shards_dir: Path, entries: list[dict[str, Any]], manifest: dict[str, Any]) -> Iterator[np.ndarray]:
    """The token slots of one shard, in order, a few million at a time."""
    paths = {e["path"].rsplit("/", 1)[1]: shards_dir / e["path"] for e in entries}
    fmt = entries[0]["format"]
    dtype = np.dtype(manifest["token_dtype"])
    step = 1 << 22
    if fmt == "hf":
        parquet = open_parquet(next(p for n, p in paths.items() if n.endswith(".parquet")))
        rows = max(1, step // manifest["seq_len"])
        for batch in parquet.iter_batches(batch_size=rows, columns=["input_ids"]):
            yield batch.column(0).flatten().to_numpy()
        return
    if fmt == "megatron":
        path, offset = next(p for n, p in paths.items() if n.endswith(".bin")), 0
        dtype = np.dtype(np.uint16) if dtype == np.uint16 else np.dtype(np.int32)
    elif fmt == "nanotron":
        path, offset = next(p for n, p in paths.items() if n.endswith(".ds")), 0
    else:
        path, offset = next(p for n, p in paths.items() if n.endswith(".tokens.npy")), NPY_HEADER_BYTES
    with open(path, "rb") as f:
        f.seek(offset)
        while len(chunk := np.fromfile(f, dtype=dtype, count=step)):
            yield chunk


def _check_shard(shards_dir: Path, entries: list[dict[str, Any]], manifest: dict[str, Any]) -> list[str]:
    """Counts and structure of one shard of one format against its manifest entry."""
    entry = entries[0]
    name = f"{entry['split']}/{entry['format']} shard {entry['shard']}"
    seq_len, eos = manifest["seq_len"], manifest["eos_id"]
    total = eos_count = 0
    for chunk in _flat_tokens(shards_dir, entries, manifest):
        total += len(chunk)
        eos_count += int(np.count_nonzero(chunk == eos))
    problems = []
    if total != entry["tokens"]:
        problems.append(f"{name}: {total} tokens, manifest says {entry['tokens']}")
    # padding is EOS too, and every document ends with exactly one EOS
    if eos_count - entry["padding_tokens"] != entry["documents"]:
        problems.append(f"{name}: {eos_count - entry['padding_tokens']} document ends, manifest says "
                        f"{entry['documents']}")  # fmt: skip
    real = entry["tokens"] - entry["padding_tokens"]
    paths = {e["path"]: shards_dir / e["path"] for e in entries}
    fmt = entry["format"]
    if fmt == "megatron":
        idx = next(p for n, p in paths.items() if n.endswith(".idx")).read_bytes()
        magic, version, code, sequences, documents = idx[:9], *struct.unpack("<QBQQ", idx[9:34])
        dtype = np.dtype(np.uint16) if manifest["token_dtype"] == "uint16" else np.dtype(np.int32)
        want = MEGATRON_DTYPE_CODES[dtype]
        if magic != MEGATRON_MAGIC or version != 1 or code != want:
            problems.append(f"{name}: .idx header is not MMIDIDX v1 with dtype code {want}")
        if sequences != entry["sequences"] or documents != sequences + 1:
            problems.append(f"{name}: .idx counts {sequences} sequences, manifest says {entry['sequences']}")
        lengths = np.frombuffer(idx, dtype=np.int32, count=sequences, offset=34)
        if len(lengths) and (lengths != seq_len).any():
            problems.append(f"{name}: .idx has sequences that are not {seq_len} tokens long")
    elif fmt == "nanotron":
        ends = np.fromfile(next(p for n, p in paths.items() if n.endswith(".ds.index")), dtype="<u8")
        if len(ends) and ((np.diff(ends.astype(np.int64)) <= 0).any() or int(ends[-1]) > total):
            problems.append(f"{name}: .ds.index ends are not increasing within the file")
        meta = next(p for n, p in paths.items() if n.endswith(".ds.metadata")).read_text().splitlines()
        if len(meta) < 2 or meta[1] != str(total):
            problems.append(f"{name}: .ds.metadata token count does not match the .ds file")
    elif fmt == "hf":
        parquet_path = next(p for n, p in paths.items() if n.endswith(".parquet"))
        table = pq.read_table(parquet_path, columns=["seq_lengths"])
        if table.num_rows != entry["sequences"]:
            problems.append(f"{name}: {table.num_rows} rows, manifest says {entry['sequences']}")
        pieces = int(pa.compute.sum(table.column(0).combine_chunks().flatten()).as_py() or 0)
        if pieces != real:
            problems.append(f"{name}: seq_lengths sum to {pieces}, manifest says {real} document tokens")
    else:
        spans = np.load(next(p for n, p in paths.items() if n.endswith(".docs.npy")))
        covered = int((spans[:, 1] - spans[:, 0]).sum()) if len(spans) else 0
        if covered != real or (len(spans) and (spans.min() < 0 or spans.max() > total)):
            problems.append(f"{name}: .docs.npy spans cover {covered} tokens, manifest says {real}")
    return problems


def _check_samples(
    shards_dir: Path, run_dir: Path, manifest: dict[str, Any], groups: dict[tuple[str, str, int], list[dict]]
) -> list[str]:
    """Decode each sample document from every format and compare it with the manifest and the corpus."""
    identity = manifest["tokenizer"]
    try:
        tokenizer = load_tokenizer(identity["spec"], identity["eos_id"], identity["bos_id"])
    except SdfError as exc:
        return [f"cannot load tokenizer to decode samples: {exc}"]
    if tokenizer.identity()["sha256"] != identity["sha256"]:
        return [f"tokenizer {identity['spec']} changed since the pack (sha256 differs)"]
    corpus = run_dir / "corpus.parquet"
    wanted = {s["doc_id"] for s in manifest["samples"]}
    corpus_texts = _corpus_texts(corpus, wanted) if corpus.is_file() else {}
    problems = []
    if corpus.is_file() and manifest.get("corpus_sha256") not in (None, file_sha256(corpus)):
        problems.append("corpus.parquet changed since the pack (sha256 differs); run `sdf pack` again")
    for sample in manifest["samples"]:
        for fmt in manifest["formats"]:
            shard_groups = [e for (s, f, _), e in sorted(groups.items()) if s == sample["split"] and f == fmt]
            tokens = _read_span(shards_dir, shard_groups, manifest, sample["offset"], sample["length"])
            where = f"sample {sample['doc_id']} in {sample['split']}/{fmt}"
            if len(tokens) != sample["length"] or tokens[-1] != manifest["eos_id"]:
                problems.append(f"{where}: not found at token {sample['offset']}")
                continue
            body = tokens[1:-1] if manifest["add_bos"] else tokens[:-1]
            text = tokenizer.decode(body.tolist())
            if hashlib.sha256(text.encode()).hexdigest() == sample["text_sha256"]:
                continue
            original = corpus_texts.get(sample["doc_id"])
            # tokenizers that normalize text cannot give it back exactly; then the ids must match
            if original is None or tokenizer.encode_batch([original])[0] != body.tolist():
                problems.append(f"{where}: decodes to text that differs from the packed document")
    missing = wanted - set(corpus_texts)
    if corpus.is_file() and missing:
        problems.append(f"corpus.parquet lacks sample document(s) {', '.join(sorted(missing))}")
    return problems


def _read_span(
    shards_dir: Path, shard_groups: list[list[dict]], manifest: dict[str, Any], offset: int, length: int
) -> np.ndarray:
    """Tokens [offset, offset + length) of a split's stream, which may cross shard boundaries."""
    found: list[np.ndarray] = []
    base = 0
    for entries in shard_groups:
        if base + entries[0]["tokens"] <= offset:
            base += entries[0]["tokens"]
            continue
        for chunk in _flat_tokens(shards_dir, entries, manifest):
            lo, hi = max(offset - base, 0), min(offset + length - base, len(chunk))
            if lo < hi:
                found.append(chunk[lo:hi])
            base += len(chunk)
            if base >= offset + length:
                return np.concatenate(found)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _corpus_texts(corpus: Path, doc_ids: set[str]) -> dict[str, str]:
    texts = {}
    for batch in open_parquet(corpus).iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text"]):
        ids, docs = batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()
        for doc_id, text in zip(ids, docs, strict=True):
            if str(doc_id) in doc_ids:
                texts[str(doc_id)] = text
    return texts
