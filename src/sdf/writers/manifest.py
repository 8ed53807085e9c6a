"""manifest.json, the record of a finished pack, and `verify_run`, which checks the shards against it.

verify reads every format through its own module's reader (`ShardFormat.read_tokens` and `.check`), so
adding a format never touches this file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from sdf.errors import SdfError
from sdf.steps.tokens.tokenizer import file_sha256, load_tokenizer
from sdf.writers import FORMATS
from sdf.writers.io import open_parquet, read_json
from sdf.writers.shards import shard_files

MANIFEST = "manifest.json"
CORE_KEYS = (
    "sdf_version", "pack_format_version", "config_hash", "pack_key", "seed", "tokenizer", "seq_len",
    "strategy", "formats", "shard_tokens", "val_share", "add_bos", "eos_id", "bos_id", "pad_id",
    "token_dtype", "documents", "tokens", "sequences", "padding_tokens", "packing", "splits",
    "tokens_per_genre", "tokens_per_section", "tokens_per_source", "documents_per_source", "mix",
    "samples", "shards", "corpus_sha256", "holdings", "readers",
)  # fmt: skip
READ_ROWS = 256  # corpus rows decoded at a time when looking up sample texts

ENTRY_COUNTS = ("tokens", "padding_tokens", "documents", "sequences")  # per shard; tokens are slots
Group = tuple[str, str, int]  # (split, format, shard)


def verify_run(run_dir: Path) -> list[str]:
    """Re-check a finished pack: checksums, counts, structure, and sample documents decoded back to text.

    `run_dir` is a run directory (holding shards/) or the shards directory itself. Returns the problems
    found, one line each; an empty list means the shards are what the manifest says.
    """
    run_dir = Path(run_dir)
    shards_dir = run_dir if (run_dir / MANIFEST).is_file() else run_dir / "shards"
    manifest_path = shards_dir / MANIFEST
    manifest = read_json(manifest_path)
    if manifest is None:
        return [f"{manifest_path}: missing or not valid JSON (the pack did not finish; run `sdf pack` again)"]
    missing = [k for k in CORE_KEYS if k not in manifest]
    if missing:
        return [f"{manifest_path}: lacks {', '.join(missing)} (an older or unfinished pack; run `sdf pack` again)"]
    try:
        return _verify(shards_dir, run_dir, manifest)
    except (KeyError, TypeError, ValueError) as exc:  # a hand-edited manifest must not crash verify
        return [f"{manifest_path}: malformed ({type(exc).__name__}: {exc})"]


def _verify(shards_dir: Path, run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    groups: dict[Group, list[dict[str, Any]]] = {}
    damaged: set[Group] = set()
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

    problems += _check_holdings(manifest, groups)
    if not damaged:
        problems += _check_samples(shards_dir, run_dir, manifest, groups)
    return problems


def _check_holdings(manifest: dict[str, Any], groups: dict[Group, list[dict[str, Any]]]) -> list[str]:
    """Each format's holdings per split against its shard entries and against the split's documents."""
    problems = []
    for split, numbers in manifest["splits"].items():
        for name in manifest["formats"]:
            where, fmt = f"{split}/{name}", FORMATS[name]
            held = manifest["holdings"][name].get(split)
            if held is None:
                problems.append(f"{where}: manifest has no holdings for this split")
                continue
            firsts = [e[0] for (s, f, _), e in sorted(groups.items()) if s == split and f == name]
            counted = {key: sum(e[key] for e in firsts) for key in ENTRY_COUNTS}
            claimed = {"tokens": held["slot_tokens"]} | {k: held[k] for k in ENTRY_COUNTS[1:]}
            problems += [f"{where}: shards hold {counted[k]} {k}, holdings say {claimed[k]}"
                         for k in counted if counted[k] != claimed[k]]  # fmt: skip
            if held["holds"] != fmt.holds:
                problems.append(f"{where}: holdings say {held['holds']}, the format holds {fmt.holds}")
            real = held["slot_tokens"] - held["padding_tokens"]
            if not real == held["document_tokens"] == numbers["tokens"]:
                problems.append(f"{where}: holds {real} document tokens, the split has {numbers['tokens']}")
            if held["documents"] != numbers["documents"]:
                problems.append(f"{where}: holds {held['documents']} documents, the split has {numbers['documents']}")
            if fmt.holds == "documents" and held["padding_tokens"]:
                problems.append(f"{where}: {held['padding_tokens']} padding tokens where only documents belong")
            if fmt.holds == "rows" and held["sequences"] != numbers["sequences"]:
                problems.append(f"{where}: holds {held['sequences']} rows, the split has {numbers['sequences']}")
    return problems


def _files(shards_dir: Path, entries: list[dict[str, Any]]) -> dict[str, Path]:
    fmt = FORMATS[entries[0]["format"]]
    return shard_files(fmt, [shards_dir / e["path"] for e in entries])


def _check_shard(shards_dir: Path, entries: list[dict[str, Any]], manifest: dict[str, Any]) -> list[str]:
    """Counts of one shard of one format against its manifest entry, then the format's own structure checks."""
    entry = entries[0]
    fmt = FORMATS[entry["format"]]
    files = _files(shards_dir, entries)
    name = f"{entry['split']}/{fmt.name} shard {entry['shard']}"
    eos = manifest["eos_id"]
    total = eos_count = 0
    for chunk in fmt.read_tokens(files):
        total += len(chunk)
        eos_count += int(np.count_nonzero(chunk == eos))
    problems = []
    if total != entry["tokens"]:
        problems.append(f"{name}: {total} tokens, manifest says {entry['tokens']}")
    # padding is EOS too, and every document ends with exactly one EOS
    if eos_count - entry["padding_tokens"] != entry["documents"]:
        problems.append(f"{name}: {eos_count - entry['padding_tokens']} document ends, manifest says "
                        f"{entry['documents']}")  # fmt: skip
    return problems + fmt.check(files, entry, manifest)


def _check_samples(
    shards_dir: Path, run_dir: Path, manifest: dict[str, Any], groups: dict[Group, list[dict[str, Any]]]
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
            offset = sample["offsets"][FORMATS[fmt].holds]
            tokens = _read_span(shards_dir, shard_groups, offset, sample["length"])
            where = f"sample {sample['doc_id']} in {sample['split']}/{fmt}"
            if len(tokens) != sample["length"] or tokens[-1] != manifest["eos_id"]:
                problems.append(f"{where}: not found at token {offset}")
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


def _read_span(shards_dir: Path, shard_groups: list[list[dict[str, Any]]], offset: int, length: int) -> np.ndarray:
    """Tokens [offset, offset + length) of a split's stream, which may cross shard boundaries."""
    found: list[np.ndarray] = []
    base = 0
    for entries in shard_groups:
        if base + entries[0]["tokens"] <= offset:
            base += entries[0]["tokens"]
            continue
        for chunk in FORMATS[entries[0]["format"]].read_tokens(_files(shards_dir, entries)):
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
