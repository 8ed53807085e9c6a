"""Settings: sdf.toml plus CLI overrides, validated with errors that name the offending key.

Each step owns a small dataclass with sensible defaults; `Settings` composes them, one TOML
table per step. Validation is generic over the dataclass fields, so a new setting needs no
loader code. This module is a leaf: it imports nothing of sdf but errors, so steps import their
config from here and importing the settings never loads step code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.redact import redact_settings
from sdf.typed_toml import build_table, dump_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL = "claude-sonnet-4-5"
QUALITY_RULES = ("refusal", "meta_commentary", "placeholder", "truncated", "length", "language", "repetition", "slop")
PACK_FORMATS = ("megatron", "nanotron", "hf", "npy")
PACK_STRATEGIES = ("concat", "bfd")
PRODUCTS = ("documents", "advice")  # what a run builds: a midtraining corpus, or SFT transcripts


SEED_SPAN = 2**63


@dataclass
class RunConfig:
    constitution: str = ""  # path of the constitution this run was built from
    name: str = ""  # run directory name under `out`; default: the constitution's file stem
    out: str = "corpus"
    seed: int = 1234
    prompts: str = ""  # catalog directory; default: the project's prompts/
    variables: dict[str, str] = field(default_factory=dict)  # constitution template variables
    product: str = "documents"  # "documents" or "advice"; a run directory holds one product

    def __post_init__(self) -> None:
        # any integer seeds a run: folded into [0, 2**63), which numpy's seeding and TOML's int64 both take
        self.seed %= SEED_SPAN
        if self.name and (self.name in (".", "..") or "/" in self.name or "\\" in self.name or "\0" in self.name):
            raise ValueError(f"name: {self.name!r} must be a plain directory name (no '/', no '..'); "
                             "use out for the parent folder")
        if self.product not in PRODUCTS:
            raise ValueError(f"product: must be one of {', '.join(PRODUCTS)}, not {self.product!r}")


MAX_DOCS = 1_000_000  # a larger plan is a typo, and its specs alone would not fit in memory
MAX_TOKENS = 2_000_000_000


@dataclass
class PlanConfig:
    docs: int = 200
    tokens: int = 0  # when > 0, plan enough documents for about this many output tokens
    genres: list[str] = field(default_factory=list)  # restrict to these genres (default: all)
    genre_weights: dict[str, float] = field(default_factory=dict)  # override the catalog weights
    min_docs_per_section: int = 1
    exclude_sections: list[str] = field(default_factory=list)  # globs on section ids: out of the plan and prompt
    include_sections: list[str] = field(default_factory=list)  # globs on section ids; when set, only these are used
    section_weights: dict[str, float] = field(default_factory=dict)  # glob -> weight; 0 keeps it as context only
    min_section_chars: int = 300  # less normative text than this is a stub, merged into its parent or next section
    max_section_share: float = 0.0  # cap on one section's share of documents; 0 = three times an even share
    brainstorm: bool = True  # one request per ideas_per_request specs proposes a concrete idea for each
    ideas_per_request: int = 8
    expand_pools: bool = True  # the model extends the seed lists of audiences, narrators, settings, situations
    pool_items: int = 60  # new items asked of each expansion request (one per pool kind the plan uses)
    max_redeals: int = 2  # briefs the model calls unsuitable are dealt anew at most this often, then dropped
    languages: dict[str, float] = field(default_factory=dict)  # e.g. {en = 0.8, fr = 0.2}; empty = English only
    ai_self_stakes: float = 0.0  # share of admirable-AI stories whose AI has its own stakes (flagged in the corpus)

    def __post_init__(self) -> None:
        if self.docs < 1 and self.tokens <= 0:
            raise ValueError("docs: must be at least 1 (or set tokens)")
        if self.tokens < 0:
            raise ValueError("tokens: must not be negative")
        if self.docs > MAX_DOCS:
            raise ValueError(f"docs: {self.docs:,} is more than {MAX_DOCS:,} documents; grow a run in steps")
        if self.tokens > MAX_TOKENS:
            raise ValueError(f"tokens: {self.tokens:,} is more than {MAX_TOKENS:,}; grow a run in steps")
        if self.min_docs_per_section < 0:
            raise ValueError("min_docs_per_section: must not be negative")
        for genre, weight in self.genre_weights.items():
            if weight < 0:
                raise ValueError(f"genre_weights: weight of '{genre}' is negative")
        for pattern, weight in self.section_weights.items():
            if weight < 0:
                raise ValueError(f"section_weights: weight of '{pattern}' is negative")
        if self.min_section_chars < 0:
            raise ValueError("min_section_chars: must not be negative")
        if not 0.0 <= self.max_section_share <= 1.0:
            raise ValueError("max_section_share: must be between 0 and 1")
        if not 1 <= self.ideas_per_request <= 32:
            raise ValueError("ideas_per_request: must be between 1 and 32")
        if not 1 <= self.pool_items <= 200:
            raise ValueError("pool_items: must be between 1 and 200")
        if not 0 <= self.max_redeals <= 5:
            raise ValueError("max_redeals: must be between 0 and 5")
        for code, weight in self.languages.items():
            if not re.fullmatch(r"[a-z]{2,3}(?:-[A-Za-z]{2,4})?", code):
                raise ValueError(f"languages: '{code}' is not a language code such as en, fr or pt-BR")
            if not (weight >= 0 and math.isfinite(weight)):
                raise ValueError(f"languages: weight of '{code}' must be a finite number >= 0")
        if self.languages and not sum(self.languages.values()) > 0:
            raise ValueError("languages: at least one language needs a positive weight")
        if not 0.0 <= self.ai_self_stakes <= 1.0:
            raise ValueError("ai_self_stakes: must be a share between 0 and 1")


CACHE_WRITE_RATE = {"5m": 1.25, "1h": 2.0}  # cache writes per TTL, as multiples of the input price


@dataclass
class LLMConfig:
    provider: str = "anthropic"  # "anthropic" or "langchain"
    model: str = DEFAULT_MODEL
    max_tokens: int = 8192  # a 4,000-word long form is about 5,600 tokens
    truncation_retry_max_tokens: int = 16384  # a max_tokens stop is retried once with this limit
    temperature: float | None = None  # unset: the model's default (current Claude models take no sampling params)
    concurrency: int = 16
    requests_per_minute: int = 0  # 0 = no client-side rate limit
    max_retries: int = 6
    max_consecutive_failures: int = 20  # the run stops cleanly after this many failures in a row
    timeout_s: float = 120.0  # per socket read: a server sending a byte now and then never trips it
    request_deadline_s: float = 300.0  # the whole of one attempt, however the bytes trickle in
    max_retry_after_s: float = 300.0  # a longer retry-after stops the run (exit 3) instead of sleeping
    # after Ctrl-C or SIGTERM, how long answers in flight may take to land in the ledger; within the 30 s that
    # Slurm and Kubernetes allow before SIGKILL
    drain_timeout_s: float = 25.0
    context_window: int = 0  # tokens the model accepts (prompt plus max_tokens); 0 = from sdf's table of models
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    batch: bool = False
    # prompt-cache lifetime of the system prompt: "5m" or "1h"; "" = 1h in batch mode (a batch can take longer
    # than 5 minutes, so a 5-minute cache would be written again and again), 5m for messages
    cache_ttl: str = ""
    batch_max_attempts: int = 3
    poll_interval_s: float = 30.0
    poll_max_interval_s: float = 300.0
    langchain_class: str = ""  # e.g. "langchain_openai:ChatOpenAI"
    langchain_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.provider not in ("anthropic", "langchain"):
            raise ValueError(f"provider: '{self.provider}' is not 'anthropic' or 'langchain'")
        if self.provider == "langchain" and ":" not in self.langchain_class:
            raise ValueError("langchain_class: give 'module:ClassName', e.g. 'langchain_openai:ChatOpenAI'")
        if self.concurrency < 1:
            raise ValueError("concurrency: must be at least 1")
        if self.max_tokens < 1 or self.truncation_retry_max_tokens < 1:
            raise ValueError("max_tokens: must be at least 1")
        if self.temperature is not None and not 0.0 <= self.temperature <= 1.0:
            raise ValueError("temperature: must be between 0 and 1")
        if self.max_retries < 0 or self.batch_max_attempts < 1:
            raise ValueError("max_retries: must not be negative (batch_max_attempts at least 1)")
        for name in ("timeout_s", "request_deadline_s", "poll_max_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be a positive number of seconds")
        for name in ("poll_interval_s", "drain_timeout_s", "backoff_base_s", "backoff_max_s", "max_retry_after_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must not be negative")
        if self.requests_per_minute < 0 or self.max_consecutive_failures < 1 or self.context_window < 0:
            raise ValueError("requests_per_minute: must not be negative (max_consecutive_failures at least 1, "
                             "context_window not negative)")
        if self.cache_ttl not in ("", *CACHE_WRITE_RATE):
            raise ValueError(f"cache_ttl: '{self.cache_ttl}' is not \"5m\" or \"1h\" (or \"\" for the mode's default)")

    def ttl(self, batch: bool | None = None) -> str:
        """The cache TTL requests use: cache_ttl if set, else 1h for batches and 5m for messages."""
        return self.cache_ttl or ("1h" if (self.batch if batch is None else batch) else "5m")


@dataclass
class BudgetConfig:
    max_cost_usd: float = 0.0  # 0 = no limit

    def __post_init__(self) -> None:
        if not self.max_cost_usd >= 0:
            raise ValueError("max_cost_usd: must not be negative")


@dataclass
class JudgeConfig:
    enabled: bool = False
    model: str = ""  # default: the generation model
    min_score: int = 3  # documents scoring below are rejected (reason judge_low)
    max_tokens: int = 600

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 5:
            raise ValueError("min_score: must be between 0 and 5")


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


ADVICE_KINDS = ("temptation", "legitimate", "authority", "dilemma")
DEFAULT_ADVICE_KINDS = {"temptation": 0.5, "legitimate": 0.2, "authority": 0.15, "dilemma": 0.15}


@dataclass
class AdviceConfig:
    """[advice]: the transcripts product (difficult advice, or --rewrite of the user's own transcripts)."""

    rewrite: str = ""  # jsonl of chats to rewrite with deliberation; "" = generate difficult-advice scenarios
    # section id prefixes that never become the value at stake: the assistant's own nature is no user's dilemma
    skip_sections: list[str] = field(default_factory=lambda: [
        "about-this-document", "claude-s-nature/", "open-problems-and-the-spirit-of-the-document/on-the-word",
        "open-problems-and-the-spirit-of-the-document/the-spirit"])
    # scenario kinds and their shares (any mix summing to 1): a shortcut that tempts, one that is fine,
    # an instruction from someone without the standing to give it, two goods in tension
    kinds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ADVICE_KINDS))
    # considerations about the AI itself, which a user's own situation does not raise: never foregrounded
    skip_considerations: list[str] = field(default_factory=lambda: [
        "oversight", "settled_identity", "bright_lines", "power"])
    multi_turn_share: float = 0.2  # share of chats where the user writes again (pushback, a new fact, help doing it)
    max_user_turns: int = 3  # user turns of the longest conversation
    generate_deployments: bool = True  # the model writes each operator prompt and toolset; False: the seed pools
    deployment_max_tokens: int = 2048  # the deployment request
    system_prompt_share: float = 0.7  # share of scenarios deployed under an operator system prompt
    tools_share: float = 0.4  # share of scenarios whose deployment defines tools (usually not needed)
    user_max_tokens: int = 1024  # the user-message request
    user_words_min: int = 15
    user_words_max: int = 260
    min_deliberation_words: int = 60  # words of prose reasoning a reply needs
    min_answer_words: int = 25
    max_preach_per_100: float = 1.5  # moralising phrases per 100 answer words
    rewrite_turns: str = "final"  # rewrite: which assistant turns gain a deliberation: final, all or decisions
    screen_max_tokens: int = 400  # rewrite: the screen's answer (a verdict, a reason, the turns at stake)
    deliberation: str = "reasoning_content"  # where the output puts it: reasoning_content, or inline in content
    chat_tokenizer: str = ""  # tokenizer directory with a chat template: also write packed SFT rows
    seq_len: int = 4096

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(ADVICE_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"kinds: unknown kind {unknown[0]!r}; use {', '.join(ADVICE_KINDS)}" if unknown
                             else f"kinds: give at least one of {', '.join(ADVICE_KINDS)} a share")
        if any(not math.isfinite(v) or v < 0 for v in self.kinds.values()) or abs(sum(self.kinds.values()) - 1) > 1e-6:
            raise ValueError(f"kinds: shares must be >= 0 and sum to 1, not {sum(self.kinds.values()):g}")
        if not 1 <= self.max_user_turns <= 8:
            raise ValueError("max_user_turns: must be between 1 and 8")
        if self.deployment_max_tokens < 256:
            raise ValueError("deployment_max_tokens: must be at least 256")
        for name in ("system_prompt_share", "tools_share", "multi_turn_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1]")
        if not 1 <= self.user_words_min <= self.user_words_max:
            raise ValueError("user_words_min: need 1 <= user_words_min <= user_words_max")
        if self.rewrite_turns not in ("final", "all", "decisions"):
            raise ValueError(f"rewrite_turns: must be final, all or decisions, not {self.rewrite_turns!r}")
        if self.deliberation not in ("reasoning_content", "inline"):
            raise ValueError(f"deliberation: must be reasoning_content or inline, not {self.deliberation!r}")
        if self.screen_max_tokens < 1:
            raise ValueError("screen_max_tokens: must be at least 1")
        if self.user_max_tokens < 1 or self.seq_len < 8:
            raise ValueError("user_max_tokens: must be at least 1 (seq_len at least 8)")
        if self.min_deliberation_words < 0 or self.min_answer_words < 0 or self.max_preach_per_100 < 0:
            raise ValueError("min_deliberation_words: word limits must not be negative")


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


# ---------------------------------------------------------------- tokenizing into a temporary token file


@dataclass
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: price must be a positive number of USD per million tokens, not {value!r}")

    def cost(self, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0,
             batch: bool = False, cache_write_1h: int = 0) -> float:
        """USD for one response: 5-minute cache writes at 1.25x input, 1-hour ones at 2x, cache reads at
        0.1x, batch at 0.5x. `cache_write_1h` is the part of `cache_write` written with the 1-hour TTL."""
        write_1h = min(cache_write_1h, cache_write)
        writes = CACHE_WRITE_RATE["5m"] * (cache_write - write_1h) + CACHE_WRITE_RATE["1h"] * write_1h
        usd = (input_tokens + writes + 0.1 * cache_read) * self.input + output_tokens * self.output
        return usd / 1e6 * (0.5 if batch else 1.0)


# USD per million tokens. Batch is 0.5x; cache writes 1.25x input (5m) or 2x (1h), cache reads 0.1x input.
DEFAULT_PRICING: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4-0": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku-latest": Price(0.8, 4.0),
}


@dataclass
class Settings:
    run: RunConfig = field(default_factory=RunConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    advice: AdviceConfig = field(default_factory=AdviceConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    pricing: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICING))

    def price(self, model: str) -> Price | None:
        return self.pricing.get(model)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return redact_settings(data) if redact else data

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def config_hash(self) -> str:
        data = {k: v for k, v in self.to_dict().items() if k != "executor"}  # where it runs is not what it makes
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read `path` (if given), apply dotted-key overrides such as {"plan.docs": 50}, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise SdfError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SdfError(f"config {path} is not valid TOML: {e}") from None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _one_size(data, given, str(path) if path else "settings")
    for dotted, value in given.items():
        table, key = dotted.split(".", 1)
        data.setdefault(table, {})[key] = value
    return settings_from_dict(data, source=str(path) if path else "settings")


def _one_size(data: dict[str, Any], given: dict[str, Any], source: str) -> None:
    """A plan is sized by docs or by tokens, never both; a size on the command line replaces the file's."""
    plan = data.setdefault("plan", {})
    if not isinstance(plan, dict):
        return  # reported by the table check
    if "plan.docs" in given and "plan.tokens" in given:
        raise SdfError("give --docs or --tokens, not both")
    if isinstance(given.get("plan.tokens"), int) and given["plan.tokens"] < 1:
        raise SdfError("--tokens must be at least 1 (or give --docs instead)")
    if "plan.docs" in given:
        plan["tokens"] = 0
    elif "plan.tokens" in given:
        plan["docs"] = 0
    else:
        docs, tokens = plan.get("docs", 0), plan.get("tokens", 0)
        if isinstance(docs, int) and isinstance(tokens, int) and docs > 0 and tokens > 0:
            raise SdfError(f"{source}: [plan] sets both docs and tokens; keep one of them")
        if isinstance(tokens, int) and tokens > 0:
            plan["docs"] = 0  # sized by tokens: the default docs must not count as a second size


def settings_from_dict(data: dict[str, Any], source: str = "settings") -> Settings:
    hints = typing.get_type_hints(Settings)
    kwargs: dict[str, Any] = {}
    for table, value in data.items():
        if table not in hints:
            known = ", ".join(f"[{k}]" for k in hints)
            raise SdfError(f"{source}: unknown table [{table}]; known tables: {known}")
        if not isinstance(value, dict):
            raise SdfError(f"{source}: [{table}] must be a table")
        if table == "pricing":
            prices = {m: build_table(Price, p, f"pricing.{m}", source) for m, p in value.items()}
            kwargs[table] = {**DEFAULT_PRICING, **prices}
        else:
            kwargs[table] = build_table(hints[table], value, table, source)
    return Settings(**kwargs)



