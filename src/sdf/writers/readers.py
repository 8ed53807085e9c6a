"""Reader settings for a finished pack: the manifest's `readers` and shards/READERS.md.

Each framework needs a few settings that only the pack knows (paths, token width, tokenizer, sequence
length); they are stated here, for this very run, so nobody has to work them out. Paths in the manifest
are relative to the shards folder; READERS.md spells them out in full for the folder the pack wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdf.writers.io import publish, temp_path

READERS_MD = "READERS.md"
SPLITS = ("train", "validation")


def reader_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `readers` entry: per format in the pack, what its framework's reader needs."""
    shards = manifest["shards"]
    settings: dict[str, Any] = {}
    formats = manifest["formats"]

    def split_paths(fmt: str, suffix: str) -> dict[str, list[str]]:
        found = {s: sorted(e["path"].removesuffix(suffix) for e in shards
                           if e["format"] == fmt and e["split"] == s and e["path"].endswith(suffix))
                 for s in SPLITS}  # fmt: skip
        return {s: p for s, p in found.items() if p}

    token_bytes = {f: next(iter(manifest["holdings"][f].values()))["token_bytes"] for f in formats}
    if "megatron" in formats:
        prefixes = split_paths("megatron", ".bin")
        settings["megatron"] = {
            "data_prefixes": prefixes,
            # megatron-core: GPTDatasetConfig(blend_per_split=...); None weights concatenate the shards
            "blend_per_split": [[prefixes.get("train", []), None], [prefixes.get("validation", []), None], None],
            "token_bytes": token_bytes["megatron"],
            "tokenizer": megatron_tokenizer(manifest["tokenizer"]),
            "eod_id": manifest["eos_id"],
        }
    if "nanotron" in formats:
        folders = {s: f"{s}/nanotron" for s in split_paths("nanotron", ".ds")}
        settings["nanotron"] = {
            "dataset_folder": folders,
            "token_size": token_bytes["nanotron"],  # datatrove's DatatroveFolderDataset(token_size=...)
            "tokenizer_name": manifest["tokenizer"]["name"],
            "vocab_size": manifest["tokenizer"]["vocab_size"],
            "eos_id": manifest["eos_id"],
        }
    if "hf" in formats:
        settings["hf"] = {
            "data_files": {s: f"{s}/hf/*.parquet" for s in split_paths("hf", ".parquet")},
            "columns": ["input_ids", "labels", "attention_mask", "position_ids", "seq_lengths"],
            "seq_len": manifest["seq_len"],
            "ignore_index": -100,
            # without attention_mask, transformers builds the mask from position_ids: one block per document
            "keep_documents_apart": "remove_columns('attention_mask') and pass use_cache=False",
        }
    if "npy" in formats:
        settings["npy"] = {
            "tokens": {s: p for s, p in split_paths("npy", ".tokens.npy").items()},
            "token_bytes": token_bytes["npy"],
            "seq_len": manifest["seq_len"],
        }
    return settings


def megatron_tokenizer(identity: dict[str, Any]) -> dict[str, Any]:
    """Megatron's tokenizer settings for the pack's tokenizer, or why there are none."""
    if identity["kind"] != "huggingface":
        return {"type": None, "model": None,
                "note": f"Megatron has no loader for the tiktoken encoding {identity['name']}; pack with the "
                        "training model's tokenizer directory ([pack].tokenizer) to get one"}  # fmt: skip
    spec = identity["spec"]
    model = str(Path(spec).parent) if spec.endswith(".json") else spec  # AutoTokenizer takes the folder
    return {"type": "HuggingFaceTokenizer", "model": model}


def write_readers_md(shards_dir: Path, manifest: dict[str, Any]) -> Path:
    """shards/READERS.md: copy-paste reader settings for this pack, with full paths."""
    shards_dir = Path(shards_dir).resolve()
    readers, seq_len, tok = manifest["readers"], manifest["seq_len"], manifest["tokenizer"]
    lines = [
        "# Reading these shards",
        "",
        f"Written by sdf with the pack (tokenizer `{tok['name']}`, vocabulary {tok['vocab_size']}, EOS "
        f"{manifest['eos_id']}, seq_len {seq_len}). Every document ends with EOS; manifest.json holds the same "
        "settings under `readers`, with paths relative to this folder.",
    ]
    sections = {"megatron": _megatron_md, "nanotron": _nanotron_md, "hf": _hf_md, "npy": _npy_md}
    for name, section in sections.items():
        if name in readers:
            lines += ["", *section(readers[name], shards_dir, seq_len)]
    path = shards_dir / READERS_MD
    temp_path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return publish([path])[0]


def _megatron_md(meg: dict[str, Any], root: Path, seq_len: int) -> list[str]:
    train = " ".join(str(root / p) for p in meg["data_prefixes"].get("train", []))
    valid = " ".join(str(root / p) for p in meg["data_prefixes"].get("validation", []))
    tok = meg["tokenizer"]
    tok_args = f"--tokenizer-type {tok['type']} --tokenizer-model {tok['model']}" if tok["type"] else ""
    lines = ["## Megatron-LM / megatron-core", "", f"Token width {meg['token_bytes']} bytes (in the .idx). "
             "Megatron-LM arguments:", "", "```", f"--train-data-path {train}"]  # fmt: skip
    lines += [f"--valid-data-path {valid}"] if valid else []
    lines += [f"--seq-length {seq_len} {tok_args}".rstrip(), "```", "",
              "megatron-core: `GPTDatasetConfig(blend_per_split=[(TRAIN, None), (VALID, None), None], "
              f"sequence_length={seq_len}, ...)` with the same prefixes."]  # fmt: skip
    if tok["type"]:
        lines.append(f"Its tokenizer: `MegatronTokenizer.from_pretrained(\"{tok['model']}\", "
                     "metadata_path={\"library\": \"huggingface\"})`.")  # fmt: skip
    else:
        lines.append(f"No tokenizer: {tok['note']}.")
    return lines


def _nanotron_md(nano: dict[str, Any], root: Path, seq_len: int) -> list[str]:
    train = str(root / nano["dataset_folder"]["train"]) if "train" in nano["dataset_folder"] else ""
    size = nano["token_size"]
    return ["## datatrove / nanotron", "", f"`token_size = {size}` (bytes per token; a wrong value reads garbage).",
            "", "```python", "from datatrove.utils.dataset import DatatroveFolderDataset",
            f"train = DatatroveFolderDataset({train!r}, seq_len={seq_len}, token_size={size}, recursive=False)",
            "```", "", "nanotron config (`data_stages[].data.dataset`):", "", "```yaml",
            f"dataset_folder: [{train}]", f"tokenizer_name: {nano['tokenizer_name']}",
            f"vocab_size: {nano['vocab_size']}", f"token_size_in_bytes: {size}", "```"]  # fmt: skip


def _hf_md(hf: dict[str, Any], root: Path, seq_len: int) -> list[str]:
    files = {s: str(root / g) for s, g in hf["data_files"].items()}
    return ["## Hugging Face datasets / transformers", "",
            f"Rows of {seq_len} tokens with {', '.join(hf['columns'])}; labels are -100 on padding and on each "
            "document's first token.", "", "```python", "from datasets import load_dataset",
            f"rows = load_dataset(\"parquet\", data_files={json.dumps(files)})",
            "Trainer(model=model, args=args, train_dataset=rows[\"train\"]).train()  # the default collator",
            "# to keep packed documents apart, let position_ids make the attention mask:",
            "rows = rows.remove_columns(\"attention_mask\")  # and model.config.use_cache = False", "```"]  # fmt: skip


def _npy_md(npy: dict[str, Any], root: Path, seq_len: int) -> list[str]:
    return ["## numpy", "", f"`np.load(path, mmap_mode=\"r\").reshape(-1, {seq_len})` gives the packed rows "
            f"({npy['token_bytes']}-byte tokens); `.docs.npy` holds each document piece's [start, end)."]  # fmt: skip
