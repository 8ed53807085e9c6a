"""[llm], [budget], [judge] and [pricing]: how requests are sent and what they cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "claude-sonnet-4-5"
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
