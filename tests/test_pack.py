"""Packing: every format read back by an independent reader gives the documents back exactly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shard_readers import (
    load_hf_rows,
    nanotron_samples,
    read_megatron_index,
    read_megatron_sequences,
    read_nanotron,
    split_documents,
)

from sdf.config import PackConfig
from sdf.errors import SdfError
from sdf.steps.tokens.pack import pack_corpus
from sdf.steps.tokens.tokenizer import load_tokenizer
from sdf.writers.manifest import verify_run
from sdf.writers.megatron import megatron_dtype

DATA = Path(__file__).parent / "data"
TOKENIZER = str(DATA / "tokenizer.json")
SEQ_LEN = 64
ALL_FORMATS = ["megatron", "nanotron", "hf", "npy"]


def make_corpus(path: Path, n: int = 120, seed: int = 0) -> list[dict]:
    """Documents from short to several rows long, with unicode and a literal separator in one of them."""
    words = (DATA / "fixture_text.txt").read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        size = rng.choice([1, 4, 12, 30, 45, 90, 160])
        text = " ".join(rng.choice(words) for _ in range(size))
        docs.append(
            {
                "doc_id": f"doc-{seed}-{i:04d}",
                "text": text,
                "genre": ["essay", "story", "dialogue"][i % 3],
                "section_id": f"sec-{i % 5}",
                "quality_score": None,
            }
        )
    if n > 7:
        docs[3]["text"] = "Naïve café — 🙂 and a fake separator <|endoftext|> inside the text."
        docs[7]["text"] = ""  # dropped and counted, never packed
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs), path, row_group_size=50)
    return docs


def config(**overrides) -> PackConfig:
    values = {
        "tokenizer": TOKENIZER,
        "seq_len": SEQ_LEN,
        "formats": ALL_FORMATS,
        "shard_tokens": SEQ_LEN * 16,
    }
    return PackConfig(**(values | overrides))


def files(root: Path, split: str, fmt: str, suffix: str) -> list[Path]:
    return sorted((root / split / fmt).glob(f"*{suffix}"))


def decoded(docs: list[list[int]]) -> list[str]:
    tokenizer = load_tokenizer(TOKENIZER)
    return [tokenizer.decode(d) for d in docs]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file's bytes; READERS.md names the folder it sits in, so that name is taken out."""
    tree = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if "READERS.md" in tree:
        tree["READERS.md"] = tree["READERS.md"].replace(str(root.resolve()).encode(), b"<shards>")
    return tree


@pytest.fixture(scope="module", params=["concat", "bfd"])
def packed(request, tmp_path_factory):
    run = tmp_path_factory.mktemp(f"run-{request.param}")
    docs = make_corpus(run / "corpus.parquet")
    manifest = pack_corpus(
        run / "corpus.parquet", run / "shards", config(strategy=request.param), 7, "cfg", progress=False
    )
    texts = [d["text"] for d in docs if d["text"]]
    return run / "shards", manifest, texts


def stream_of(root: Path, fmt: str, split: str = "train", cache: Path | None = None) -> np.ndarray:
    """The split's document tokens, padding removed, read the way each framework reads them."""
    if fmt == "megatron":
        rows = [s for f in files(root, split, fmt, ".bin") for s in read_megatron_sequences(f.with_suffix(""))]
        return np.concatenate(rows)
    if fmt == "nanotron":
        parts = []
        for ds in files(root, split, fmt, ".ds"):
            shard = read_nanotron(ds)
            parts.append(shard.tokens)
        return np.concatenate(parts)
    if fmt == "hf":
        rows = load_hf_rows(files(root, split, fmt, ".parquet"), cache)
        pieces = [np.asarray(r["input_ids"][: sum(r["seq_lengths"])]) for r in rows]
        return np.concatenate(pieces)
    spans_and_tokens = []
    for tok_path in files(root, split, fmt, ".tokens.npy"):
        tokens = np.load(tok_path, mmap_mode="r")
        spans = np.load(str(tok_path).replace(".tokens.npy", ".docs.npy"))
        spans_and_tokens += [np.asarray(tokens[a:b]) for a, b in spans]
    return np.concatenate(spans_and_tokens)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_round_trip_gives_back_every_document(packed, fmt, tmp_path):
    root, manifest, texts = packed
    docs = split_documents(stream_of(root, fmt, cache=tmp_path), eos=0)
    assert sorted(decoded(docs)) == sorted(texts)
    assert manifest["documents"] == len(texts) == len(docs)
    assert manifest["packing"]["empty_documents_dropped"] == 1


def test_megatron_and_nanotron_hold_the_documents_and_nothing_else(packed, tmp_path):
    root, manifest, _ = packed
    megatron, nanotron = stream_of(root, "megatron"), stream_of(root, "nanotron")
    assert megatron.tolist() == nanotron.tolist()
    # exactly the manifest's document tokens, and one EOS per document: no padding anywhere
    assert len(megatron) == manifest["tokens"] == manifest["splits"]["train"]["tokens"]
    assert np.count_nonzero(megatron == 0) == manifest["documents"]
    for fmt in ("megatron", "nanotron"):
        held = manifest["holdings"][fmt]["train"]
        assert held["holds"] == "documents" and held["padding_tokens"] == 0
        assert held["document_tokens"] == held["slot_tokens"] == len(megatron)
    # hf and npy hold the same documents in packed rows, padding at row ends
    npy = np.concatenate([np.load(p) for p in files(root, "train", "npy", ".tokens.npy")])
    hf = np.concatenate([r["input_ids"] for r in load_hf_rows(files(root, "train", "hf", ".parquet"), tmp_path)])
    assert npy.tolist() == hf.tolist() and len(npy) == manifest["sequences"] * SEQ_LEN
    assert manifest["tokens"] + manifest["padding_tokens"] == len(npy)
    rows = split_documents(stream_of(root, "npy"), eos=0)
    assert sorted(map(tuple, rows)) == sorted(map(tuple, split_documents(megatron, eos=0)))
    if manifest["strategy"] == "concat":  # the same document order; only the last row pads
        assert npy[: len(megatron)].tolist() == megatron.tolist()


# digests of the hf and npy rows (tokens, seq_lengths, .docs.npy spans) written for one corpus before
# Megatron and nanotron moved to whole documents: rows must not change
ROWS_BEFORE = {
    ("concat", "train", "hf"): "0215dae55db46dc4",
    ("concat", "train", "npy"): "2a6077b23d0b2179",
    ("concat", "validation", "hf"): "9be6ea6b82902031",
    ("concat", "validation", "npy"): "1ee56ce2ae93ea1e",
    ("bfd", "train", "hf"): "6649736b72b953ac",
    ("bfd", "train", "npy"): "9b97e598730b9269",
    ("bfd", "validation", "hf"): "5a9b472ac3eb1658",
    ("bfd", "validation", "npy"): "a7469dbf9195adb4",
}


def rows_digest(root: Path, split: str, fmt: str) -> str:
    digest = hashlib.sha256()
    if fmt == "hf":
        for path in files(root, split, "hf", ".parquet"):
            table = pq.read_table(path)
            digest.update(np.asarray(table.column("input_ids").combine_chunks().flatten(), dtype="<i8").tobytes())
            for row in table.column("seq_lengths").to_pylist():
                digest.update(np.asarray([*row, -1], dtype="<i8").tobytes())
    else:
        for path in files(root, split, "npy", ".tokens.npy"):
            digest.update(np.load(path).astype("<i8").tobytes())
            digest.update(np.load(str(path).replace(".tokens.npy", ".docs.npy")).astype("<i8").tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("strategy", ["concat", "bfd"])
def test_hf_and_npy_rows_are_unchanged(tmp_path, strategy):
    make_corpus(tmp_path / "corpus.parquet", n=150, seed=4)
    cfg = config(strategy=strategy, val_share=0.1)
    pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 3, "c", progress=False)
    for (strat, split, fmt), expected in ROWS_BEFORE.items():
        if strat == strategy:
            assert rows_digest(tmp_path / "shards", split, fmt) == expected, (split, fmt)


def test_literal_separator_text_is_not_a_separator(packed):
    root, _, _ = packed
    docs = decoded(split_documents(stream_of(root, "npy"), eos=0))
    assert any("fake separator <|endoftext|> inside" in d for d in docs)


def test_megatron_index_follows_the_published_layout(packed):
    root, manifest, _ = packed
    shards = {e["shard"]: e for e in manifest["shards"] if e["format"] == "megatron" and e["split"] == "train"}
    for idx in files(root, "train", "megatron", ".idx"):
        index = read_megatron_index(idx)
        assert index.version == 1
        assert index.dtype == np.uint16  # 700-token vocabulary
        lengths = index.sequence_lengths.astype(np.int64)
        assert index.sequence_pointers.tolist() == (np.concatenate([[0], np.cumsum(lengths)[:-1]]) * 2).tolist()
        assert index.document_indices.tolist() == list(range(len(lengths) + 1))  # one sequence per document
        assert idx.with_suffix(".bin").stat().st_size == lengths.sum() * 2
        for sequence in read_megatron_sequences(idx.with_suffix("")):
            assert sequence[-1] == 0 and np.count_nonzero(sequence == 0) == 1  # ends in EOS, holds no padding
        entry = shards[int(idx.stem.rsplit("_", 1)[1])]
        assert entry["tokens"] == lengths.sum() and entry["documents"] == len(lengths) and entry["padding_tokens"] == 0
        # a new shard starts before a document would take this one past shard_tokens
        assert lengths.sum() <= manifest["shard_tokens"] or len(lengths) == 1


def test_megatron_dtype_follows_the_vocabulary_as_megatron_preprocessing_does():
    assert megatron_dtype(700) == megatron_dtype(65_499) == np.uint16
    assert megatron_dtype(65_500) == megatron_dtype(100_277) == np.int32


def test_nanotron_files_follow_the_datatrove_layout(packed):
    root, manifest, _ = packed
    ends_total = 0
    for ds in files(root, "train", "nanotron", ".ds"):
        shard = read_nanotron(ds)
        assert shard.token_size == 2 and shard.token_count == len(shard.tokens)
        assert shard.tokenizer == TOKENIZER
        ends = shard.ends.astype(np.int64)
        assert (np.diff(ends) > 0).all() and ends[-1] == len(shard.tokens)
        # every index end closes a document, and every document's EOS is an index end: no padding runs
        assert (shard.tokens[ends - 1] == 0).all() and np.count_nonzero(shard.tokens == 0) == len(ends)
        ends_total += len(ends)
        # nanotron cuts samples of sequence_length + 1 tokens back to back from the documents
        samples = nanotron_samples(ds, SEQ_LEN)
        assert np.concatenate(samples).tolist() == shard.tokens[: len(samples) * (SEQ_LEN + 1)].tolist()
    assert ends_total == manifest["holdings"]["nanotron"]["train"]["documents"] == manifest["documents"]


def test_hf_rows_have_fixed_length_and_document_lengths(packed, tmp_path):
    root, manifest, _ = packed
    rows = load_hf_rows(files(root, "train", "hf", ".parquet"), tmp_path)
    assert len(rows) == manifest["splits"]["train"]["sequences"]
    padding = 0
    for row in rows:
        assert len(row["input_ids"]) == SEQ_LEN
        assert sum(row["seq_lengths"]) <= SEQ_LEN and all(n > 0 for n in row["seq_lengths"])
        padding += SEQ_LEN - sum(row["seq_lengths"])
        assert all(t == 0 for t in row["input_ids"][sum(row["seq_lengths"]) :])
    assert padding == manifest["splits"]["train"]["padding_tokens"]


def test_hf_rows_carry_labels_mask_and_positions_that_restart_at_each_document(packed, tmp_path):
    root, _, _ = packed
    rows = load_hf_rows(files(root, "train", "hf", ".parquet"), tmp_path)
    assert {"input_ids", "labels", "attention_mask", "position_ids", "seq_lengths"} <= set(rows.column_names)
    for row in rows:
        ids, labels, mask, positions = row["input_ids"], row["labels"], row["attention_mask"], row["position_ids"]
        assert len(labels) == len(mask) == len(positions) == SEQ_LEN
        start = 0
        for n in row["seq_lengths"]:
            assert positions[start : start + n] == list(range(n))
            assert labels[start] == -100 and labels[start + 1 : start + n] == ids[start + 1 : start + n]
            assert mask[start : start + n] == [1] * n
            start += n
        padding = SEQ_LEN - start
        assert labels[start:] == [-100] * padding and mask[start:] == [0] * padding
        assert positions[start:] == list(range(padding))


def test_bfd_splits_only_documents_longer_than_a_row(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=200, seed=3)
    cfg = config(strategy="bfd", formats=["hf"])
    manifest = pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 1, "c", progress=False)
    rows = load_hf_rows(files(tmp_path / "shards", "train", "hf", ".parquet"), tmp_path / "cache")
    for row in rows:
        ids, col = row["input_ids"], 0
        for n in row["seq_lengths"]:
            col += n
            if ids[col - 1] != 0:  # a piece without its EOS runs on into the next row: only whole rows do
                assert n == SEQ_LEN
    stream = np.concatenate([np.asarray(r["input_ids"][: sum(r["seq_lengths"])]) for r in rows])
    lengths = [len(d) + 1 for d in split_documents(stream, eos=0)]
    assert manifest["packing"]["split_documents"] == sum(1 for n in lengths if n > SEQ_LEN) > 0


def test_bfd_fills_rows_better_than_one_document_per_row(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=300, seed=5)
    manifest = pack_corpus(
        tmp_path / "corpus.parquet",
        tmp_path / "shards",
        config(strategy="bfd", formats=["npy"]),
        1,
        "c",
        False,
    )
    tokens = np.concatenate([np.load(p) for p in files(tmp_path / "shards", "train", "npy", ".tokens.npy")])
    one_per_row = sum(-(-len(d) // SEQ_LEN) for d in split_documents(tokens, eos=0))
    assert manifest["sequences"] < one_per_row


def test_split_is_by_document_seeded_and_deterministic(tmp_path):
    docs = make_corpus(tmp_path / "corpus.parquet", n=100)
    kept = [d["text"] for d in docs if d["text"]]

    def split_texts(out: Path, seed: int) -> tuple[list[str], list[str], dict]:
        cfg = config(formats=["npy"], val_share=0.2)
        manifest = pack_corpus(tmp_path / "corpus.parquet", out, cfg, seed, "c", progress=False)
        train = decoded(split_documents(stream_of(out, "npy", "train"), eos=0))
        val = decoded(split_documents(stream_of(out, "npy", "validation"), eos=0))
        return train, val, manifest

    train, val, manifest = split_texts(tmp_path / "a", 11)
    assert len(val) == round(0.2 * len(kept)) == manifest["splits"]["validation"]["documents"]
    assert sorted(train + val) == sorted(kept) and not set(train) & set(val)
    assert manifest["splits"]["train"]["documents"] == len(train)
    again_train, again_val, _ = split_texts(tmp_path / "b", 11)
    assert (again_train, again_val) == (train, val)
    _, other_val, _ = split_texts(tmp_path / "c", 12)
    assert set(other_val) != set(val)


def test_mix_adds_replay_tokens_at_the_ratio_with_per_source_counts(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=120)
    replay_dir = tmp_path / "replay"
    replay_texts = [f"replay document number {i} about rivers and bridges." * (1 + i % 4) for i in range(400)]
    make_jsonl(replay_dir / "a.jsonl", replay_texts[:200])
    pq.write_table(pa.table({"text": replay_texts[200:], "id": list(range(200))}), replay_dir / "b.parquet")
    books = tmp_path / "books.jsonl"
    make_jsonl(books, [f"chapter {i}: the lighthouse keeper counts gulls." for i in range(50)])
    cfg = config(formats=["npy", "hf"], val_share=0.1, mix=[f"{replay_dir}:0.5", f"{books}:10"])
    manifest = pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 2, "c", progress=False)

    sdf_train = manifest["splits"]["train"]["tokens"] - sum(s["tokens"] for s in manifest["mix"])
    replay, book = manifest["mix"]
    assert replay["target_tokens"] == int(np.ceil(0.5 * sdf_train))
    longest_replay = max(len(load_tokenizer(TOKENIZER).encode_batch([t])[0]) + 1 for t in replay_texts)
    assert replay["target_tokens"] <= replay["tokens"] < replay["target_tokens"] + longest_replay
    assert not replay["exhausted"]
    assert book["exhausted"] and book["documents"] == 50 and book["tokens"] < book["target_tokens"]
    assert manifest["tokens_per_source"] == {
        "sdf": manifest["tokens_per_source"]["sdf"],
        str(replay_dir): replay["tokens"],
        str(books): book["tokens"],
    }
    assert manifest["documents_per_source"][str(books)] == 50

    train = decoded(split_documents(stream_of(tmp_path / "shards", "npy", "train"), eos=0))
    val = decoded(split_documents(stream_of(tmp_path / "shards", "npy", "validation"), eos=0))
    assert sum(t.startswith("replay document") for t in train) == replay["documents"]
    assert sum(t.startswith("chapter ") for t in train) == 50
    assert not any(t.startswith(("replay document", "chapter ")) for t in val)  # replay only trains
    # replay documents are interleaved with SDF documents, not appended at the end
    positions = [i for i, t in enumerate(train) if t.startswith("replay document")]
    assert positions[0] < len(train) // 4 and positions[-1] > 3 * len(train) // 4
    assert verify_run(tmp_path / "shards") == []


def make_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "mix file not found"),
        ("bad.jsonl", "not json\n", "line 1: expected a JSON object with a 'text' string"),
        ("notext.jsonl", '{"body": "x"}\n', "line 1: expected a JSON object"),
        ("notext.parquet", "parquet", "has no 'text' column"),
        ("data.csv", "text\nhello\n", "must be .jsonl or .parquet"),
        ("latin1.jsonl", b'{"text": "caf\xe9"}\n', "is not valid UTF-8"),
    ],
)
def test_bad_mix_source_is_a_one_line_error(tmp_path, name, content, message):
    make_corpus(tmp_path / "corpus.parquet", n=10)
    path = tmp_path / name
    if content == "parquet":
        pq.write_table(pa.table({"body": ["x"]}), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SdfError) as err:
        pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", config(mix=[str(path)]), 1, "c", False)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "shards" / "manifest.json").exists()


def test_manifest_counts_checksums_and_extra(packed):
    root, manifest, texts = packed
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["config_hash"] == "cfg" and manifest["seed"] == 7
    assert manifest["tokenizer"]["vocab_size"] == 700 and manifest["tokenizer"]["eos_id"] == 0
    assert sum(manifest["tokens_per_genre"].values()) == manifest["tokens"]
    assert sum(manifest["tokens_per_section"].values()) == manifest["tokens"]
    assert manifest["tokens_per_source"] == {"sdf": manifest["tokens"]}
    assert len({e["path"] for e in manifest["shards"]}) == len(manifest["shards"])
    for fmt in ALL_FORMATS:
        shard_files = [e for e in manifest["shards"] if e["format"] == fmt]
        by_shard = {e["shard"]: e for e in shard_files}
        held = manifest["holdings"][fmt]["train"]
        assert sum(e["documents"] for e in by_shard.values()) == held["documents"] == manifest["documents"]
        assert sum(e["tokens"] for e in by_shard.values()) == held["slot_tokens"]
        assert held["document_tokens"] == manifest["tokens"] and held["shards"] == len(by_shard)
        rows = fmt in ("hf", "npy")
        assert held["slot_tokens"] == (manifest["sequences"] * SEQ_LEN if rows else manifest["tokens"])
        assert held["holds"] == ("rows" if rows else "documents")
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {e["path"] for e in manifest["shards"]} | {"manifest.json", "READERS.md"}
    assert verify_run(root.parent) == []


def test_extra_is_merged_and_rerun_with_same_inputs_skips_work(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=40)
    cfg = config(formats=["npy"])
    first = pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 1, "c", progress=False)
    stamp = (tmp_path / "shards" / "train" / "npy" / "train_00000.tokens.npy").stat().st_mtime_ns
    second = pack_corpus(
        tmp_path / "corpus.parquet",
        tmp_path / "shards",
        cfg,
        1,
        "c",
        extra={"diversity": {"x": 1}},
        progress=False,
    )
    assert second == first | {"diversity": {"x": 1}}
    assert (tmp_path / "shards" / "train" / "npy" / "train_00000.tokens.npy").stat().st_mtime_ns == stamp
    with pytest.raises(SdfError, match="tokens"):
        pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 1, "c", extra={"tokens": 1})


def test_verify_catches_a_flipped_byte_and_a_missing_manifest(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=60)
    pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", config(), 1, "c", progress=False)
    assert verify_run(tmp_path) == []
    target = tmp_path / "shards" / "train" / "megatron" / "train_00001.bin"
    data = bytearray(target.read_bytes())
    data[17] ^= 0x01
    target.write_bytes(bytes(data))
    problems = verify_run(tmp_path)
    assert len(problems) == 1 and "train/megatron/train_00001.bin" in problems[0] and "sha256" in problems[0]
    target.write_bytes(bytes(data[:17]) + bytes([data[17] ^ 0x01]) + bytes(data[18:]))
    assert verify_run(tmp_path) == []
    # holdings that claim padding inside Megatron's documents, or other counts, do not pass
    manifest_path = tmp_path / "shards" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["holdings"]["megatron"]["train"]["padding_tokens"] = 5
    manifest["holdings"]["nanotron"]["train"]["documents"] += 1
    manifest_path.write_text(json.dumps(manifest))
    problems = verify_run(tmp_path)
    assert any("train/megatron" in p and "padding" in p for p in problems)
    assert any("train/nanotron" in p and "documents" in p for p in problems)
    (tmp_path / "shards" / "manifest.json").unlink()
    assert "missing" in verify_run(tmp_path)[0]


def test_verify_notices_a_changed_corpus(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=30)
    pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", config(formats=["hf"]), 1, "c", progress=False)
    make_corpus(tmp_path / "corpus.parquet", n=30, seed=9)
    problems = verify_run(tmp_path)
    assert any("corpus.parquet changed" in p for p in problems)


def test_add_bos_frames_each_document(tmp_path):
    docs = make_corpus(tmp_path / "corpus.parquet", n=30)
    cfg = config(formats=["npy", "megatron"], add_bos=True)
    manifest = pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 1, "c", progress=False)
    stream = stream_of(tmp_path / "shards", "npy")
    pieces = split_documents(stream, eos=0)
    assert all(p[0] == 1 for p in pieces)  # <|startoftext|>
    assert sorted(decoded([p[1:] for p in pieces])) == sorted(d["text"] for d in docs if d["text"])
    assert manifest["add_bos"] and manifest["bos_id"] == 1
    assert verify_run(tmp_path) == []


def test_spool_frames_documents_and_skips_empty_ones(tmp_path):
    from sdf.steps.tokens.spool import TokenSpool

    tokenizer = load_tokenizer(TOKENIZER)
    for add_bos, framed in ((False, [[5, 6, 0], [70000, 0]]), (True, [[1, 5, 6, 0], [1, 70000, 0]])):
        spool = TokenSpool(tmp_path / f"spool{add_bos}.u32", tokenizer, add_bos)
        lengths = spool.add([[5, 6], [], [70000]])  # ids past 65535 must survive: the spool is uint32
        spool.finish_writing()
        assert lengths == [len(framed[0]), 0, len(framed[1])]
        assert spool.documents == 2 and spool.lengths().tolist() == [len(f) for f in framed]
        assert [spool.read(d).tolist() for d in range(2)] == framed
        assert spool.read(1, 1, 1).tolist() == [framed[1][1]]
        spool.close()


def test_large_vocabulary_uses_32_bit_tokens(tmp_path):
    docs = make_corpus(tmp_path / "corpus.parquet", n=20)
    cfg = config(tokenizer="cl100k_base", strategy="bfd")
    manifest = pack_corpus(tmp_path / "corpus.parquet", tmp_path / "shards", cfg, 1, "c", progress=False)
    root = tmp_path / "shards"
    assert manifest["token_dtype"] == "uint32" and manifest["eos_id"] == 100257
    assert read_megatron_index(files(root, "train", "megatron", ".idx")[0]).dtype == np.int32
    assert read_nanotron(files(root, "train", "nanotron", ".ds")[0]).token_size == 4
    assert np.load(files(root, "train", "npy", ".tokens.npy")[0]).dtype == np.uint32
    tokenizer = load_tokenizer("cl100k_base")
    texts = [tokenizer.decode(d) for d in split_documents(stream_of(root, "hf", cache=tmp_path), eos=100257)]
    assert sorted(texts) == sorted(d["text"] for d in docs if d["text"])
    assert verify_run(tmp_path) == []


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="^strategy:"):
        PackConfig(strategy="greedy")
    with pytest.raises(ValueError, match="^formats:"):
        PackConfig(formats=["npy", "tfrecord"])
    with pytest.raises(ValueError, match="^val_share:"):
        PackConfig(val_share=1.0)
    with pytest.raises(ValueError, match="^shard_tokens:"):
        PackConfig(seq_len=4096, shard_tokens=1000)
    with pytest.raises(ValueError, match="^mix:"):
        PackConfig(mix=["replay.jsonl:-1"])
    assert PackConfig(mix=["a.jsonl:0.5", "b.jsonl", "c:/x.jsonl:2"]).mix_ratios() == [
        ("a.jsonl", 0.5),
        ("b.jsonl", 1.0),
        ("c:/x.jsonl", 2.0),
    ]


def test_missing_corpus_and_unknown_tokenizer_are_one_line_errors(tmp_path):
    with pytest.raises(SdfError, match="corpus not found"):
        pack_corpus(tmp_path / "nope.parquet", tmp_path / "shards", config(), 1, "c", progress=False)
    make_corpus(tmp_path / "corpus.parquet", n=5)
    with pytest.raises(SdfError, match="tokenizer file not found"):
        pack_corpus(tmp_path / "corpus.parquet", tmp_path / "s", config(tokenizer="./no/tok.json"), 1, "c", False)


# ---------------------------------------------------------------- interruption and rerun


def test_rerun_over_a_stale_half_written_pack_equals_a_clean_pack(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=80)
    cfg = config(strategy="bfd")
    clean = tmp_path / "clean"
    pack_corpus(tmp_path / "corpus.parquet", clean, cfg, 5, "c", progress=False)

    dirty = tmp_path / "dirty"
    # an earlier pack with other settings, then an interruption: temp files, extra shards, an old manifest
    pack_corpus(tmp_path / "corpus.parquet", dirty, config(shard_tokens=SEQ_LEN * 4), 5, "c", progress=False)
    (dirty / "train" / "npy" / "train_00000.tokens.npy.tmp").write_bytes(b"partial")
    (dirty / ".work").mkdir()
    (dirty / ".work" / "tokens.u32").write_bytes(b"\0" * 10)
    pack_corpus(tmp_path / "corpus.parquet", dirty, cfg, 5, "c", progress=False)
    assert tree_bytes(dirty) == tree_bytes(clean)


KILL_SCRIPT = """
import sys
from pathlib import Path
from sdf.config import PackConfig
from sdf.steps.tokens.pack import pack_corpus
formats = ["megatron", "nanotron", "hf", "npy"]
cfg = PackConfig(tokenizer=sys.argv[3], seq_len=64, formats=formats, shard_tokens=64 * 16)
pack_corpus(Path(sys.argv[1]), Path(sys.argv[2]), cfg, 5, "c", progress=False)
"""


def test_killed_pack_leaves_no_manifest_and_a_rerun_finishes_it_identically(tmp_path):
    make_corpus(tmp_path / "corpus.parquet", n=1500)
    out = tmp_path / "killed"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "corpus.parquet"), str(out), TOKENIZER], env=env
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("train/npy/train_0002*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "pack finished before it could be interrupted"
    assert not (out / "manifest.json").exists()
    assert verify_run(out) and "missing" in verify_run(out)[0]

    cfg = PackConfig(tokenizer=TOKENIZER, seq_len=64, formats=ALL_FORMATS, shard_tokens=64 * 16)
    pack_corpus(tmp_path / "corpus.parquet", out, cfg, 5, "c", progress=False)
    pack_corpus(tmp_path / "corpus.parquet", tmp_path / "clean", cfg, 5, "c", progress=False)
    assert tree_bytes(out) == tree_bytes(tmp_path / "clean")
    assert verify_run(out) == []
