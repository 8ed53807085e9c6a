"""Plan the shape of a run: which sections, how many documents each, and the (section, genre) slots.

Prefix-stable: the plan for N documents is the first N of one seeded, unbounded sequence of slots
(`iter_slots`), so growing --docs or --tokens keeps every earlier spec, and the ledger pays only for
the new ones. Slots are dealt to the section, then the genre, furthest behind its target share, so
every prefix is within about one document of the fixed-size apportionment. What each slot's brief
holds (audience, narrator, setting, situation, names, length...) is dealt in `sdf.source.deal`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import islice
from typing import Any

import numpy as np

from sdf.config import PlanConfig
from sdf.errors import SdfError
from sdf.source.catalog import Catalog, Genre
from sdf.source.constitution import (
    Constitution,
    Section,
    merge_stubs,
    non_normative_reason,
    section_warnings,
)

TOKENS_PER_WORD = 1.4  # English prose (~5.6 characters per word at ~4 characters per token)

@dataclass(frozen=True)
class PlanSummary:
    docs: int
    by_genre: dict[str, int]
    by_section: dict[str, int]


def genre_weights(catalog: Catalog, cfg: PlanConfig) -> dict[str, float]:
    """The target mix: catalog defaults, restricted to cfg.genres, overridden by cfg.genre_weights."""
    for name in [*cfg.genres, *cfg.genre_weights]:
        catalog.genre(name)  # raises a clear error for an unknown genre
    names = cfg.genres or list(catalog.genres)
    weights = {n: cfg.genre_weights.get(n, catalog.genres[n].weight) for n in names}
    weights = {n: w for n, w in weights.items() if w > 0}
    if not weights:
        raise SdfError("every genre has weight 0; give at least one genre a positive weight")
    total = sum(weights.values())
    return {n: w / total for n, w in sorted(weights.items())}


def expected_output_tokens(genre: Genre) -> float:
    return genre.mean_words * TOKENS_PER_WORD


def plan_size(catalog: Catalog, cfg: PlanConfig, weights: dict[str, float]) -> int:
    if cfg.tokens > 0:
        per_doc = sum(w * expected_output_tokens(catalog.genres[g]) for g, w in weights.items())
        return max(1, math.ceil(cfg.tokens / per_doc))
    return cfg.docs


def apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` into integer counts proportional to weights (largest remainder, ties by key)."""
    wsum = sum(weights.values())
    quotas = {k: total * w / wsum for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    leftover = total - sum(counts.values())
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[:leftover]:
        counts[k] += 1
    return counts


# -- which sections, and how many documents each --------------------------------------------------


def value_weight(section: Section) -> float:
    """A section's claim on documents: its normative tokens, scaled from 0.5x (no sentence states or argues a
    value: a preamble, a description) to 1.5x (every sentence does: a list of principles)."""
    share = min(1.0, section.value_chars / max(section.normative_chars, 1))
    return max(section.normative_tokens, 1) * (0.5 + share)


SYSTEM_PROMPT_WARN_TOKENS = 30_000  # past this the cached constitution is a large share of every request
EVEN_SHARE_CAP = 3.0  # by default no section gets more than three times an even share of the documents


@dataclass(frozen=True)
class Selection:
    """The sections a run writes about, and what was left out or merged, and why."""

    constitution: Constitution
    excluded: dict[str, str] = field(default_factory=dict)  # section id -> why it is out
    merged: dict[str, str] = field(default_factory=dict)  # stub id -> the section that took its text
    unmatched: list[str] = field(default_factory=list)  # settings patterns that match no section id


def select_sections(constitution: Constitution, cfg: PlanConfig) -> Selection:
    """Apply {.skip}, [plan].include_sections and exclude_sections, then merge stubs into their neighbours.

    Excluded sections leave the run entirely: no documents, and no place in the system prompt. Sections
    that describe the document rather than state values (`non_normative_reason`) are excluded unless an
    include pattern names them. To keep a section as context but plan no documents for it, give it a
    section weight of 0 instead.
    """
    excluded = excluded_sections(constitution, cfg)
    kept = tuple(s for s in constitution.sections if s.id not in excluded)
    if not kept:
        raise SdfError(f"every one of the {len(constitution.sections)} sections is excluded or skipped; "
                       "check [plan].include_sections and exclude_sections (see `sdf sections`)")
    merged_constitution, merged = merge_stubs(Constitution(constitution.title, kept), cfg.min_section_chars)
    ids = [s.id for s in constitution.sections]
    patterns = [*cfg.include_sections, *cfg.exclude_sections, *cfg.section_weights]
    unmatched = [p for p in dict.fromkeys(patterns) if not any(fnmatchcase(i, p) for i in ids)]
    return Selection(merged_constitution, excluded, merged, unmatched)


def excluded_sections(constitution: Constitution, cfg: PlanConfig) -> dict[str, str]:
    """{section id: why} for sections marked {.skip}, matching an exclude glob, or matching no include glob."""
    excluded: dict[str, str] = {}
    for s in constitution.sections:
        exclude = next((p for p in cfg.exclude_sections if fnmatchcase(s.id, p)), None)
        included = any(fnmatchcase(s.id, p) for p in cfg.include_sections)
        if "skip" in s.classes:
            excluded[s.id] = "marked {.skip}"
        elif exclude is not None:
            excluded[s.id] = f"matches exclude pattern '{exclude}'"
        elif cfg.include_sections and not included:
            excluded[s.id] = "matches no include pattern"
        elif not included and (why := non_normative_reason(s)):
            # about the document rather than part of it: no documents; --include-section brings it back
            excluded[s.id] = f"non-normative ({why}); --include-section '{s.id}' brings it back"
    return excluded


def describe_sections(constitution: Constitution, cfg: PlanConfig) -> list[dict]:
    """Every parsed section with its sizes, attrs, notes, warnings and what a plan would do with it."""
    excluded = excluded_sections(constitution, cfg)
    kept = Constitution(constitution.title, tuple(s for s in constitution.sections if s.id not in excluded))
    merged = merge_stubs(kept, cfg.min_section_chars)[1] if kept.sections else {}
    weights = section_weights(constitution.sections, cfg)
    rows = []
    for s in constitution.sections:
        if s.id in excluded:
            status, detail = "excluded", excluded[s.id]
        elif s.id in merged:
            status, detail = "merged", f"into '{merged[s.id]}'"
        elif weights[s.id] == 0:
            status, detail = "context", "section weight 0: in the system prompt, no documents"
        else:
            status, detail = "planned", ""
        rows.append({
            "id": s.id, "title": s.title, "path": list(s.path), "level": s.level, "chars": s.chars,
            "normative_chars": s.normative_chars, "example_chars": s.example_chars, "attrs": s.attrs,
            "notes": list(s.notes), "status": status, "detail": detail,
            "warnings": [] if status == "excluded" else section_warnings(s, cfg.min_section_chars),
            "non_normative": non_normative_reason(s),
        })
    return rows


def section_weights(sections: Sequence[Section], cfg: PlanConfig) -> dict[str, float]:
    """Each section's [plan].section_weights entry: its exact id, else the first glob that matches, else 1."""
    weights = {}
    for s in sections:
        if s.id in cfg.section_weights:
            weights[s.id] = cfg.section_weights[s.id]
        else:
            weights[s.id] = next((w for p, w in cfg.section_weights.items() if fnmatchcase(s.id, p)), 1.0)
    return weights


def capped_weights(weights: dict[str, float], cap: float) -> dict[str, float]:
    """Rescale so no key's share exceeds `cap`; what the capped keys lose goes to the rest in proportion."""
    capped: set[str] = set()
    while True:
        free = {k: v for k, v in weights.items() if k not in capped}
        budget, total = 1.0 - cap * len(capped), sum(free.values())
        over = {k for k, v in free.items() if total > 0 and v / total * budget > cap * (1 + 1e-9)}
        if not over:
            break
        capped |= over
    if not capped:
        return dict(weights)  # untouched, so plans without a binding cap stay exactly as they were
    return {k: cap if k in capped else max(budget, 0.0) * v / total for k, v in weights.items()}


def section_quotas(sections: Sequence[Section], total: int, floor: int, weights: dict[str, float] | None = None,
                   max_share: float = 0.0) -> dict[str, int]:
    """Documents per section: in proportion to its normative content (`value_weight`) times its weight.

    A floor keeps short sections from being starved, and a cap on each section's share (default three
    times an even share) keeps one long section from taking the plan. Weight 0 means no documents.
    """
    base = {s.id: value_weight(s) * (weights or {}).get(s.id, 1.0) for s in sections}
    eligible = {k: w for k, w in base.items() if w > 0}
    counts = {s.id: 0 for s in sections}
    if not eligible:
        raise SdfError("every section has weight 0 in [plan].section_weights; give at least one a positive weight")
    floor = floor if total >= floor * len(eligible) else 0
    counts.update({k: floor for k in eligible})
    rest = total - floor * len(eligible)
    if rest > 0:
        cap = max(max_share or min(1.0, EVEN_SHARE_CAP / len(eligible)), 1 / len(eligible))
        extra = apportion(rest, capped_weights(eligible, cap))
        counts.update({k: counts[k] + extra[k] for k in eligible})
    return counts


def plan_warnings(selection: Selection, covered: Collection[str], planned: int, cfg: PlanConfig,
                  system_tokens: int, system_cost_share: float | None) -> list[str]:
    """What `sdf plan` must say before money is spent: cost of a long prompt, uncovered sections, odd sections."""
    sections = selection.constitution.sections
    warnings = []
    if system_tokens > SYSTEM_PROMPT_WARN_TOKENS:
        share = f"; it causes about {system_cost_share:.0%} of the estimated cost per document" \
            if system_cost_share is not None else ""
        warnings.append(f"the system prompt is about {system_tokens:,} tokens, over ~{SYSTEM_PROMPT_WARN_TOKENS:,}"
                        f"{share}. Every request repeats it, so leave out what is not part of the constitution "
                        "with --exclude-section GLOB or [plan].exclude_sections (see `sdf sections`)")
    weights = section_weights(sections, cfg)
    uncovered = [s.id for s in sections if s.id not in covered and weights[s.id] > 0]
    if uncovered:
        warnings.append(f"{len(uncovered)} of {len(sections)} sections get no document with {planned} planned; "
                        f"plan at least {len(sections)} to cover each, or choose sections with --include-section")
    for s in sections:
        for w in section_warnings(s, cfg.min_section_chars):
            warnings.append(f"section '{s.id}': {w}")
    for p in selection.unmatched:
        warnings.append(f"the pattern '{p}' in [plan] or on the command line matches no section id")
    return warnings


def selection_notes(selection: Selection) -> list[str]:
    """One line per section that the selection left out or merged, for `sdf plan`."""
    lines = [f"excluded '{sid}': {why}" for sid, why in selection.excluded.items()]
    lines += [f"merged stub '{stub}' into '{into}'" for stub, into in selection.merged.items()]
    return lines


def section_targets(sections: Sequence[Section], cfg: PlanConfig) -> tuple[dict[str, float], int]:
    """Each eligible section's long-run share (normative content x weight, capped) and the floor each gets.

    The same rule as `section_quotas`, in a form that does not depend on the plan size: a prefix of n
    documents aims at `floor + (n - floor * sections) * share` documents per section once n covers
    every floor, and at `n * share` before that.
    """
    weights = section_weights(sections, cfg)
    base = {s.id: value_weight(s) * weights.get(s.id, 1.0) for s in sections}
    eligible = {k: w for k, w in base.items() if w > 0}
    if not eligible:
        raise SdfError("every section has weight 0 in [plan].section_weights; give at least one a positive weight")
    cap = max(cfg.max_section_share or min(1.0, EVEN_SHARE_CAP / len(eligible)), 1 / len(eligible))
    capped = capped_weights(eligible, cap)
    total = sum(capped.values())
    return {k: v / total for k, v in capped.items()}, cfg.min_docs_per_section


class Deck:
    """Deal items in shuffled passes: every item is used once before any is used twice (the advice
    product's scenarios deal from these; document specs use the prefix-stable `spec_attributes`)."""

    def __init__(self, items: Sequence[Any], rng: random.Random) -> None:
        if not items:
            raise SdfError("cannot plan: a catalog list is empty")
        self.items, self.rng, self.pile = list(items), rng, []

    def deal(self) -> Any:
        if not self.pile:
            self.pile = self.items[:]
            self.rng.shuffle(self.pile)
        return self.pile.pop()

    def deal_distinct(self, k: int, key: Any = lambda x: x) -> list[Any]:
        out: list[Any] = []
        seen: set[Any] = set()
        for _ in range(k * 20):
            item = self.deal()
            if key(item) not in seen:
                seen.add(key(item))
                out.append(item)
                if len(out) == k:
                    break
        return out


def eval_names(catalog: Catalog) -> frozenset[str]:
    """Lower-cased names of the characters and AIs of the built-in eval lists (prompts/evals/): never dealt,
    so the writer is never asked to name anyone after an evaluation's cast."""
    from sdf.steps.decontam.evals import reserved_names

    return reserved_names(catalog.root)


def deal_slots(sections: Sequence[Section], genres: dict[str, float], cfg: PlanConfig, seed: int,
               total: int) -> list[tuple[str, str]]:
    """The first `total` (section id, genre) slots of one seeded, unbounded sequence (`iter_slots`)."""
    return list(islice(iter_slots(sections, genres, cfg, seed), total))


def iter_slots(sections: Sequence[Section], genres: dict[str, float], cfg: PlanConfig, seed: int
               ) -> Iterator[tuple[str, str]]:
    """(section id, genre) slots of one seeded, unbounded sequence.

    Each slot goes to the section furthest behind its target, and then to the genre furthest behind
    its share (overall, and a little within that section, so a section sees a spread of genres).
    A plan for N is the first N slots of a plan for 2N, and every
    prefix is within about one document of the fixed-size apportionment of sections and genres.
    """
    shares, floor = section_targets(sections, cfg)
    sids, gnames = list(shares), list(genres)
    rng = np.random.default_rng([seed, 0x5D1])
    # seeded tie-breaks far below one document, so equal deficits do not always go the same way
    s_jitter, g_jitter = rng.random(len(sids)) * 1e-6, rng.random(len(gnames)) * 1e-6
    share = np.array([shares[k] for k in sids])
    weight = np.array([genres[g] for g in gnames])
    s_count = np.zeros(len(sids))
    g_count = np.zeros(len(gnames))
    pair_count = np.zeros((len(sids), len(gnames)))
    floors = floor * len(sids)
    # the same float operations in the same order as plain expressions would do, into arrays made once:
    # a plan deals a million of these, and a new array per operation was most of their cost
    s_deficit, g_deficit, within = np.empty(len(sids)), np.empty(len(gnames)), np.empty(len(gnames))
    multiply, add, subtract = np.multiply, np.add, np.subtract
    n = 0
    while True:
        n += 1
        if n >= floors:  # target = floor + (n - floors) * share
            multiply(share, n - floors, out=s_deficit)
            add(s_deficit, floor, out=s_deficit)
        else:  # target = n * share
            multiply(share, n, out=s_deficit)
        subtract(s_deficit, s_count, out=s_deficit)
        add(s_deficit, s_jitter, out=s_deficit)
        s = int(s_deficit.argmax())
        multiply(weight, s_count[s] + 1, out=within)  # this section's own genre deficit
        subtract(within, pair_count[s], out=within)
        multiply(weight, n, out=g_deficit)
        subtract(g_deficit, g_count, out=g_deficit)
        multiply(within, WITHIN_SECTION, out=within)
        add(g_deficit, within, out=g_deficit)
        add(g_deficit, g_jitter, out=g_deficit)
        g = int(g_deficit.argmax())
        s_count[s] += 1
        g_count[g] += 1
        pair_count[s, g] += 1
        yield sids[s], gnames[g]

WITHIN_SECTION = 0.3  # how much a section's own genre balance counts against the overall mix


def summarize(specs: Sequence[dict]) -> PlanSummary:
    by_genre = Counter(s["genre"] for s in specs)
    by_section = Counter(s["section_id"] for s in specs)
    return PlanSummary(len(specs), dict(sorted(by_genre.items())), dict(by_section))
