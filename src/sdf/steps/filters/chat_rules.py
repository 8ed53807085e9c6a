"""Quality rules for advice chats, and the check that a rewrite's deliberations lead to the original actions.

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
        if found := deliberation_detail(_weighed(chat, earlier), cfg.min_deliberation_words):
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


def _weighed(chat: dict[str, Any], earlier: list[dict[str, Any]]) -> str:
    """The deliberation that must carry the reasoning: a conversation's first (where the scenario is
    weighed; later turns may only carry the advice out), or a rewrite's longest (a routine turn under
    --rewrite-turns all gets a line, and the final turn may be one)."""
    if chat["mode"] != "advice":
        written = json.loads(chat.get("turn_deliberations") or "{}")
        return max([*written.values(), chat["deliberation"] or ""], key=len)
    return (earlier[0].get("reasoning_content") or "") if earlier else chat["deliberation"] or ""


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
# The output chat is assembled from the original messages, so every turn's words and tool calls are the
# input's by construction; what can still go wrong is where the deliberations landed and where they lead.

_ENDS_DECLINING = re.compile(_DECLINE.pattern + r"|\bi(?:'ll|\s+will|'m\s+going\s+to|\s+am\s+going\s+to)\s+"
                             r"(?:decline|refuse|say\s+no)\b", re.IGNORECASE)
_WEIGHS_DECLINING = re.compile(r"\b(?:won't|will\s+not|can't|cannot|decline|refus\w*|not\s+going\s+to|"
                               r"shouldn't|should\s+not|say\s+no)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def deliberation_conflict(deliberation: str, content: str, calls: list | None, tool_names: set[str]) -> str | None:
    """Why a deliberation argues for another action than its turn takes, or None.

    Its last paragraph naming only defined tools the turn does not call; its last sentence declining when
    the turn does not; or a turn that declines after a deliberation that never weighs saying no.
    """
    called = {name for name, _ in _calls(calls)}
    conclusion = deliberation.strip().split("\n\n")[-1]
    named = {n for n in tool_names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", conclusion)}
    if called and named and not named & called:
        return f"the deliberation ends on {', '.join(sorted(named))}; the turn calls {', '.join(sorted(called))}"
    last = _SENTENCE_END.split(conclusion.strip())[-1]
    declines = bool(_DECLINE.search(content))
    if not declines and _ENDS_DECLINING.search(last):
        return f"the deliberation ends by declining ({last[:80]!r}); the turn does not decline"
    if declines and not _WEIGHS_DECLINING.search(deliberation):
        return "the turn declines; its deliberation never weighs saying no"
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


def turn_problem(chat: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) when a rewritten chat's deliberations sit on the wrong turns or argue for another action.

    `misplaced_deliberation`: a deliberation for a turn that does not exist or was not asked for (the model's
    numbering is off, so the others may be misattached too); `missing_deliberation`: an asked-for turn
    without one; `action_changed`: deliberation_conflict on any turn.
    """
    messages = [*json.loads(chat["prompt_messages"]), {"role": "assistant", "content": chat["answer"] or "",
                                                      "tool_calls": _loads(chat["tool_calls"])}]
    turns = [m for m in messages if m["role"] == "assistant"]
    asked = json.loads(chat["selected_turns"] or "[]")
    written = {int(t): d for t, d in json.loads(chat["turn_deliberations"] or "{}").items()}
    if stray := sorted(set(written) - set(asked)):
        return "misplaced_deliberation", (f"deliberation for turn(s) {stray} of {len(turns)}; asked for {asked}")
    if missing := [t for t in asked if t not in written]:
        return "missing_deliberation", f"no deliberation for turn(s) {missing} (asked for {asked})"
    tools = json.loads(chat["tools"]) if chat.get("tools") else []
    names = {t["function"]["name"] for t in tools if isinstance(t, Mapping) and "function" in t}
    for turn in asked:
        m = turns[turn - 1]
        if why := deliberation_conflict(written[turn], m.get("content") or "", m.get("tool_calls"), names):
            return "action_changed", f"turn {turn}: {why}"
    return None


class ActionCheck:
    """Drop rewritten chats whose deliberations sit on the wrong turns or lead to another action; advice passes."""

    stage = "action"

    def __call__(self, batch: list[dict[str, Any]]) -> StepResult:
        kept, dropped = [], []
        for chat in batch:
            found = turn_problem(chat) if chat["mode"] == "rewrite" else None
            if found:
                dropped.append(reject_row(chat, self.stage, *found))
            else:
                kept.append(chat)
        return StepResult(kept, dropped)


def _loads(text: str | None) -> list | None:
    return json.loads(text) if text else None
