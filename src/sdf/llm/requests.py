"""Requests from plain inputs: the document, brainstorm and judge prompts, and their cost estimate.

Nothing here needs a run directory: a spec or document dict, its `Section`, the catalog and the
settings are enough, so `sdf preview` and `sdf plan` render exactly what `sdf build` would send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sdf.config import JudgeConfig, LLMConfig, PlanConfig, Price
from sdf.llm.ledger import LLMRequest
from sdf.source.catalog import Catalog, document_prompt
from sdf.source.constitution import Section, estimate_tokens
from sdf.source.plan import TOKENS_PER_WORD

IDEA_TOKENS = 60  # one brainstormed idea, a sentence or two
JUDGE_TOKENS = 350  # five short justifications and the score
ENVELOPE_TOKENS = 8  # the <document></document> tags around each answer
BRAINSTORM_MAX_TOKENS = 2048

IDEA = re.compile(r"<idea>\s*(.*?)\s*</idea>", re.DOTALL | re.IGNORECASE)


def document_request(catalog: Catalog, spec: Mapping[str, Any], section: Section, system: str, llm: LLMConfig,
                     max_tokens: int | None = None) -> LLMRequest:
    return LLMRequest(
        purpose="generate",
        spec_id=spec["spec_id"],
        model=llm.model,
        system=system,
        prompt=document_prompt(catalog, dict(spec), section.text, " > ".join(section.path)),
        max_tokens=max_tokens or llm.max_tokens,
        temperature=llm.temperature,
    )


def brainstorm_request(catalog: Catalog, section: Section, genre_name: str, existing: Sequence[str], system: str,
                       llm: LLMConfig, ideas_per_round: int) -> LLMRequest:
    genre = catalog.genre(genre_name)
    prompt = catalog.render(
        "brainstorm",
        section_title=section.title,
        section_path=" > ".join(section.path),
        section_text=section.text,
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        n=ideas_per_round,
        existing="\n".join(f"- {i}" for i in existing) or "(none yet)",
    )
    return LLMRequest("brainstorm", None, llm.model, system, prompt, BRAINSTORM_MAX_TOKENS, llm.temperature)


def new_ideas(text: str | None, existing: Sequence[str]) -> list[str]:
    """The <idea>s of a brainstorm answer that are not already listed (compared loosely)."""
    seen = {_norm(i) for i in existing}
    fresh = []
    for idea in IDEA.findall(text or ""):
        idea = " ".join(idea.split())
        if idea and _norm(idea) not in seen:
            seen.add(_norm(idea))
            fresh.append(idea)
    return fresh


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


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


def estimate_usage(catalog: Catalog, sections: Mapping[str, Section], specs: Sequence[Mapping[str, Any]],
                   system: str, llm: LLMConfig, plan: PlanConfig, judge: JudgeConfig, price: Price | None) -> dict:
    """Tokens and cost of generating `specs`, from the rendered prompts; no API is called.

    The first request writes the prompt cache and the rest read it (the engine sends one request
    alone before opening concurrency for exactly this reason). Output is the target length. Cache
    writes are priced at the TTL each mode would use ([llm].cache_ttl, else 1h for batches and 5m
    for messages), as the engine prices the answers.
    Brainstorm and judge requests, when enabled, are estimated under "brainstorm" and "judge".
    """
    system_tokens = estimate_tokens(system)
    prompts = [estimate_tokens(document_request(catalog, s, sections[s["section_id"]], system, llm).prompt)
               for s in specs]
    outputs = [round(s["target_words"] * TOKENS_PER_WORD) + ENVELOPE_TOKENS for s in specs]
    usage = _usage(system_tokens, prompts, outputs, price, llm)
    if plan.brainstorm:
        pairs = sorted({(s["section_id"], s["genre"]) for s in specs})
        idea_tokens = IDEA_TOKENS * plan.ideas_per_round
        brainstorm = [
            estimate_tokens(brainstorm_request(catalog, sections[sid], g, [], system, llm,
                                               plan.ideas_per_round).prompt) + idea_tokens * r
            for sid, g in pairs for r in range(plan.brainstorm_rounds)
        ]
        usage["brainstorm"] = _usage(system_tokens, brainstorm, [idea_tokens] * len(brainstorm), price, llm)
    if judge.enabled:
        judged = [
            estimate_tokens(judge_request(catalog, {**s, "doc_id": "", "text": ""}, sections[s["section_id"]],
                                          system, judge, llm).prompt) + out
            for s, out in zip(specs, outputs, strict=True)
        ]
        usage["judge"] = _usage(system_tokens, judged, [JUDGE_TOKENS] * len(judged), price, llm)
    return usage


def _usage(system_tokens: int, prompts: Sequence[int], outputs: Sequence[int], price: Price | None,
           llm: LLMConfig) -> dict:
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
