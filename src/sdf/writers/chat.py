"""The chat format SFT trainers read: sft.parquet and sft.jsonl, and optional packed token rows.

Each row is one conversation in the OpenAI/HF `messages` format that TRL, axolotl and LLaMA-Factory
read: roles system, user, assistant (and tool, in rewritten transcripts), with the deliberation in
the final assistant message's `reasoning_content`. That is the field Qwen3-style chat templates render
inside <think> tags (and the one vLLM and DeepSeek-style APIs return), so a model can be trained with
the deliberation, or without it by dropping one field. `tools` is the list of JSON-schema tool
definitions (None without tools): a list in sft.jsonl, and in sft.parquet a column of Arrow's JSON type,
not a nested struct (tool schemas differ from row to row, and a merged struct would render as null-filled
definitions); `datasets` decodes it back to the list, so `apply_chat_template(row["messages"],
tools=row["tools"])` takes rows from either file as loaded (pandas or pyarrow alone see JSON text:
`json.loads` it). Tool calls are in the OpenAI/HF shape, arguments as a JSON string, which Qwen-style
templates print as they are. Provenance columns sit beside `messages`. sft.openai.jsonl holds the same
chats as OpenAI's fine-tuning takes them (messages and tools only, no deliberation).

A rewritten chat is the user's original messages, byte for byte (tool-call arguments as they came),
with a deliberation on each selected assistant turn's `reasoning_content`.

Many chat templates (Qwen2.5's, for one) never render `reasoning_content`, and Qwen3's renders it only
after the last user message: `reasoning_rendering` probes a template with marked deliberations, and
`[advice] deliberation = "inline"` moves each deliberation into its turn's content instead, as a
`<deliberation>...</deliberation>` block before the words. That tag, and not <think>, because templates
of the Qwen3 and DeepSeek-R1 families cut `<think>` blocks out of the content of earlier turns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.run import (
    SFT_PACKED_SCHEMA,
    SFT_PROVENANCE,
    SFT_SCHEMA,
    RunDir,
    TableWriter,
    iter_rows,
    openai_json_line,
    sft_json_line,
)
from sdf.steps.tokens.tokenizer import auto_tokenizer
from sdf.writers.hf import IGNORE_INDEX


def sft_message(m: dict[str, Any]) -> dict[str, Any]:
    """A message with every MESSAGE_TYPE field, tool-call arguments as JSON strings."""
    calls = m.get("tool_calls")
    return {
        "role": m["role"],
        "content": m.get("content") or "",
        "reasoning_content": m.get("reasoning_content") or None,  # a routine turn without one: absent, not ""
        "tool_calls": [_call(c) for c in calls] if calls else None,
        "tool_call_id": m.get("tool_call_id"),
        "name": m.get("name"),
    }


def _call(c: dict[str, Any]) -> dict[str, Any]:
    fn = c.get("function", c)
    args = fn.get("arguments", {})
    return {"id": c.get("id") or "", "type": "function",
            "function": {"name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}}


DELIBERATION_MODES = ("reasoning_content", "inline")
INLINE_OPEN, INLINE_CLOSE = "<deliberation>", "</deliberation>"


def sft_row(chat: dict[str, Any], deliberation: str = "reasoning_content") -> dict[str, Any]:
    """The SFT_SCHEMA row of a filtered chat; `deliberation` says where each turn's deliberation goes."""
    rewrite = chat["mode"] == "rewrite"  # a rewrite's final turn may call tools; an advice answer does not
    final = {"role": "assistant", "content": chat["answer"], "reasoning_content": chat["deliberation"] or None,
             "tool_calls": json.loads(chat["tool_calls"]) if rewrite and chat["tool_calls"] else None}
    messages = [sft_message(m) for m in json.loads(chat["prompt_messages"])] + [sft_message(final)]
    if deliberation == "inline":
        messages = [inline(m) for m in messages]
    return {"id": chat["doc_id"], "messages": messages, "tools": chat["tools"] or None,
            **{k: chat.get(k) for k in SFT_PROVENANCE}}


def inline(m: dict[str, Any]) -> dict[str, Any]:
    """The message with its reasoning_content moved into a tagged block at the start of its content."""
    if not m.get("reasoning_content"):
        return m
    block = f"{INLINE_OPEN}\n{m['reasoning_content']}\n{INLINE_CLOSE}"
    return {**m, "content": block + ("\n\n" + m["content"] if m["content"] else ""), "reasoning_content": None}


class SftWriter:
    """Stream chats into sft.parquet, sft.jsonl and sft.openai.jsonl together; all appear only on a clean close."""

    def __init__(self, rd: RunDir, batch_rows: int = 256, deliberation: str | None = None) -> None:
        # the run's own setting unless told: every product stage reads the run's config.toml the same way
        advice = rd.read_config().get("advice", {}) if deliberation is None else {}
        self.deliberation = deliberation or advice.get("deliberation", DELIBERATION_MODES[0])
        self.parquet = TableWriter(rd.sft, SFT_SCHEMA)
        self.rows, self.batch_rows = 0, batch_rows
        self._lines = {path: (path.with_name(path.name + ".tmp"), render)
                       for path, render in ((rd.sft_jsonl, sft_json_line), (rd.sft_openai, openai_json_line))}
        self._files = {path: tmp.open("w", encoding="utf-8") for path, (tmp, _) in self._lines.items()}
        self._pending: list[dict[str, Any]] = []

    def write(self, chat: dict[str, Any]) -> None:
        row = sft_row(chat, self.deliberation)
        for path, (_, render) in self._lines.items():
            self._files[path].write(render(row))
        self._pending.append(row)
        self.rows += 1
        if len(self._pending) >= self.batch_rows:
            self.parquet.write(self._pending)
            self._pending = []

    def __enter__(self) -> SftWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        for file in self._files.values():
            file.close()
        if exc_type:
            self.parquet.abort()
            for tmp, _ in self._lines.values():
                tmp.unlink(missing_ok=True)
            return
        self.parquet.write(self._pending)
        self.parquet.close()
        for path, (tmp, _) in self._lines.items():
            tmp.replace(path)


# -- tokenized: packed rows with loss on the assistant's final turn -----------------------------------------


def load_chat_tokenizer(path: str) -> Any:
    """A transformers tokenizer with a chat template, from a local directory."""
    directory = Path(path)
    if not (directory / "tokenizer_config.json").is_file():
        raise SdfError(f"[advice].chat_tokenizer: {directory} has no tokenizer_config.json; give a tokenizer "
                       "directory whose config carries a chat_template")
    try:
        AutoTokenizer = auto_tokenizer()  # noqa: N806 - the class, named as transformers names it
    except ImportError:
        raise SdfError("[advice].chat_tokenizer needs transformers: pip install transformers "
                       "(or leave chat_tokenizer empty to write sft.parquet and sft.jsonl only)") from None
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not getattr(tokenizer, "chat_template", None):
        raise SdfError(f"[advice].chat_tokenizer: {directory}/tokenizer_config.json has no chat_template")
    return tokenizer


_PROBE = ("sdf-probe-earlier-4e1c9", "sdf-probe-final-4e1c9")  # unique: found in a rendering only if rendered


def reasoning_rendering(tokenizer: Any) -> str:
    """Which assistant turns' reasoning_content the chat template renders: "all", "final" (only the last
    turn's, as Qwen3's does after the last user message) or "none" (as Qwen2.5's)."""
    probe = [{"role": "user", "content": "Hello."},
             {"role": "assistant", "content": "Hi.", "reasoning_content": _PROBE[0]},
             {"role": "user", "content": "Thanks."},
             {"role": "assistant", "content": "Welcome.", "reasoning_content": _PROBE[1]}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    if _PROBE[0] in text and _PROBE[1] in text:
        return "all"
    return "final" if _PROBE[1] in text else "none"


def reasoning_warning(tokenizer: Any, path: str, final: bool = True, earlier: bool = False) -> str | None:
    """One line when the template loses deliberations the chats carry (on the final turn, on earlier ones)."""
    rendered = reasoning_rendering(tokenizer)
    if final and rendered == "none":
        lost = "drops reasoning_content"
    elif earlier and rendered != "all":
        lost = "renders reasoning_content only on the final assistant turn, so earlier turns' deliberations are lost"
    else:
        return None
    return (f"the chat template of {path} {lost} in training: set [advice] deliberation = \"inline\" to put the "
            "deliberation into the assistant's content")


def template_messages(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list | None]:
    """The row's messages and tools as chat templates take them: no null fields, arguments as objects."""
    messages = []
    for m in row["messages"]:
        out = {k: v for k, v in m.items() if v is not None}
        if out.get("tool_calls"):
            out["tool_calls"] = [_with_object_arguments(c) for c in out["tool_calls"]]
        messages.append(out)
    tools = row.get("tools")
    return messages, json.loads(tools) if isinstance(tools, str) and tools else tools or None


def _with_object_arguments(call: dict[str, Any]) -> dict[str, Any]:
    return {**call, "function": {**call["function"], "arguments": json.loads(call["function"]["arguments"])}}


def encode_chat(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one chat; only the final assistant turn carries loss.

    The context is rendered with the generation prompt and the full chat without it; the template must
    render the context identically in both, which is what lets the two halves be tokenized apart.
    """
    messages, tools = template_messages(row)
    prefix = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    if not full.startswith(prefix):
        raise SdfError("the chat template renders the conversation differently once the final assistant turn is "
                       "added, so the assistant's tokens cannot be told apart; use a template whose rendering of "
                       "earlier turns does not depend on later ones")
    context = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    turn = tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
    return context + turn, [IGNORE_INDEX] * len(context) + turn


def pack_sft(rd: RunDir, tokenizer_path: str, seq_len: int) -> dict[str, Any]:
    """Greedy packing of sft.parquet's chats, in order, into rows of at most seq_len tokens.

    Rows are not padded; seq_lengths lists the chats in each row so a trainer can keep attention
    within a chat. A chat longer than seq_len is left out and counted.
    """
    tokenizer = load_chat_tokenizer(tokenizer_path)
    stats: dict[str, Any] = {"chats": 0, "rows": 0, "tokens": 0, "loss_tokens": 0, "too_long": 0, "seq_len": seq_len}
    reasoning = {"final": False, "earlier": False}  # where the chats carry reasoning_content, for the warning
    ids: list[int] = []
    labels: list[int] = []
    lengths: list[int] = []
    batch: list[dict[str, Any]] = []
    with TableWriter(rd.sft_packed, SFT_PACKED_SCHEMA) as out:
        for rows in iter_rows(rd.require(rd.sft, "pack"), batch_size=256):
            for row in rows:
                assistant = [m for m in row["messages"] if m["role"] == "assistant"]
                reasoning["final"] |= bool(assistant and assistant[-1]["reasoning_content"])
                reasoning["earlier"] |= any(m["reasoning_content"] for m in assistant[:-1])
                chat_ids, chat_labels = encode_chat(tokenizer, row)
                if len(chat_ids) > seq_len:
                    stats["too_long"] += 1
                    continue
                if len(ids) + len(chat_ids) > seq_len:
                    batch.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
                    ids, labels, lengths = [], [], []
                ids, labels, lengths = ids + chat_ids, labels + chat_labels, lengths + [len(chat_ids)]
                stats["chats"] += 1
                stats["tokens"] += len(chat_ids)
                stats["loss_tokens"] += sum(1 for t in chat_labels if t != IGNORE_INDEX)
            out.write(batch)
            stats["rows"] += len(batch)
            batch = []
        if ids:
            out.write([{"input_ids": ids, "labels": labels, "seq_lengths": lengths}])
            stats["rows"] += 1
    stats["warning"] = reasoning_warning(tokenizer, tokenizer_path, **reasoning) if any(reasoning.values()) else None
    return stats


def verify_sft(rd: RunDir) -> list[str]:
    """Re-check an advice run's SFT output: sft.parquet, its two jsonl files row for row (same ids, same
    order), and the packed rows' shapes. Returns the problems, one line each; empty means all agree."""
    import pyarrow as pa

    if not rd.sft.is_file():
        return [f"{rd.sft}: missing (the pack stage did not finish; run `sdf pack` again)"]
    try:
        ids = [r["id"] for batch in iter_rows(rd.sft, ["id"]) for r in batch]
    except (OSError, pa.ArrowException) as exc:
        return [f"{rd.sft}: unreadable ({type(exc).__name__})"]
    problems = []
    for path in (rd.sft_jsonl, rd.sft_openai):
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        with path.open(encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if len(lines) != len(ids):
            problems.append(f"{path}: {len(lines)} lines, sft.parquet has {len(ids)} rows")
        elif path == rd.sft_jsonl and [line.get("id") for line in lines] != ids:
            problems.append(f"{path}: ids differ from sft.parquet's")
        elif any(not line.get("messages") for line in lines):
            problems.append(f"{path}: a line without messages")
    if rd.sft_packed.is_file():
        for i, row in enumerate(r for batch in iter_rows(rd.sft_packed) for r in batch):
            if not (len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lengths"])):
                problems.append(f"{rd.sft_packed}: row {i}: input_ids, labels and seq_lengths disagree")
                break
    return problems
