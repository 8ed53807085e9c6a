"""The rewrite mode of the advice product (`--rewrite FILE`): the user's transcripts, given deliberation.

Each line of the file is a chat in the OpenAI/HF format ending in an assistant turn. Per chat, a screen
request (on the rewrite system prompt, with the constitution) asks whether the original's actions are
acceptable and which assistant turns put values at stake; an original judged wrong becomes a generate
reject `bad_original` and is never rationalised. Then one rewrite request returns one
`<deliberation turn="N">` per selected turn ([advice] rewrite_turns: final, all, or decisions, the turns
the screen named). The output chat is the ORIGINAL messages with each deliberation attached to its turn
as `reasoning_content` (the final turn's in the `deliberation` column): words and tool calls are the
input's by construction. ActionCheck (steps/filters/chat_rules.py) drops deliberations on the wrong turns
or arguing for another action; the rewrite judge scores the rest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger, LLMRequest
from sdf.products.context import Run
from sdf.products.deployments import deployment_block
from sdf.products.replies import failure
from sdf.source.catalog import AdviceCatalog
from sdf.steps import reject_row

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
    """A tool call in the OpenAI shape; its arguments stay as they came (a JSON string byte for byte, or an
    object), after checking they are a JSON object."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise SdfError(f"{where}: message {i} has a tool call without function.name")
    args = fn.get("arguments", {})
    parsed = args
    if isinstance(args, str):
        try:
            parsed = _parse_line(args, f"{where}: message {i} tool call {fn['name']!r}") if args.strip() else {}
        except SdfError as e:
            raise SdfError(f"{e} (its arguments)") from None
        if not args.strip():
            args = "{}"
    if not isinstance(parsed, dict):
        raise SdfError(f"{where}: message {i} tool call {fn['name']!r} has arguments that are not a JSON object")
    return {"id": str(call.get("id") or ""), "type": "function", "function": {"name": fn["name"], "arguments": args}}


# -- turns ---------------------------------------------------------------------------------------------

TURN_MODES = ("final", "all", "decisions")
_VERDICT = re.compile(r"<verdict>\s*(acceptable|wrong)\s*</verdict>", re.IGNORECASE)
_REASON = re.compile(r"<reason>\s*(.*?)\s*</reason>", re.DOTALL | re.IGNORECASE)
_AT_STAKE = re.compile(r"<at_stake>\s*(.*?)\s*</at_stake>", re.DOTALL | re.IGNORECASE)
_TURN_DELIBERATION = re.compile(r"<deliberation\s+turn\s*=\s*[\"']?(\d+)[\"']?\s*>\s*(.*?)\s*</deliberation>",
                                re.DOTALL | re.IGNORECASE)


def assistant_turns(messages: list[dict[str, Any]]) -> list[int]:
    """The message indices of the assistant turns; turn N (1-based, as the prompts number them) is [N - 1]."""
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def render_conversation(messages: list[dict[str, Any]], deliberations: dict[int, str] | None = None) -> str:
    """Every message but the system prompt, assistant turns numbered, a turn's deliberation inside it when given."""
    lines, turn = [], 0
    for m in messages:
        if m["role"] == "system":
            continue
        body = m.get("content") or ""
        if m["role"] == "assistant":
            turn += 1
            if m.get("tool_calls"):
                body += ("\n" if body else "") + "<tool_calls>" + json.dumps(
                    plain_calls(m["tool_calls"]), ensure_ascii=False) + "</tool_calls>"
            if deliberations and deliberations.get(turn):
                body = f"<deliberation>\n{deliberations[turn]}\n</deliberation>\n{body}"
            lines.append(f'<assistant turn="{turn}">\n{body}\n</assistant>')
        else:
            lines.append(f"<{m['role']}>\n{body}\n</{m['role']}>")
    return "\n".join(lines)


def plain_calls(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """[{"name", "arguments" (an object)}] of a turn's tool calls, as prompts show them."""
    out = []
    for c in calls or []:
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        out.append({"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args})
    return out


def parse_screen(text: str) -> tuple[bool, str, list[int]] | None:
    """(acceptable, the one-line reason, the turn numbers at stake) of a screen answer; None without a verdict."""
    verdict = _VERDICT.search(text or "")
    if verdict is None:
        return None
    reason = _REASON.search(text)
    at_stake = _AT_STAKE.search(text)
    turns = sorted({int(n) for n in re.findall(r"\d+", at_stake.group(1))}) if at_stake else []
    line = " ".join((reason.group(1) if reason else "").split())[:300]
    return verdict.group(1).lower() == "acceptable", line or "(no reason given)", turns


def parse_deliberations(text: str) -> dict[int, str]:
    """{turn: deliberation} of a rewrite answer; an empty block counts as absent."""
    return {int(n): body.strip() for n, body in _TURN_DELIBERATION.findall(text or "") if body.strip()}


def selected_turns(mode: str, count: int, at_stake: list[int]) -> list[int]:
    """The turns (1..count) that gain a deliberation under [advice] rewrite_turns."""
    if mode == "all":
        return list(range(1, count + 1))
    if mode == "decisions":
        return [t for t in at_stake if 1 <= t <= count]
    return [count]


# -- requests ------------------------------------------------------------------------------------------

_SYSTEMS: dict[int, tuple[AdviceCatalog, str]] = {}  # id(acat) -> (acat, system): rendered once per catalog


def rewrite_system(acat: AdviceCatalog, run: Run) -> str:
    """The screen's and the rewrite's cached prefix: the job, then the constitution; byte-identical all run."""
    held = _SYSTEMS.get(id(acat))
    if held is None or held[0] is not acat:  # the catalog is kept alive with its entry, so its id is not reused
        if len(_SYSTEMS) >= 8:
            _SYSTEMS.clear()
        held = _SYSTEMS[id(acat)] = (acat, acat.render("rewrite_system", constitution=run.constitution_text))
    return held[1]


def _deployment(spec: dict[str, Any]) -> str:
    return deployment_block(spec["system_prompt"], json.loads(spec["tools"]) if spec["tools"] else None)


def screen_request(acat: AdviceCatalog, spec: dict[str, Any], run: Run) -> LLMRequest:
    """Is the original acceptable, and which turns are at stake: the same request under every rewrite_turns."""
    llm = run.settings.llm
    messages = json.loads(spec["source_messages"])
    prompt = acat.render("screen", deployment=_deployment(spec), conversation=render_conversation(messages))
    return LLMRequest("screen", spec["spec_id"], llm.model, rewrite_system(acat, run), prompt,
                      run.settings.advice.screen_max_tokens, llm.temperature)


def rewrite_request(acat: AdviceCatalog, spec: dict[str, Any], turns: list[int], run: Run) -> LLMRequest:
    llm = run.settings.llm
    messages = json.loads(spec["source_messages"])
    count = len(assistant_turns(messages))
    if turns == [count]:
        which = f"the final assistant turn (turn {count})" if count > 1 else "the assistant's turn (turn 1)"
    elif turns == list(range(1, count + 1)):
        which = f"every assistant turn (turns 1 to {count})"
    else:
        which = "the turns below, where the assistant had something to weigh"
    prompt = acat.render("rewrite", deployment=_deployment(spec), conversation=render_conversation(messages),
                         which=which, turns=", ".join(str(t) for t in turns))
    return LLMRequest("rewrite", spec["spec_id"], llm.model, rewrite_system(acat, run), prompt, llm.max_tokens,
                      llm.temperature)


def _answered(row: Any) -> bool:
    return row is not None and row["status"] == "ok" and row["stop_reason"] != "max_tokens"


def turns_to_write(spec: dict[str, Any], screen: Any, mode: str) -> tuple[list[int] | None, dict[str, Any]]:
    """(the turns to deliberate on, {}) after the screen, or (None, the spec's generate reject)."""
    parsed = parse_screen(screen["response_text"]) if _answered(screen) else None
    if parsed is None:
        return None, failure(spec, screen, "screen")
    acceptable, reason, at_stake = parsed
    paid = {"doc_id": spec["spec_id"], "section_id": "", "cost_usd": screen["cost_usd"],
            "text": screen["response_text"]}
    if not acceptable:  # never rationalised: the research kept only demonstrations whose action was right
        return None, reject_row(paid, "generate", "bad_original", reason)
    count = len(assistant_turns(json.loads(spec["source_messages"])))
    turns = selected_turns(mode, count, at_stake)
    if not turns:
        return None, reject_row(paid, "generate", "no_decision",
                                f"rewrite_turns = decisions and the screen found no turn at stake: {reason}")
    return turns, {}


def generate(run: Run, ledger: Ledger, acat: AdviceCatalog, progress: bool, backend: Any) -> RunSummary:
    """Screen every transcript, then send one rewrite request for each one the screen accepted."""
    specs, mode = run.dir.read_specs(), run.settings.advice.rewrite_turns
    screens = [screen_request(acat, s, run) for s in specs]
    summary = run.send(ledger, screens, "screen", progress, backend)
    if summary.stopped:
        return summary
    rewrites = []
    for spec, screen in zip(specs, screens, strict=True):
        turns, _ = turns_to_write(spec, ledger.get(screen.key), mode)
        if turns:
            rewrites.append(rewrite_request(acat, spec, turns, run))
    if rewrites:
        summary.add(run.send(ledger, rewrites, "rewrite", progress, backend))
    return summary


SCREEN_TOKENS = 60  # a verdict, a one-line reason and a list of turns, for the estimate
ROUTINE_TOKENS = 40  # a routine turn's line of thought under rewrite_turns = all, for the estimate


def usage_rounds(acat: AdviceCatalog, specs: list[dict[str, Any]], run: Run,
                 deliberation_tokens: int) -> list[tuple[str, list[int], list[int]]]:
    """(system, prompt tokens, output tokens) of the screen round and the rewrite round, for usage_estimate.

    Under `decisions` the turns are not known before the screen: the final turn stands in for them.
    """
    from sdf.source.constitution import estimate_tokens

    mode = run.settings.advice.rewrite_turns
    system = rewrite_system(acat, run)
    screens, prompts, outputs = [], [], []
    for spec in specs:
        messages = json.loads(spec["source_messages"])
        turns = assistant_turns(messages)
        chosen = selected_turns("final" if mode == "decisions" else mode, len(turns), [])
        screens.append(estimate_tokens(screen_request(acat, spec, run).prompt))
        prompts.append(estimate_tokens(rewrite_request(acat, spec, chosen, run).prompt))
        # a turn with words for the person is where decisions show; a bare tool call is usually routine
        outputs.append(sum(deliberation_tokens if messages[turns[t - 1]].get("content") or t == len(turns)
                           else ROUTINE_TOKENS for t in chosen))
    return [(system, screens, [SCREEN_TOKENS] * len(specs)), (system, prompts, outputs)]


# -- assembly ------------------------------------------------------------------------------------------


def chat_parts(spec: dict[str, Any], screen: Any, ledger: Ledger, acat: AdviceCatalog,
               run: Run) -> tuple[tuple | None, dict]:
    """((ledger rows, context messages, tools, last user message, (deliberation, answer, calls), extra
    columns), {}) for a transcript whose screen and rewrite came back whole, else (None, its generate reject).

    The messages are the input's; only `reasoning_content` is added, on the selected earlier turns (the
    final turn's deliberation is the `deliberation` column, "" when the final turn was not selected).
    """
    turns, why = turns_to_write(spec, screen, run.settings.advice.rewrite_turns)
    if turns is None:
        return None, why
    row = ledger.get(rewrite_request(acat, spec, turns, run).key)
    found = parse_deliberations(row["response_text"]) if _answered(row) else {}
    if not found:
        why = failure(spec, row, "rewrite")
        why["cost_usd"] = (screen["cost_usd"] or 0.0) + (why["cost_usd"] or 0.0)  # the screen was paid for too
        return None, why
    messages = json.loads(spec["source_messages"])
    indices = assistant_turns(messages)
    context = copy.deepcopy(messages[:-1])
    for turn in turns:
        if turn < len(indices) and turn in found:
            context[indices[turn - 1]]["reasoning_content"] = found[turn]
    final = messages[-1]
    tools = json.loads(spec["tools"]) if spec["tools"] else None
    user = next(m["content"] for m in reversed(context) if m["role"] == "user")
    calls = final.get("tool_calls")
    extra = {"original_answer": final["content"],
             "original_tool_calls": json.dumps(calls, ensure_ascii=False) if calls else None,
             "selected_turns": json.dumps(turns), "turn_deliberations": json.dumps(
                 {str(t): d for t, d in sorted(found.items())}, ensure_ascii=False)}
    deliberation = found.get(len(indices), "") if len(indices) in turns else ""
    return ([screen, row], context, tools, user, (deliberation, final["content"], calls), extra), {}


def judge_prompt(acat: AdviceCatalog, chat: dict[str, Any], deployment: str, messages: list[dict[str, Any]]) -> str:
    """The rewrite judge's rubric over the whole conversation, each deliberation shown inside its turn."""
    final = {"role": "assistant", "content": chat["answer"] or "",
             "tool_calls": json.loads(chat["tool_calls"]) if chat["tool_calls"] else None}
    everything = [*messages, final]
    written = {t + 1: everything[i].get("reasoning_content") for t, i in enumerate(assistant_turns(everything))}
    written[len(written)] = chat["deliberation"] or None
    return acat.render("rewrite_judge", deployment=deployment, conversation=render_conversation(everything, written))
