"""The generation engine against the fake Anthropic server, through the real SDK."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, Faults, content_hash
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from sdf.config import LLMConfig, Settings
from sdf.errors import SdfError
from sdf.llm.anthropic import AnthropicBackend
from sdf.llm.engine import chunk_batch, run_requests, worst_cost
from sdf.llm.langchain import LangChainBackend
from sdf.llm.ledger import Ledger, LLMRequest

SYSTEM = "You write documents about a constitution. " * 300  # long enough to be worth caching
KEY = "fake-key-do-not-leak-0123456789"
PRICES = Settings().price


def cfg(**changes) -> LLMConfig:
    base = dict(model="claude-haiku-4-5", concurrency=4, backoff_base_s=0.01, backoff_max_s=0.05,
                poll_interval_s=0.01, poll_max_interval_s=0.05, timeout_s=5.0, max_retries=6)
    return LLMConfig(**{**base, **changes})


def requests(n: int, max_tokens: int = 1024) -> list[LLMRequest]:
    return [
        LLMRequest("generate", f"spec-{i}", "claude-haiku-4-5", SYSTEM,
                   f"Genre: essay\nTarget length: about {60 + i} words\nWrite document number {i}.",
                   max_tokens)
        for i in range(n)
    ]


def backend(fake: FakeAnthropic, llm: LLMConfig, monkeypatch: pytest.MonkeyPatch) -> AnthropicBackend:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return AnthropicBackend.from_env(llm)


def fake_hash(request: LLMRequest, be: AnthropicBackend) -> str:
    return content_hash(be.batch_body(request))


def run(reqs, ledger, be, llm, max_cost=0.0):
    return run_requests(reqs, ledger, be, llm, max_cost, PRICES, progress=False)


def test_prompt_cache_prefix_is_shared_and_costs_match_usage(fake, tmp_path, monkeypatch) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg()
    reqs = requests(20)
    summary = run(reqs, ledger, backend(fake, llm, monkeypatch), llm)
    assert summary.succeeded == 20 and summary.failed == 0
    rows = ledger.rows("generate")
    assert sum(1 for r in rows if r["cache_creation_tokens"]) == 1  # one write, then every request reads
    assert sum(1 for r in rows if r["cache_read_tokens"]) == 19
    totals = ledger.totals()
    assert totals["cache_read_share"] > 0.8
    price = PRICES("claude-haiku-4-5")
    expected = sum(price.cost(r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"],
                              r["cache_read_tokens"]) for r in rows)
    assert totals["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert summary.cost_usd == pytest.approx(expected, rel=1e-12)
    # a rerun over the complete ledger sends nothing
    before = len(fake.log)
    again = run(reqs, ledger, backend(fake, llm, monkeypatch), llm)
    assert again.already_done == 20 and again.succeeded == 0 and len(fake.log) == before


def test_transient_faults_are_retried_until_success(tmp_path, monkeypatch) -> None:
    faults = Faults(rate_limit=0.2, overloaded=0.15, server_error=0.15, seed=3, retry_after="0",
                    max_failures_per_request=3)
    with FakeAnthropic(faults=faults) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg()
        be = backend(fake, llm, monkeypatch)
        reqs = requests(30)
        summary = run(reqs, ledger, be, llm)
        assert summary.succeeded == 30 and summary.failed == 0
        statuses = Counter(e["status"] for e in fake.log)
        assert statuses[429] and statuses[529] and statuses[500]
        retries = ledger.db.execute("SELECT COUNT(*) FROM attempts WHERE status='retry'").fetchone()[0]
        assert retries == statuses[429] + statuses[529] + statuses[500]
        answered = fake.successful_message_hashes()
        assert all(answered[fake_hash(r, be)] == 1 for r in reqs)


def test_retry_after_is_honoured(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(script=["rate_limit"], retry_after="1")) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(backoff_base_s=0.001, backoff_max_s=0.001)
        summary = run(requests(1), ledger, backend(fake, llm, monkeypatch), llm)
        times = [e["time"] for e in fake.log if e["endpoint"] == "POST /v1/messages"]
        assert summary.succeeded == 1 and len(times) == 2
        assert times[1] - times[0] >= 0.95


def test_timeouts_are_retried(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(script=["timeout", "timeout"], timeout_delay_s=2.0)) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(timeout_s=0.5, concurrency=1)
        summary = run(requests(2), ledger, backend(fake, llm, monkeypatch), llm)
        assert summary.succeeded == 2
        errors = [r["error"] for r in ledger.db.execute("SELECT error FROM attempts WHERE status='retry'")]
        assert errors == ["request timed out", "request timed out"]


def test_other_4xx_fail_without_retry(fake, tmp_path, monkeypatch) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg()
    bad = LLMRequest("generate", "bad", "claude-haiku-4-5", SYSTEM, "Write.", -1)  # an invalid max_tokens
    summary = run([bad, *requests(3)], ledger, backend(fake, llm, monkeypatch), llm)
    assert summary.succeeded == 3 and summary.failed == 1
    row = ledger.get(bad.key)
    assert row["status"] == "failed" and row["attempts"] == 1 and "HTTP 400" in row["error"]


def test_persistent_failure_stops_cleanly_and_a_rerun_resumes(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(server_error=1.0)) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(max_retries=1, max_consecutive_failures=3, concurrency=2)
        be = backend(fake, llm, monkeypatch)
        reqs = requests(40)
        summary = run(reqs, ledger, be, llm)
        assert summary.stopped.startswith("the API failed 3 requests in a row")
        assert summary.succeeded == 0 and len(fake.log) < 40  # it stopped instead of hammering on
        fake.set_faults(Faults())
        again = run(reqs, ledger, backend(fake, llm, monkeypatch), llm)
        assert again.succeeded == 40 and not again.stopped
        assert all(n == 1 for n in fake.successful_message_hashes().values())


def test_budget_holds_at_concurrency_16_and_stops_within_one_worst_case_of_the_cap(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(latency_s=0.05)) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(concurrency=16)
        reqs = requests(120, max_tokens=600)
        worst = max(worst_cost(r, PRICES(r.model), batch=False) for r in reqs)
        cap = worst * 6  # room for a few reservations at once, far fewer than the 120 requests
        summary = run(reqs, ledger, backend(fake, llm, monkeypatch), llm, max_cost=cap)
    spent = ledger.spent()
    assert summary.stopped.startswith("budget")
    assert spent <= cap, (spent, cap)  # never over, whatever the concurrency
    assert spent > cap - worst  # and it stopped only when one more worst case no longer fit
    assert summary.cost_usd == pytest.approx(spent)
    assert ledger.counts("generate")["pending"] > 0


def test_budget_needs_a_price(fake, tmp_path, monkeypatch) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg()
    req = LLMRequest("generate", "x", "some-unpriced-model", SYSTEM, "Write.", 100)
    with pytest.raises(SdfError, match="needs prices for some-unpriced-model"):
        run([req], ledger, backend(fake, llm, monkeypatch), llm, max_cost=1.0)


def test_batches_retry_errored_and_expired_results(tmp_path, monkeypatch) -> None:
    faults = Faults(batch_errored=0.2, batch_expired=0.2, seed=5, max_failures_per_request=1,
                    batch_polls_before_end=2)
    with FakeAnthropic(faults=faults) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(batch=True)
        be = backend(fake, llm, monkeypatch)
        reqs = requests(25)
        summary = run(reqs, ledger, be, llm)
        assert summary.succeeded == 25 and summary.failed == 0
        batches = ledger.batches()
        assert len(batches) >= 2  # the follow-up batch carried the errored and expired requests
        outcomes = Counter()
        for b in batches:
            import json

            outcomes.update(json.loads(b["counts"]))
        assert outcomes["errored"] and outcomes["expired"] and outcomes["succeeded"] == 25
        rows = ledger.rows("generate")
        price = PRICES("claude-haiku-4-5")
        assert all(r["mode"] == "batch" and r["cache_ttl"] == "1h" for r in rows)  # batches cache for an hour
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(
            price.cost(r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"],
                       batch=True, cache_write_1h=r["cache_creation_tokens"]) for r in rows))


def test_batches_give_up_after_the_configured_attempts(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(batch_errored=1.0)) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg(batch=True, batch_max_attempts=2)
        summary = run(requests(3), ledger, backend(fake, llm, monkeypatch), llm)
        assert summary.failed == 3 and len(ledger.batches()) == 2
        assert ledger.counts("generate") == {"failed": 3}


def test_a_recorded_batch_is_reattached_not_resubmitted(fake, tmp_path, monkeypatch) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg(batch=True)
    be = backend(fake, llm, monkeypatch)
    reqs = requests(5)
    # What a process killed right after submitting leaves behind: the batch id in the ledger.
    ledger.register(reqs)
    batch_id = be.create_batch(reqs)
    ledger.add_batch(batch_id, "generate", [r.key for r in reqs])
    summary = run(reqs, ledger, be, llm)
    assert summary.succeeded == 5
    creates = [e for e in fake.log if e["endpoint"] == "POST /v1/messages/batches"]
    assert len(creates) == 1 and ledger.active_batches() == []


def test_batches_are_chunked_within_api_limits(monkeypatch) -> None:
    import sdf.llm.engine as generate

    monkeypatch.setattr(generate, "MAX_BATCH_REQUESTS", 7)
    reqs = requests(20)
    be = AnthropicBackend("k", cfg())
    assert [len(c) for c in chunk_batch(reqs, be)] == [7, 7, 6]
    monkeypatch.setattr(generate, "MAX_BATCH_REQUESTS", 100_000)
    monkeypatch.setattr(generate, "MAX_BATCH_BYTES", 3 * len(SYSTEM) * 1.2)
    chunks = chunk_batch(reqs, be)
    assert len(chunks) > 5 and sum(map(len, chunks)) == 20


def test_langchain_backend_goes_through_the_same_ledger(tmp_path) -> None:
    replies = iter([AIMessage(content=f"<document>Doc {i}</document>",
                              usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
                              response_metadata={"finish_reason": "stop"}) for i in range(5)])
    model = GenericFakeChatModel(messages=replies)
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg(provider="langchain", langchain_class="x:Y", model="claude-haiku-4-5")
    reqs = requests(5)
    summary = run_requests(reqs, ledger, LangChainBackend(model), llm, 0.0, PRICES, progress=False)
    assert summary.succeeded == 5
    rows = ledger.rows("generate")
    assert {r["response_text"] for r in rows} == {f"<document>Doc {i}</document>" for i in range(5)}
    assert all(r["input_tokens"] == 100 and r["stop_reason"] == "end_turn" and r["cost_usd"] > 0 for r in rows)
    again = run_requests(reqs, ledger, LangChainBackend(GenericFakeChatModel(messages=iter([]))), llm, 0.0, PRICES,
                         progress=False)
    assert again.already_done == 5


def test_langchain_errors_are_classified(tmp_path) -> None:
    class Flaky(GenericFakeChatModel):
        calls: int = 0

        async def _agenerate(self, *args, **kwargs):  # type: ignore[override]
            self.calls += 1
            if self.calls <= 2:
                raise TimeoutError("slow")
            return await super()._agenerate(*args, **kwargs)

    model = Flaky(messages=iter([AIMessage(content="<document>ok</document>")]))
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg(provider="langchain", langchain_class="x:Y")
    summary = run_requests(requests(1), ledger, LangChainBackend(model), llm, 0.0, PRICES, progress=False)
    assert summary.succeeded == 1 and model.calls == 3


def test_langchain_backend_from_config_errors() -> None:
    with pytest.raises(SdfError, match="cannot import 'no_such_module'"):
        LangChainBackend.from_config(cfg(provider="langchain", langchain_class="no_such_module:Chat"))
    with pytest.raises(SdfError, match="is not a LangChain BaseChatModel"):
        LangChainBackend.from_config(cfg(provider="langchain", langchain_class="pathlib:Path"))
    model = LangChainBackend.from_config(cfg(provider="langchain",
                                             langchain_class="langchain_core.language_models:FakeListChatModel",
                                             langchain_kwargs={"responses": ["a"]}))
    assert model.model.responses == ["a"]


def test_missing_key_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(SdfError, match="ANTHROPIC_API_KEY is not set.*--dry-run"):
        AnthropicBackend.from_env(cfg())


def test_key_never_reaches_the_ledger(tmp_path, monkeypatch) -> None:
    with FakeAnthropic(faults=Faults(script=["server_error", "rate_limit"])) as fake:
        ledger = Ledger(tmp_path / "store.sqlite")
        llm = cfg()
        run(requests(3), ledger, backend(fake, llm, monkeypatch), llm)
        ledger.close()
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_ledger_survives_a_half_written_state(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    reqs = requests(3)
    ledger.register(reqs)
    with pytest.raises(RuntimeError), ledger.transaction() as db:
        db.execute("UPDATE requests SET status='ok'")
        raise RuntimeError("crash mid-transaction")
    assert ledger.counts() == {"pending": 3}
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_batch_mode_submits_only_what_the_budget_can_pay_for(fake, tmp_path, monkeypatch) -> None:
    ledger = Ledger(tmp_path / "store.sqlite")
    llm = cfg(batch=True)
    reqs = requests(20)
    price = PRICES("claude-haiku-4-5")
    worst = worst_cost(reqs[0], price, batch=True, ttl="1h")  # batches write the cache for an hour
    cap = worst * 1.9  # room for one worst case; the real first answer (about half of it) leaves room for more
    summary = run(reqs, ledger, backend(fake, llm, monkeypatch), llm, max_cost=cap)
    first = ledger.batches()[0]["request_count"]
    submitted = sum(b["request_count"] for b in ledger.batches())
    assert first == 1  # the first batch holds what the cap covers at the worst case
    assert 1 < submitted < 20  # later rounds spend what the real (cheaper) answers left over
    assert ledger.spent() <= cap  # batch mode never passes the cap
    assert summary.stopped.startswith("budget") and ledger.counts("generate")["pending"] == 20 - submitted


# -- LangChain parity: ChatAnthropic caches like the native path; every model gets its per-request settings --


def cache_marked(entry: dict) -> bool:
    usage = entry.get("usage") or {}
    return bool(usage.get("cache_read_input_tokens") or usage.get("cache_creation_input_tokens"))


def test_chat_anthropic_requests_are_cache_marked_and_cost_what_native_ones_do(tmp_path, monkeypatch) -> None:
    from langchain_anthropic import ChatAnthropic

    n, llm = 40, cfg()
    costs, marked = {}, {}
    for path in ("native", "langchain"):
        with FakeAnthropic() as fake:
            if path == "native":
                chosen = backend(fake, llm, monkeypatch)
            else:
                model = ChatAnthropic(model="claude-haiku-4-5", api_key=KEY, base_url=fake.base_url, max_retries=0)
                chosen = LangChainBackend(model, llm.ttl(batch=False))
            ledger = Ledger(tmp_path / f"{path}.sqlite")
            summary = run_requests(requests(n), ledger, chosen, llm, 0.0, PRICES, progress=False)
            assert summary.succeeded == n
            answered = [e for e in fake.log if e.get("status") == 200 and e.get("usage")]
            marked[path] = sum(cache_marked(e) for e in answered) / len(answered)
            costs[path] = ledger.totals()["cost_usd"] / n
            assert sum(r["cache_read_tokens"] > 0 for r in ledger.rows("generate")) >= n - llm.concurrency
            ledger.close()
    assert marked["langchain"] >= 0.95 and marked["native"] == 1.0
    assert abs(costs["langchain"] - costs["native"]) <= 0.10 * costs["native"], costs


def test_chat_anthropic_sends_the_configured_ttl_and_each_requests_limits(tmp_path) -> None:

    seen: list[dict] = []

    def responder(params: dict) -> str:
        seen.append(params)
        return "<document>" + "word " * 200 + "</document>"

    llm = cfg(provider="langchain", langchain_class="langchain_anthropic:ChatAnthropic", cache_ttl="1h")
    with FakeAnthropic(responder=responder) as fake:
        llm.langchain_kwargs = {"model": "claude-haiku-4-5", "api_key": KEY, "base_url": fake.base_url,
                                "max_retries": 0, "max_tokens": 4000}  # fmt: skip
        chosen = LangChainBackend.from_config(llm)
        reqs = [LLMRequest("generate", f"s{i}", "claude-haiku-4-5", SYSTEM, f"Write {i}.", 20 + i, 0.5 + i / 10)
                for i in range(3)]  # fmt: skip
        summary = run_requests(reqs, Ledger(tmp_path / "store.sqlite"), chosen, llm, 0.0, PRICES, progress=False)
        log = [e for e in fake.log if e.get("usage")]
    assert summary.succeeded == 3
    for params in seen:
        i = int(params["messages"][-1]["content"].split()[1].rstrip("."))
        assert params["max_tokens"] == 20 + i and params["temperature"] == 0.5 + i / 10
        assert params["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert sum(e["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] for e in log) > 0
    assert all(e["stop_reason"] == "max_tokens" for e in log)  # the request's limit, not the model's 4000


def test_any_chat_model_gets_max_tokens_and_temperature_per_request(tmp_path) -> None:
    """ChatOpenAI against a local OpenAI-compatible endpoint (as vLLM or Ollama serve)."""
    import http.server
    import json
    import threading

    from langchain_openai import ChatOpenAI

    bodies: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            reply = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "<document>x</document>"}}],
                                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = ChatOpenAI(model="m", api_key="k", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                           max_retries=0)  # fmt: skip
        llm = cfg(provider="langchain", langchain_class="x:Y")
        reqs = [LLMRequest("generate", f"s{i}", "m", SYSTEM, f"Write {i}.", 100 + i, 0.25 * i) for i in range(3)]
        summary = run_requests(reqs, Ledger(tmp_path / "store.sqlite"), LangChainBackend(model), llm, 0.0, PRICES,
                               progress=False)  # fmt: skip
    finally:
        server.shutdown()
    assert summary.succeeded == 3 and len(bodies) == 3
    for body in bodies:
        i = int(body["messages"][-1]["content"].split()[1].rstrip("."))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        assert limit == 100 + i and body["temperature"] == 0.25 * i
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}  # no Anthropic cache blocks here
