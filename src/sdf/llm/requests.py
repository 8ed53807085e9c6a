"""Requests from plain inputs: the document, ideas, pool-extension and judge prompts, and their cost estimate.

Nothing here needs a run directory: a spec or document dict, its `Section`, the catalog and the
settings are enough, so `sdf preview` and `sdf plan` render exactly what `sdf build` would send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sdf.config import JudgeConfig, LLMConfig, PlanConfig, Price
from sdf.llm.ledger import LLMRequest
from sdf.source.brief import document_prompt, document_prompt_chars, expand_prompt, ideas_prompt
from sdf.source.catalog import Catalog
from sdf.source.constitution import Section, estimate_tokens
from sdf.source.plan import TOKENS_PER_WORD

IDEA_TOKENS = 90  # one idea, two to four sentences, in its tags
ITEM_TOKENS = 24  # one pool item, a phrase in its tags
JUDGE_TOKENS = 350  # five short justifications and the score
ENVELOPE_TOKENS = 8  # the <document></document> tags around each answer

IDEA = re.compile(r"<idea\s+n=\"?(\d+)\"?\s*>\s*(.*?)\s*</idea>", re.DOTALL | re.IGNORECASE)
UNSUITABLE_IDEA = re.compile(r"^\W*unsuitable\b\W*", re.IGNORECASE)
UNSUITABLE_DOC = re.compile(r"<unsuitable>\s*(.*?)\s*(?:</unsuitable>|$)", re.DOTALL | re.IGNORECASE)


def document_request(catalog: Catalog, spec: Mapping[str, Any], section: Section, system: str, llm: LLMConfig,
                     max_tokens: int | None = None) -> LLMRequest:
    return LLMRequest(
        purpose="generate",
        spec_id=spec["spec_id"],
        model=llm.model,
        system=system,
        prompt=document_prompt(catalog, spec, section),
        max_tokens=max_tokens or llm.max_tokens,
        temperature=llm.temperature,
    )


def ideas_request(catalog: Catalog, specs: Sequence[Mapping[str, Any]], sections: Mapping[str, Section],
                  taken: Mapping[str, Sequence[str]], system: str, llm: LLMConfig) -> LLMRequest:
    """One idea for each of `specs` (a run of consecutive specs, or one re-dealt spec)."""
    prompt = ideas_prompt(catalog, specs, sections, taken)
    return LLMRequest("ideas", specs[0]["spec_id"], llm.model, system, prompt,
                      IDEA_TOKENS * 2 * len(specs) + 256, llm.temperature)


def expand_request(catalog: Catalog, pool: str, kind: str, count: int, system: str, llm: LLMConfig) -> LLMRequest:
    """New items for one (pool, kind) list of the catalog."""
    return LLMRequest("expand", None, llm.model, system, expand_prompt(catalog, pool, kind, count),
                      ITEM_TOKENS * 2 * count + 256, llm.temperature)


def parse_ideas(text: str | None, count: int) -> dict[int, str]:
    """{brief number: idea} of an ideas answer; an unsuitable brief maps to "UNSUITABLE: <reason>"."""
    ideas = {}
    for number, idea in IDEA.findall(text or ""):
        n, idea = int(number), " ".join(idea.split())
        if 1 <= n <= count and idea and n not in ideas:
            ideas[n] = idea
    return ideas


def unsuitable_reason(idea: str) -> str | None:
    """The reason of an idea that says its brief cannot work, or None."""
    if UNSUITABLE_IDEA.match(idea):
        return UNSUITABLE_IDEA.sub("", idea, count=1).strip() or "no reason given"
    return None


def unsuitable_document(text: str | None) -> str | None:
    """The reason of a document answer that declined its brief (and holds no document), or None."""
    if not text or "<document>" in text.lower():
        return None
    match = UNSUITABLE_DOC.search(text)
    return (" ".join(match.group(1).split())[:300] or "no reason given") if match else None


def judge_request(catalog: Catalog, doc: Mapping[str, Any], section: Section, system: str, judge: JudgeConfig,
                  llm: LLMConfig) -> LLMRequest:
    genre = catalog.genre(doc["genre"])
    prompt = catalog.render(
        "judge",
        section_title=section.title,
        section_text=section.text,
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        fiction="yes" if genre.fiction else "no",
        document=doc["text"],
    )
    return LLMRequest("judge", doc["doc_id"], judge.model or llm.model, system, prompt, judge.max_tokens,
                      llm.temperature)


def estimate_usage(catalog: Catalog, sections: Mapping[str, Section], specs: Iterable[Mapping[str, Any]],
                   system: str, llm: LLMConfig, plan: PlanConfig, judge: JudgeConfig, price: Price | None,
                   expansions: Sequence[tuple[str, str]] = ()) -> dict:
    """Tokens and cost of generating `specs`, from the rendered prompts' lengths; no API is called.

    `specs` may be a stream (`sdf plan` at scale reads them back batch by batch): one pass, keeping only
    token counts. The first request writes the prompt cache and the rest read it (the engine sends one
    request alone before opening concurrency for exactly this reason). Output is the target length.
    Cache writes are priced at the TTL each mode would use ([llm].cache_ttl, else 1h for batches and 5m
    for messages), as the engine prices the answers. The pool extensions still to send (`expansions`),
    the ideas requests and the judge, when enabled, are estimated under "expand", "ideas" and "judge".
    Re-deals of unsuitable briefs are not foreseen.
    """
    system_tokens = estimate_tokens(system)
    prompts: list[int] = []
    outputs: list[int] = []
    judged: list[int] = []
    ideas: list[int] = []
    idea_outputs: list[int] = []
    chunk: list[Mapping[str, Any]] = []

    def ask_ideas() -> None:
        ideas.append(estimate_tokens(ideas_prompt(catalog, chunk, sections, {})))
        idea_outputs.append(IDEA_TOKENS * len(chunk))
        chunk.clear()

    for s in specs:
        section = sections[s["section_id"]]
        prompts.append(-(-document_prompt_chars(catalog, s, section) // 4))  # estimate_tokens, unrendered
        outputs.append(round(s["target_words"] * TOKENS_PER_WORD) + ENVELOPE_TOKENS)
        if judge.enabled:
            judged.append(estimate_tokens(judge_request(catalog, {**s, "doc_id": "", "text": ""}, section, system,
                                                        judge, llm).prompt) + outputs[-1])
        if plan.brainstorm:
            chunk.append(s)
            if len(chunk) == plan.ideas_per_request:
                ask_ideas()
    if chunk:
        ask_ideas()
    usage = usage_of(system_tokens, prompts, outputs, price, llm)
    if expansions:
        asked = [expand_request(catalog, p, k, plan.pool_items, system, llm) for p, k in expansions]
        usage["expand"] = usage_of(system_tokens, [estimate_tokens(r.prompt) for r in asked],
                                 [ITEM_TOKENS * plan.pool_items] * len(asked), price, llm)
    if ideas:
        usage["ideas"] = usage_of(system_tokens, ideas, idea_outputs, price, llm)
    if judge.enabled:
        usage["judge"] = usage_of(system_tokens, judged, [JUDGE_TOKENS] * len(judged), price, llm)
    return usage


def usage_of(system_tokens: int, prompts: Sequence[int], outputs: Sequence[int], price: Price | None,
             llm: LLMConfig) -> dict:
    """Tokens and cost of `prompts` sharing one cached system prompt: the one estimate every product uses.
    The first request writes the cache at the TTL the mode would use (`llm.ttl(batch=...)`); the rest read it."""
    n = len(prompts)
    usage: dict[str, Any] = {
        "requests": n,
        "input_tokens": sum(prompts),
        "cache_creation_tokens": system_tokens if n else 0,
        "cache_read_tokens": system_tokens * max(0, n - 1),
        "output_tokens": sum(outputs),
    }
    for key, batch in (("cost_usd", False), ("batch_cost_usd", True)):
        usage[key] = (
            price.cost(usage["input_tokens"], usage["output_tokens"], usage["cache_creation_tokens"],
                       usage["cache_read_tokens"], batch,
                       usage["cache_creation_tokens"] if llm.ttl(batch=batch) == "1h" else 0)
            if price else None
        )
    return usage
