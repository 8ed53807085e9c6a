"""Deal each slot's brief: who writes, for whom, where, from what situation, which considerations, names, length.

A brief coheres because its genre says which kinds of audience, narrator, setting and situation suit it
(`Genre.kinds`) and how many named people it needs (`Genre.cast`). Within a kind, items are dealt in one
seeded order per list, walked by a counter over the whole plan, so no item repeats before its list is
used up and no narrator or setting dominates. Every counter advances only with the specs before it, so
spec n depends on specs 1..n alone: the plan for N is a prefix of the plan for 2N. A changed genre mix or
section selection deals a different sequence, so its specs are new (`sdf plan` on the run says how many).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

import xxhash

from sdf.config import PlanConfig
from sdf.errors import SdfError
from sdf.source.catalog import Catalog, Consideration, Genre
from sdf.source.constitution import Section
from sdf.source.plan import eval_names, genre_weights, iter_slots, plan_size
from sdf.source.pools import SELF_STAKES, DealPools, seed_pools

SAME_CULTURE_SURNAME = 0.8  # share of people whose surname comes from their given name's culture
TWO_CONSIDERATIONS = 0.5  # share of briefs that foreground two considerations rather than one
LANGUAGES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "pt": "Portuguese",
    "pt-BR": "Brazilian Portuguese",
    "it": "Italian", "nl": "Dutch", "sv": "Swedish", "da": "Danish", "nb": "Norwegian", "fi": "Finnish",
    "pl": "Polish", "cs": "Czech", "ro": "Romanian", "hu": "Hungarian", "el": "Greek", "tr": "Turkish",
    "ru": "Russian", "uk": "Ukrainian", "ar": "Arabic", "he": "Hebrew", "fa": "Persian", "hi": "Hindi",
    "bn": "Bengali", "ur": "Urdu", "id": "Indonesian", "ms": "Malay", "vi": "Vietnamese", "th": "Thai",
    "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "sw": "Swahili", "yo": "Yoruba", "am": "Amharic",
}
# what a re-deal changes (pool -> its spec columns); the rest of a brief stays
REDEALT = {"audiences": ("audience", "audience_kind"), "narrators": ("persona", "narrator_kind"),
           "settings": ("setting", "setting_kind"), "situations": ("situation", "situation_kind")}


def _pick(rng: random.Random, items: Sequence[Any]) -> Any:
    """rng.choice without its rejection sampling: a plan deals millions of these."""
    return items[int(rng.random() * len(items))]


def _offset(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


@lru_cache(maxsize=4096)
def _permutation(n: int, seed: int, key: str) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(_offset(seed, "perm", key)).shuffle(order)
    return tuple(order)


@dataclass(frozen=True)
class People:
    """The names a plan deals from: given names in a seeded order, and surnames by culture."""

    given: list[tuple[str, str]]  # (name, culture), in dealing order
    surnames: list[tuple[str, str]]  # (name, culture), in a seeded order: the rename pool's order too
    by_culture: dict[str, list[tuple[str, str]]]
    reserved: frozenset[str] = frozenset()  # lower-cased eval names: never dealt, alone or as a full name


def people_to_deal(catalog: Catalog, seed: int) -> People:
    """The catalog's given names and surnames, each in one seeded order (built once per plan)."""
    if not catalog.given_names or not catalog.surnames:
        raise SdfError("cannot plan: the catalog's given-name or surname list is empty")
    reserved = eval_names(catalog)
    given = [catalog.given_names[i] for i in _permutation(len(catalog.given_names), seed, "given")]
    given = [g for g in given if g[0].lower() not in reserved]
    surnames = [catalog.surnames[i] for i in _permutation(len(catalog.surnames), seed, "surnames")]
    by_culture: dict[str, list[tuple[str, str]]] = {}
    for name, culture in catalog.surnames:
        by_culture.setdefault(culture, []).append((name, culture))
    return People(given, surnames, by_culture, reserved)


def name_pools(catalog: Catalog, seed: int) -> tuple[list[str], list[str]]:
    """The planner's given names and surnames in their seeded order: where the diversity step takes
    replacements for a name the model overused (it skips names the corpus already has)."""
    names = people_to_deal(catalog, seed)
    return [n for n, _ in names.given], [n for n, _ in names.surnames if n.lower() not in names.reserved]


def language_name(code: str) -> str:
    if code not in LANGUAGES:
        raise SdfError(f"[plan].languages: unknown language code '{code}'; known: {', '.join(sorted(LANGUAGES))}")
    return LANGUAGES[code]


class Dealer:
    """Deals the briefs of one plan in order; its counters are the only state, so order is all that matters."""

    def __init__(self, sections: Sequence[Section], catalog: Catalog, cfg: PlanConfig, seed: int,
                 pools: DealPools | None = None) -> None:
        self.catalog, self.cfg, self.seed = catalog, cfg, seed
        self.pools = pools or seed_pools(catalog)
        self.people = people_to_deal(catalog, seed)
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(_offset(seed, "specs"))  # one stream, drawn in plan order: prefix-stable
        self._whole = " ".join(s.text for s in sections).lower()
        self._candidates: dict[str, tuple[Consideration, ...]] = {}
        self._attrs: dict[str, str] = {}
        for code in cfg.languages:
            language_name(code)

    def _next(self, key: str, items: Sequence[Any]) -> Any:
        """The next item of `key`'s seeded cycle over `items`: all are used once before any twice."""
        k = self.counts[key]
        self.counts[key] = k + 1
        return items[_permutation(len(items), self.seed, key)[k % len(items)]]

    def considerations(self, section: Section) -> tuple[Consideration, ...]:
        """The considerations whose terms the section itself uses; failing two, those the constitution uses."""
        if section.id not in self._candidates:
            own = section.text.lower()
            found = tuple(c for c in self.catalog.considerations if any(t in own for t in c.terms))
            if len(found) < 2:
                found += tuple(c for c in self.catalog.considerations
                               if c not in found and any(t in self._whole for t in c.terms))
            self._candidates[section.id] = found or self.catalog.considerations
        return self._candidates[section.id]

    def _foreground(self, section: Section, rng: random.Random) -> list[str]:
        """One or two considerations, the least used so far among the section's candidates."""
        counts = self.counts
        candidates = sorted(self.considerations(section), key=lambda c: (counts[c.name], rng.random()))
        chosen = [c.name for c in candidates[: 2 if rng.random() < TWO_CONSIDERATIONS else 1]]
        for name in chosen:
            counts[name] += 1
        return chosen

    def _cast(self, genre: Genre, rng: random.Random) -> list[str]:
        names, people = [], self.people
        for _ in range(genre.cast[0] + int(rng.random() * (genre.cast[1] - genre.cast[0] + 1))):
            first, culture = self._next("given", people.given)
            own = people.by_culture.get(culture)
            pool = own if own and rng.random() < SAME_CULTURE_SURNAME else people.surnames
            last = _pick(rng, pool)[0]
            for _ in range(20):  # never an eval's character, such as "Kyle Johnson"
                if f"{first} {last}".lower() not in people.reserved:
                    break
                last = _pick(rng, people.surnames)[0]
            names.append(f"{first} {last}")
        return names

    def _situation_kind(self, genre: Genre, rng: random.Random) -> tuple[str, bool]:
        kinds = genre.kinds["situations"]
        share = self.cfg.ai_self_stakes
        if share > 0 and genre.fiction and "ai_everyday" in kinds and SELF_STAKES in self.pools.lists["situations"] \
                and rng.random() < share:
            return SELF_STAKES, True
        return _pick(rng, kinds), False

    def _kinds(self, genre: Genre, rng: random.Random) -> dict[str, str]:
        """A kind per pool that suits the genre; the setting also suits the narrator, who writes from it."""
        kinds = {pool: _pick(rng, genre.kinds[pool]) for pool in ("audiences", "narrators")}
        fits = self.catalog.pools["narrators"].kinds[kinds["narrators"]].settings
        kinds["settings"] = _pick(rng, [k for k in genre.kinds["settings"] if k in fits] or genre.kinds["settings"])
        return kinds

    def spec(self, index: int, section: Section, genre: Genre) -> dict[str, Any]:
        rng = self.rng
        picked = {}
        for pool, kind in self._kinds(genre, rng).items():
            picked[pool] = (kind, self._next(f"{pool}:{kind}", self.pools.items(pool, kind)))
        kind, self_stakes = self._situation_kind(genre, rng)
        picked["situations"] = (kind, self._next(f"situations:{kind}", self.pools.items("situations", kind)))
        tones = genre.tones or self.catalog.tones
        languages = self.cfg.languages
        spec = {
            "section_id": section.id,
            "section_title": section.title,
            "genre": genre.name,
            "audience": picked["audiences"][1],
            "persona": picked["narrators"][1],
            "setting": picked["settings"][1],
            "situation": picked["situations"][1],
            "tone": self._next("tones:" + "|".join(genre.tones), tones),
            "names": self._cast(genre, rng),
            "considerations": self._foreground(section, rng),
            "reasoning": self._next(f"reasoning:{genre.fiction}", self.catalog.reasoning[genre.fiction]),
            "target_words": int(round(rng.triangular(genre.min_words, genre.max_words, genre.mode_words), -1)),
            "language": rng.choices(list(languages), weights=list(languages.values()))[0] if languages else "en",
            "audience_kind": picked["audiences"][0],
            "narrator_kind": picked["narrators"][0],
            "setting_kind": picked["settings"][0],
            "situation_kind": picked["situations"][0],
            "ai_self_stakes": self_stakes,
            "seed": rng.getrandbits(63),
        }
        # the id names the brief: a plan dealt from other pools or another seed gives other ids
        digest = xxhash.xxh3_64_hexdigest("\x1f".join(map(str, (self.seed, index, *spec.values()))).encode())[:10]
        if section.id not in self._attrs:
            self._attrs[section.id] = json.dumps(section.attrs, ensure_ascii=False, sort_keys=True)
        spec.update(idea="", redeals=0, unsuitable="", section_attrs=self._attrs[section.id])
        return {"spec_id": f"{index:06d}-{digest}", **spec}

    def redeal(self, spec: dict[str, Any], redeals: int) -> dict[str, Any]:
        """The spec with a new audience, narrator, setting and situation, after the model found its brief
        unsuitable; drawn from (seed, spec id, redeals) alone, so a rerun re-deals it the same way."""
        genre = self.catalog.genre(spec["genre"])
        rng = random.Random(_offset(self.seed, "redeal", spec["spec_id"], redeals))
        out = dict(spec, idea="", redeals=redeals)
        kinds = self._kinds(genre, rng)
        kinds["situations"] = SELF_STAKES if spec["ai_self_stakes"] else rng.choice(genre.kinds["situations"])
        for pool, (column, kind_column) in REDEALT.items():
            out[column], out[kind_column] = rng.choice(self.pools.items(pool, kinds[pool])), kinds[pool]
        return out


def iter_specs(sections: Sequence[Section], catalog: Catalog, cfg: PlanConfig, seed: int,
               pools: DealPools | None = None) -> Iterator[dict[str, Any]]:
    """The run's unbounded, seeded sequence of specs: `plan_specs` takes its first N."""
    by_id = {s.id: s for s in sections}
    dealer = Dealer(sections, catalog, cfg, seed, pools)
    for index, (section_id, genre_name) in enumerate(iter_slots(sections, genre_weights(catalog, cfg), cfg, seed)):
        yield dealer.spec(index, by_id[section_id], catalog.genres[genre_name])


def plan_specs(sections: Sequence[Section], catalog: Catalog, cfg: PlanConfig, seed: int,
               pools: DealPools | None = None, extra: int = 0) -> list[dict[str, Any]]:
    """The first N specs of the run's sequence (N from --docs or --tokens), plus `extra` beyond them."""
    total = plan_size(catalog, cfg, genre_weights(catalog, cfg))
    return list(islice(iter_specs(sections, catalog, cfg, seed, pools), total + extra))
