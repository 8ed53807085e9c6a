"""Plan document specs: sections x genres x audience/persona x setting x tone x names x length.

Everything is drawn from one seeded RNG, so the same inputs and seed give a byte-identical
specs.parquet. Counts are exact: the genre mix and the per-section coverage are apportioned by
largest remainder, then interleaved so every section sees a spread of genres. Attributes and
names are dealt from shuffled decks (each item used once per pass) rather than drawn
independently, which keeps any one persona or name from dominating.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdf.config import PlanConfig
from sdf.errors import SdfError
from sdf.source.catalog import Catalog, Genre
from sdf.source.constitution import Section

TOKENS_PER_WORD = 1.4  # English prose (~5.6 characters per word at ~4 characters per token)
NAMES_PER_SPEC = {True: 3, False: 2}  # fiction needs a cast; non-fiction a couple of people
SAME_CULTURE_SURNAME = 0.8  # share of people whose surname comes from their given name's culture



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


def section_quotas(sections: Sequence[Section], total: int, floor: int) -> dict[str, int]:
    """Coverage in proportion to section length, with a floor so short sections are not starved."""
    floor = floor if total >= floor * len(sections) else 0
    counts = {s.id: floor for s in sections}
    rest = total - floor * len(sections)
    if rest > 0:
        extra = apportion(rest, {s.id: max(s.tokens, 1) for s in sections})
        counts = {k: counts[k] + extra[k] for k in counts}
    return counts


class Deck:
    """Deal items in shuffled passes: every item is used once before any is used twice."""

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


def plan_specs(sections: Sequence[Section], catalog: Catalog, cfg: PlanConfig, seed: int) -> list[dict]:
    weights = genre_weights(catalog, cfg)
    total = plan_size(catalog, cfg, weights)
    rng = random.Random(seed)

    # Interleave genre slots evenly: slot i of a genre with n slots sits at (i + u) / n.
    positions = []
    for genre, n in apportion(total, weights).items():
        offset = rng.random()
        positions += [((i + offset) / n, genre) for i in range(n)]
    genre_sequence = [g for _, g in sorted(positions)]

    quotas = section_quotas(sections, total, cfg.min_docs_per_section)
    section_slots = [s for s in sections for _ in range(quotas[s.id])]
    # Rotate so the first section does not always open with the same genre.
    shift = rng.randrange(total)
    genre_sequence = genre_sequence[shift:] + genre_sequence[:shift]

    audiences, personas = Deck(catalog.audiences, rng), Deck(catalog.personas, rng)
    settings, tones = Deck(catalog.settings, rng), Deck(catalog.tones, rng)
    reserved = eval_names(catalog)
    given = Deck([g for g in catalog.given_names if g[0].lower() not in reserved], rng)
    by_culture: dict[str, list[tuple[str, str]]] = {}
    for name, culture in catalog.surnames:
        by_culture.setdefault(culture, []).append((name, culture))
    surnames_by_culture = {c: Deck(items, rng) for c, items in sorted(by_culture.items())}
    all_surnames = Deck(catalog.surnames, rng)

    specs = []
    for index, (section, genre_name) in enumerate(zip(section_slots, genre_sequence, strict=True)):
        genre = catalog.genres[genre_name]
        people = []
        for first, culture in given.deal_distinct(NAMES_PER_SPEC[genre.fiction], key=lambda x: x[0]):
            deck = surnames_by_culture.get(culture)
            use_own = deck is not None and rng.random() < SAME_CULTURE_SURNAME
            last, _ = (deck if use_own else all_surnames).deal()
            for _ in range(20):  # never an eval's character, such as "Kyle Johnson"
                if f"{first} {last}".lower() not in reserved:
                    break
                last, _ = all_surnames.deal()
            people.append(f"{first} {last}")
        target = rng.randint(genre.min_words, genre.max_words)
        spec = {
            "section_id": section.id,
            "section_title": section.title,
            "genre": genre_name,
            "audience": audiences.deal(),
            "persona": personas.deal(),
            "setting": settings.deal(),
            "tone": tones.deal(),
            "names": people,
            "target_words": int(round(target, -1)),
            "seed": rng.getrandbits(63),
            "idea": "",
        }
        digest = hashlib.sha256(f"{seed}:{index}:{sorted(spec.items())}".encode()).hexdigest()[:10]
        specs.append({"spec_id": f"{index:06d}-{digest}", **spec})
    return specs


def summarize(specs: Sequence[dict]) -> PlanSummary:
    by_genre = Counter(s["genre"] for s in specs)
    by_section = Counter(s["section_id"] for s in specs)
    return PlanSummary(len(specs), dict(sorted(by_genre.items())), dict(by_section))
