"""The deployment a chat happens in: the operator's system prompt and tools, and how a request shows them.

Tools in a non-native notation are written into the system message (`tool_notation`), so the surface a
model trains on varies the way real deployments do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sdf.errors import SdfError


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


def deployment_of(spec: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
    """(the chat's system message, "" for none; its tools field, None for none) for an advice spec.

    Tools in a non-native format are written into the system message, so the surface the model
    trains on varies the way real deployments do.
    """
    tools = json.loads(spec["tools"]) if spec.get("tools") else None
    system = spec.get("system_prompt") or ""
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
