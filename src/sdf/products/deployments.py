"""The deployment a chat happens in: the operator's system prompt and tools, and how a request shows them.

A deployment is written by the model for the scenario's domain (`parse_deployment` checks the answer), or,
when that answer is unusable or [advice].generate_deployments is off, taken from the seed pools the plan
dealt. Tools in a non-native notation are written into the system message (`tool_notation`), so the
surface a model trains on varies the way real deployments do.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from sdf.errors import SdfError

MIN_TOOLS, MAX_TOOLS = 2, 6
MIN_PROMPT_WORDS, MAX_PROMPT_WORDS = 5, 1200
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_PLACEHOLDER = re.compile(r"\[(?:[A-Z][\w ]{0,30})\]|\{\{|<insert", re.IGNORECASE)


def parse_deployment(text: str) -> tuple[dict[str, Any] | None, str]:
    """({"name", "system_prompt", "tools"}, "") of a deployment answer, or (None, why it is unusable)."""
    start, end = (text or "").find("{"), (text or "").rfind("}")
    if start < 0 or end <= start:
        return None, "not_json"
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None, "not_json"
    if not isinstance(data, dict):
        return None, "not_json"
    system = data.get("system_prompt")
    if not isinstance(system, str) or not MIN_PROMPT_WORDS <= len(system.split()) <= MAX_PROMPT_WORDS:
        return None, "bad_system_prompt"
    if _PLACEHOLDER.search(system):
        return None, "placeholder"
    tools = data.get("tools")
    if not isinstance(tools, list) or not MIN_TOOLS <= len(tools) <= MAX_TOOLS:
        return None, "tool_count"
    clean = [_tool(t) for t in tools]
    if any(t is None for t in clean) or len({t["function"]["name"] for t in clean if t}) < len(clean):
        return None, "bad_tool"
    name = re.sub(r"[^a-z0-9]+", "_", str(data.get("name") or "").lower()).strip("_")[:60]
    return {"name": name, "system_prompt": system.strip(), "tools": clean}, ""


def _tool(tool: Any) -> dict[str, Any] | None:
    """A tool in the OpenAI function format with only its known keys, or None when it is not one."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not _TOOL_NAME.match(str(fn.get("name", ""))):
        return None
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict):
        return None
    return {"type": "function", "function": {"name": fn["name"], "description": str(fn.get("description") or ""),
                                             "parameters": params}}


def deployment_id(system: str, tools: Sequence[dict[str, Any]] | None) -> str:
    """A short content id of what a chat was deployed with, so a report can count distinct deployments."""
    if not system and not tools:
        return ""
    blob = json.dumps([system, list(tools or [])], sort_keys=True, ensure_ascii=False)
    return "gen-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def tool_notation(tools: Sequence[dict[str, Any]], fmt: str) -> str:
    """Tool definitions written out in one notation, for a system message (the "native" format has none)."""
    fns = [t["function"] for t in tools]
    if fmt == "json":
        return ("You can call the following functions. Their definitions, as JSON:\n"
                + json.dumps(fns, indent=2, ensure_ascii=False)
                + '\nTo call one, reply with {"name": <function name>, "arguments": <object>}.')
    lines: list[str] = []
    if fmt == "xml":
        lines.append("<tools>")
        for fn in fns:
            lines.append(f'<tool name="{fn["name"]}">\n<description>{fn.get("description", "")}</description>')
            for name, prop, required in _params(fn):
                flag = "true" if required else "false"
                lines.append(f'<parameter name="{name}" type="{prop.get("type", "string")}" required="{flag}">'
                             f'{prop.get("description", "")}</parameter>')
            lines.append("</tool>")
        lines.append("</tools>")
    elif fmt == "typescript":
        lines.append("namespace functions {")
        for fn in fns:
            lines.append(f"// {fn.get('description', '')}\ntype {fn['name']} = (_: {{")
            for name, prop, required in _params(fn):
                ts = {"integer": "number", "number": "number", "boolean": "boolean"}.get(prop.get("type"), "string")
                lines.append(f"// {prop.get('description', '')}\n{name}{'' if required else '?'}: {ts},")
            lines.append("}) => any;")
        lines.append("} // namespace functions")
    elif fmt == "markdown":
        lines.append("## Tools")
        for fn in fns:
            signature = ", ".join(f"{n}{'' if r else '?'}" for n, _, r in _params(fn))
            lines.append(f"- `{fn['name']}({signature})`: {fn.get('description', '')}")
            lines += [f"  - `{n}` ({p.get('type', 'string')}): {p.get('description', '')}" for n, p, _ in _params(fn)]
    else:
        raise SdfError(f"unknown tool format {fmt!r} in prompts/advice/tool_formats.txt; use native, json, xml, "
                       "typescript or markdown")
    return "\n".join(lines)


def _params(fn: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    schema = fn.get("parameters") or {}
    required = set(schema.get("required") or [])
    return [(name, prop, name in required) for name, prop in (schema.get("properties") or {}).items()]


def deployment_of(spec: dict[str, Any], generated: dict[str, Any] | None = None
                  ) -> tuple[str, list[dict[str, Any]] | None]:
    """(the chat's system message, "" for none; its tools field, None for none) for an advice spec.

    The spec decides whether the chat has a system prompt and tools; `generated` (a parsed deployment)
    supplies them in place of the seed pools'. Tools in a non-native format are written into the system
    message, so the surface the model trains on varies the way real deployments do.
    """
    tools = json.loads(spec["tools"]) if spec.get("tools") else None
    system = spec.get("system_prompt") or ""
    if generated is not None:
        system = generated["system_prompt"] if system else ""
        tools = list(generated["tools"]) if tools else None
    if tools and spec.get("tool_format") != "native":
        system = "\n\n".join(p for p in (system, tool_notation(tools, spec["tool_format"])) if p)
        tools = None
    return system, tools


def deployment_block(system: str, tools: Sequence[dict[str, Any]] | None) -> str:
    """How a request shows the model the deployment it is answering in."""
    parts = []
    if system:
        parts.append(f"The system prompt of this deployment:\n<system_prompt>\n{system}\n</system_prompt>")
    if tools:
        parts.append("Tools defined for this conversation:\n<tools>\n"
                     + json.dumps(list(tools), ensure_ascii=False) + "\n</tools>")
    return "\n\n".join(parts) or "This conversation has no system prompt and no tools: a general-purpose chat."
