"""Pack corpus.parquet into token shards that training frameworks read as they are.

How a pack runs (every step streams; RAM holds a few integers per document, never the corpus' tokens):

1. tokenize corpus.parquet into the token spool (`spool.py`), every document framed `[BOS] ids EOS`;
2. split documents into train/validation with a seeded permutation (exactly round(n * val_share) go to
   validation) and shuffle each split;
3. stream each mix source into the train split (`mix.py`);
4. write each split twice over, once per kind of format (`sdf.writers`):
   - documents (megatron, nanotron): whole documents in split order, no padding; the framework cuts
     its own samples of any sequence length;
   - rows (hf, npy): rows of exactly `seq_len` tokens planned by the chosen strategy (`packing.py`),
     padded with EOS, for trainers that take rows as they are;
5. each file goes via a temp file and os.replace, and manifest.json comes last: a shard set without a
   manifest is incomplete; a rerun redoes the pack and produces the same bytes, and skips the work when
   the manifest's pack_key (inputs + settings) still matches.

Layout under `out_dir` (normally `<run>/shards`); split is `train` or `validation`. A shard of a document
format ends before a document would take it past shard_tokens; a row shard holds shard_tokens // seq_len
rows, and shard k of hf and npy holds the same rows.

    manifest.json                              holdings[format][split] says what each format holds;
                                               readers: each framework's reader settings for this pack
    READERS.md                                 the same settings, ready to paste, with full paths
    <split>/megatron/<split>_00000.bin, .idx   Megatron-LM MMIDIDX v1: one sequence per document;
                                               dtype uint16 (code 8) below 65500 ids, else int32 (code 4)
    <split>/nanotron/<split>_00000.ds          datatrove/nanotron tokens, little-endian uint16 or uint32
    <split>/nanotron/<split>_00000.ds.index    uint64 end of each document
    <split>/nanotron/<split>_00000.ds.metadata "<tokenizer>|<token bytes>", token count, human count
    <split>/hf/<split>_00000.parquet           rows: input_ids, labels (-100: padding, piece starts),
                                               attention_mask, position_ids (restart per piece), each
                                               seq_len long; seq_lengths (document pieces; padding = the rest)
    <split>/npy/<split>_00000.tokens.npy       flat uint16 or uint32 tokens (np.load(mmap_mode="r"))
    <split>/npy/<split>_00000.docs.npy         int64 [n, 2]: [start, end) of each document piece

Rows are contiguous in the flat npy tokens, so `tokens.reshape(-1, seq_len)` gives the packed rows back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

import sdf
from sdf.config import PackConfig
from sdf.errors import SdfError
from sdf.steps.tokens.mix import MixSource, mix_sources, tokenize_mix
from sdf.steps.tokens.packing import Row, bfd_rows, concat_rows
from sdf.steps.tokens.spool import READ_ROWS, CorpusTally, TokenSpool, tokenize_corpus
from sdf.steps.tokens.tokenizer import Tokenizer, file_sha256, load_tokenizer
from sdf.writers import FORMATS
from sdf.writers.io import open_parquet, read_json, write_json
from sdf.writers.manifest import CORE_KEYS, MANIFEST
from sdf.writers.readers import reader_settings, write_readers_md
from sdf.writers.shards import HOLDS, DocBlock, PackStats, ShardSet, ShardSpec, flat_dtype, remove_stale

ROW_BLOCK = 256  # rows handed to the shard writers at a time
DOC_BLOCK_TOKENS = 1 << 20  # about this many tokens of whole documents handed to the writers at a time
SAMPLES_PER_SPLIT = 3  # SDF documents per split that verify_run decodes back to text
PACK_FORMAT_VERSION = 3  # bump when the bytes written for the same inputs change


def pack_corpus(
    corpus_path: Path,
    out_dir: Path,
    cfg: PackConfig,
    seed: int,
    config_hash: str,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    tokenize: Callable[[Path, TokenSpool, bool], CorpusTally] = tokenize_corpus,
) -> dict[str, Any]:
    """Tokenize, split, mix and pack `corpus_path` into shards under `out_dir`; return the manifest.

    `tokenize` fills the spool in corpus order (an executor may encode elsewhere, e.g. on Ray)."""
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

    manifest_path = out_dir / MANIFEST
    previous = read_json(manifest_path)
    if previous and previous.get("pack_key") == key and _shards_present(out_dir, previous):
        manifest = {k: previous[k] for k in CORE_KEYS if k in previous} | extra
        write_readers_md(out_dir, manifest)
        if manifest != previous:
            write_json(manifest_path, manifest)
        return manifest

    # an old manifest next to half-rewritten shards would claim a finished pack
    manifest_path.unlink(missing_ok=True)
    work = out_dir / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spool = TokenSpool(work / "tokens.u32", tokenizer, cfg.add_bos)
    try:
        manifest = _pack(corpus_path, out_dir, cfg, seed, tokenizer, spool, sources, progress, tokenize)
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
    manifest["readers"] = reader_settings(manifest)
    manifest = {k: manifest[k] for k in CORE_KEYS} | extra
    remove_stale(out_dir, list(FORMATS.values()), {e["path"] for e in manifest["shards"]})
    write_readers_md(out_dir, manifest)
    write_json(manifest_path, manifest)
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
    tokenize: Callable[[Path, TokenSpool, bool], CorpusTally] = tokenize_corpus,
) -> dict[str, Any]:
    tally = tokenize(corpus_path, spool, progress)
    n_sdf = spool.documents
    if n_sdf == 0:
        raise SdfError(f"{corpus_path} has no non-empty documents to pack")
    rng = np.random.default_rng([seed, 0x5DF])
    perm = rng.permutation(n_sdf)
    n_val = round(n_sdf * cfg.val_share)
    if cfg.val_share > 0 and n_sdf > 1:
        n_val = min(max(n_val, 1), n_sdf - 1)
    orders = {"train": perm[n_val:], "validation": perm[:n_val]}
    sdf_train_tokens = int(spool.lengths()[orders["train"]].sum())

    mix_docs: list[int] = []
    for source in sources:
        source.target_tokens = int(np.ceil(source.ratio * sdf_train_tokens))
        mix_docs += tokenize_mix(source, spool, progress)
    spool.finish_writing()
    lengths = spool.lengths()
    if mix_docs:
        orders["train"] = rng.permutation(np.concatenate([orders["train"], np.asarray(mix_docs, np.int64)]))

    spec = ShardSpec(cfg.seq_len, tokenizer.name, tokenizer.vocab_size)
    length_of = array("q", lengths.astype(np.int64).tobytes())  # 8 bytes a document, fast to index
    watching = {split: order[order < n_sdf][:SAMPLES_PER_SPLIT].tolist() for split, order in orders.items()}
    # the samples' texts are read back from the corpus while the shards are written (parquet decodes and
    # sha256 hashes without the GIL)
    with ThreadPoolExecutor(max_workers=1) as pool:
        texts = pool.submit(_sample_texts, corpus_path, [int(tally.rows[d]) for ds in watching.values() for d in ds])
        splits, holdings, shards, samples = _write_splits(out_dir, orders, watching, cfg, spec, spool, lengths,
                                                          length_of, seed, progress)  # fmt: skip
        for sample in samples:
            sample |= texts.result()[int(tally.rows[sample.pop("doc")])]

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
        "token_dtype": flat_dtype(tokenizer.vocab_size).name,
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
        "holdings": holdings,
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


def _write_split(
    out_dir: Path,
    split: str,
    order: list[int],
    cfg: PackConfig,
    spec: ShardSpec,
    spool: TokenSpool,
    lengths: Sequence[int],
    watch: set[int],
    seed: int,
    bar: tqdm,
) -> tuple[PackStats, dict[str, dict[int, int]], list[ShardSet]]:
    """Write one split once per kind of format: whole documents in `order`, then packed rows.

    Returns the rows' counts (zero without a row format), where each watched document starts in each
    kind's token stream, and the shard sets, still open.
    """
    rows = PackStats()
    offsets: dict[str, dict[int, int]] = {}
    shard_sets = []
    for holds in HOLDS:
        formats = [FORMATS[name] for name in cfg.formats if FORMATS[name].holds == holds]
        if not formats:
            continue
        writer = ShardSet(out_dir, split, formats, spec, cfg.shard_tokens)
        if holds == "documents":
            offsets[holds] = _write_documents(order, spool, writer, watch, bar)
        else:
            if cfg.strategy == "concat":
                plan = concat_rows(order, lengths, cfg.seq_len)
            else:
                plan = bfd_rows(order, lengths, cfg.seq_len, np.random.default_rng([seed, 0xBFD]))
            rows = _write_rows(plan, spool, writer, lengths, watch, bar)
            offsets[holds] = rows.first_slots
        shard_sets.append(writer)
    return rows, offsets, shard_sets


def _write_rows(
    rows: Iterator[Row], spool: TokenSpool, writer: ShardSet, lengths: Sequence[int], watch: set[int], bar: tqdm
) -> PackStats:
    """Read planned rows from the spool, ROW_BLOCK at a time, into the shard set; count what they hold."""
    stats = PackStats()
    seq_len = writer.spec.seq_len
    pending: list[Row] = []
    slot = 0
    for row in rows:
        col = 0
        for doc, start, n in row:
            if start == 0:
                if doc in watch:
                    stats.first_slots[doc] = slot + col
                if n < lengths[doc]:  # its first piece is not all of it: the document spans rows
                    stats.split_documents += 1
            col += n
        slot += seq_len
        pending.append(row)
        if len(pending) == ROW_BLOCK:
            _flush(pending, spool, writer, stats, bar)
            pending = []
    if pending:
        _flush(pending, spool, writer, stats, bar)
    return stats


def _write_documents(
    order: list[int], spool: TokenSpool, writer: ShardSet, watch: set[int], bar: tqdm
) -> dict[int, int]:
    """Stream whole documents in `order` into the shard set; return each watched one's first token."""
    firsts: dict[int, int] = {}
    parts: list[np.ndarray] = []
    position = pending = 0
    for doc in order:
        data = spool.read(doc)
        if doc in watch:
            firsts[doc] = position
        parts.append(data)
        position += len(data)
        pending += len(data)
        if pending >= DOC_BLOCK_TOKENS:
            _flush_documents(parts, writer, bar)
            parts, pending = [], 0
    if parts:
        _flush_documents(parts, writer, bar)
    return firsts


def _flush_documents(parts: list[np.ndarray], writer: ShardSet, bar: tqdm) -> None:
    writer.write(DocBlock(np.concatenate(parts), [len(p) for p in parts]))
    bar.update(sum(len(p) for p in parts))


def _flush(rows: list[Row], spool: TokenSpool, writer: ShardSet, stats: PackStats, bar: tqdm) -> None:
    block = spool.rows(rows, writer.spec.seq_len)
    writer.write(block)
    before = stats.tokens
    stats.add_block(block)
    bar.update(stats.tokens - before)


def _write_splits(
    out_dir: Path,
    orders: dict[str, np.ndarray],
    watching: dict[str, list[int]],
    cfg: PackConfig,
    spec: ShardSpec,
    spool: TokenSpool,
    lengths: np.ndarray,
    length_of: Sequence[int],
    seed: int,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Write every split; return its counts, what each format holds, the shards and the samples' places
    (each sample still names its spool document as "doc")."""
    splits: dict[str, dict[str, Any]] = {}
    holdings: dict[str, dict[str, Any]] = {name: {} for name in cfg.formats}
    shards: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for split, order in orders.items():
        if len(order) == 0:
            continue
        watched = watching[split]
        bar = tqdm(total=int(lengths[order].sum()) * len({FORMATS[f].holds for f in cfg.formats}),
                   desc=f"pack {split}", unit="tok", unit_scale=True, disable=None if progress else True)  # fmt: skip
        with bar:
            rows, offsets, shard_sets = _write_split(out_dir, split, order.tolist(), cfg, spec, spool, length_of,
                                                     set(watched), seed, bar)  # fmt: skip
        for writer in shard_sets:
            shards += writer.close()
            for fmt in writer.formats:
                holdings[fmt.name][split] = writer.holdings(fmt)
        splits[split] = {
            "documents": len(order),
            "tokens": int(lengths[order].sum()),
            "sequences": rows.sequences,
            "padding_tokens": rows.padding_tokens,
            "split_documents": rows.split_documents,
            "shards": max(w.index + 1 for w in shard_sets),
        }
        for doc in watched:
            place = {"offsets": {kind: firsts[doc] for kind, firsts in offsets.items()}, "length": length_of[doc]}
            samples.append({"split": split, "doc": doc} | place)
    return splits, holdings, shards, samples


def _sample_texts(corpus: Path, rows: list[int]) -> dict[int, dict[str, str]]:
    """The doc_id and the sha256 of the text of each wanted corpus row, read back by row."""
    found: dict[int, dict[str, str]] = {}
    wanted = set(rows)
    first = 0
    parquet = open_parquet(corpus)
    for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text"]):
        for r in [r for r in wanted if first <= r < first + batch.num_rows]:
            text = batch.column("text")[r - first].as_py()
            found[r] = {"doc_id": str(batch.column("doc_id")[r - first].as_py()),
                        "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
        first += batch.num_rows
        if len(found) == len(wanted):
            break
    return found


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

