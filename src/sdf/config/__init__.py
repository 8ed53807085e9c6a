"""Settings: sdf.toml plus CLI overrides, validated with errors that name the offending key.

Each step owns a small dataclass with sensible defaults; `Settings` composes them, one TOML
table per step. Validation is generic over the dataclass fields, so a new setting needs no
loader code. The tables live by kind: source.py ([run], [plan]), llm.py ([llm], [budget], [judge],
prices), stages.py (the stages after generation, [executor]) and advice.py; import them from here.
This package is a leaf: it imports nothing of sdf but errors, so steps import their config from here
and importing the settings never loads step code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdf.config.advice import ADVICE_KINDS, DEFAULT_ADVICE_KINDS, AdviceConfig
from sdf.config.llm import CACHE_WRITE_RATE, DEFAULT_MODEL, DEFAULT_PRICING, BudgetConfig, JudgeConfig, LLMConfig, Price
from sdf.config.source import MAX_DOCS, MAX_TOKENS, PRODUCTS, SEED_SPAN, PlanConfig, RunConfig
from sdf.config.stages import (
    PACK_FORMATS,
    PACK_STRATEGIES,
    QUALITY_RULES,
    DedupConfig,
    DiversityConfig,
    ExecutorConfig,
    PackConfig,
    QualityConfig,
)
from sdf.errors import SdfError
from sdf.redact import redact_settings
from sdf.typed_toml import build_table, dump_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ADVICE_KINDS", "CACHE_WRITE_RATE", "DEFAULT_ADVICE_KINDS", "DEFAULT_MODEL", "DEFAULT_PRICING", "MAX_DOCS",
    "MAX_TOKENS", "PACK_FORMATS", "PACK_STRATEGIES", "PRODUCTS", "QUALITY_RULES", "SEED_SPAN", "AdviceConfig",
    "BudgetConfig", "DedupConfig", "DiversityConfig", "ExecutorConfig", "JudgeConfig", "LLMConfig", "PackConfig",
    "PlanConfig", "Price", "QualityConfig", "RunConfig", "Settings", "load_settings", "settings_from_dict",
]


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



