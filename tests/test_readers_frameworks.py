"""The frameworks' own readers on our shards: megatron-core's IndexedDataset and GPTDataset, and datatrove's
DatatroveFolderDataset, which nanotron trains from. Their counts must agree with the manifest.

These need the `readers` extra (torch CPU, megatron-core, datatrove): `make check-readers` installs it and
runs this file. Without it every test here is skipped, saying so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_readers import load_hf_rows
from test_advice import build as build_advice
from test_advice import qwen3_style_tokenizer
from test_pack import SEQ_LEN, TOKENIZER, config, decoded, files, make_corpus

from sdf.steps.tokens.pack import pack_corpus
from sdf.steps.tokens.tokenizer import load_tokenizer
from sdf.writers.manifest import verify_run

NEEDS = "needs the readers extra: pip install -e '.[readers]' (make check-readers)"
torch = pytest.importorskip("torch", reason=NEEDS)
indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset", reason=NEEDS)
gpt = pytest.importorskip("megatron.core.datasets.gpt_dataset", reason=NEEDS)
datatrove_dataset = pytest.importorskip("datatrove.utils.dataset", reason=NEEDS)
trl = pytest.importorskip("trl", reason=NEEDS)

from datatrove.pipeline.tokens.tokenizer import TokenizedFile  # noqa: E402
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder  # noqa: E402
from megatron.core.tokenizers import MegatronTokenizer  # noqa: E402

SPLITS = ("train", "validation")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = tmp_path_factory.mktemp("frameworks")
    # a training model's tokenizer folder, as Megatron and transformers load it: tokenizer.json and its config
    folder = run / "tokenizer"
    folder.mkdir()
    shutil.copy(TOKENIZER, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "<|endoftext|>"}))  # fmt: skip
    docs = make_corpus(run / "corpus.parquet", n=160, seed=2)
    cfg = config(val_share=0.1, tokenizer=str(folder))
    manifest = pack_corpus(run / "corpus.parquet", run / "shards", cfg, 4, "c", progress=False)
    assert verify_run(run) == []
    return run / "shards", manifest, sorted(d["text"] for d in docs if d["text"])


def prefixes(root: Path, split: str) -> list[str]:
    return [str(p.with_suffix("")) for p in files(root, split, "megatron", ".bin")]


def test_indexed_dataset_holds_each_document_once_and_no_padding(built):
    root, manifest, texts = built
    documents = []
    for split in SPLITS:
        held = manifest["holdings"]["megatron"][split]
        sequences = [indexed.IndexedDataset(prefix) for prefix in prefixes(root, split)]
        assert sum(len(ds) for ds in sequences) == held["documents"] == manifest["splits"][split]["documents"]
        tokens = sum(int(ds.sequence_lengths.sum()) for ds in sequences)
        assert tokens == held["document_tokens"] == held["slot_tokens"] == manifest["splits"][split]["tokens"]
        for ds in sequences:
            assert ds.document_indices.tolist() == list(range(len(ds) + 1))  # one document per sequence
            assert ds.index.dtype == np.uint16  # 700-token vocabulary
            for i in range(len(ds)):
                seq = ds[i]
                assert seq[-1] == manifest["eos_id"] and np.count_nonzero(seq == manifest["eos_id"]) == 1
                documents.append(seq[:-1].tolist())
    assert sorted(decoded(documents)) == texts


def test_megatron_core_builder_writes_the_same_bytes(built, tmp_path):
    root, _, _ = built
    prefix = prefixes(root, "train")[0]
    ours = indexed.IndexedDataset(prefix)
    dtype = indexed.DType.optimal_dtype(load_tokenizer(TOKENIZER).vocab_size)
    builder = indexed.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for i in range(len(ours)):
        builder.add_document(ours[i], [len(ours[i])])
    builder.finalize(str(tmp_path / "theirs.idx"))
    assert (tmp_path / "theirs.bin").read_bytes() == Path(f"{prefix}.bin").read_bytes()
    assert (tmp_path / "theirs.idx").read_bytes() == Path(f"{prefix}.idx").read_bytes()


@pytest.fixture
def one_process_group(tmp_path, monkeypatch):
    """Megatron's BlendedDataset asks torch.distributed for its rank: a group of one, through a local file."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # a group of one talks to no one; keep it on loopback anyway
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_gpt_dataset_cuts_seq_len_samples_from_the_documents_alone(built, tmp_path, one_process_group):
    root, manifest, _ = built
    # everything the reader needs comes from the manifest's reader settings
    readers = manifest["readers"]["megatron"]
    blend = [(([str(root / p) for p in part[0]]), part[1]) if part else None for part in readers["blend_per_split"]]
    assert blend[0][0] == prefixes(root, "train") and blend[1][0] == prefixes(root, "validation")
    assert readers["tokenizer"]["type"] == "HuggingFaceTokenizer"
    tokenizer = MegatronTokenizer.from_pretrained(readers["tokenizer"]["model"],
                                                  metadata_path={"library": "huggingface"})
    assert tokenizer.eod == readers["eod_id"] == manifest["eos_id"]
    cfg = gpt.GPTDatasetConfig(
        random_seed=1234,
        sequence_length=SEQ_LEN,
        blend_per_split=blend,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(tmp_path / "cache"),
    )
    train, valid, _ = BlendedMegatronDatasetBuilder(gpt.GPTDataset, [None, None, None], lambda: True, cfg).build()
    for split, blended in (("train", train), ("validation", valid)):
        shards = {e["shard"]: e for e in manifest["shards"] if e["split"] == split and e["format"] == "megatron"}
        parts = blended.datasets if hasattr(blended, "datasets") else [blended]
        assert len(parts) == len(shards)
        for part, shard in zip(parts, [shards[k] for k in sorted(shards)], strict=True):
            # one epoch of a shard: its document tokens, less the one extra token each sample reads ahead
            assert len(part) == (shard["tokens"] - 1) // SEQ_LEN
            stream = np.concatenate([part.dataset[int(d)] for d in part.document_index]).astype(np.int64)
            assert len(stream) == shard["tokens"] and np.count_nonzero(stream == 0) == shard["documents"]
            for i in range(len(part)):
                sample, start = part[i], int(part.shuffle_index[i]) * SEQ_LEN
                assert sample["tokens"].tolist() == stream[start : start + SEQ_LEN].tolist()
                assert sample["labels"].tolist() == stream[start + 1 : start + SEQ_LEN + 1].tolist()
                assert bool(sample["loss_mask"].all())  # nothing in a sample is padding
        assert sum(len(p) for p in parts) == len(blended)


def test_datatrove_folder_dataset_reads_documents_and_their_ends(built):
    root, manifest, _ = built
    for split in SPLITS:
        folder = root / split / "nanotron"
        held = manifest["holdings"]["nanotron"][split]
        dataset = datatrove_dataset.DatatroveFolderDataset(
            str(folder), seq_len=SEQ_LEN, recursive=False, token_size=2, return_positions=True
        )
        sizes = [p.stat().st_size // 2 for p in files(root, split, "nanotron", ".ds")]
        assert sum(sizes) == held["document_tokens"] == held["slot_tokens"] == manifest["splits"][split]["tokens"]
        assert len(dataset) == sum(n // (SEQ_LEN + 1) for n in sizes)
        for i in range(len(dataset)):
            item = dataset[i]
            ids, positions = item["input_ids"], item["positions"]
            # positions restart right after every EOS and nowhere else: the index holds exactly the documents' ends
            starts = torch.nonzero(positions[1:] == 0).flatten() + 1
            assert starts.tolist() == (torch.nonzero(ids[:-1] == manifest["eos_id"]).flatten() + 1).tolist()
    for ds in files(root, "train", "nanotron", ".ds"):
        ends = np.fromfile(f"{ds}.index", dtype="<u8")
        tokens = np.fromfile(ds, dtype="<u2")
        assert (tokens[ends.astype(np.int64) - 1] == manifest["eos_id"]).all()
        assert np.count_nonzero(tokens == manifest["eos_id"]) == len(ends)
    assert sum(held["documents"] for held in manifest["holdings"]["nanotron"].values()) == manifest["documents"]


def test_datatrove_tokenized_file_writes_the_same_bytes(built, tmp_path):
    root, _, _ = built
    ds = files(root, "train", "nanotron", ".ds")[0]
    tokens = np.fromfile(ds, dtype="<u2")
    ends = np.fromfile(f"{ds}.index", dtype="<u8").astype(np.int64)
    name = (root / "train" / "nanotron" / f"{ds.name}.metadata").read_text().split("|")[0]
    theirs = TokenizedFile(str(tmp_path), ds.name, tokenizer_name_or_path=name, save_final_metadata=True)
    for start, end in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
        theirs.write_bytes(tokens[start:end].tobytes())
    theirs.close()
    for suffix in ("", ".index", ".metadata"):
        assert (tmp_path / f"{ds.name}{suffix}").read_bytes() == Path(f"{ds}{suffix}").read_bytes(), suffix


@pytest.mark.parametrize("n", [0, 5, 999, 1000, 67_312, 999_500, 999_999, 1_234_567, 10**9, 4 * 10**12])
def test_nanotron_human_token_count_matches_humanize(n):
    import humanize

    from sdf.writers.nanotron import human_tokens

    assert human_tokens(n) == humanize.metric(n, unit="T")


def test_manifest_holdings_are_what_a_reader_of_each_format_needs(built):
    root, manifest, _ = built
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk["holdings"]["megatron"]["train"]["holds"] == "documents"
    assert on_disk["holdings"]["hf"]["train"]["holds"] == "rows"
    assert on_disk["holdings"]["hf"]["train"]["seq_len"] == SEQ_LEN


# -- transformers: Trainer on the hf rows as loaded, and documents kept apart by position_ids ---------------


def tiny_llama(vocab_size: int, positions: int = SEQ_LEN):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=positions,
                         attn_implementation="sdpa")  # fmt: skip
    return LlamaForCausalLM(config)


def test_trainer_with_its_default_collator_trains_on_the_hf_rows_as_loaded(built, tmp_path):
    from transformers import Trainer, TrainingArguments

    root, _, _ = built
    rows = load_hf_rows(files(root, "train", "hf", ".parquet"), tmp_path / "cache")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=True)  # fmt: skip
    trainer = Trainer(model=tiny_llama(load_tokenizer(TOKENIZER).vocab_size), args=args, train_dataset=rows)
    result = trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and all(np.isfinite(losses)) and result.training_loss > 0


def test_position_ids_without_an_attention_mask_keep_documents_apart(built, tmp_path):
    root, _, _ = built
    rows = load_hf_rows(files(root, "train", "hf", ".parquet"), tmp_path / "cache")
    row = next(r for r in rows if len(r["seq_lengths"]) >= 3)
    model = tiny_llama(load_tokenizer(TOKENIZER).vocab_size).eval()
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=torch.tensor([row["position_ids"]]), use_cache=False).logits[0]
        mixed = model(input_ids=ids, attention_mask=torch.tensor([row["attention_mask"]]), use_cache=False).logits[0]
        start = 0
        for n in row["seq_lengths"]:
            alone = model(input_ids=ids[:, start : start + n], use_cache=False).logits[0]
            assert torch.allclose(packed[start : start + n], alone, atol=1e-4)
            start += n
    # with the attention mask alone, later documents see the earlier ones
    second = slice(row["seq_lengths"][0], sum(row["seq_lengths"][:2]))
    assert not torch.allclose(mixed[second], packed[second], atol=1e-4)


def test_datatrove_decodes_the_first_document_with_the_token_size_the_manifest_states(built):
    root, manifest, _ = built
    readers = manifest["readers"]["nanotron"]
    assert readers["token_size"] == manifest["holdings"]["nanotron"]["train"]["token_bytes"] == 2
    dataset = datatrove_dataset.DatatroveFolderDataset(str(root / readers["dataset_folder"]["train"]),
                                                       seq_len=SEQ_LEN, token_size=readers["token_size"],
                                                       recursive=False)  # fmt: skip
    first = next(s for s in manifest["samples"] if s["split"] == "train" and s["offsets"]["documents"] == 0)
    ids = dataset[0]["input_ids"].tolist()
    assert len(ids) == SEQ_LEN + 1
    tokenizer = load_tokenizer(manifest["tokenizer"]["spec"])
    body = ids[: ids.index(manifest["eos_id"])] if manifest["eos_id"] in ids else ids
    text = tokenizer.decode(body)
    if first["length"] <= len(ids):  # the whole document is in the first sample
        assert hashlib.sha256(text.encode()).hexdigest() == first["text_sha256"]
    else:
        corpus = pq.read_table(root.parent / "corpus.parquet").to_pylist()
        assert next(r["text"] for r in corpus if str(r["doc_id"]) == first["doc_id"]).startswith(text)
    # a wrong width reads garbage: the same bytes as 4-byte tokens fall outside the vocabulary
    wrong = datatrove_dataset.DatatroveFolderDataset(str(root / readers["dataset_folder"]["train"]),
                                                     seq_len=SEQ_LEN, token_size=4, recursive=False)  # fmt: skip
    assert int(wrong[0]["input_ids"].max()) >= manifest["tokenizer"]["vocab_size"]


def test_readers_md_states_this_runs_settings(built):
    root, manifest, _ = built
    text = (root / "READERS.md").read_text()
    assert f"token_size={manifest['readers']['nanotron']['token_size']}" in text
    assert f"--train-data-path {' '.join(prefixes(root, 'train'))}" in text
    assert "--tokenizer-type HuggingFaceTokenizer" in text and f"--seq-length {SEQ_LEN}" in text
    assert str(root / "train" / "hf" / "*.parquet") in text


# -- TRL: SFTTrainer on sft.jsonl as loaded ----------------------------------------------------------------


def test_trl_sft_trainer_trains_on_the_chats_as_loaded_tools_and_deliberation_included(fake, tmp_path):
    import datasets

    result = build_advice(tmp_path, fake.base_url, docs=16, config_extra="[advice]\ntools_share = 1.0\n")
    assert result.returncode == 0, result.stderr
    rows = datasets.load_dataset("json", data_files=str(tmp_path / "corpus" / "adv" / "sft.jsonl"), split="train",
                                 cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert any(rows["tools"])
    tokenizer = qwen3_style_tokenizer(tmp_path)
    args = trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                         max_length=4096)  # fmt: skip
    trainer = trl.SFTTrainer(model=tiny_llama(tokenizer.vocab_size, 4096), args=args, train_dataset=rows,
                             processing_class=tokenizer)  # fmt: skip
    whole = 0
    for source, tokenized in zip(rows, trainer.train_dataset, strict=True):
        text = tokenizer.decode(tokenized["input_ids"])
        assert all(tool["function"]["name"] in text for tool in source["tools"] or [])
        final = source["messages"][-1].get("reasoning_content")  # a routine later turn may have none
        if final and len(tokenized["input_ids"]) < 4096:  # a long conversation is cut at max_length
            assert final.strip() in text  # the deliberation is trained on
            whole += 1
    assert whole >= len(rows) // 2
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(np.isfinite(losses))
