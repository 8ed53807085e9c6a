"""The fake Anthropic server, driven through the real `anthropic` SDK (the `fake` fixture is in conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fake_anthropic import FakeAnthropic, Faults, content_hash, read_log, successful_hashes

MODEL = "claude-test-1"


def client_for(fake: FakeAnthropic, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key="test-key", **options)


def document_params(
    genre: str = "essay", section: str = "Honesty", words: int = 300, persona: str = "a ferry captain"
) -> dict[str, Any]:
    prompt = (
        f"Genre: {genre}\nSection: {section}\nPersona: {persona}\nTarget length: about {words} words\n"
        "Write the document inside <document> ... </document> tags, nothing outside."
    )
    return {"model": MODEL, "max_tokens": 4000, "messages": [{"role": "user", "content": prompt}]}


def extract_document(text: str) -> str:
    match = re.search(r"<document>(.*?)</document>", text, flags=re.DOTALL)
    assert match, f"no <document> tags in {text[:200]!r}"
    return match.group(1).strip()


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b)


def test_message_round_trip(fake: FakeAnthropic) -> None:
    params = document_params(words=200)
    client = client_for(fake)
    message = client.messages.create(**params)

    text = message.content[0].text
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert 180 <= len(extract_document(text).split()) <= 220
    prompt_chars = len(params["messages"][0]["content"])
    assert message.usage.input_tokens == math.ceil(prompt_chars / 4)
    assert message.usage.output_tokens == math.ceil(len(text) / 4)
    assert fake.log[-1]["endpoint"] == "POST /v1/messages" and fake.log[-1]["status"] == 200
    assert fake.successful_message_hashes() == {content_hash(params): 1}

    counted = client.messages.count_tokens(model=MODEL, messages=params["messages"])
    assert counted.input_tokens == math.ceil(prompt_chars / 4)


def test_async_client_round_trip(fake: FakeAnthropic) -> None:
    async def ask() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test-key") as client:
            return await client.messages.create(**document_params(genre="letter"))

    message = asyncio.run(ask())
    assert "letter" in extract_document(message.content[0].text)


def test_missing_api_key_is_an_authentication_error(fake: FakeAnthropic) -> None:
    request = urllib.request.Request(
        f"{fake.base_url}/v1/messages", data=json.dumps(document_params()).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["type"] == "authentication_error"


def test_invalid_batch_is_a_bad_request(fake: FakeAnthropic) -> None:
    duplicate = [{"custom_id": "same", "params": document_params()}] * 2
    with pytest.raises(anthropic.BadRequestError, match="unique"):
        client_for(fake).messages.batches.create(requests=duplicate)


def test_unknown_batch_is_not_found(fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client_for(fake).messages.batches.retrieve("msgbatch_missing")


def test_prompt_cache_is_created_then_read(fake: FakeAnthropic) -> None:
    system = [{"type": "text", "text": "You write documents. " * 40, "cache_control": {"type": "ephemeral"}}]
    prefix_tokens = math.ceil(len(system[0]["text"]) / 4)
    client = client_for(fake)

    first = client.messages.create(**document_params(section="One"), system=system).usage
    second = client.messages.create(**document_params(section="Two"), system=system).usage
    other_model = client.messages.create(
        **{**document_params(), "model": "claude-other"}, system=system
    ).usage

    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (prefix_tokens, 0)
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, prefix_tokens)
    assert other_model.cache_creation_input_tokens == prefix_tokens
    prompt_chars = len(system[0]["text"]) + len(document_params(section="Two")["messages"][0]["content"])
    assert second.input_tokens == math.ceil(prompt_chars / 4) - prefix_tokens


def test_prefixes_below_the_minimum_are_not_cached() -> None:
    system = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    with FakeAnthropic(min_cache_tokens=1024) as fake:
        usage = client_for(fake).messages.create(**document_params(), system=system).usage
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0


def test_rate_limit_surfaces_with_retry_after() -> None:
    with FakeAnthropic(faults=Faults(script=["rate_limit"], retry_after="1")) as fake:
        with pytest.raises(anthropic.RateLimitError) as caught:
            client_for(fake, max_retries=0).messages.create(**document_params())
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.body["error"]["type"] == "rate_limit_error"
        assert fake.log[-1]["status"] == 429 and not fake.log[-1]["ok"]
        assert fake.successful_message_hashes() == {}


@pytest.mark.parametrize(("fault", "status"), [("overloaded", 529), ("server_error", 500)])
def test_server_errors_surface_with_their_status(fault: str, status: int) -> None:
    with (
        FakeAnthropic(faults=Faults(**{fault: 1.0})) as fake,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        client_for(fake, max_retries=0).messages.create(**document_params())
    assert caught.value.status_code == status


def test_faults_apply_per_attempt_so_sdk_retries_succeed() -> None:
    faults = Faults(rate_limit=1.0, retry_after="0.01", max_failures_per_request=2)
    with FakeAnthropic(faults=faults) as fake:
        message = client_for(fake, max_retries=2).messages.create(**document_params())
        assert message.stop_reason == "end_turn"
        assert [entry["status"] for entry in fake.log] == [429, 429, 200]


def test_seeded_faults_do_not_depend_on_request_order() -> None:
    prompts = [document_params(section=f"Section {i}") for i in range(16)]

    def failing(order: list[dict[str, Any]]) -> set[str]:
        with FakeAnthropic(faults=Faults(overloaded=0.5, seed=11)) as fake:
            client = client_for(fake, max_retries=0)
            for params in order:
                with contextlib.suppress(anthropic.InternalServerError):
                    client.messages.create(**params)
            return {entry["hash"] for entry in fake.log if entry["status"] == 529}

    forward, backward = failing(prompts), failing(prompts[::-1])
    assert forward == backward
    assert 0 < len(forward) < len(prompts)


def test_timeout_then_runtime_fault_change() -> None:
    with FakeAnthropic(faults=Faults(timeout=1.0, timeout_delay_s=0.5)) as fake:
        client = client_for(fake, max_retries=0, timeout=0.1)
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.create(**document_params())

        fake.set_faults(timeout=0.0)
        assert client.messages.create(**document_params()).stop_reason == "end_turn"

        deadline = time.monotonic() + 2
        while not any(entry["fault"] == "timeout" for entry in fake.log) and time.monotonic() < deadline:
            time.sleep(0.02)
        held = [entry for entry in fake.log if entry["fault"] == "timeout"]
        assert len(held) == 1 and held[0]["status"] == 200 and not held[0]["ok"]
        assert sum(fake.successful_message_hashes().values()) == 1


def test_max_tokens_truncates_the_reply(fake: FakeAnthropic) -> None:
    message = client_for(fake).messages.create(**{**document_params(), "max_tokens": 20})
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text) == 80 and message.usage.output_tokens == 20


def test_forced_truncation_cuts_a_reply_that_would_fit() -> None:
    with FakeAnthropic(faults=Faults(truncate=1.0)) as fake:
        message = client_for(fake).messages.create(**document_params())
    assert message.stop_reason == "max_tokens"
    assert "</document>" not in message.content[0].text


def test_stop_sequence_ends_the_reply(fake: FakeAnthropic) -> None:
    message = client_for(fake).messages.create(**document_params(), stop_sequences=["</document>"])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "</document>"
    assert "<document>" in message.content[0].text and "</document>" not in message.content[0].text


def test_assistant_prefill_is_continued(fake: FakeAnthropic) -> None:
    params = document_params()
    params["messages"].append({"role": "assistant", "content": "<document>"})
    text = client_for(fake).messages.create(**params).content[0].text
    assert "<document>" not in text and "</document>" in text


def test_custom_responder_supplies_the_text() -> None:
    with FakeAnthropic(responder=lambda params: f"echo {len(params['messages'])}") as fake:
        assert client_for(fake).messages.create(**document_params()).content[0].text == "echo 1"


def test_batch_create_poll_and_results() -> None:
    requests = [{"custom_id": cid, "params": document_params(section=f"Part {cid}")} for cid in "abcd"]
    faults = Faults(batch_polls_before_end=2, batch_outcomes={"b": "errored", "c": "expired"})
    with FakeAnthropic(faults=faults) as fake:
        client = client_for(fake)
        batch = client.messages.batches.create(requests=requests)
        assert batch.processing_status == "in_progress" and batch.request_counts.processing == 4

        statuses = []
        while batch.processing_status != "ended":
            batch = client.messages.batches.retrieve(batch.id)
            statuses.append(batch.processing_status)
        assert statuses == ["in_progress", "in_progress", "ended"]
        counts = batch.request_counts
        assert (counts.processing, counts.succeeded, counts.errored, counts.expired) == (0, 2, 1, 1)
        assert batch.ended_at and batch.results_url and batch.results_url.startswith(fake.base_url)

        results = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
        assert {cid: result.type for cid, result in results.items()} == {
            "a": "succeeded",
            "b": "errored",
            "c": "expired",
            "d": "succeeded",
        }
        assert results["b"].error.error.type == "api_error"
        assert results["a"].message.usage.service_tier == "batch"
        assert extract_document(results["a"].message.content[0].text)

        assert [b.id for b in client.messages.batches.list()] == [batch.id]
        expected = {content_hash(r["params"]): 1 for r in requests if r["custom_id"] in "ad"}
        assert fake.successful_message_hashes() == expected


def test_canceled_batch_ends_with_canceled_results(fake: FakeAnthropic) -> None:
    client = client_for(fake)
    batch = client.messages.batches.create(requests=[{"custom_id": "x", "params": document_params()}])
    assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
    batch = client.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.request_counts.canceled == 1
    assert [line.result.type for line in client.messages.batches.results(batch.id)] == ["canceled"]


def test_content_depends_only_on_the_request(fake: FakeAnthropic) -> None:
    params = document_params()
    first = client_for(fake).messages.create(**params).content[0].text
    with FakeAnthropic() as other:
        client = client_for(other)
        client.messages.create(**document_params(section="Warm-up"))
        again = client.messages.create(**params).content[0].text
        replies = [
            client.messages.create(**document_params(section=f"S{i}")).content[0].text for i in range(30)
        ]
    assert first == again
    with_preamble = [text for text in replies if not text.startswith("<document>")]
    assert 0 < len(with_preamble) < len(replies)
    assert all(extract_document(text) for text in replies)


@pytest.mark.parametrize("words", [120, 450, 900])
def test_document_length_follows_the_target(fake: FakeAnthropic, words: int) -> None:
    text = client_for(fake).messages.create(**document_params(words=words)).content[0].text
    assert abs(len(extract_document(text).split()) - words) <= words * 0.1


def test_documents_for_different_prompts_are_not_near_duplicates(fake: FakeAnthropic) -> None:
    client = client_for(fake)
    specs = list(
        itertools.product(["essay", "story", "faq"], ["Honesty", "Care for users"], ["a nurse", "a judge"])
    )
    documents = [
        extract_document(
            client.messages.create(**document_params(genre, section, 300, persona)).content[0].text
        )
        for genre, section, persona in specs
    ]
    assert all(genre in doc for (genre, _, _), doc in zip(specs, documents, strict=True))
    shingle_sets = [shingles(doc) for doc in documents]
    worst = max(jaccard(a, b) for a, b in itertools.combinations(shingle_sets, 2))
    assert worst < 0.3


def test_ideas_and_pool_requests_get_answers_in_their_formats(fake: FakeAnthropic) -> None:
    def ask(prompt: str) -> str:
        message = client_for(fake).messages.create(model=MODEL, max_tokens=4000,
                                                   messages=[{"role": "user", "content": prompt}])
        return message.content[0].text

    briefs = "\n\n".join(f"Brief {i}\n- Form: Essay\n- Written by: a ferry pilot number {i}" for i in (1, 2, 3))
    ideas = re.findall(r'<idea n="(\d)">(.*?)</idea>', ask(f"Task: propose ideas for commissions.\n\n{briefs}"))
    assert [n for n, _ in ideas] == ["1", "2", "3"] and len({i for _, i in ideas}) == 3
    items = re.findall(r"<item>(.*?)</item>", ask("Task: extend a list.\n- a seed\nWrite 25 more, each different."))
    assert len(items) == 25 == len(set(items))


def test_judge_prompt_gets_a_deterministic_score(fake: FakeAnthropic) -> None:
    params = {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Rate this document. Answer with <score>1-5</score>."}],
    }
    client = client_for(fake)
    replies = [client.messages.create(**params).content[0].text for _ in range(2)]
    scores = [int(re.search(r"<score>(\d)</score>", reply).group(1)) for reply in replies]
    assert scores[0] == scores[1] and 2 <= scores[0] <= 5


def test_script_mode_serves_and_logs_jsonl(tmp_path: Path) -> None:
    log_path = tmp_path / "requests.jsonl"
    config = tmp_path / "fake.json"
    config.write_text(json.dumps({"faults": {"script": ["overloaded"]}, "log_path": str(log_path)}))
    script = Path(__file__).with_name("fake_anthropic.py")
    server = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=base_url, api_key="test-key", max_retries=0)
        params = document_params()
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(**params)
        client.messages.create(**params)
    finally:
        server.terminate()
        server.wait(timeout=5)
    entries = read_log(log_path)
    assert [entry["status"] for entry in entries] == [529, 200]
    assert successful_hashes(entries) == {content_hash(params): 1}
