"""Rebuild tests/data/tokenizer.json: a small byte-level BPE trained on fixture_text.txt.

Run from the repo root: `.venv/bin/python tests/data/make_tokenizer.py`. The result is deterministic for a
given `tokenizers` version; the tests only need it to round-trip text and to know `<|endoftext|>`.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|startoftext|>"]


def build_tokenizer(text: str, vocab_size: int = 700) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    # byte-level pieces make every string encodable and decode back exactly
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    return tokenizer


def main() -> None:
    text = (HERE / "fixture_text.txt").read_text(encoding="utf-8")
    build_tokenizer(text).save(str(HERE / "tokenizer.json"))
    print(f"wrote {HERE / 'tokenizer.json'}")


if __name__ == "__main__":
    main()
