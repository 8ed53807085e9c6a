"""Caps on repeated character names and openings, decided on the per-document table (no texts).

Cap rule (names and openers alike): a cap applies only when the population it is a share of has at
least ``min_docs`` documents (fiction documents for names, all documents for openers). Then

    cap = max(min_cap, floor(share * population))

documents may carry the same given name (or open with the same first ``opener_words`` normalised
words). Documents are visited best first (highest ``quality_score``, missing = 0; then smallest
doc_id); a document is dropped when its opener or one of its names has already reached its cap, so
the same input always drops the same documents. Names come from ``sdf.steps.diversity.names``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sdf.config import DiversityConfig
from sdf.run import quality_of, reject_row
from sdf.steps import GenreLike
from sdf.steps.dedup.minhash import normalize_text
from sdf.steps.diversity.names import person_names


class DiversityResult(NamedTuple):
    kept: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    counts: dict[str, int]
    names: dict[str, list[str]]  # doc_id -> given names found, for kept fiction documents
    caps: dict[str, int | None]  # {"name": cap, "opener": cap}; None where the population is too small


class CapDecision(NamedTuple):
    drops: dict[str, tuple[str, str]]  # doc_id -> (reason, detail)
    counts: dict[str, int]
    caps: dict[str, int | None]


def cap_for(share: float, population: int, cfg: DiversityConfig) -> int | None:
    """Documents allowed per name/opener, or None when the population is too small for a share."""
    if population < cfg.min_docs:
        return None
    return max(cfg.min_cap, math.floor(share * population))


def opener(text: str, words: int = 4) -> str:
    """The first ``words`` normalised words of a text."""
    return " ".join(normalize_text(text[: 40 * words]).split()[:words])


def is_fiction(doc: Mapping[str, Any], genres: Mapping[str, GenreLike]) -> bool:
    return bool(getattr(genres.get(str(doc.get("genre"))), "fiction", False))


def cap_features(batch: Sequence[Mapping[str, Any]], genres: Mapping[str, GenreLike], cfg: DiversityConfig
                 ) -> list[dict[str, Any]]:
    """The per-document row the caps decide on: doc_id, score, fiction, opener and (fiction only) names."""
    fiction = [is_fiction(d, genres) for d in batch]
    idx = [i for i, f in enumerate(fiction) if f]
    found = person_names([str(batch[i].get("text") or "") for i in idx], cfg) if idx else []
    names = dict(zip(idx, found, strict=True))
    return [{"doc_id": str(d["doc_id"]), "quality_score": quality_of(d), "fiction": fiction[i],
             "opener": opener(str(d.get("text") or ""), cfg.opener_words), "names": names.get(i, [])}
            for i, d in enumerate(batch)]


def decide_caps(table: Sequence[Mapping[str, Any]], cfg: DiversityConfig) -> CapDecision:
    """Which documents of the feature table go over a name or opener cap (rule in the module docstring)."""
    n_fiction = sum(1 for r in table if r["fiction"])
    name_cap = cap_for(cfg.name_share, n_fiction, cfg)
    opener_cap = cap_for(cfg.opener_share, len(table), cfg)
    name_uses: Counter[str] = Counter()
    opener_uses: Counter[str] = Counter()
    drops: dict[str, tuple[str, str]] = {}
    for row in sorted(table, key=lambda r: (-r["quality_score"], r["doc_id"])):
        op, names = row["opener"], row["names"]
        if opener_cap is not None and op and opener_uses[op] >= opener_cap:
            drops[row["doc_id"]] = ("opener_cap", f"opener {op!r} already opens {opener_cap} documents (the cap)")
            continue
        full = [n for n in names if name_cap is not None and name_uses[n] >= name_cap]
        if full:
            drops[row["doc_id"]] = ("name_cap", f"given name {full[0]!r} already in {name_cap} fiction documents "
                                                f"(cap {name_cap} of {n_fiction})")
            continue
        opener_uses[op] += 1
        name_uses.update(names)
    counts = Counter(input=len(table), fiction=n_fiction)
    counts.update(reason for reason, _ in drops.values())
    counts["kept"] = len(table) - len(drops)
    return CapDecision(drops, dict(counts), {"name": name_cap, "opener": opener_cap})


def apply_caps(docs: Iterable[Mapping[str, Any]], genres: Mapping[str, GenreLike],
               cfg: DiversityConfig | None = None) -> DiversityResult:
    """`decide_caps` over documents held in memory (the stage streams instead); kept ones keep their
    order, dropped ones become rejected rows with stage "diversity"."""
    cfg = cfg or DiversityConfig()
    docs = list(docs)
    table = cap_features(docs, genres, cfg)
    decision = decide_caps(table, cfg)
    kept, rejected, names = [], [], {}
    for doc, row in zip(docs, table, strict=True):
        if row["doc_id"] in decision.drops:
            rejected.append(reject_row(doc, "diversity", *decision.drops[row["doc_id"]]))
            continue
        kept.append(dict(doc))
        if row["fiction"]:
            names[row["doc_id"]] = row["names"]
    return DiversityResult(kept, rejected, decision.counts, names, decision.caps)
