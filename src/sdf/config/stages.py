"""[quality], [dedup], [diversity], [pack] and [executor]: the stages after generation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

QUALITY_RULES = ("refusal", "meta_commentary", "placeholder", "truncated", "length", "language", "repetition", "slop")
PACK_FORMATS = ("megatron", "nanotron", "hf", "npy")
PACK_STRATEGIES = ("concat", "bfd")


def _gopher_top_ngram() -> dict[str, float]:
    return {"2": 0.20, "3": 0.18, "4": 0.16}


def _gopher_dup_ngram() -> dict[str, float]:
    return {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}


@dataclass
class QualityConfig:
    """Settings of the heuristic filters ([quality] in sdf.toml)."""

    skip_rules: list[str] = field(default_factory=list)  # rule names from QUALITY_RULES to switch off
    meta_max_line_words: int = 60  # longer lines are content, never meta commentary
    meta_min_remaining_words: int = 30  # fewer words left after stripping meta -> meta_commentary
    refusal_max_rest_words: int = 100  # a refusal opener followed by fewer words is a refusal
    truncation_min_line_words: int = 8  # a final line this long must end like a sentence
    length_low: float = 0.5  # too_short below genre.min_words * length_low
    length_high: float = 1.5  # too_long above genre.max_words * length_high
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    max_top_ngram_char_frac: dict[str, float] = field(default_factory=_gopher_top_ngram)
    max_dup_ngram_char_frac: dict[str, float] = field(default_factory=_gopher_dup_ngram)
    slop_file: str = ""  # phrase list; "" = the project's prompts/slop.txt
    slop_max_per_1k: float = 8.0
    slop_min_hits: int = 4  # never reject for fewer hits than this, however short the document
    language: str = "en"  # expected language; "" switches the check off
    min_stopword_ratio: float = 0.15
    language_min_words: int = 20  # shorter texts are not judged

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip_rules) - set(QUALITY_RULES))
        if unknown:
            raise ValueError(f"skip_rules: unknown rule {unknown[0]!r}; known: {', '.join(QUALITY_RULES)}")
        if self.language not in ("en", ""):
            raise ValueError("language: only 'en' (or '' to disable the check) is supported")
        if not 0 < self.length_low <= 1:
            raise ValueError("length_low: must be in (0, 1]")
        if self.length_high < 1:
            raise ValueError("length_high: must be >= 1")
        for name in ("max_top_ngram_char_frac", "max_dup_ngram_char_frac"):
            for k in getattr(self, name):
                if not k.isdigit() or int(k) < 1:
                    raise ValueError(f"{name}: keys must be n-gram sizes such as '5', got {k!r}")


@dataclass
class DedupConfig:
    """Settings of the dedup step ([dedup] in sdf.toml)."""

    exact: bool = True
    near: bool = True
    decontaminate: list[str] = field(default_factory=list)  # eval files (jsonl/txt/md) or directories of them
    decontaminate_ngram: int = 13  # words per n-gram shared with an eval item that marks contamination
    decontaminate_entities: int = 2  # distinct entities of one eval that mark a document
    decontaminate_rare_entities: int = 1  # rare entities (made-up names, addresses, codes) that do
    decontaminate_minhash: float = 0.3  # MinHash Jaccard with an eval prompt that marks a document; 0 = off
    decontaminate_builtin: bool = True  # also apply the entity lists in prompts/evals/
    shingle_words: int = 5
    num_perm: int = 128
    bands: int = 21
    rows: int = 6
    threshold: float = 0.75  # verified MinHash Jaccard estimate needed to merge a candidate pair (recall at J 0.85)
    seed: int = 1
    batch_docs: int = 1024  # documents hashed per batch
    workers: int = 0  # threads for signatures; 0 = min(4, CPU count)

    def __post_init__(self) -> None:
        if self.shingle_words < 1:
            raise ValueError("shingle_words: must be >= 1")
        if self.num_perm < 2:
            raise ValueError("num_perm: must be >= 2")
        if self.bands < 1 or self.rows < 1:
            raise ValueError("bands: bands and rows must be >= 1")
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands: bands*rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold: must be in (0, 1]")
        if self.batch_docs < 1:
            raise ValueError("batch_docs: must be >= 1")
        if self.decontaminate_ngram < 1:
            raise ValueError("decontaminate_ngram: must be >= 1")
        for name in ("decontaminate_entities", "decontaminate_rare_entities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if not 0.0 <= self.decontaminate_minhash <= 1.0:
            raise ValueError("decontaminate_minhash: must be in [0, 1] (0 switches the rule off)")
        if self.workers < 0:
            raise ValueError("workers: must be >= 0")


@dataclass
class DiversityConfig:
    """Settings of the diversity caps and metrics ([diversity] in sdf.toml)."""

    name_share: float = 0.01  # max share of documents (any genre) that may use one given name or surname
    opener_share: float = 0.01  # max share of documents that may open with the same words
    opener_words: int = 4
    min_cap: int = 2  # a cap never goes below this many documents
    min_docs: int = 100  # the opener cap applies only to corpora at least this large (the name cap always)
    names: str = "candidates"  # "candidates": capitalised words, NER confirms the over-cap ones; "ner": NER reads all
    ner_sample: int = 12  # documents per over-cap candidate whose context NER reads to confirm it is a name
    spacy_model: str = "en_core_web_sm"
    ner_fallback: bool = False  # force the capitalised-word heuristic instead of spaCy NER
    ner_max_chars: int = 5000  # NER reads this much of each document; names introduced later are missed
    ner_batch_size: int = 64
    metrics_sample: int = 2000  # distinct-n, compression and self-repetition use at most this many docs
    top_k: int = 20

    def __post_init__(self) -> None:
        for name in ("name_share", "opener_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in (0, 1]")
        if self.names not in ("candidates", "ner"):
            raise ValueError('names: must be "candidates" or "ner"')
        for name in ("opener_words", "min_cap", "ner_max_chars", "ner_batch_size", "ner_sample", "metrics_sample",
                     "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.min_docs < 0:
            raise ValueError("min_docs: must be >= 0")


@dataclass
class PackConfig:
    """[pack]: how documents become token shards.

    tokenizer: tokenizer.json path or folder, tiktoken encoding, or cached HF hub id. seq_len: tokens per
    packed row. strategy: "concat" or "bfd". formats: any of megatron, nanotron, hf, npy. shard_tokens:
    tokens per shard (rounded down to whole rows). val_share: documents held out for validation.
    eos_id/bos_id: override the tokenizer's own. add_bos: start every document with BOS. mix: replay
    text as "PATH:RATIO" (jsonl/parquet file or folder; RATIO 1.0 = as many tokens as SDF train, default 1).
    """

    tokenizer: str = "cl100k_base"
    seq_len: int = 2048
    strategy: str = "concat"
    formats: list[str] = field(default_factory=lambda: ["megatron", "hf"])
    shard_tokens: int = 100_000_000
    val_share: float = 0.0
    eos_id: int | None = None
    bos_id: int | None = None
    add_bos: bool = False
    mix: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seq_len < 8:
            raise ValueError("seq_len: must be at least 8")
        if self.strategy not in PACK_STRATEGIES:
            raise ValueError(f"strategy: must be one of {', '.join(PACK_STRATEGIES)}, not {self.strategy!r}")
        if not self.formats:
            raise ValueError(f"formats: choose at least one of {', '.join(PACK_FORMATS)}")
        unknown = [f for f in self.formats if f not in PACK_FORMATS]
        if unknown:
            raise ValueError(f"formats: unknown {', '.join(unknown)} (choose from {', '.join(PACK_FORMATS)})")
        if len(set(self.formats)) != len(self.formats):
            raise ValueError("formats: each format may appear once")
        if self.shard_tokens < self.seq_len:
            raise ValueError("shard_tokens: must be at least seq_len")
        if not 0.0 <= self.val_share < 1.0:
            raise ValueError("val_share: must be in [0, 1)")
        self.mix_ratios()

    def mix_ratios(self) -> list[tuple[str, float]]:
        """Each mix entry as (path, ratio); "PATH:RATIO", or a bare PATH meaning ratio 1.0."""
        pairs = []
        for entry in self.mix:
            path, _, ratio_text = entry.rpartition(":")
            try:
                ratio = float(ratio_text)
            except ValueError:
                path, ratio = entry, 1.0  # no ratio given (or a colon inside the path)
            if not path or not math.isfinite(ratio) or ratio < 0.0:
                raise ValueError(f"mix: {entry!r} must be PATH:RATIO with a finite ratio >= 0")
            pairs.append((path, ratio))
        return pairs


@dataclass
class ExecutorConfig:
    """[executor]: where filter, dedup and pack run. Not part of config_hash: it never changes the output."""

    kind: str = "local"  # local (this process) or ray (Ray Data: pip install 'sdf[ray]')
    address: str = ""  # a Ray cluster to join (e.g. "auto" or "ray://head:10001"); "" = start a local one
    num_cpus: int = 0  # CPUs of a local Ray cluster; 0 = all

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ValueError(f"kind: must be local or ray, not {self.kind!r}")
        if self.num_cpus < 0:
            raise ValueError("num_cpus: must be >= 0")
