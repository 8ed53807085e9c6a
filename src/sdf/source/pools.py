"""The lists a brief is dealt from: the catalog's seed items per (pool, kind), extended by the model.

A run asks the model once per (pool, kind) that its genres use to extend the seed list (`expand`
requests, answered into the ledger like any other). The extended list is the seeds, then the new
items in the order the answer gives them, so a rerun or a larger plan rebuilds the very same lists
from the ledger for free, and the plan that deals from them stays prefix-stable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sdf.source.catalog import POOL_NAMES, Catalog

ITEM = re.compile(r"<item>\s*(.*?)\s*</item>", re.DOTALL | re.IGNORECASE)
MAX_ITEM_CHARS = 300  # a pool item is a phrase; anything longer is an answer gone wrong
SELF_STAKES = "ai_self_stakes"  # the situations kind whose AI has stakes of its own (opt-in)


@dataclass(frozen=True)
class DealPools:
    """{pool: {kind: items}}, and which (pool, kind) lists hold the model's extension."""

    lists: dict[str, dict[str, tuple[str, ...]]]
    expanded: frozenset[tuple[str, str]] = frozenset()

    def items(self, pool: str, kind: str) -> tuple[str, ...]:
        return self.lists[pool][kind]

    def sizes(self) -> dict[str, int]:
        """Items per pool over every kind: what the report shows as pool sizes."""
        return {pool: sum(len(v) for v in kinds.values()) for pool, kinds in self.lists.items()}


def seed_pools(catalog: Catalog) -> DealPools:
    return DealPools({p: {k: kind.items for k, kind in catalog.pools[p].kinds.items()} for p in POOL_NAMES})


def expansion_targets(catalog: Catalog, genre_names: Iterable[str], self_stakes: bool = False) -> list[tuple[str, str]]:
    """The (pool, kind) lists that the plan's genres deal from, in a fixed order: one expand request each."""
    targets = {(pool, kind) for g in genre_names for pool, kinds in catalog.genres[g].kinds.items() for kind in kinds}
    if self_stakes and SELF_STAKES in catalog.pools["situations"].kinds:
        targets.add(("situations", SELF_STAKES))
    return sorted(targets)


def parse_items(text: str | None, known: Iterable[str] = ()) -> list[str]:
    """The new <item>s of an expand answer: cleaned, in order, without repeats of each other or of `known`."""
    seen = {_norm(k) for k in known}
    out = []
    for raw in ITEM.findall(text or ""):
        item = " ".join(raw.split()).strip(" -*\u2022")
        key = _norm(item)
        if item and len(item) <= MAX_ITEM_CHARS and "<" not in item and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def extended_pools(catalog: Catalog, answers: Mapping[tuple[str, str], str | None]) -> DealPools:
    """Seed pools with each answered (pool, kind) extended by its answer's new items."""
    base = seed_pools(catalog)
    lists = {p: dict(kinds) for p, kinds in base.lists.items()}
    done = set()
    for (pool, kind), text in answers.items():
        if text is None or kind not in lists.get(pool, {}):
            continue
        seeds = lists[pool][kind]
        lists[pool][kind] = seeds + tuple(parse_items(text, seeds))
        done.add((pool, kind))
    return DealPools(lists, frozenset(done))


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
