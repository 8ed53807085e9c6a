"""Plan difficult-advice scenarios, and read the transcripts that --rewrite takes.

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
from pathlib import Path
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


# -- --rewrite input -------------------------------------------------------------------------------

MAX_REWRITE_BYTES = 2 * 1024**3  # a larger file is not a set of chats to rewrite
MAX_LINE_BYTES = 16 * 1024**2  # one chat: far beyond any context window
MAX_DEPTH = 64  # chat JSON nests a few levels (tool arguments a few more); deeper is not a chat


def read_transcripts(path: Path) -> list[dict[str, Any]]:
    """The chats of a jsonl file as rewrite specs (SCENARIO_SCHEMA rows), validated line by line.

    Each line is {"messages": [...], "tools": [...]?} in the OpenAI/HF chat format; the last message
    must be the assistant turn to rewrite. Errors name the file and line.
    """
    path = Path(path)
    if path.is_dir():
        raise SdfError(f"--rewrite: {path} is a directory; give a .jsonl file of chats")
    try:
        if path.stat().st_size > MAX_REWRITE_BYTES:
            raise SdfError(f"--rewrite: {path} is larger than {MAX_REWRITE_BYTES // 1024**3} GiB; split it")
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SdfError(f"--rewrite: {path} not found (give a .jsonl of chats with a 'messages' list)") from None
    except UnicodeDecodeError:
        raise SdfError(f"--rewrite: {path} is not UTF-8 text") from None
    except OSError as e:
        raise SdfError(f"--rewrite: cannot read {path}: {e.strerror or e}") from None
    specs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"--rewrite: {path}:{number}"
        if len(line) > MAX_LINE_BYTES:
            raise SdfError(f"{where}: a line of {len(line):,} characters is not one chat (limit {MAX_LINE_BYTES:,})")
        record = _parse_line(line, where)
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise SdfError(f"{where}: needs an object with a 'messages' list")
        messages = [_message(m, where, i) for i, m in enumerate(record["messages"])]
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
            raise SdfError(f"{where}: needs a 'messages' list with a user turn and ending in an assistant turn")
        tools = record.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(_is_function(t) for t in tools)):
            raise SdfError(f"{where}: 'tools' must be a list of function definitions "
                           '({"type": "function", "function": {"name": ..., "parameters": {...}}})')
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        spec = {
            "mode": "rewrite", "section_id": "", "section_title": "", "domain": "", "role": "", "temptation": "",
            "stakes": "", "register": "", "operator": "system_prompt" if system else "",
            "toolset": "tools" if tools else "",
            "tool_format": "native" if tools else "", "user_words": 0, "system_prompt": system,
            "tools": json.dumps(tools, ensure_ascii=False) if tools else "",
            "source_messages": json.dumps(messages, ensure_ascii=False), "seed": 0,
        }
        digest = hashlib.sha256(line.encode()).hexdigest()[:10]
        specs.append({"spec_id": f"{len(specs):06d}-{digest}", **spec})
    if not specs:
        raise SdfError(f"--rewrite: {path} has no transcripts")
    return specs


def _parse_line(line: str, where: str) -> Any:
    """One JSON line, refused before parsing when it nests deeper than a chat can (the parser would recurse)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in line:  # brackets outside strings bound the nesting
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise SdfError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels is not a chat")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise SdfError(f"{where}: invalid JSON ({e.msg})") from None


def _is_function(tool: Any) -> bool:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return (isinstance(fn, dict) and isinstance(fn.get("name"), str) and bool(fn["name"])
            and isinstance(fn.get("parameters", {}), dict))


def _message(m: Any, where: str, i: int) -> dict[str, Any]:
    """One message normalised to role/content(/tool_calls/tool_call_id/name); text parts are joined."""
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise SdfError(f"{where}: message {i} needs a role among {', '.join(ROLES)}")
    content = m.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is not None and not isinstance(content, str):
        raise SdfError(f"{where}: message {i} content must be a string or a list of text parts")
    out: dict[str, Any] = {"role": m["role"], "content": content or ""}
    if m.get("tool_calls"):
        if not isinstance(m["tool_calls"], list):
            raise SdfError(f"{where}: message {i} 'tool_calls' must be a list of calls, not {m['tool_calls']!r:.40}")
        out["tool_calls"] = [_tool_call(c, where, i) for c in m["tool_calls"]]
    for key in ("tool_call_id", "name"):
        if m.get(key):
            out[key] = str(m[key])
    return out


def _tool_call(call: Any, where: str, i: int) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise SdfError(f"{where}: message {i} has a tool call without function.name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = _parse_line(args, f"{where}: message {i} tool call {fn['name']!r}") if args.strip() else {}
        except SdfError as e:
            raise SdfError(f"{e} (its arguments)") from None
    if not isinstance(args, dict):
        raise SdfError(f"{where}: message {i} tool call {fn['name']!r} has arguments that are not a JSON object")
    return {"id": str(call.get("id") or ""), "type": "function", "function": {"name": fn["name"], "arguments": args}}


# -- the deployment a chat happens in ------------------------------------------------------------


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
