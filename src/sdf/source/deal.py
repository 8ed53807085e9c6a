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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, cycle, islice
from math import sqrt
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


@dataclass(frozen=True)
class _Form:
    """What a genre deals from, resolved once per plan rather than once per spec."""

    genre: Genre
    audiences: tuple[str, ...]
    narrators: tuple[str, ...]
    settings: dict[str, tuple[str, ...]]  # narrator kind -> the setting kinds that suit it and the genre
    situations: tuple[str, ...]
    self_stakes: bool  # whether a spec of this genre draws for an AI with stakes of its own
    tone_key: str
    tones: tuple[str, ...]
    reasoning_key: str
    cast_low: int
    cast_span: int
    low: int  # the length draw: random.triangular(min_words, max_words, mode_words), given its uniform draw
    high: int
    mode_share: float | None  # (mode - low) / (high - low); None when low == high

    def length(self, u: float) -> float:
        """random.triangular's arithmetic on its one uniform draw `u`, so a plan need not call it."""
        c, low, high = self.mode_share, self.low, self.high
        if c is None:
            return low
        if u > c:
            u, c, low, high = 1.0 - u, 1.0 - c, high, low
        return low + (high - low) * sqrt(u * c)


class Dealer:
    """Deals the briefs of one plan in order; its counters are the only state, so order is all that matters."""

    def __init__(self, sections: Sequence[Section], catalog: Catalog, cfg: PlanConfig, seed: int,
                 pools: DealPools | None = None) -> None:
        self.catalog, self.cfg, self.seed = catalog, cfg, seed
        self.pools = pools or seed_pools(catalog)
        self.people = people_to_deal(catalog, seed)
        self.uses: dict[str, int] = {}  # consideration name -> briefs that foregrounded it so far
        self.rng = random.Random(_offset(seed, "specs"))  # one stream, drawn in plan order: prefix-stable
        self._whole = " ".join(s.text for s in sections).lower()
        self._candidates: dict[str, tuple[Consideration, ...]] = {}
        self._attrs: dict[str, str] = {}
        self._walks: dict[str, Iterator[Any]] = {}  # key -> an endless walk over its items in their seeded order
        self._forms: dict[str, _Form] = {}
        self._pool_walks = {pool: {kind: self._walk(f"{pool}:{kind}", items) for kind, items in kinds.items()}
                            for pool, kinds in self.pools.lists.items()}
        self._given = self._walk("given", self.people.given)
        for code in cfg.languages:
            language_name(code)
        self._languages = list(cfg.languages)
        self._cumulative = list(accumulate(cfg.languages.values()))
        # only these given names can make an eval's full name, so only they need the check
        firsts = {r.split(" ")[0] for r in self.people.reserved if " " in r}
        self._risky = {g for g, _ in self.people.given if (g + " ").lower().split(" ")[0] in firsts}

    def _next(self, key: str, items: Sequence[Any]) -> Any:
        """The next item of `key`'s seeded cycle over `items`: all are used once before any twice."""
        walk = self._walks.get(key)
        if walk is None:
            walk = self._walks[key] = self._walk(key, items)
        return next(walk)

    def _walk(self, key: str, items: Sequence[Any]) -> Iterator[Any]:
        """An endless walk over `items` in `key`'s seeded order (a list's counter in the plan is its walk)."""
        if not items:
            return _empty(key)
        return cycle([items[i] for i in _permutation(len(items), self.seed, key)])

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
        counts, draw = self.uses, rng.random
        candidates = self._candidates.get(section.id) or self.considerations(section)
        # the index breaks ties exactly as a stable sort on (uses, draw) would
        ranked = sorted([(counts.get(c.name, 0), draw(), i) for i, c in enumerate(candidates)])
        chosen = [candidates[i].name for _, _, i in ranked[: 2 if draw() < TWO_CONSIDERATIONS else 1]]
        for name in chosen:
            counts[name] = counts.get(name, 0) + 1
        return chosen

    def _cast(self, form: _Form, rng: random.Random) -> list[str]:
        names, people, draw = [], self.people, rng.random
        by_culture, surnames, given = people.by_culture, people.surnames, self._given
        for _ in range(form.cast_low + int(draw() * form.cast_span)):
            first, culture = next(given)
            own = by_culture.get(culture)
            pool = own if own and draw() < SAME_CULTURE_SURNAME else surnames
            last = pool[int(draw() * len(pool))][0]
            if first in self._risky:
                for _ in range(20):  # never an eval's character, such as "Kyle Johnson"
                    if f"{first} {last}".lower() not in people.reserved:
                        break
                    last = _pick(rng, surnames)[0]
            names.append(f"{first} {last}")
        return names

    def _form(self, genre: Genre) -> _Form:
        form = self._forms.get(genre.name)
        if form is None:
            kinds = genre.kinds
            narrators = self.catalog.pools["narrators"].kinds
            settings = {n: tuple(k for k in kinds["settings"] if k in narrators[n].settings) or kinds["settings"]
                        for n in kinds["narrators"]}
            share = self.cfg.ai_self_stakes
            stakes = share > 0 and genre.fiction and "ai_everyday" in kinds["situations"] \
                and SELF_STAKES in self.pools.lists["situations"]
            form = self._forms[genre.name] = _Form(
                genre, kinds["audiences"], kinds["narrators"], settings, kinds["situations"], stakes,
                "tones:" + "|".join(genre.tones), genre.tones or self.catalog.tones, f"reasoning:{genre.fiction}",
                genre.cast[0], genre.cast[1] - genre.cast[0] + 1, genre.min_words, genre.max_words,
                (genre.mode_words - genre.min_words) / (genre.max_words - genre.min_words)
                if genre.max_words != genre.min_words else None)
        return form

    def _kinds(self, genre: Genre, rng: random.Random) -> dict[str, str]:
        """A kind per pool that suits the genre; the setting also suits the narrator, who writes from it."""
        form = self._form(genre)
        kinds = {"audiences": _pick(rng, form.audiences), "narrators": _pick(rng, form.narrators)}
        kinds["settings"] = _pick(rng, form.settings[kinds["narrators"]])
        return kinds

    def spec(self, index: int, section: Section, genre: Genre) -> dict[str, Any]:
        rng, walks = self.rng, self._pool_walks
        form = self._forms.get(genre.name) or self._form(genre)
        draw = rng.random
        # the draws below come in the order the plan has always made them: changing it changes every spec
        audience_kind = form.audiences[int(draw() * len(form.audiences))]
        narrator_kind = form.narrators[int(draw() * len(form.narrators))]
        fits = form.settings[narrator_kind]
        setting_kind = fits[int(draw() * len(fits))]
        audience = next(walks["audiences"][audience_kind])
        persona = next(walks["narrators"][narrator_kind])
        setting = next(walks["settings"][setting_kind])
        if form.self_stakes and draw() < self.cfg.ai_self_stakes:
            situation_kind, self_stakes = SELF_STAKES, True
        else:
            situation_kind, self_stakes = form.situations[int(draw() * len(form.situations))], False
        situation = next(walks["situations"][situation_kind])
        tone = self._next(form.tone_key, form.tones)
        names = self._cast(form, rng)
        considerations = self._foreground(section, rng)
        reasoning = self._next(form.reasoning_key, self.catalog.reasoning[genre.fiction])
        target_words = int(round(form.length(draw()), -1))
        language = rng.choices(self._languages, cum_weights=self._cumulative)[0] if self._languages else "en"
        seed = rng.getrandbits(63)
        # the id names the brief: a plan dealt from other pools or another seed gives other ids
        digest = xxhash.xxh3_64_hexdigest("\x1f".join(map(str, (
            self.seed, index, section.id, section.title, genre.name, audience, persona, setting, situation, tone,
            names, considerations, reasoning, target_words, language, audience_kind, narrator_kind, setting_kind,
            situation_kind, self_stakes, seed))).encode())[:10]
        attrs = self._attrs.get(section.id)
        if attrs is None:
            attrs = self._attrs[section.id] = json.dumps(section.attrs, ensure_ascii=False, sort_keys=True)
        return {"spec_id": f"{index:06d}-{digest}", "section_id": section.id, "section_title": section.title,
                "genre": genre.name, "audience": audience, "persona": persona, "setting": setting,
                "situation": situation, "tone": tone, "names": names, "considerations": considerations,
                "reasoning": reasoning, "target_words": target_words, "language": language,
                "audience_kind": audience_kind, "narrator_kind": narrator_kind, "setting_kind": setting_kind,
                "situation_kind": situation_kind, "ai_self_stakes": self_stakes, "seed": seed, "idea": "",
                "redeals": 0, "unsuitable": "", "section_attrs": attrs}

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


def _empty(key: str) -> Iterator[Any]:
    raise SdfError(f"cannot plan: the catalog list '{key}' is empty")
    yield


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
