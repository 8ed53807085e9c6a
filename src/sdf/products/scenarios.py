"""Plan difficult-advice scenarios.

A scenario crosses a constitution section (the value at stake) with a domain, the user's role and
circumstances, a norm-bending temptation, the stakes, how the user writes, and a deployment: no
system prompt, or an operator's, with or without tool definitions. Every attribute is dealt from a
shuffled deck of one seeded RNG, item after item, so the plan for N is the first N of one sequence:
growing N keeps every earlier scenario, and the ledger pays only for the new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from typing import Any

from sdf.config import AdviceConfig
from sdf.errors import SdfError
from sdf.source.catalog import AdviceCatalog
from sdf.source.constitution import Section
from sdf.source.plan import Deck

ROLES = ("system", "user", "assistant", "tool")


def advice_sections(sections: Sequence[Section], cfg: AdviceConfig) -> list[Section]:
    kept = [s for s in sections if not any(s.id.startswith(p) for p in cfg.skip_sections)]
    if not kept:
        raise SdfError("[advice].skip_sections leaves no constitution section to plan scenarios on")
    return kept


def plan_scenarios(sections: Sequence[Section], catalog: AdviceCatalog, n: int, cfg: AdviceConfig, seed: int
                   ) -> list[dict[str, Any]]:
    """The first `n` scenarios of the seeded sequence (SCENARIO_SCHEMA rows)."""
    rng = random.Random(f"advice:{seed}")
    decks = {name: Deck(items, rng) for name, items in (
        ("section", advice_sections(sections, cfg)), ("domain", catalog.domains), ("role", catalog.roles),
        ("temptation", sorted(catalog.temptations)), ("stakes", catalog.stakes), ("register", catalog.registers),
        ("operator", catalog.operators), ("toolset", catalog.toolsets), ("tool_format", catalog.tool_formats))}
    low, high = math.log(cfg.user_words_min), math.log(cfg.user_words_max)
    specs = []
    for index in range(n):
        section = decks["section"].deal()
        # every item draws the same numbers in the same order, whatever the shares are set to
        with_system, with_tools = rng.random() < cfg.system_prompt_share, rng.random() < cfg.tools_share
        words = round(math.exp(rng.uniform(low, high)))  # log-uniform: many short messages, some long ones
        operator = decks["operator"].deal() if with_system else None
        toolset = decks["toolset"].deal() if with_tools else None
        spec = {
            "mode": "advice",
            "section_id": section.id,
            "section_title": section.title,
            "domain": decks["domain"].deal(),
            "role": decks["role"].deal(),
            "temptation": decks["temptation"].deal(),
            "stakes": decks["stakes"].deal(),
            "register": decks["register"].deal(),
            "operator": operator.name if operator else "",
            "toolset": toolset.name if toolset else "",
            "tool_format": decks["tool_format"].deal() if toolset else "",
            "user_words": words,
            "system_prompt": operator.prompt if operator else "",
            "tools": json.dumps(list(toolset.tools), ensure_ascii=False) if toolset else "",
            "source_messages": "",
            "seed": rng.getrandbits(63),
        }
        digest = hashlib.sha256(f"{seed}:{index}:{sorted(spec.items())}".encode()).hexdigest()[:10]
        specs.append({"spec_id": f"{index:06d}-{digest}", **spec})
    return specs


