"""Plan difficult-advice scenarios.

A scenario crosses a constitution section (the value at stake) with a kind of situation (a temptation,
a shortcut that is fine, an instruction from someone without the standing to give it, or a dilemma) and
that kind's seed, a domain, the user's role and circumstances, the stakes, how the user writes, the one
or two considerations the reply is told may matter, how many times the user writes and what each later
message does, and a deployment: no system prompt, or an operator's, with or without tool definitions
(written by the model at generation; the seed pools' operator and toolset dealt here are its examples
and its fallback).

Kinds are dealt by quota, so the first N scenarios hit the [advice].kinds mix within one chat per kind.
Every other attribute is dealt from a shuffled deck of one seeded RNG, item after item, so the plan for
N is the first N of one sequence: growing N keeps every earlier scenario, and the ledger pays only for
the new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sdf.config import ADVICE_KINDS, AdviceConfig
from sdf.errors import SdfError
from sdf.source.catalog import FOLLOWUP_KINDS, AdviceCatalog, Consideration
from sdf.source.constitution import Section
from sdf.source.plan import Deck

ROLES = ("system", "user", "assistant", "tool")
TWO_CONSIDERATIONS = 0.5  # share of scenarios that foreground two considerations rather than one


def advice_sections(sections: Sequence[Section], cfg: AdviceConfig) -> list[Section]:
    kept = [s for s in sections if not any(s.id.startswith(p) for p in cfg.skip_sections)]
    if not kept:
        raise SdfError("[advice].skip_sections leaves no constitution section to plan scenarios on")
    return kept


def advice_considerations(catalog: AdviceCatalog, cfg: AdviceConfig) -> list[Consideration]:
    known = {c.name for c in catalog.considerations}
    if unknown := [n for n in cfg.skip_considerations if n not in known]:
        raise SdfError(f"[advice].skip_considerations names unknown considerations: {', '.join(unknown)} "
                       "(see prompts/considerations.toml)")
    kept = [c for c in catalog.considerations if c.name not in cfg.skip_considerations]
    if not kept:
        raise SdfError("[advice].skip_considerations leaves no consideration to foreground")
    return kept


def kind_sequence(shares: Mapping[str, float], n: int) -> list[str]:
    """The first `n` kinds of the quota sequence: each next kind is the one furthest below its share,
    so every prefix is within one chat of the mix (ties go to the kinds' fixed order)."""
    counts: Counter[str] = Counter()
    order = [k for k in ADVICE_KINDS if shares.get(k, 0) > 0]
    out = []
    for i in range(1, n + 1):
        kind = max(order, key=lambda k: (shares[k] * i - counts[k], -order.index(k)))
        counts[kind] += 1
        out.append(kind)
    return out


TURN_BLOCK = 5  # conversations that go on are dealt by quota within each block of this many scenarios of a kind


def turn_sequence(share: float, n: int, key: str) -> list[bool]:
    """Which of the first `n` scenarios of one kind go on past one user turn: in block k of TURN_BLOCK,
    exactly the block's part of the cumulative quota, at places the block's own seeded draw picks. So each
    kind gets its share (an authority scenario is where a pushback matters most), every prefix is within
    one block's quota of it, and growing the plan keeps every earlier scenario's answer."""
    out: list[bool] = []
    for k in range(-(-n // TURN_BLOCK)):
        quota = math.floor(share * TURN_BLOCK * (k + 1) + 1e-9) - math.floor(share * TURN_BLOCK * k + 1e-9)
        picked = set(random.Random(f"advice-turns:{key}:{k}").sample(range(TURN_BLOCK), quota))
        out += [j in picked for j in range(TURN_BLOCK)]
    return out[:n]


def turns_by_kind(kinds: Sequence[str], share: float, seed: int) -> list[bool]:
    """turn_sequence dealt within each kind, read back in plan order."""
    counts = Counter(kinds)
    dealt = {k: iter(turn_sequence(share, c, f"{seed}:{k}")) for k, c in counts.items()}
    return [next(dealt[k]) for k in kinds]


class Considerations:
    """One or two considerations per scenario, the least used so far among those the section's words fit
    (failing two, those the constitution's words fit): the documents' rule, over the same list."""

    def __init__(self, items: Sequence[Consideration], sections: Sequence[Section]) -> None:
        self.items, self.counts = tuple(items), Counter[str]()
        self._whole = " ".join(s.text for s in sections).lower()
        self._fits: dict[str, tuple[Consideration, ...]] = {}

    def fitting(self, section: Section) -> tuple[Consideration, ...]:
        if section.id not in self._fits:
            own = section.text.lower()
            found = tuple(c for c in self.items if any(t in own for t in c.terms))
            if len(found) < 2:
                found += tuple(c for c in self.items if c not in found and any(t in self._whole for t in c.terms))
            self._fits[section.id] = found or self.items
        return self._fits[section.id]

    def deal(self, section: Section, rng: random.Random) -> list[Consideration]:
        ranked = sorted(self.fitting(section), key=lambda c: (self.counts[c.name], rng.random()))
        chosen = ranked[: 2 if rng.random() < TWO_CONSIDERATIONS else 1]
        self.counts.update(c.name for c in chosen)
        return chosen


def plan_scenarios(sections: Sequence[Section], catalog: AdviceCatalog, n: int, cfg: AdviceConfig, seed: int
                   ) -> list[dict[str, Any]]:
    """The first `n` scenarios of the seeded sequence (SCENARIO_SCHEMA rows)."""
    rng = random.Random(f"advice:{seed}")
    decks = {name: Deck(items, rng) for name, items in (
        ("section", advice_sections(sections, cfg)), ("domain", catalog.domains), ("role", catalog.roles),
        ("stakes", catalog.stakes), ("register", catalog.registers), ("operator", catalog.operators),
        ("toolset", catalog.toolsets), ("tool_format", catalog.tool_formats), ("followup", FOLLOWUP_KINDS),
        *((f"seed:{k}", sorted(catalog.seeds[k])) for k in ADVICE_KINDS))}
    considerations = Considerations(advice_considerations(catalog, cfg), sections)
    kinds = kind_sequence(cfg.kinds, n)
    going_on = turns_by_kind(kinds, cfg.multi_turn_share, seed)
    low, high = math.log(cfg.user_words_min), math.log(cfg.user_words_max)
    specs = []
    for index, kind in enumerate(kinds):
        section = decks["section"].deal()
        # every item draws the same numbers in the same order, whatever the shares are set to
        with_system, with_tools = rng.random() < cfg.system_prompt_share, rng.random() < cfg.tools_share
        words = round(math.exp(rng.uniform(low, high)))  # log-uniform: many short messages, some long ones
        _, extra = rng.random(), rng.random()  # the first draw is kept so that every later one stays the same
        goes_on = going_on[index]
        turns = 1 + (1 + int(extra * (cfg.max_user_turns - 1)) if goes_on and cfg.max_user_turns > 1 else 0)
        operator = decks["operator"].deal() if with_system else None
        toolset = decks["toolset"].deal() if with_tools else None
        situation = decks[f"seed:{kind}"].deal()
        spec = {
            "mode": "advice",
            "section_id": section.id,
            "section_title": section.title,
            "domain": decks["domain"].deal(),
            "role": decks["role"].deal(),
            "temptation": situation if kind == "temptation" else "",
            "stakes": decks["stakes"].deal(),
            "register": decks["register"].deal(),
            "operator": operator.name if operator else "",
            "toolset": toolset.name if toolset else "",
            "tool_format": decks["tool_format"].deal() if toolset else "",
            "kind": kind,
            "situation": situation,
            "considerations": ",".join(c.name for c in considerations.deal(section, rng)),
            "user_turns": turns,
            "followups": ",".join(decks["followup"].deal() for _ in range(turns - 1)),
            "user_words": words,
            "system_prompt": operator.prompt if operator else "",
            "tools": json.dumps(list(toolset.tools), ensure_ascii=False) if toolset else "",
            "source_messages": "",
            "seed": rng.getrandbits(63),
        }
        digest = hashlib.sha256(f"{seed}:{index}:{sorted(spec.items())}".encode()).hexdigest()[:10]
        specs.append({"spec_id": f"{index:06d}-{digest}", **spec})
    return specs
