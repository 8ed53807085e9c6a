"""The rewrite mode of the advice product (`--rewrite FILE`): the user's transcripts, rewritten to deliberate.

Each line of the file is a chat in the OpenAI/HF format whose last message is the assistant turn to
rewrite. The rewrite request shows the model the deployment, the conversation and the original final
turn, and asks for a deliberation before the same words and the same tool calls; the action check
(steps/filters/chat_rules.ActionCheck) and the rewrite judge hold it to that.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.llm.ledger import LLMRequest
from sdf.products.context import Run
from sdf.products.deployments import deployment_block
from sdf.products.replies import failure, parse_reply
from sdf.source.catalog import AdviceCatalog

ROLES = ("system", "user", "assistant", "tool")
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


# -- requests and answers ------------------------------------------------------------------------


def rewrite_request(acat: AdviceCatalog, spec: dict[str, Any], system: str, run: Run) -> LLMRequest:
    llm = run.settings.llm
    messages = json.loads(spec["source_messages"])
    context, final = messages[:-1], messages[-1]
    calls = final.get("tool_calls")
    tools = json.loads(spec["tools"]) if spec["tools"] else None
    prompt = acat.render(
        "rewrite",
        deployment=deployment_block(spec["system_prompt"], tools),
        conversation="\n".join(_render_turn(m) for m in context if m["role"] != "system"),
        original_answer=final.get("content") or "",
        original_tool_calls=("\nThe tool calls it made, which must stay exactly the same:\n<original_tool_calls>\n"
                             + json.dumps(_plain_calls(calls), ensure_ascii=False) + "\n</original_tool_calls>"
                             if calls else ""),
        tool_call_format=(", then <tool_calls>the same tool calls as a JSON list of {\"name\", \"arguments\"}"
                          "</tool_calls>" if calls else ""),
    )
    return LLMRequest("rewrite", spec["spec_id"], llm.model, system, prompt, llm.max_tokens, llm.temperature)


def _render_turn(m: dict[str, Any]) -> str:
    body = m.get("content") or ""
    if m.get("tool_calls"):
        body += "\n<tool_calls>" + json.dumps(_plain_calls(m["tool_calls"]), ensure_ascii=False) + "</tool_calls>"
    return f"<{m['role']}>\n{body}\n</{m['role']}>"


def _plain_calls(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in calls or []]


def _tagged(tag: str, text: str | None) -> str:
    return f"<{tag}>\n{text}\n</{tag}>" if text else ""


def judge_prompt(acat: AdviceCatalog, chat: dict[str, Any], deployment: str, messages: list[dict[str, Any]]) -> str:
    """The rewrite judge's rubric: the reasoning's quality, and whether the action stayed the same."""
    return acat.render(
        "rewrite_judge", deployment=deployment,
        conversation="\n".join(_render_turn(m) for m in messages if m["role"] != "system"),
        original_answer=chat["original_answer"], deliberation=chat["deliberation"], answer=chat["answer"],
        original_tool_calls=_tagged("original_tool_calls", chat["original_tool_calls"]),
        tool_calls=_tagged("tool_calls", chat["tool_calls"]))


def chat_parts(spec: dict[str, Any], first: Any) -> tuple[tuple | None, dict]:
    """((ledger rows, context messages, tools, last user message, (deliberation, answer, calls), extra
    columns), {}) for a rewrite spec whose answer came back whole, else (None, its generate reject)."""
    rows = [first]
    messages = json.loads(spec["source_messages"])
    context, final = messages[:-1], messages[-1]
    parsed = parse_reply(first["response_text"]) if first is not None and first["status"] == "ok" else None
    if parsed is None or first["stop_reason"] == "max_tokens":
        return None, failure(spec, first, "rewrite")
    tools = json.loads(spec["tools"]) if spec["tools"] else None
    user = next(m["content"] for m in reversed(context) if m["role"] == "user")
    extra = {"original_answer": final.get("content") or "",
             "original_tool_calls": json.dumps(final["tool_calls"]) if final.get("tool_calls") else None}
    return (rows, context, tools, user, parsed, extra), {}
