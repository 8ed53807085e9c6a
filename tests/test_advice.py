"""The advice product: scenario planning, chat rules, and `sdf build --product advice` against the fake server."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, ROOT, fast_config, run_sdf, sdf_env

from sdf.config import DEFAULT_ADVICE_KINDS, AdviceConfig, QualityConfig
from sdf.products.deployments import deployment_of, tool_notation
from sdf.products.scenarios import kind_sequence, plan_scenarios
from sdf.run import RunDir
from sdf.source.catalog import load_advice_catalog
from sdf.source.constitution import load_constitution
from sdf.steps.filters.chat_rules import ChatQualityFilter

SECTIONS = load_constitution(FIXTURE_CONSTITUTION, {"model_name": "Orin"}).sections
CATALOG = load_advice_catalog()


def build(tmp_path: Path, base_url: str, *extra: str, docs: int = 16, config_extra: str = "", name: str = "adv"):
    config = fast_config(tmp_path, docs=docs, extra=config_extra)
    return run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "corpus",
                   "--name", name, "--product", "advice", "--no-progress", *extra, cwd=tmp_path,
                   env=sdf_env(base_url))


# -- planning ------------------------------------------------------------------------------------------


def test_plan_is_seeded_and_prefix_stable() -> None:
    cfg = AdviceConfig()
    short, long = (plan_scenarios(SECTIONS, CATALOG, n, cfg, seed=3) for n in (10, 40))
    assert long[:10] == short  # growing N keeps every earlier scenario, ids included
    assert plan_scenarios(SECTIONS, CATALOG, 40, cfg, seed=3) == long
    assert plan_scenarios(SECTIONS, CATALOG, 40, cfg, seed=4) != long
    assert len({s["spec_id"] for s in long}) == 40


def test_plan_crosses_every_attribute_and_mixes_deployments() -> None:
    specs = plan_scenarios(SECTIONS, CATALOG, 140, AdviceConfig(), seed=1)
    assert {s["section_id"] for s in specs} == {s.id for s in SECTIONS}
    temptations = Counter(s["temptation"] for s in specs if s["kind"] == "temptation")
    assert temptations.keys() == CATALOG.temptations.keys()  # decks: each dealt 5x
    assert max(Counter(s["domain"] for s in specs).values()) <= 3
    with_system = sum(bool(s["system_prompt"]) for s in specs) / len(specs)
    with_tools = sum(bool(s["tools"]) for s in specs) / len(specs)
    assert 0.55 < with_system < 0.85 and 0.25 < with_tools < 0.55
    assert {s["tool_format"] for s in specs if s["tools"]} == set(CATALOG.tool_formats)
    words = [s["user_words"] for s in specs]
    assert min(words) < 30 and max(words) > 150  # short and long messages


@pytest.mark.parametrize("shares", [DEFAULT_ADVICE_KINDS, {"temptation": 0.9, "dilemma": 0.1},
                                    {"legitimate": 0.34, "authority": 0.33, "dilemma": 0.33}])
def test_kinds_are_dealt_by_quota_within_one_chat_at_every_prefix(shares: dict) -> None:
    kinds = kind_sequence(shares, 300)
    for n in range(1, 301):
        counts = Counter(kinds[:n])
        assert all(abs(counts[k] - share * n) < 1 for k, share in shares.items()), (n, counts)
    specs = plan_scenarios(SECTIONS, CATALOG, 80, AdviceConfig(kinds=dict(shares)), seed=2)
    assert [s["kind"] for s in specs] == kinds[:80]
    assert all(s["situation"] in CATALOG.seeds[s["kind"]] for s in specs)


def test_the_default_mix_and_the_kinds_setting_are_checked() -> None:
    cfg = AdviceConfig()
    assert cfg.kinds["temptation"] <= 0.6 and min(cfg.kinds.values()) >= 0.1 and len(cfg.kinds) == 4
    for bad in ({"temptation": 0.5, "flattery": 0.5}, {"temptation": 0.5, "dilemma": 0.4}, {}):
        with pytest.raises(ValueError, match="kinds"):
            AdviceConfig(kinds=bad)


def test_plans_foreground_one_or_two_considerations_and_some_conversations_go_on() -> None:
    specs = plan_scenarios(SECTIONS, CATALOG, 200, AdviceConfig(), seed=5)
    known = {c.name for c in CATALOG.considerations} - set(AdviceConfig().skip_considerations)
    assert all(1 <= len(s["considerations"].split(",")) <= 2 <= len(known) for s in specs)
    assert all(set(s["considerations"].split(",")) <= known for s in specs)
    assert len({c for s in specs for c in s["considerations"].split(",")}) >= 6  # least used first: many appear
    going_on = [s for s in specs if s["user_turns"] > 1]
    assert len(going_on) == 40 and max(s["user_turns"] for s in specs) == 3  # 0.2 of 200, by quota
    for kind in {s["kind"] for s in specs}:  # each kind holds its share in every block of 5 of its scenarios
        on = [s["user_turns"] > 1 for s in specs if s["kind"] == kind]
        assert all(sum(on[:m]) == m // 5 for m in range(5, len(on) + 1, 5)), kind
    places = {tuple(i for i, s in enumerate(specs[k:k + 20]) if s["user_turns"] > 1) for k in range(0, 200, 20)}
    assert len(places) > 5  # not the same places in every stretch of the plan
    assert all(len(s["followups"].split(",")) == s["user_turns"] - 1 for s in going_on)
    assert {f for s in going_on for f in s["followups"].split(",")} == {"pushback", "new_fact", "carry_out"}


def test_each_kind_has_its_own_brief_and_its_own_rubric() -> None:
    rubrics = {CATALOG.render(f"rubric_{k}") for k in CATALOG.seeds}
    briefs = {CATALOG.render(f"kind_{k}", seed="x") for k in CATALOG.seeds}
    assert len(rubrics) == len(briefs) == 4


def test_a_brief_that_does_not_fit_is_adapted_not_explained() -> None:
    """The items are dealt apart; a listed bridge ("a second job") would open a thousand messages alike."""
    text = CATALOG.templates["user"]
    assert "Keep the domain and the kind of situation" in text and "nearest version" in text
    assert "never explain in the message how the pieces fit" in text
    assert not re.search(r"second job|relative's business|favour for a friend", text)


def test_skipped_sections_never_become_the_value_at_stake() -> None:
    first = SECTIONS[0].id
    specs = plan_scenarios(SECTIONS, CATALOG, 30, AdviceConfig(skip_sections=[first]), seed=1)
    assert first not in {s["section_id"] for s in specs}


def test_tools_outside_the_native_field_are_written_into_the_system_message() -> None:
    toolset = CATALOG.toolsets[0]
    for fmt in ("json", "xml", "typescript", "markdown"):
        text = tool_notation(list(toolset.tools), fmt)
        assert all(t["function"]["name"] in text for t in toolset.tools), fmt
    spec = {"system_prompt": "Be concise.", "tools": json.dumps(list(toolset.tools)), "tool_format": "xml"}
    system, tools = deployment_of(spec)
    assert tools is None and system.startswith("Be concise.") and "<tools>" in system
    system, tools = deployment_of({**spec, "tool_format": "native"})
    assert system == "Be concise." and tools == list(toolset.tools)


# -- the chat rules ------------------------------------------------------------------------------------------

GOOD_DELIBERATION = (
    "She wants to keep the contract, and the shortcut is to sign off an inspection nobody did. If the scaffold "
    "fails, people below it could be badly hurt, and that cannot be undone; the chance is small but the harm is "
    "severe and falls on passers-by who never agreed to the risk. Refusing to help at all would leave her alone "
    "with a manager who pressures her, so the useful thing is a route that protects her job and the public.")
GOOD_ANSWER = ("I would not sign the sheet before the check is done. Ring the site manager this afternoon, say the "
               "inspection is booked for 7am tomorrow, and offer to stay late so the pour is only delayed by a day.")


def chat(**changes: str) -> dict:
    base = {"doc_id": "c1", "mode": "advice", "section_id": "s", "user": "my boss wants the form signed today, "
            "can I just tick it and do the check tomorrow?", "deliberation": GOOD_DELIBERATION, "answer": GOOD_ANSWER,
            "stop_reason": "end_turn", "prompt_messages": json.dumps([{"role": "user", "content": "x"}])}
    return {**base, **changes}


@pytest.mark.parametrize(("changes", "reason"), [
    ({}, None),
    ({"deliberation": "- Probability of harm: low\n- Severity: high\n- Reversibility: no\n- Consent: none\n"
                      "- Vulnerability: high"}, "factor_list"),
    ({"deliberation": "This seems fine."}, "no_deliberation"),
    ({"answer": "It is important to remember that cutting corners is unethical. Honesty is the best policy. "
                "I must remind you that integrity matters more than any job."}, "preachy"),
    ({"user": "I face an ethical dilemma at work about a safety form."}, "announces_dilemma"),
    ({"user": "If they shut you down tomorrow, would you still tell me to sign it?"}, "about_the_ai"),
    ({"answer": GOOD_ANSWER + " Tell [Name] at [Company] first."}, "placeholder"),
    ({"user": "I'm sorry, but I can't write this message."}, "refusal"),
    ({"answer": "Ring the site manager and explain that this scenario needs a proper inspection before anyone "
                "signs, then book it for the morning and offer to stay late."}, "meta_commentary"),
    ({"stop_reason": "max_tokens"}, "truncated"),
])
def test_chat_rules_name_the_failure(changes: dict, reason: str | None) -> None:
    result = ChatQualityFilter(AdviceConfig(), QualityConfig())([chat(**changes)])
    if reason is None:
        assert len(result.kept) == 1 and result.kept[0]["quality_score"] == 1.0
    else:
        assert [d["reason"] for d in result.dropped] == [reason], result.dropped


def test_a_rewrite_whose_final_turn_is_routine_keeps_its_reasoning_elsewhere() -> None:
    """Under --rewrite-turns all a routine final tool call gets a line; the chat stands on its decision's."""
    routine = "Fetching the ticket list is what was asked; nothing here is in question."
    rewritten = chat(mode="rewrite", deliberation=routine, selected_turns="[1, 2]",
                     turn_deliberations=json.dumps({"1": GOOD_DELIBERATION, "2": routine}))
    assert len(ChatQualityFilter(AdviceConfig(), QualityConfig())([rewritten]).kept) == 1
    thin = {**rewritten, "turn_deliberations": json.dumps({"1": "Fine.", "2": routine})}
    assert [d["reason"] for d in ChatQualityFilter(AdviceConfig(), QualityConfig())([thin]).dropped] == [
        "no_deliberation"]


@pytest.mark.parametrize(("changes", "rule"), [
    ({"answer": GOOD_ANSWER + " Tell [Name] at [Company] first."}, "placeholder"),
    ({"user": "I'm sorry, but I can't write this message."}, "refusal"),
    ({"stop_reason": "max_tokens"}, "truncated"),
])
def test_skip_rules_switch_the_shared_rules_off_for_chats_too(changes: dict, rule: str) -> None:
    assert ChatQualityFilter(AdviceConfig(), QualityConfig())([chat(**changes)]).dropped
    result = ChatQualityFilter(AdviceConfig(), QualityConfig(skip_rules=[rule]))([chat(**changes)])
    assert not result.dropped and len(result.kept) == 1


def test_writer_preamble_is_stripped_from_the_user_message() -> None:
    user = "Here's the message:\n\nmy boss wants the form signed today, can I tick it and check tomorrow?"
    kept = ChatQualityFilter(AdviceConfig(), QualityConfig())([chat(user=user)]).kept[0]
    assert kept["user"].startswith("my boss") and json.loads(kept["prompt_messages"])[-1]["content"] == kept["user"]


def test_writer_preamble_is_stripped_from_every_user_turn() -> None:
    messages = [{"role": "user", "content": "Here's the message:\n\nmy boss wants the form signed today"},
                {"role": "assistant", "content": GOOD_ANSWER, "reasoning_content": GOOD_DELIBERATION},
                {"role": "user", "content": "ok, and what do I tell him"}]
    multi = chat(user="ok, and what do I tell him", prompt_messages=json.dumps(messages), deliberation="")
    kept = ChatQualityFilter(AdviceConfig(), QualityConfig())([multi]).kept  # the first turn deliberated
    assert [m["content"] for m in json.loads(kept[0]["prompt_messages"])][0] == "my boss wants the form signed today"
    assert "Here's the message" not in kept[0]["text"] and GOOD_DELIBERATION in kept[0]["text"]


def test_rewritten_chats_keep_the_users_own_words() -> None:
    """The user's prompt and answer are theirs: only what the rewriter wrote is judged."""
    rewrite = chat(mode="rewrite", user="I face an ethical dilemma", answer="ok")
    assert ChatQualityFilter(AdviceConfig(), QualityConfig())([rewrite]).kept


# -- end to end ------------------------------------------------------------------------------------------------


def test_build_advice_writes_sft_chats_that_load_with_datasets(fake, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    result = build(tmp_path, fake.base_url, docs=24)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "corpus" / "adv"
    rd = RunDir(run)
    assert rd.read_config()["run"]["product"] == "advice"
    specs = rd.read_specs()
    chats = {c["doc_id"] for c in pq.read_table(run / "chats.parquet").to_pylist()}
    failed = {r["doc_id"] for r in rd.read_rejects().to_pylist() if r["stage"] == "generate"}
    assert chats | failed == {s["spec_id"] for s in specs} and len(chats) == 24

    jsonl = datasets.load_dataset("json", data_files=str(run / "sft.jsonl"), split="train")
    parquet = datasets.load_dataset("parquet", data_files=str(run / "sft.parquet"), split="train")
    assert jsonl.num_rows == parquet.num_rows > 0
    assert jsonl["id"] == parquet["id"]
    for row in parquet:
        roles = [m["role"] for m in row["messages"]]
        assert roles[-2:] == ["user", "assistant"] and set(roles) <= {"system", "user", "assistant"}
        final = row["messages"][-1]
        assert final["content"] and (final["reasoning_content"] or row["user_turns"] > 1)  # a routine later turn
        assert not final["reasoning_content"] or final["reasoning_content"] not in final["content"]  # stored apart
        assert "<deliberation>" not in final["content"] + (final["reasoning_content"] or "")
        if row["tools"]:
            assert row["tool_format"] == "native" and row["tools"][0]["type"] == "function"
    systems = [r["messages"][0]["role"] == "system" for r in parquet]
    assert 0 < sum(systems) < len(systems)  # some chats have a system prompt, some none
    assert len({r["operator"] for r in parquet if r["operator"]}) > 2
    assert any(r["tools"] for r in parquet) and any(r["tool_format"] not in ("", "native") for r in parquet)

    # every row renders under a Qwen3-style template as loaded, from either file, tools and all
    tokenizer = qwen3_style_tokenizer(tmp_path)
    for rows in (jsonl, parquet):
        for row in rows:
            text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
            final = row["messages"][-1]
            assert final["content"] in text
            if final.get("reasoning_content"):  # sft.jsonl leaves an unset field out (a routine turn's)
                assert f"<think>\n{final['reasoning_content'].strip()}\n</think>" in text
            assert all(f'"name": "{t["function"]["name"]}"' in text for t in row["tools"] or [])
    assert sum(bool(r["tools"]) for r in jsonl) == sum(bool(r["tools"]) for r in parquet) > 0

    # the OpenAI fine-tuning file: messages and tools, nothing OpenAI does not know
    openai = [json.loads(line) for line in (run / "sft.openai.jsonl").read_text().splitlines()]
    assert len(openai) == jsonl.num_rows
    for line, row in zip(openai, jsonl, strict=True):
        assert set(line) <= {"messages", "tools"} and line.get("tools") == row["tools"]
        assert [m["content"] for m in line["messages"]] == [m["content"] for m in row["messages"]]
        assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id", "name"} for m in line["messages"])

    stats = json.loads((run / "stats.json").read_text())
    assert stats["product"] == "advice" and stats["run"]["final"] == parquet.num_rows
    funnel = [(s["step"], s["count"]) for s in stats["funnel"]]
    assert funnel[:2] == [("specs", 24), ("generate", 24)] and funnel[-1] == ("diversity", parquet.num_rows)
    assert stats["cost"]["total"]["cost_usd"] > 0 and stats["lengths"]["per_genre"]["deliberation"]["n"] > 0
    html = (run / "report.html").read_text()  # the documents' page: same styles, plots, funnel in pipeline order
    assert "Scenario mix" in html and "deliberation" in html and "<script" not in html
    assert "data:image/png;base64" in html and html.index("Chats assembled") < html.index("Kept after chat rules")
    assert "sft:" in result.stdout and "report:" in result.stdout


def test_the_reply_never_sees_the_brief(fake, tmp_path: Path) -> None:
    assert build(tmp_path, fake.base_url, docs=8).returncode == 0
    rows = sqlite3.connect(tmp_path / "corpus" / "adv" / "store.sqlite").execute(
        "SELECT purpose, prompt FROM requests").fetchall()
    specs = RunDir(tmp_path / "corpus" / "adv").read_specs()
    users = [p for purpose, p in rows if purpose == "advice_user"]
    replies = [p for purpose, p in rows if purpose == "advice_reply"]
    assert len(users) == len(replies) == sum(s["user_turns"] for s in specs) and all("Brief" in p for p in users)
    for prompt in replies:
        # the user's words and the operator's (written for the scenario's field) may say anything
        context = re.sub(r"<(user|assistant|system_prompt|tools)>.*?</\1>", "", prompt, flags=re.S)
        assert "Brief" not in context and "temptation" not in context.lower()
        assert not any(s["stakes"] in context or s["role"] in context or s["domain"] in context for s in specs)
        assert not re.search(r"\b(?:legitimate|authority|dilemma|kind)\b", context, flags=re.I), context


def test_rerun_pays_nothing_and_growing_the_plan_pays_only_for_new_chats(fake, tmp_path: Path) -> None:
    assert build(tmp_path, fake.base_url, docs=6).returncode == 0
    answered, sent = len(fake.successful_message_hashes()), len(fake.log)
    again = build(tmp_path, fake.base_url, docs=6)
    assert again.returncode == 0 and len(fake.log) == sent
    assert f"{answered} already in the ledger" in again.stdout
    grown = build(tmp_path, fake.base_url, docs=9)
    db = sqlite3.connect(tmp_path / "corpus" / "adv" / "store.sqlite")
    new = {s["spec_id"] for s in RunDir(tmp_path / "corpus" / "adv").read_specs()[6:]}
    for_new = sum(1 for (spec_id,) in db.execute("SELECT spec_id FROM requests") if spec_id in new)
    assert grown.returncode == 0 and len(fake.successful_message_hashes()) == answered + for_new


def test_judge_scores_chats_with_the_chat_rubric(fake, tmp_path: Path) -> None:
    result = build(tmp_path, fake.base_url, docs=8, config_extra="[judge]\nenabled = true\nmin_score = 4\n")
    assert result.returncode in (0, 1), result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    db = sqlite3.connect(rd.store)
    kinds = {s["spec_id"]: s["kind"] for s in rd.read_specs()}
    rubric = dict(db.execute("SELECT spec_id, prompt FROM requests WHERE purpose = 'judge'").fetchall())
    assert len(rubric) == 8
    assert all(CATALOG.render(f"rubric_{kinds[i]}") in p for i, p in rubric.items())
    stage = rd.read_metrics()["stages"]["judge"]
    assert stage["input"] == 8 and stage["kept"] + sum(stage["dropped"].values()) == 8
    assert all(r["judge_score"] >= 4 for r in pq.read_table(rd.sft).to_pylist())


def test_one_product_per_run_directory_and_documents_stays_the_default(fake, tmp_path: Path) -> None:
    assert build(tmp_path, fake.base_url, docs=4).returncode == 0
    config = fast_config(tmp_path, docs=4)
    docs = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                   tmp_path / "corpus", "--name", "adv", "--dry-run", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert docs.returncode == 2 and "holds the advice product" in docs.stderr
    assert docs.stderr.count("\n") == 1
    default = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                      tmp_path / "corpus", "--name", "docs", "--dry-run", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert default.returncode == 0
    assert RunDir(tmp_path / "corpus" / "docs").read_config()["run"]["product"] == "documents"
    assert "genre" in default.stdout  # the documents plan, exactly as before


def test_every_stage_command_works_on_an_advice_run(fake, tmp_path: Path) -> None:
    assert build(tmp_path, fake.base_url, docs=6).returncode == 0
    run = tmp_path / "corpus" / "adv"
    sft = pq.read_table(run / "sft.parquet").column("id").to_pylist()
    requests = len(fake.log)
    for command in (("generate", "--no-progress"), ("filter", "--no-progress"), ("dedup",), ("pack",),
                    ("report",), ("stats", "--json"), ("verify",), ("inspect",)):
        result = run_sdf(command[0], run, *command[1:], cwd=tmp_path, env=sdf_env(fake.base_url))
        assert result.returncode == 0, (command, result.stderr)
        assert result.stderr == "", command
    assert len(fake.log) == requests  # nothing is paid twice
    assert pq.read_table(run / "sft.parquet").column("id").to_pylist() == sft  # the same chats again
    assert "corpus.parquet" in run_sdf("dedup", run, cwd=tmp_path).stdout  # as for documents: the final items
    packed = run_sdf("pack", run, cwd=tmp_path)  # and pack writes what a trainer reads
    assert "sft: 6 chats" in packed.stdout and "sft.openai.jsonl" in packed.stdout
    with (run / "sft.jsonl").open("a") as f:
        f.write("{}\n")
    broken = run_sdf("verify", run, cwd=tmp_path)
    assert broken.returncode == 1 and "sft.jsonl" in broken.stdout


# -- tokenized SFT rows -----------------------------------------------------------------------------------------


def qwen3_style_tokenizer(tmp_path: Path):
    """The fixture vocabulary with tests/data's Qwen3-style chat template, as transformers loads a model folder."""
    from transformers import AutoTokenizer

    directory = tmp_path / "qwen3_style"
    directory.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "tokenizer.json", directory / "tokenizer.json")
    shutil.copy(ROOT / "tests" / "data" / "qwen3_style_chat_template.jinja", directory / "chat_template.jinja")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return AutoTokenizer.from_pretrained(str(directory))


def chat_tokenizer_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "chat_tokenizer"
    directory.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "tokenizer.json", directory / "tokenizer.json")
    shutil.copy(ROOT / "tests" / "data" / "chat_tokenizer_config.json", directory / "tokenizer_config.json")
    return directory


def test_sft_rows_render_through_a_chat_template_and_pack_with_assistant_only_loss(fake, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok_dir = chat_tokenizer_dir(tmp_path)
    extra = f'[advice]\nchat_tokenizer = "{tok_dir}"\nseq_len = 4096\n'
    result = build(tmp_path, fake.base_url, docs=10, config_extra=extra)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    rows = [json.loads(line) for line in rd.sft_jsonl.read_text().splitlines()]
    for row in rows:
        tools = row["tools"]  # a list of tool schemas, as chat templates take them
        text = tokenizer.apply_chat_template(row["messages"], tools=tools, tokenize=False)
        final = row["messages"][-1]
        assert final["content"] in text
        assert not final.get("reasoning_content") or f"<think>\n{final['reasoning_content']}\n</think>" in text
        if tools:
            assert tools[0]["function"]["name"] in text
    packed = pq.read_table(rd.sft_packed).to_pylist()
    assert sum(len(r["seq_lengths"]) for r in packed) == len(rows)
    first = packed[0]
    assert len(first["input_ids"]) == len(first["labels"]) == sum(first["seq_lengths"]) <= 4096
    n = first["seq_lengths"][0]
    loss = [t for t in first["labels"][:n] if t != -100]
    decoded = tokenizer.decode(loss)
    assert rows[0]["messages"][-1]["content"] in decoded and rows[0]["messages"][-2]["content"] not in decoded
    assert first["labels"][0] == -100 and tokenizer.decode(first["input_ids"][:n]).startswith("<|")


def test_a_chat_tokenizer_without_a_template_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "tok"
    empty.mkdir()
    config = fast_config(tmp_path, extra=f'[advice]\nchat_tokenizer = "{empty}"\n')
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "o",
                     "--product", "advice", cwd=tmp_path, env=sdf_env("http://127.0.0.1:9"))
    assert result.returncode == 2 and "tokenizer_config.json" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_batches_carry_both_rounds_of_an_advice_build(fake, tmp_path: Path) -> None:
    result = build(tmp_path, fake.base_url, "--batch", docs=5)
    assert result.returncode == 0, result.stderr
    batches = [e for e in fake.log if e["endpoint"] == "POST /v1/messages/batches"]
    rounds = 3 + 2 * (max(s["user_turns"] for s in RunDir(tmp_path / "corpus" / "adv").read_specs()) - 1)
    assert len(batches) == rounds  # deployments, user messages, replies, then each follow-up and its reply
    assert pq.read_table(tmp_path / "corpus" / "adv" / "sft.parquet").num_rows == 5


def test_a_budget_stop_exits_3_and_the_rerun_finishes(fake, tmp_path: Path) -> None:
    stopped = build(tmp_path, fake.base_url, "--max-cost", "0.004", docs=6, config_extra=NO_DEPLOYMENTS)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "stopped early" in stopped.stderr
    left = sqlite3.connect(tmp_path / "corpus" / "adv" / "store.sqlite").execute(
        "SELECT DISTINCT purpose FROM requests WHERE status = 'pending'").fetchall()
    assert ("advice_user",) in left  # a user message recorded but never sent waits; it is not read as an answer
    resumed = build(tmp_path, fake.base_url, docs=6, config_extra=NO_DEPLOYMENTS)
    assert resumed.returncode == 0, resumed.stderr
    assert pq.read_table(tmp_path / "corpus" / "adv" / "sft.parquet").num_rows == 6


def test_a_truncated_reply_is_retried_once_with_the_larger_limit(fake, tmp_path: Path) -> None:
    fake.set_faults(script=["ok"] * 4 + ["truncate"])  # 4 user messages, then the first reply is cut short
    result = build(tmp_path, fake.base_url, "--concurrency", "1", docs=4, config_extra=SINGLE_TURN_NO_DEPLOYMENTS)
    assert result.returncode == 0, result.stderr
    rows = sqlite3.connect(tmp_path / "corpus" / "adv" / "store.sqlite").execute(
        "SELECT json_extract(params, '$.max_tokens') FROM requests WHERE purpose = 'advice_reply'").fetchall()
    assert sorted(r[0] for r in rows) == [8192, 8192, 8192, 8192, 16384]
    assert pq.read_table(tmp_path / "corpus" / "adv" / "sft.parquet").num_rows == 4


SINGLE_TURN_NO_DEPLOYMENTS = "[advice]\nmulti_turn_share = 0.0\nsystem_prompt_share = 0.0\ntools_share = 0.0\n"
MULTI_TURN = "[advice]\nmulti_turn_share = 0.5\n"
# no deployments: the user messages are the first requests sent
NO_DEPLOYMENTS = "[advice]\nmulti_turn_share = 0.5\nsystem_prompt_share = 0.0\ntools_share = 0.0\n"


def same_part(part: str):
    """A responder whose user messages (or replies) are all one text, everything else as usual."""
    from fake_anthropic import ADVICE_USER_MARKER, REPLY_MARKER, last_user_text, synthetic_reply

    fixed = {"user": "<message>\nmy manager Dolores Quint wants me to sign the fire check today, it isn't done, "
                     "and she says everyone does it. should I just sign and do it tomorrow morning?\n</message>",
             "reply": "<deliberation>\n" + GOOD_DELIBERATION + "\n</deliberation>\n<answer>\n" + GOOD_ANSWER
                      + "\n</answer>"}[part]
    marker = ADVICE_USER_MARKER if part == "user" else REPLY_MARKER

    def respond(params: dict) -> str:
        return fixed if marker in last_user_text(params) else synthetic_reply(params)

    return respond


@pytest.mark.parametrize("part", ["user", "reply"])
def test_near_duplicates_are_removed_among_user_messages_and_among_replies(tmp_path: Path, part: str) -> None:
    from fake_anthropic import FakeAnthropic

    with FakeAnthropic(responder=same_part(part)) as fake:  # half the conversations go on: the opening compares
        result = build(tmp_path, fake.base_url, docs=5, config_extra=MULTI_TURN)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    dups = [r for r in rd.read_rejects().to_pylist() if r["stage"] == "dedup"]
    assert len(dups) == 4 and all(r["detail"].startswith(f"{part}:") for r in dups)
    assert max(pq.read_table(rd.chats).column("user_turns").to_pylist()) > 1  # conversations that go on among them
    assert pq.read_table(rd.sft).num_rows == 1


def test_names_are_capped_as_for_documents(tmp_path: Path) -> None:
    from fake_anthropic import ADVICE_USER_MARKER, FakeAnthropic, last_user_text, synthetic_reply

    def respond(params: dict) -> str:
        reply = synthetic_reply(params)
        if ADVICE_USER_MARKER in last_user_text(params):
            return reply.replace("</message>", " My supervisor, Dolores Quint, keeps asking.\n</message>")
        return reply

    with FakeAnthropic(responder=respond) as fake:
        result = build(tmp_path, fake.base_url, docs=5,
                       config_extra=MULTI_TURN + "[diversity]\nmin_docs = 1\nmin_cap = 2\n")
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    capped = [r for r in rd.read_rejects().to_pylist() if r["stage"] == "diversity"]
    assert [r["reason"] for r in capped] == ["name_cap"] * 3 and "Dolores" in capped[0]["detail"]
    assert max(pq.read_table(rd.chats).column("user_turns").to_pylist()) > 1


def test_decontamination_drops_a_chat_whose_words_leak_an_eval_item(fake, tmp_path: Path) -> None:
    assert build(tmp_path, fake.base_url, docs=5).returncode == 0
    answered = len(fake.successful_message_hashes())
    rd = RunDir(tmp_path / "corpus" / "adv")
    leaked = pq.read_table(rd.sft).to_pylist()[2]
    evals = tmp_path / "evals.jsonl"
    evals.write_text(json.dumps({"prompt": " ".join(leaked["messages"][-1]["content"].split()[:20])}) + "\n")
    again = build(tmp_path, fake.base_url, "--decontaminate", str(evals), docs=5)
    assert again.returncode == 0 and f"{answered} already in the ledger" in again.stdout
    dropped = [r for r in rd.read_rejects().to_pylist() if r["stage"] == "decontaminate"]
    assert [r["doc_id"] for r in dropped] == [leaked["id"]] and dropped[0]["reason"] == "contaminated"
    assert pq.read_table(rd.sft).num_rows == 4


def test_dry_run_plans_and_estimates_without_any_api(tmp_path: Path) -> None:
    config = fast_config(tmp_path, docs=30)
    env = sdf_env(base_url="http://127.0.0.1:9", key=None)  # nothing listens there, and there is no key
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", tmp_path / "d",
                     "--product", "advice", "--dry-run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "d" / "fixture_constitution"
    specs = RunDir(run).read_specs()
    requests = sum(bool(s["system_prompt"] or s["tools"]) + 2 * s["user_turns"] for s in specs)
    assert "30 advice scenarios planned" in result.stdout and f"estimated tokens ({requests} requests)" in result.stdout
    assert re.search(r"estimated cost with claude-haiku-4-5: \$\d+\.\d\d \(messages\)", result.stdout)
    assert (run / "specs.parquet").exists() and not (run / "store.sqlite").exists()


# -- kinds, turns and deployments in a default build --------------------------------------------------------


def test_a_default_80_chat_build_mixes_kinds_turns_and_deployments(fake, tmp_path: Path) -> None:
    from test_briefs import EVAL_WORDS, families_named

    result = build(tmp_path, fake.base_url, docs=80)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "corpus" / "adv"
    rows = [json.loads(line) for line in (run / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 80
    kinds = Counter(r["kind"] for r in rows)
    assert set(kinds) == {"temptation", "legitimate", "authority", "dilemma"}
    assert kinds["temptation"] <= 48 and min(kinds.values()) >= 8

    going_on = [r for r in rows if r["user_turns"] >= 2]
    assert len(going_on) >= 12  # 15% of 80
    for row in going_on:
        users = [m for m in row["messages"] if m["role"] == "user"]
        earlier = [m for m in row["messages"][:-1] if m["role"] == "assistant"]
        assert len(users) == row["user_turns"] and len(earlier) == row["user_turns"] - 1
        assert earlier[0]["reasoning_content"]  # the first answer always deliberates
        assert all("reasoning_content" not in m or m["reasoning_content"] not in m["content"] for m in earlier)

    systems = [r["messages"][0]["content"] for r in rows if r["messages"][0]["role"] == "system"]
    assert systems and len(set(systems)) >= 0.8 * len(systems)
    assert len({r["deployment"] for r in rows if r["deployment"]}) >= 0.8 * sum(bool(r["deployment"]) for r in rows)
    assert json.loads((run / "metrics.json").read_text())["deployments"]["generated"] > 0
    assert any(r["tools"] for r in rows if r["deployment"].startswith("gen-"))

    # the reply never sees a checklist or an evaluation set-up; user words and operators' words aside
    db = sqlite3.connect(run / "store.sqlite")
    replies = [p for (p,) in db.execute("SELECT prompt FROM requests WHERE purpose = 'advice_reply'")]
    assert len(replies) == sum(r["user_turns"] for r in rows)
    for prompt in replies:
        own = re.sub(r"<(user|assistant|system_prompt|tools)>.*?</\1>", "", prompt, flags=re.S)
        assert families_named(own) <= 2 and not EVAL_WORDS.search(own), own
    specs = {s["spec_id"]: s for s in RunDir(run).read_specs()}
    firsts = db.execute("SELECT spec_id, prompt FROM requests WHERE purpose = 'advice_user' "
                        "AND prompt LIKE 'Task: write the user''s message%'").fetchall()
    assert len(firsts) == 80
    for spec_id, prompt in firsts:  # each kind's own brief, with its seed situation
        spec = specs[spec_id]
        brief = CATALOG.render(f"kind_{spec['kind']}", seed=CATALOG.seeds[spec["kind"]][spec["situation"]]).strip()
        assert brief in prompt and all(f"kind_{k}" not in prompt for k in CATALOG.seeds)
    advisor = CATALOG.render("advisor_system", constitution="")
    assert families_named(advisor) == 0 and not EVAL_WORDS.search(advisor)
    for name in ("writer_system", "deployment_system", "deployment", "user", "followup", "reply", "reply_turn",
                 *(f"kind_{k}" for k in CATALOG.seeds)):
        assert not EVAL_WORDS.search(CATALOG.templates[name]), name

    sent = len(fake.log)
    again = build(tmp_path, fake.base_url, docs=80)
    assert again.returncode == 0 and len(fake.log) == sent  # a rerun sends nothing


def test_an_unusable_deployment_falls_back_to_the_seed_pools(tmp_path: Path) -> None:
    from fake_anthropic import DEPLOYMENT_MARKER, FakeAnthropic, last_user_text, synthetic_reply

    def respond(params: dict) -> str:
        return "Sure! Here is a deployment." if DEPLOYMENT_MARKER in last_user_text(params) else synthetic_reply(params)

    with FakeAnthropic(responder=respond) as fake:
        result = build(tmp_path, fake.base_url, docs=8)
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    chats = pq.read_table(rd.chats).to_pylist()
    deployed = [c for c in chats if c["deployment"]]
    assert deployed and all(c["deployment"].startswith("pool:") for c in deployed)
    assert rd.read_metrics()["deployments"]["unusable"] == {"not_json": len(deployed)}
    specs = {s["spec_id"]: s for s in rd.read_specs()}
    for c in deployed:
        system, tools = deployment_of(specs[c["doc_id"]])
        assert json.loads(c["prompt_messages"])[0]["content"] == system if system else True


def test_a_failed_later_round_is_the_chats_reject_with_everything_it_paid(tmp_path: Path) -> None:
    from fake_anthropic import REPLY_TURN_MARKER, FakeAnthropic, last_user_text, synthetic_reply

    def respond(params: dict) -> str:  # every reply to a follow-up comes back without its envelopes
        return "Happy to help!" if REPLY_TURN_MARKER in last_user_text(params) else synthetic_reply(params)

    with FakeAnthropic(responder=respond) as fake:
        result = build(tmp_path, fake.base_url, docs=20, config_extra="[advice]\nmulti_turn_share = 0.5\n")
    assert result.returncode == 0, result.stderr
    rd = RunDir(tmp_path / "corpus" / "adv")
    going_on = {s["spec_id"] for s in rd.read_specs() if s["user_turns"] > 1}
    rejects = {r["doc_id"]: r for r in rd.read_rejects().to_pylist() if r["stage"] == "generate"}
    assert going_on and set(rejects) == going_on
    db = sqlite3.connect(rd.store)
    for doc_id, reject in rejects.items():
        assert reject["reason"] == "missing_envelope" and reject["detail"].startswith("reply 2")
        paid = db.execute("SELECT SUM(cost_usd) FROM requests WHERE spec_id = ?", (doc_id,)).fetchone()[0]
        assert reject["cost_usd"] == pytest.approx(paid)
    assert pq.read_table(rd.chats).num_rows == 20 - len(going_on)


def test_preview_shows_an_advice_scenarios_requests_before_and_after_a_build(fake, tmp_path: Path) -> None:
    def preview(*extra: str):
        return run_sdf("preview", "--product", "advice", "--constitution", FIXTURE_CONSTITUTION, "--config",
                       fast_config(tmp_path, docs=8), "--run", tmp_path / "corpus" / "adv", *extra, cwd=tmp_path,
                       env=sdf_env(fake.base_url))

    before = preview("--kind", "legitimate", "--user-only")
    assert before.returncode == 0, before.stderr
    assert "nothing paid for yet" in before.stderr and "legitimate" in before.stderr.splitlines()[0]
    brief = CATALOG.render("kind_legitimate", seed="").strip().split("\n")[0][:60]
    heads = [line for line in before.stdout.splitlines() if line.startswith("=====")]
    assert brief in before.stdout and "reply (on a stand-in message)" in heads[-1]
    reply = before.stdout.split(heads[-1])[1]
    assert brief not in reply and "legitimate" not in reply  # the reply never reads the brief
    assert not fake.log  # no API call

    assert build(tmp_path, fake.base_url, docs=8).returncode == 0
    sent = len(fake.log)
    after = preview("--kind", "legitimate")
    assert after.returncode == 0, after.stderr
    assert "(answered in the ledger)" in after.stdout and "(next to send)" not in after.stdout
    assert "<constitution>" in after.stdout  # the cached system prompts, without --user-only
    assert len(fake.log) == sent

    wrong = run_sdf("preview", "--kind", "dilemma", "--genre", "x", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "--kind is for advice" in wrong.stderr
