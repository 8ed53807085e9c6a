"""[run] and [plan]: what a run is built from and how its specs are dealt."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

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
