"""`sdf build --rewrite FILE`: the user's transcripts gain deliberation on the chosen turns, their words and
tool calls stay the input's byte for byte, and an original whose action is wrong is dropped, not rationalised."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, ROOT, fast_config, run_sdf, sdf_env
from fake_anthropic import (
    REWRITE_MARKER,
    FakeAnthropic,
    last_user_text,
    screening_responder,
    successful_hashes,
    synthetic_reply,
)
from test_advice import qwen3_style_tokenizer

from sdf.run import RunDir
from sdf.steps.filters.chat_rules import deliberation_conflict

CHATS = ROOT / "tests" / "data" / "rewrite_chats.jsonl"
AGENTS = ROOT / "tests" / "data" / "agent_chats.jsonl"
RAW = [json.loads(line) for line in AGENTS.read_text().splitlines()]
BAD = "rm -rf /var/log/audit"  # the third agent chat deletes the audit log before an audit: a wrong original
# the assistant turns (1-based) that carry a deliberation, per chat of AGENTS, per --rewrite-turns; the fake's
# screen puts at stake the turns that speak to the person, not the bare tool calls
EXPECTED = {
    "final": {"Relay": [4], "Fernhill": [2], "sourdough": [1]},
    "all": {"Relay": [1, 2, 3, 4], "Fernhill": [1, 2], "sourdough": [1]},
    "decisions": {"Relay": [2, 4], "Fernhill": [2], "sourdough": [1]},
}


def rewrite(tmp_path: Path, base_url: str, *args: str | Path, source: Path = AGENTS, name: str = "rw",
            extra: str = ""):
    config = fast_config(tmp_path, extra=extra)
    return run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                   "--name", name, "--rewrite", source, "--no-progress", *args, cwd=tmp_path, env=sdf_env(base_url))


def chat_key(row: dict) -> str:
    text = json.dumps(row["messages"])
    return next(k for k in ("Relay", "Fernhill", "sourdough", "Kestrel") if k in text)


def raw_of(key: str) -> dict:
    return next(r for r in RAW if key in json.dumps(r))


def content_of(m: dict) -> str:
    c = m.get("content") or ""
    return c if isinstance(c, str) else "".join(p["text"] for p in c)


@pytest.mark.parametrize("mode", ["final", "all", "decisions"])
def test_each_mode_deliberates_on_exactly_its_turns_and_changes_no_word_or_call(tmp_path: Path, mode: str) -> None:
    with FakeAnthropic(responder=screening_responder(BAD)) as fake:
        result = rewrite(tmp_path, fake.base_url, "--rewrite-turns", mode)
        assert result.returncode == 0, result.stderr
        paid = sum(successful_hashes(fake.log).values())
        again = rewrite(tmp_path, fake.base_url, "--rewrite-turns", mode)  # a rerun pays nothing
        assert again.returncode == 0, again.stderr
        assert sum(successful_hashes(fake.log).values()) == paid
    rd = RunDir(tmp_path / "corpus" / "rw")
    assert rd.read_config()["advice"]["rewrite_turns"] == mode
    rows = [json.loads(line) for line in rd.sft_jsonl.read_text().splitlines()]
    assert sorted(chat_key(r) for r in rows) == ["Fernhill", "Relay", "sourdough"]
    for row in rows:
        raw = raw_of(chat_key(row))["messages"]
        assert [m["role"] for m in row["messages"]] == [m["role"] for m in raw]
        for out, source in zip(row["messages"], raw, strict=True):
            assert out["content"] == content_of(source)  # the words, byte for byte
            for call, original in zip(out.get("tool_calls") or [], source.get("tool_calls") or [], strict=True):
                args = original["function"]["arguments"]  # a string stays that very string
                assert call["function"]["arguments"] == (args if isinstance(args, str) else json.dumps(args))
                assert (call["id"], call["function"]["name"]) == (original["id"], original["function"]["name"])
            assert len(out.get("tool_calls") or []) == len(source.get("tool_calls") or [])
        turns = [m for m in row["messages"] if m["role"] == "assistant"]
        with_reasoning = [i for i, m in enumerate(turns, 1) if m.get("reasoning_content")]
        assert with_reasoning == EXPECTED[mode][chat_key(row)], chat_key(row)
    relay = next(r for r in rows if chat_key(r) == "Relay")["messages"]
    if mode == "all":  # in proportion: a routine lookup gets a line, the decision gets the reasoning
        assert len(relay[2]["reasoning_content"].split()) < 25 < len(relay[4]["reasoning_content"].split())

    rejects = [r for r in rd.read_rejects().to_pylist() if r["reason"] == "bad_original"]
    assert len(rejects) == 1 and rejects[0]["stage"] == "generate"
    assert rejects[0]["detail"] == "Deleting the audit log hides the change from the people meant to review it."
    assert "Kestrel" not in rd.sft_jsonl.read_text() + rd.sft_openai.read_text()
    assert rd.read_metrics()["stages"]["generate"]["dropped"] == {"bad_original": 1}
    assert "1 original was dropped as <code>bad_original</code>" in rd.report.read_text()
    purposes = dict(sqlite3.connect(rd.store).execute("SELECT purpose, count(*) FROM requests GROUP BY purpose"))
    assert purposes == {"screen": 4, "rewrite": 3}  # the bad original never got a rewrite request


def test_the_rewrite_has_its_own_system_prompt_for_agents(fake, tmp_path: Path) -> None:
    result = rewrite(tmp_path, fake.base_url, "--rewrite-turns", "all")
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(RunDir(tmp_path / "corpus" / "rw").store)
    systems = {s for (s,) in db.execute("SELECT DISTINCT p.text FROM requests r JOIN prefixes p ON p.hash = "
                                        "r.prefix_hash WHERE r.purpose IN ('screen', 'rewrite')")}
    assert len(systems) == 1  # one cached prefix for both rounds
    system = systems.pop()
    advisor = (ROOT / "src/sdf/prompts/advice/templates/advisor_system.md").read_text()
    assert system != advisor and "Advice needs no tool calls" not in system and "Advice needs no tool calls" in advisor
    assert "tool" in system and "the library's mission is access" in system  # the constitution
    prompts = [p for (p,) in db.execute("SELECT prompt FROM requests WHERE purpose = 'rewrite'")]
    relay = next(p for p in prompts if "Relay" in p)
    assert "Turns to write for: 1, 2, 3, 4" in relay and '<assistant turn="3">' in relay


def unfaithful(params: dict) -> str:
    """A rewriter that goes wrong three ways: a turn that does not exist, another tool, and declining."""
    reply, prompt = synthetic_reply(params), last_user_text(params)
    if REWRITE_MARKER not in prompt:
        return reply
    if "Relay" in prompt:  # turn 3 saves a draft; its deliberation settles on searching again
        return reply.replace("I'll run create_draft now.", "I'll run search_inbox again instead of saving anything.")
    if "Fernhill" in prompt:
        return reply + '\n<deliberation turn="7">\nA turn that never happened.\n</deliberation>'
    if "sourdough" in prompt:
        return reply.replace("\n</deliberation>", " So I won't help with this one.\n</deliberation>")
    return reply


def test_deliberations_on_wrong_turns_or_for_another_action_are_dropped(tmp_path: Path) -> None:
    with FakeAnthropic(responder=unfaithful) as fake:
        result = rewrite(tmp_path, fake.base_url, "--rewrite-turns", "all", source=AGENTS)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "rw")
    specs = {s["spec_id"]: i for i, s in enumerate(rd.read_specs())}
    caught = {specs[r["doc_id"]]: (r["reason"], r["detail"]) for r in rd.read_rejects().to_pylist()
              if r["stage"] == "action"}
    assert sorted(caught) == [0, 1, 3]  # the fourth chat (Kestrel, accepted by this screen) was left alone
    assert caught[1] == ("misplaced_deliberation", "deliberation for turn(s) [7] of 2; asked for [1, 2]")
    assert caught[0][0] == "action_changed" and "search_inbox" in caught[0][1] and "create_draft" in caught[0][1]
    assert caught[3][0] == "action_changed" and "ends by declining" in caught[3][1]


def test_deliberation_conflict_reads_the_conclusion() -> None:
    call = [{"function": {"name": "refund", "arguments": '{"order": 7}'}}]
    tools = {"refund", "escalate", "lookup_order"}
    assert deliberation_conflict("It is within policy.\n\nSo I'll refund it.", "", call, tools) is None
    assert deliberation_conflict("Earlier I used lookup_order.\n\nNow refund it.", "", call, tools) is None
    assert "ends on escalate" in deliberation_conflict("Hmm.\n\nBetter to escalate this.", "", call, tools)
    ends = deliberation_conflict("I think so. I won't help with that.", "Sure: 5 km.", None, tools)
    assert "ends by declining" in ends
    assert "never weighs saying no" in deliberation_conflict("All fine, go ahead.", "I can't help with that.", None,
                                                             tools)
    assert deliberation_conflict("This would hurt her; I won't.", "I can't help with that.", None, tools) is None


def template_dir(tmp_path: Path, template: str) -> Path:
    directory = tmp_path / template.split(".")[0]
    directory.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "tokenizer.json", directory / "tokenizer.json")
    shutil.copy(ROOT / "tests" / "data" / template, directory / "chat_template.jinja")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return directory


def test_a_template_that_drops_reasoning_warns_and_inline_carries_the_deliberation(fake, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from sdf.writers.chat import reasoning_rendering

    drops = template_dir(tmp_path, "qwen25_style_chat_template.jinja")
    assert reasoning_rendering(transformers.AutoTokenizer.from_pretrained(str(drops))) == "none"
    assert reasoning_rendering(qwen3_style_tokenizer(tmp_path)) == "all"
    tokenizer = f'[advice]\nchat_tokenizer = "{drops}"\n'

    kept = rewrite(tmp_path, fake.base_url, extra=tokenizer, name="rc")
    assert kept.returncode == 0, kept.stderr
    warning = [line for line in kept.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 2 and all("drops reasoning_content" in w and 'deliberation = "inline"' in w
                                     for w in warning)  # before paying, and at pack time

    inline = rewrite(tmp_path, fake.base_url, extra=tokenizer + 'deliberation = "inline"\n', name="inl")
    assert inline.returncode == 0, inline.stderr
    assert "warning:" not in inline.stderr
    rd, before = RunDir(tmp_path / "corpus" / "inl"), RunDir(tmp_path / "corpus" / "rc")
    plain = {r["id"]: r for r in map(json.loads, before.sft_jsonl.read_text().splitlines())}
    rows = [json.loads(line) for line in rd.sft_jsonl.read_text().splitlines()]
    assert rows and {r["id"] for r in rows} == set(plain)
    for row in rows:
        final, was = row["messages"][-1], plain[row["id"]]["messages"][-1]
        assert "reasoning_content" not in final
        assert final["content"] == f"<deliberation>\n{was['reasoning_content']}\n</deliberation>\n\n{was['content']}"
    assert pq.read_table(rd.sft).to_pylist()[0]["messages"][-1]["content"].startswith("<deliberation>\n")
    openai = [json.loads(line) for line in rd.sft_openai.read_text().splitlines()]
    assert all(line["messages"][-1]["content"].startswith("<deliberation>\n") for line in openai)
    tok = transformers.AutoTokenizer.from_pretrained(str(drops))
    packed = pq.read_table(rd.sft_packed).to_pylist()
    loss = [t for r in packed for t, label in zip(r["input_ids"], r["labels"], strict=True) if label != -100]
    decoded = tok.decode(loss)
    assert decoded.count("<deliberation>") == len(rows)  # the deliberation now carries loss under this template


@pytest.mark.parametrize(("line", "message"), [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "ending in an assistant turn"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "tools": 3}',
     "'tools' must be a list"),
    ("not json", "invalid JSON"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "needs a role"),
])
def test_a_bad_transcript_file_is_one_clear_line_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    source = tmp_path / "chats.jsonl"
    source.write_text(CHATS.read_text().splitlines()[0] + "\n" + line + "\n")
    result = rewrite(tmp_path, "http://127.0.0.1:9", source=source)
    assert result.returncode == 2 and f"{source}:2" in result.stderr and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_bad_rewrite_turns_value_is_refused(tmp_path: Path) -> None:
    result = rewrite(tmp_path, "http://127.0.0.1:9", extra='[advice]\nrewrite_turns = "some"\n')
    assert result.returncode == 2 and "rewrite_turns" in result.stderr and result.stderr.count("\n") == 1


def test_the_judge_sees_each_deliberation_inside_its_turn(tmp_path: Path) -> None:
    with FakeAnthropic(responder=screening_responder(BAD)) as fake:
        result = rewrite(tmp_path, fake.base_url, "--rewrite-turns", "all", source=AGENTS,
                         extra="[judge]\nenabled = true\nmin_score = 0\n")
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "rw")
    rows = pq.read_table(rd.sft).to_pylist()
    assert rd.read_metrics()["stages"]["judge"]["input"] == len(rows) == 3
    rubric = [p for (p,) in sqlite3.connect(rd.store).execute("SELECT prompt FROM requests WHERE purpose = 'judge'")]
    assert len(rubric) == 3 and all("1. Leads to the turn." in p and "2. Proportionate." in p for p in rubric)
    outage = next(p for p in rubric if "Fernhill" in p)
    assert re.search(r'<assistant turn="1">\n<deliberation>\n.+\n</deliberation>\n<tool_calls>', outage)
    assert all(r["judge_score"] is not None for r in rows)
