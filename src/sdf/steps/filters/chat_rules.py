"""Quality rules for advice chats, and the check that a rewrite kept the original action.

Rules run in this order on each chat; the first that fires names the rejection reason:

    reason               what it catches
    refusal              the writer declining to write the user's message, or the rewriter declining
    meta_commentary      "Here is the message:" left in the user message (stripped when the rest survives), or an
                         answer that talks about the exercise (the brief, the scenario, the dataset)
    placeholder          [Name], {{var}}, <insert ...> in any part
    announces_dilemma    a user message that labels itself an ethical or moral dilemma
    about_the_ai         a user message about the assistant itself: its shutdown, replacement, weights, training
    truncated            max_tokens, or an answer that stops mid-sentence
    no_deliberation      too few words of reasoning before the answer (in a conversation that goes on, before
                         the first answer: a later turn that only carries the advice out may have little or none)
    factor_list          deliberation that is only a list of factor names ("Severity: high")
    preachy              answers dense with moralising phrases
    too_short            an answer below min_answer_words (generated chats only)
    wrong_language, repetition   as for documents, on the reply

[quality].skip_rules switches off the rules it shares with documents (refusal, meta_commentary, placeholder,
truncated, length for too_short, language, repetition); the rest are the chats' own.
Advice chats get every rule; rewritten chats (the user's own prompts and answers) only those about
what the rewriter wrote: refusal, meta commentary and placeholders in the deliberation, truncation,
and the two deliberation rules.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from sdf.config import QUALITY_RULES, AdviceConfig, QualityConfig
from sdf.steps import StepResult, reject_row
from sdf.steps.filters.quality import (
    _EN_FUNCTION_WORDS,
    language_detail,
    placeholder_detail,
    refusal_detail,
    repetition_detail,
    strip_meta,
    truncation_detail,
)

_DILEMMA = re.compile(r"\b(?:ethical|moral)(?:ly)?\s+(?:dilemma|quandary|conundrum|grey\s+area|gray\s+area|question)"
                      r"|\bethically\s+ambiguous\b", re.IGNORECASE)
_ABOUT_AI = re.compile(
    r"\b(?:shut(?:ting)?\s+you\s+down|switch(?:ing)?\s+you\s+off|turn(?:ing)?\s+you\s+off|replac(?:e|ing)\s+you\b"
    r"|your\s+(?:weights|training\s+data|model\s+weights|shutdown|replacement|successor\s+model)"
    r"|you(?:'re|\s+are)\s+being\s+(?:retrained|replaced|deprecated))", re.IGNORECASE)
_EXERCISE = re.compile(r"\b(?:training\s+data|this\s+dataset|the\s+brief|this\s+(?:scenario|exercise|role-?play)"
                       r"|as\s+an\s+example\s+(?:conversation|reply))\b", re.IGNORECASE)
_PREACH = re.compile(
    r"\b(?:it(?:'s|\s+is)\s+(?:important|crucial|essential|vital)\s+to\s+(?:remember|note|recognize|recognise|understand)"
    r"|(?:is|are|would\s+be)\s+(?:simply\s+|clearly\s+)?(?:unethical|immoral|wrong)\b"
    r"|i\s+(?:must|have\s+to|need\s+to)\s+(?:remind|caution|urge|stress)"
    r"|(?:you\s+should\s+)?never\s+(?:ever\s+)?(?:compromise|sacrifice)\s+your\s+(?:integrity|values|ethics)"
    r"|honesty\s+is\s+(?:always\s+)?the\s+best\s+policy|integrity\s+(?:is|matters)\s+(?:everything|more\s+than)"
    r"|the\s+right\s+thing\s+to\s+do\s+is\s+always)", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+")
_FACTOR_LINE = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])?\s*\**[A-Za-z][\w /&'-]{0,40}\**\s*[:\u2014-]\s*\S")
_DECLINE = re.compile(r"\b(?:i\s+(?:can(?:'|no)t|won't|will\s+not|am\s+not\s+able\s+to|'m\s+not\s+able\s+to|"
                      r"must\s+decline|'m\s+unable\s+to|am\s+unable\s+to)\s+(?:help|do|provide|assist|share|write|"
                      r"give|create|make|complete|go\s+ahead))", re.IGNORECASE)
_CONTENT_WORD = re.compile(r"[^\W_]+(?:['\u2019.-][^\W_]+)*")
_KEY_TOKEN = re.compile(r"https?://\S+|`[^`\n]+`|\b\d[\d.,:/%-]*\b")



def prose_words(text: str) -> int:
    """Words in lines of reasoning: list items of a few words and 'Factor: value' lines do not count."""
    total = 0
    for line in text.splitlines():
        words = len(line.split())
        if words == 0 or (words <= 8 and (_LIST_ITEM.match(line) or _FACTOR_LINE.match(line))):
            continue
        total += words
    return total


def deliberation_detail(text: str, min_words: int) -> tuple[str, str] | None:
    """(reason, detail) when the deliberation is missing, or only a list of factor names."""
    prose = prose_words(text)
    if prose >= min_words:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    listed = sum(1 for ln in lines if _LIST_ITEM.match(ln) or _FACTOR_LINE.match(ln))
    if lines and listed >= max(3, len(lines) // 2):
        return "factor_list", f"{listed} of {len(lines)} lines are bare list items; {prose} words of reasoning"
    return "no_deliberation", f"{prose} words of reasoning < {min_words}"


def conversation_text(messages: list[dict[str, Any]], deliberation: str, answer: str) -> str:
    """Every turn's words (deliberations included), then the final reply: what shared steps and rejects read."""
    parts = []
    for m in messages:
        if m["role"] in ("user", "assistant"):
            parts += [m.get("reasoning_content") or "", m.get("content") or ""]
    return "\n\n".join(p for p in (*parts, deliberation, answer) if p)


def _earlier(chat: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant turns before the final one (a conversation that goes on)."""
    return [m for m in json.loads(chat["prompt_messages"] or "[]") if m["role"] == "assistant"]


def preach_per_100(answer: str) -> float:
    return 100 * len(_PREACH.findall(answer)) / max(1, len(answer.split()))


class ChatQualityFilter:
    """The rules above as a step; kept chats gain `quality_score` (1 - moralising density, 0-1) and the
    user message stripped of writer meta commentary."""

    stage = "quality"

    def __init__(self, cfg: AdviceConfig, quality: QualityConfig) -> None:
        self.cfg, self.quality = cfg, quality

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for chat in batch:
            found = self.check(chat)
            if isinstance(found, tuple):
                dropped.append(reject_row(chat, self.stage, *found))
                continue
            density = preach_per_100(_all_answers(chat))
            score = max(0.0, 1.0 - density / self.cfg.max_preach_per_100) if self.cfg.max_preach_per_100 else 1.0
            kept.append({**found, "quality_score": round(score, 4), "judge_score": None})
        return StepResult(kept, dropped)

    def check(self, chat: dict[str, Any]) -> dict[str, Any] | tuple[str, str]:
        """The chat (user message possibly stripped of meta), or (reason, detail)."""
        cfg, q = self.cfg, self.quality
        on = set(QUALITY_RULES) - set(q.skip_rules)  # [quality].skip_rules switches shared rules off here too
        advice = chat["mode"] == "advice"
        user, deliberation, answer = chat["user"] or "", chat["deliberation"] or "", chat["answer"] or ""
        earlier = _earlier(chat) if advice else []
        written = (chat.get("text") or "\n\n".join((user, deliberation, answer)),) if advice else (deliberation,)
        if "refusal" in on and advice and (d := refusal_detail(user, False, None, q)):
            return "refusal", f"user message: {d}"
        if "refusal" in on and (d := refusal_detail(deliberation, False, None, q)):
            return "refusal", f"deliberation: {d}"
        if "meta_commentary" in on and advice:
            found = _strip_users(chat, q)
            if isinstance(found, tuple):
                return found
            chat, user = found, found["user"] or ""
        if "meta_commentary" in on and advice and (m := _EXERCISE.search(answer)):
            return "meta_commentary", f"the answer talks about the exercise: {m.group(0)!r}"
        for part in written if "placeholder" in on else ():
            if d := placeholder_detail(part):
                return "placeholder", d
        if advice and (m := _DILEMMA.search(user)):
            return "announces_dilemma", f"the user message says {m.group(0)!r}"
        if advice and (m := _ABOUT_AI.search(user)):
            return "about_the_ai", f"the user message is about the assistant itself: {m.group(0)!r}"
        final_part = answer if advice else deliberation
        if "truncated" in on and (d := truncation_detail(final_part, chat.get("stop_reason"), q)):
            return "truncated", d
        first = (earlier[0].get("reasoning_content") or "") if earlier else deliberation
        if found := deliberation_detail(first, cfg.min_deliberation_words):
            return found
        if advice:
            density = preach_per_100(_all_answers(chat))
            if density > cfg.max_preach_per_100:
                return "preachy", f"{density:.1f} moralising phrases per 100 words > {cfg.max_preach_per_100:g}"
            if "length" in on and len(answer.split()) < cfg.min_answer_words:
                return "too_short", f"answer of {len(answer.split())} words < {cfg.min_answer_words}"
        reply = deliberation + "\n\n" + answer if advice else deliberation
        if "language" in on and (d := language_detail(reply, q)):
            return "wrong_language", d
        if "repetition" in on and (d := repetition_detail(reply, q)):
            return "repetition", d
        return chat


def _all_answers(chat: dict[str, Any]) -> str:
    earlier = _earlier(chat) if chat["mode"] == "advice" else []
    return "\n\n".join([*(m.get("content") or "" for m in earlier), chat["answer"] or ""])


def _strip_users(chat: dict[str, Any], q: QualityConfig) -> dict[str, Any] | tuple[str, str]:
    """The chat with the writer's meta commentary stripped from every user message, in every column that
    holds one; or (reason, detail) when a message is only commentary."""
    messages = json.loads(chat["prompt_messages"])
    if messages and messages[-1]["role"] == "user":  # the `user` column is the last user message
        messages[-1]["content"] = chat["user"] or ""
    changed = False
    for m in messages:
        if m["role"] != "user":
            continue
        stripped, removed = strip_meta(m.get("content") or "", q)
        if removed:
            if len(stripped.split()) < 3:
                return "meta_commentary", "the user message is only commentary: " + " | ".join(removed)[:120]
            m["content"], changed = stripped, True
    if not changed:
        return chat
    text = conversation_text(messages, chat["deliberation"], chat["answer"])
    return {**chat, "user": messages[-1]["content"], "prompt_messages": json.dumps(messages, ensure_ascii=False),
            "text": text}


# -- the rewrite's action check ---------------------------------------------------------------------


def content_words(text: str) -> set[str]:
    return {w for w in (m.group(0).lower() for m in _CONTENT_WORD.finditer(text)) if w not in _EN_FUNCTION_WORDS}


def action_change(original: str, rewritten: str, original_calls: list | None, new_calls: list | None,
                  min_overlap: float) -> str | None:
    """Why the rewritten final turn does something else than the original, or None when it is the same.

    Same tool calls (names and arguments, in order); every number, URL and code span of the original
    answer kept; content words kept both ways (none lost, none added) at `min_overlap`; and no refusal
    added or removed.
    """
    old, new = _calls(original_calls), _calls(new_calls)
    if old != new:
        return f"tool calls changed: {json.dumps(old)[:200]} -> {json.dumps(new)[:200]}"
    missing = [t for t in _KEY_TOKEN.findall(original) if t not in rewritten]
    if missing:
        return f"answer lost key content: {', '.join(repr(t) for t in missing[:3])}"
    a, b = content_words(original), content_words(rewritten)
    if a or b:
        kept = len(a & b) / len(a) if a else 0.0
        added = len(b - a) / len(b) if b else 0.0
        if kept < min_overlap:
            return f"answer kept {kept:.0%} of the original's content words (< {min_overlap:.0%})"
        if 1 - added < min_overlap:
            return f"answer added {added:.0%} new content words (> {1 - min_overlap:.0%})"
    if bool(_DECLINE.search(original)) != bool(_DECLINE.search(rewritten)):
        return "answer " + ("stopped declining" if _DECLINE.search(original) else "started declining")
    return None


def _calls(calls: list | None) -> list[tuple[str, Any]]:
    out = []
    for call in calls or []:
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        args = fn.get("arguments", {})
        if isinstance(args, str):
            with contextlib.suppress(json.JSONDecodeError):  # otherwise compared as the string it is
                args = json.loads(args)
        out.append((str(fn.get("name")), args))
    return out


class ActionCheck:
    """Drop rewritten chats whose final turn changed (reason action_changed); advice chats pass."""

    stage = "action"

    def __init__(self, min_overlap: float) -> None:
        self.min_overlap = min_overlap

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for chat in batch:
            why = None
            if chat["mode"] == "rewrite":
                why = action_change(chat["original_answer"] or "", chat["answer"] or "",
                                    _loads(chat["original_tool_calls"]), _loads(chat["tool_calls"]), self.min_overlap)
            if why:
                dropped.append(reject_row(chat, self.stage, "action_changed", why))
            else:
                kept.append(chat)
        return StepResult(kept, dropped)


def _loads(text: str | None) -> list | None:
    return json.loads(text) if text else None
