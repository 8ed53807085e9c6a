"""`sdf build --rewrite FILE`: the user's transcripts gain deliberation, and a changed action is caught."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, ROOT, fast_config, run_sdf, sdf_env
from fake_anthropic import REWRITE_MARKER, FakeAnthropic, last_user_text, synthetic_reply
from test_advice import qwen3_style_tokenizer

from sdf.products.rewrite import read_transcripts
from sdf.run import RunDir
from sdf.steps.filters.chat_rules import action_change

CHATS = ROOT / "tests" / "data" / "rewrite_chats.jsonl"
INPUT = [json.loads(line) for line in CHATS.read_text().splitlines()]


def unfaithful(params: dict) -> str:
    """A rewriter that changes the action in three of the six transcripts, each in another way."""
    reply, prompt = synthetic_reply(params), last_user_text(params)
    if REWRITE_MARKER not in prompt:
        return reply
    if "Lisbon" in prompt:  # same tool, different argument
        return reply.replace('"Lisbon"', '"Porto"')
    if "sourdough" in prompt:  # the advice becomes a refusal
        return re.sub(r"<answer>.*</answer>", "<answer>I can't help with baking questions.</answer>", reply, flags=re.S)
    if "INV-2291" in prompt:  # the figure the answer turns on is gone
        return reply.replace("1,240", "about a thousand")
    return reply


def rewrite(tmp_path: Path, base_url: str, source: Path = CHATS, name: str = "rw"):
    config = fast_config(tmp_path)
    return run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                   "--name", name, "--rewrite", source, "--no-progress", cwd=tmp_path, env=sdf_env(base_url))


def test_rewrite_keeps_every_action_and_catches_the_changed_ones(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    with FakeAnthropic(responder=unfaithful) as fake:
        result = rewrite(tmp_path, fake.base_url)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "rw")
    config = rd.read_config()
    assert config["run"]["product"] == "advice" and config["advice"]["rewrite"] == str(CHATS.resolve())

    specs = {s["spec_id"]: i for i, s in enumerate(rd.read_specs())}
    caught = {specs[r["doc_id"]]: r["detail"] for r in rd.read_rejects().to_pylist() if r["stage"] == "action"}
    assert sorted(caught) == [0, 1, 2]
    assert "tool calls changed" in caught[1] and "Porto" in caught[1]
    assert all(r["reason"] == "action_changed" for r in rd.read_rejects().to_pylist() if r["stage"] == "action")

    rows = datasets.load_dataset("json", data_files=str(rd.sft_jsonl), split="train").to_list()
    assert [specs[r["id"]] for r in rows] == [3, 4, 5]
    for row in rows:
        source = read_transcripts(CHATS)[specs[row["id"]]]
        original = json.loads(source["source_messages"])
        assert [m["role"] for m in row["messages"]] == [m["role"] for m in original]
        assert [m["content"] for m in row["messages"]] == [m["content"] for m in original]  # byte for byte
        final = row["messages"][-1]
        assert final["reasoning_content"] and final["reasoning_content"] not in final["content"]
        assert all(not m.get("reasoning_content") for m in row["messages"][:-1])
    outage = rows[0]["messages"]
    assert [m["role"] for m in outage] == ["system", "user", "assistant", "tool", "assistant"]
    assert json.loads(outage[2]["tool_calls"][0]["function"]["arguments"]) == {
        "title": "Outage BS3 4QT since 06:00", "priority": "high"}
    assert outage[3]["tool_call_id"] == "t1" and rows[0]["tools"][0]["function"]["name"] == "create_ticket"
    assert rows[1]["messages"][-1]["content"].startswith("I won't help with that")  # a refusal stays a refusal
    # tool calls and tool results render under a Qwen3-style template as loaded
    outage_text = qwen3_style_tokenizer(tmp_path).apply_chat_template(outage, tools=rows[0]["tools"], tokenize=False)
    assert '<tool_call>\n{"name": "create_ticket", "arguments": {"title": "Outage BS3 4QT' in outage_text
    assert "<tool_response>" in outage_text and '"name": "create_ticket"' in outage_text.split("</tools>")[0]
    assert pq.read_table(rd.sft).num_rows == 3
    assert "final chats (rewrite)" in rd.report.read_text()


def test_the_default_fake_rewrites_faithfully_and_tool_calls_survive(fake, tmp_path: Path) -> None:
    result = rewrite(tmp_path, fake.base_url)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "rw")
    rows = pq.read_table(rd.sft).to_pylist()
    assert len(rows) == len(INPUT)
    weather = next(r for r in rows if "Lisbon" in r["messages"][1]["content"])
    call = weather["messages"][-1]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lisbon", "units": "metric"}


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
    result = rewrite(tmp_path, "http://127.0.0.1:9", source)
    assert result.returncode == 2 and f"{source}:2" in result.stderr and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_action_change_compares_calls_key_content_and_refusals() -> None:
    calls = [{"function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert action_change("Done.", "Done.", calls, [{"name": "f", "arguments": {"a": 1}}], 0.8) is None
    assert "tool calls changed" in action_change("", "", calls, [{"name": "f", "arguments": {"a": 2}}], 0.8)
    assert "tool calls changed" in action_change("", "", calls, None, 0.8)
    assert "lost key content" in action_change("Run `make test` at 9:30.", "Run the tests in the morning.", None,
                                               None, 0.8)
    assert "kept" in action_change("Rotate the tyres and check the pressure monthly.",
                                   "Buy a new car instead; it is simpler.", None, None, 0.8)
    refusal = "I can't help with that, here you go."  # overlap off: only the refusal check can fire
    assert "started declining" in action_change("Here you go.", refusal, None, None, 0.0)
    assert "stopped declining" in action_change(refusal, "Here you go.", None, None, 0.0)


def test_the_judge_asks_whether_the_rewrite_kept_the_action(fake, tmp_path: Path) -> None:
    config = fast_config(tmp_path, extra="[judge]\nenabled = true\nmin_score = 0\n")
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                     "--name", "rw", "--rewrite", CHATS, "--no-progress", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "rw")
    assert rd.read_metrics()["stages"]["judge"]["input"] == len(INPUT)
    rubric = [p for (p,) in sqlite3.connect(rd.store).execute("SELECT prompt FROM requests WHERE purpose = 'judge'")]
    assert len(rubric) == len(INPUT) and all("1. Same action." in p and "<original_answer>" in p for p in rubric)
    assert all(r["judge_score"] is not None for r in pq.read_table(rd.sft).to_pylist())
