"""Settings: sdf.toml plus CLI overrides, validated with errors that name the offending key.

Each stage owns a small dataclass with sensible defaults; `Settings` composes them, one TOML
table per stage. Validation is generic over the dataclass fields, so a new setting needs no
loader code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdf.dedup import DedupConfig
from sdf.diversity import DiversityConfig
from sdf.errors import SdfError
from sdf.pack import PackConfig
from sdf.quality import QualityConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL = "claude-sonnet-4-5"
SECRET_KEY = re.compile(r"(api[_-]?key|secret|token$|password|authorization)", re.IGNORECASE)


@dataclass
class RunConfig:
    constitution: str = ""  # path of the constitution this run was built from
    name: str = ""  # run directory name under `out`; default: the constitution's file stem
    out: str = "corpus"
    seed: int = 1234
    prompts: str = ""  # catalog directory; default: the project's prompts/
    variables: dict[str, str] = field(default_factory=dict)  # constitution template variables


@dataclass
class PlanConfig:
    docs: int = 200
    tokens: int = 0  # when > 0, plan enough documents for about this many output tokens
    genres: list[str] = field(default_factory=list)  # restrict to these genres (default: all)
    genre_weights: dict[str, float] = field(default_factory=dict)  # override the catalog weights
    min_docs_per_section: int = 1
    brainstorm: bool = False
    brainstorm_rounds: int = 2
    ideas_per_round: int = 5

    def __post_init__(self) -> None:
        if self.docs < 1 and self.tokens <= 0:
            raise ValueError("docs: must be at least 1 (or set tokens)")
        if self.tokens < 0:
            raise ValueError("tokens: must not be negative")
        if self.min_docs_per_section < 0:
            raise ValueError("min_docs_per_section: must not be negative")
        for genre, weight in self.genre_weights.items():
            if weight < 0:
                raise ValueError(f"genre_weights: weight of '{genre}' is negative")
        if self.brainstorm_rounds < 1 or self.ideas_per_round < 1:
            raise ValueError("brainstorm_rounds: rounds and ideas_per_round must be at least 1")


@dataclass
class LLMConfig:
    provider: str = "anthropic"  # "anthropic" or "langchain"
    model: str = DEFAULT_MODEL
    max_tokens: int = 4096
    truncation_retry_max_tokens: int = 8192  # a max_tokens stop is retried once with this limit
    temperature: float | None = None  # unset: the model's default (current Claude models take no sampling params)
    concurrency: int = 16
    requests_per_minute: int = 0  # 0 = no client-side rate limit
    max_retries: int = 6
    max_consecutive_failures: int = 20  # the run stops cleanly after this many failures in a row
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    batch: bool = False
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
        if self.timeout_s <= 0 or self.poll_interval_s < 0:
            raise ValueError("timeout_s: must be positive")


@dataclass
class BudgetConfig:
    max_cost_usd: float = 0.0  # 0 = no limit

    def __post_init__(self) -> None:
        if self.max_cost_usd < 0:
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

    def cost(self, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0,
             batch: bool = False) -> float:
        """USD for one response: cache writes at 1.25x input, cache reads at 0.1x, batch at 0.5x."""
        usd = (input_tokens + 1.25 * cache_write + 0.1 * cache_read) * self.input + output_tokens * self.output
        return usd / 1e6 * (0.5 if batch else 1.0)


# USD per million tokens. Batch is 0.5x; cache writes 1.25x input, cache reads 0.1x input.
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
    pricing: dict[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICING))

    def price(self, model: str) -> Price | None:
        return self.pricing.get(model)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return _redact(data) if redact else data

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
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
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        table, key = dotted.split(".", 1)
        data.setdefault(table, {})[key] = value
    return settings_from_dict(data, source=str(path) if path else "settings")


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
            prices = {m: _build(Price, p, f"pricing.{m}", source) for m, p in value.items()}
            kwargs[table] = {**DEFAULT_PRICING, **prices}
        else:
            kwargs[table] = _build(hints[table], value, table, source)
    return Settings(**kwargs)


def _build(cls: type, values: Any, table: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise SdfError(f"{source}: [{table}] must be a table")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(hints)
            raise SdfError(f"{source}: unknown key [{table}].{key}; known keys: {known}")
        problem = _type_problem(value, hints[key])
        if problem:
            raise SdfError(f"{source}: [{table}].{key} {problem}")
    coerced = {k: (float(v) if hints[k] is float and isinstance(v, int) else v) for k, v in values.items()}
    try:
        return cls(**coerced)
    except (ValueError, TypeError) as e:
        raise SdfError(f"{source}: [{table}].{e}") from None


def _type_problem(value: Any, hint: Any) -> str | None:
    """Describe why `value` does not fit the annotation `hint`, or None if it fits."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = [_type_problem(value, o) for o in options if o is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if hint is Any:
        return None
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be a whole number, not {value!r}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"must be a number, not {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, not {value!r}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list, not {value!r}"
        (item,) = typing.get_args(hint) or (Any,)
        for v in value:
            problem = _type_problem(v, item)
            if problem:
                return f"item {v!r} {problem}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"must be a table, not {value!r}"
        _, item = typing.get_args(hint) or (str, Any)
        for k, v in value.items():
            problem = _type_problem(v, item)
            if problem:
                return f"entry '{k}' {problem}"
        return None
    return None


def _redact(data: Any, key: str = "") -> Any:
    if isinstance(data, dict):
        return {k: _redact(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact(v) for v in data]
    if key and SECRET_KEY.search(key) and isinstance(data, str) and data:
        return "<redacted>"
    return data


def dump_toml(data: dict[str, Any]) -> str:
    """Write nested dicts as TOML: top-level dicts and dicts of dicts become tables, the rest inline."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"\n[{prefix}]")
        nested = {k: v for k, v in table.items() if _is_table(v) or (not prefix and isinstance(v, dict))}
        for k, v in table.items():
            if k not in nested and v is not None:  # TOML has no null: an absent key means "unset"
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in nested.items():
            emit(f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), v)

    emit("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))
