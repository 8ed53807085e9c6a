"""Tokenizer loading: files, folders, tiktoken offline, the HF cache, and clear errors otherwise."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdf.errors import SdfError
from sdf.steps.tokens.tokenizer import load_tokenizer, tokenizer_warning

DATA = Path(__file__).parent / "data"
TOKENIZER = DATA / "tokenizer.json"
TEXTS = ["The keeper wrote in her logbook.", "Naïve café 🙂\ttabs\nand lines", "x" * 300, ""]
# the sha256 that tiktoken itself checks for the published cl100k_base.tiktoken rank file
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_tokenizer_json_file_round_trips_and_knows_its_special_tokens():
    tokenizer = load_tokenizer(str(TOKENIZER))
    assert (tokenizer.eos_id, tokenizer.bos_id, tokenizer.vocab_size) == (0, 1, 700)
    encoded = tokenizer.encode_batch(TEXTS)
    assert [tokenizer.decode(ids) for ids in encoded] == TEXTS
    assert encoded == [tokenizer.encode_batch([t])[0] for t in TEXTS]
    identity = tokenizer.identity()
    assert identity["sha256"] == hashlib.sha256(TOKENIZER.read_bytes()).hexdigest()
    assert identity | {"spec": None} == {
        "name": str(TOKENIZER),
        "spec": None,
        "kind": "huggingface",
        "sha256": identity["sha256"],
        "vocab_size": 700,
        "eos_id": 0,
        "bos_id": 1,
    }


def test_special_token_text_inside_a_document_is_plain_text():
    tokenizer = load_tokenizer(str(TOKENIZER))
    (ids,) = tokenizer.encode_batch(["before <|endoftext|> after"])
    assert tokenizer.eos_id not in ids
    assert tokenizer.decode(ids) == "before <|endoftext|> after"


def test_tokenizer_directory_and_its_config(tmp_path):
    shutil.copy(TOKENIZER, tmp_path / "tokenizer.json")
    assert load_tokenizer(str(tmp_path)).eos_id == 0
    config = {"eos_token": {"content": "<|startoftext|>"}, "bos_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(str(tmp_path))
    assert (tokenizer.eos_id, tokenizer.bos_id) == (1, 0)


def test_directory_without_tokenizer_json_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("transformers"):
        pytest.skip("transformers is installed and may load such a folder")
    with pytest.raises(SdfError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_cl100k_base_works_offline():
    tokenizer = load_tokenizer("cl100k_base")
    assert (tokenizer.eos_id, tokenizer.bos_id, tokenizer.vocab_size) == (100257, None, 100277)
    assert tokenizer.identity()["sha256"] == CL100K_SHA256
    assert tokenizer.identity()["name"] == "cl100k_base"
    encoded = tokenizer.encode_batch(TEXTS + ["a literal <|endoftext|> stays text"])
    assert tokenizer.decode(encoded[0]) == TEXTS[0]
    assert 100257 not in encoded[-1]


def test_eos_and_bos_can_be_overridden_within_the_vocabulary():
    tokenizer = load_tokenizer("cl100k_base", eos_id=100276, bos_id=100258)
    assert (tokenizer.eos_id, tokenizer.bos_id) == (100276, 100258)
    assert tokenizer.identity()["eos_id"] == 100276
    with pytest.raises(SdfError, match="outside the vocabulary"):
        load_tokenizer(str(TOKENIZER), eos_id=700)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing/dir/tokenizer.json", "tokenizer file not found"),
        ("./nowhere", "tokenizer file not found"),
        (str(DATA / "fixture_text.txt"), "cannot read tokenizer"),
        ("", "tokenizer is empty"),
        ("someone/not-cached-model", "not a file, a tiktoken encoding, or a hub model in the local"),
        ("gpt2", "cannot be loaded offline"),
    ],
)
def test_bad_tokenizers_are_one_line_errors(spec, message):
    with pytest.raises(SdfError) as err:
        load_tokenizer(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


CACHED_SCRIPT = """
from sdf.steps.tokens.tokenizer import load_tokenizer
t = load_tokenizer("acme/tiny")
print(t.name, t.eos_id, t.bos_id, t.vocab_size)
"""


def test_hub_id_loads_from_the_local_cache_only(tmp_path):
    # the published cache layout: models--<org>--<name>/refs/main -> snapshots/<commit>/<files>
    repo = tmp_path / "hub" / "models--acme--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(TOKENIZER, snapshot / "tokenizer.json")
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    env = os.environ | {
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
    }
    done = subprocess.run([sys.executable, "-c", CACHED_SCRIPT], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["acme/tiny", "0", "1", "700"]


def test_only_tiktoken_encodings_are_warned_about_as_no_models_tokenizer(tmp_path):
    warning = tokenizer_warning("cl100k_base")
    assert warning and "cl100k_base" in warning and "[pack].tokenizer" in warning and "directory" in warning
    assert tokenizer_warning("o200k_base")
    assert tokenizer_warning(str(DATA / "tokenizer.json")) is None
    assert tokenizer_warning("Qwen/Qwen3-8B") is None
    assert tokenizer_warning("gpt2") is None  # GPT-2's own encoding


def test_loading_a_chat_tokenizer_never_tells_users_pytorch_was_not_found(tmp_path):
    """In an environment without torch (hidden here from transformers' check), sdf stays quiet about it."""
    folder = tmp_path / "tok"
    folder.mkdir()
    shutil.copy(DATA / "tokenizer.json", folder / "tokenizer.json")
    shutil.copy(DATA / "chat_tokenizer_config.json", folder / "tokenizer_config.json")
    script = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'torch' else real(name, *a)\n"
        "from sdf.writers.chat import load_chat_tokenizer\n"
        f"print(type(load_chat_tokenizer({str(folder)!r})).__name__)\n"
        "import transformers\n"
        "print('torch seen:', transformers.is_torch_available())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch seen: False" in done.stdout  # the check really ran without torch
    assert "PyTorch was not found" not in done.stderr + done.stdout
