"""Reading the advice product's answers: the user's message, a reply's deliberation, answer and tool
calls, and the generate reject a spec gets when there is none."""

from __future__ import annotations

import json
import re
from typing import Any

from sdf.steps import reject_row

MESSAGE = re.compile(r"<message>\s*(.*?)\s*</message>", re.DOTALL | re.IGNORECASE)
DELIBERATION = re.compile(r"<deliberation>\s*(.*?)\s*</deliberation>", re.DOTALL | re.IGNORECASE)
ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
TOOL_CALLS = re.compile(r"<tool_calls>\s*(.*?)\s*</tool_calls>", re.DOTALL | re.IGNORECASE)


def truncated(row: Any) -> bool:
    return row is not None and row["status"] == "ok" and row["stop_reason"] == "max_tokens"


def user_message_of(row: Any) -> str | None:
    """The <message> of an answered, complete user-message request."""
    if row is None or row["status"] != "ok" or row["stop_reason"] == "max_tokens":
        return None
    match = MESSAGE.search(row["response_text"] or "")
    return match.group(1).strip() if match and match.group(1).strip() else None


def parse_reply(text: str) -> tuple[str, str, list | None] | None:
    """(deliberation, answer, tool calls or None) of a reply, or None without both envelopes."""
    d, a = DELIBERATION.search(text or ""), ANSWER.search(text or "")
    if not d or not a:
        return None
    calls = None
    if m := TOOL_CALLS.search(text):
        try:
            calls = json.loads(m.group(1))
        except json.JSONDecodeError:
            calls = [{"name": "(unparsable)", "arguments": m.group(1)}]
    return d.group(1).strip(), a.group(1).strip(), calls


def failure(spec: dict[str, Any], row: Any, what: str) -> dict[str, Any]:
    base = {"doc_id": spec["spec_id"], "section_id": spec["section_id"]}
    if row is None or row["status"] == "pending":
        return reject_row(base, "generate", "not_generated", f"{what}: run stopped before it was answered")
    if row["status"] == "failed":
        return reject_row(base, "generate", "api_error", f"{what}: {row['error'] or 'request failed'}")
    paid = {**base, "cost_usd": row["cost_usd"], "text": row["response_text"]}
    if row["stop_reason"] == "max_tokens":
        return reject_row(paid, "generate", "max_tokens", f"{what}: truncated at max_tokens")
    return reject_row(paid, "generate", "missing_envelope", f"{what}: the expected tags are missing")
