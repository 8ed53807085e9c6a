"""Anthropic Messages and Message Batches through the official SDK, with prompt caching.

The system prompt (constitution plus fixed instructions) is one text block marked with
`cache_control`; the per-document prompt follows in the user turn, so every request of a run
shares the same cached prefix bytes. The cache TTL is [llm].cache_ttl, else 1h for batches (which
can take longer than 5 minutes, so a 5-minute cache would be written again and again) and 5m for
messages; 1-hour writes cost 2x input, 5-minute ones 1.25x.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import anthropic

from sdf.config import LLMConfig
from sdf.errors import SdfError
from sdf.llm import BatchCreateError, BatchResult, BatchState, FatalError, ListedBatch, RetryableError, malformed
from sdf.llm.ledger import LLMRequest, LLMResponse, Usage
from sdf.redact import redact_text

RETRYABLE_STATUS = {408, 429}  # plus every 5xx, 529 (overloaded) included
RUN_FATAL_STATUS = {401, 403, 404}  # bad key, no permission, unknown model: no request can succeed
RETRYABLE_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


class AnthropicBackend:
    name = "anthropic"
    supports_batch = True

    def __init__(self, api_key: str, cfg: LLMConfig) -> None:
        # The SDK's own retries are off: generate.py retries, so every attempt reaches the ledger.
        self._key = api_key
        self._timeout = cfg.timeout_s
        self.ttl = {True: cfg.ttl(batch=True), False: cfg.ttl(batch=False)}  # by batch mode
        self._batch = cfg.batch
        self._client: anthropic.AsyncAnthropic | None = None  # one per event loop: see aclose()
        self.sync_client = anthropic.Anthropic(api_key=api_key, max_retries=2, timeout=cfg.timeout_s)

    @classmethod
    def from_env(cls, cfg: LLMConfig) -> AnthropicBackend:
        key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
        if not key:
            raise SdfError(
                "ANTHROPIC_API_KEY is not set: export ANTHROPIC_API_KEY=... (and ANTHROPIC_BASE_URL for another "
                "Anthropic-compatible endpoint), or run with --dry-run to stop before generation"
            )
        return cls(key, cfg)

    def _scrub(self, text: str) -> str:
        """Servers sometimes echo credentials in error text; never let the key reach the ledger."""
        return redact_text(text, [self._key])

    def batch_body(self, request: LLMRequest, batch: bool | None = None) -> dict[str, Any]:
        """The Messages params of a request; `batch` (default: [llm].batch) picks the cache TTL."""
        cache = {"type": "ephemeral", "ttl": self.ttl[self._batch if batch is None else batch]}
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "system": [{"type": "text", "text": request.system, "cache_control": cache}],
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def complete(self, request: LLMRequest) -> LLMResponse:
        body = self.batch_body(request, batch=False)
        extra = {"temperature": body.pop("temperature")} if "temperature" in body else None
        try:
            message = await self.client().messages.create(**body, extra_body=extra)
        except ValueError as e:  # a 200 whose body is not JSON: the SDK's decoder gives up
            raise malformed(f"the body is not JSON ({type(e).__name__})") from None
        except anthropic.APIResponseValidationError as e:
            raise malformed(f"the body does not fit the Messages schema ({type(e).__name__})") from None
        except anthropic.APITimeoutError:
            raise RetryableError("request timed out") from None
        except anthropic.APIConnectionError as e:
            raise RetryableError(f"connection error: {type(e).__name__}") from None
        except anthropic.APIStatusError as e:
            raise classify_status(e.status_code, self._scrub(_error_message(e)), e.response.headers) from None
        if not isinstance(message, anthropic.types.Message):  # e.g. a proxy's HTML page with status 200
            raise malformed(f"expected a message, got {type(message).__name__}")
        return to_response(message, self.ttl[False])

    def client(self) -> anthropic.AsyncAnthropic:
        if self._client is None:
            self._client = anthropic.AsyncAnthropic(api_key=self._key, max_retries=0, timeout=self._timeout)
        return self._client

    async def aclose(self) -> None:
        """Close this event loop's client; the next run (a new asyncio.run) opens a fresh one."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    def create_batch(self, requests: Sequence[LLMRequest]) -> str:
        """One POST, never retried by the SDK: a retried create that had reached the server pays twice, so
        the engine looks for the batch (`recent_batches`) before it sends again."""
        try:
            batch = self.sync_client.with_options(max_retries=0).messages.batches.create(
                requests=[{"custom_id": r.key, "params": self.batch_body(r, batch=True)} for r in requests]
            )
        except anthropic.APIStatusError as e:
            err = classify_status(e.status_code, self._scrub(_error_message(e)), e.response.headers)
            retry_after = err.retry_after if isinstance(err, RetryableError) else None
            raise BatchCreateError(f"could not create a message batch: {err}", isinstance(err, RetryableError),
                                   retry_after) from None
        except (anthropic.APIError, ValueError) as e:  # timeouts, lost connections, a body that is not JSON
            raise BatchCreateError(f"could not create a message batch: {type(e).__name__}", True) from None
        if not getattr(batch, "id", None):
            raise BatchCreateError("could not create a message batch: the answer holds no batch id", True)
        return batch.id

    def recent_batches(self, since: datetime) -> list[ListedBatch]:
        """Batches of this API key created at or after `since`, oldest first (the API lists newest first)."""
        found = []
        try:
            for batch in self.sync_client.messages.batches.list(limit=100):
                if batch.created_at < since:
                    break
                counts = batch.request_counts
                total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
                found.append(ListedBatch(batch.id, batch.created_at, total, batch.processing_status == "ended"))
        except (anthropic.APIError, ValueError) as e:
            raise BatchCreateError(f"could not list message batches: {type(e).__name__}", True) from None
        return found[::-1]

    def batch_state(self, batch_id: str) -> BatchState:
        batch = self.sync_client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts.model_dump()
        return BatchState(batch_id, batch.processing_status == "ended", counts)

    def batch_results(self, batch_id: str) -> Iterator[BatchResult]:
        for entry in self.sync_client.messages.batches.results(batch_id):
            result = entry.result
            if result.type == "succeeded":
                try:
                    response = to_response(result.message, self.ttl[True])
                except RetryableError as e:  # a malformed result: the request goes back to pending
                    yield BatchResult(entry.custom_id, "errored", None, str(e), True)
                    continue
                yield BatchResult(entry.custom_id, "succeeded", response, None, False)
            elif result.type == "errored":
                kind = result.error.error.type
                message = self._scrub(f"{kind}: {result.error.error.message}")
                yield BatchResult(entry.custom_id, "errored", None, message, kind in RETRYABLE_BATCH_ERRORS)
            else:  # expired or canceled: the request never ran, so running it again is safe
                yield BatchResult(entry.custom_id, result.type, None, result.type, True)


def to_response(message: Any, ttl: str = "5m") -> LLMResponse:
    """`ttl` is the TTL the request asked for: it prices cache writes when usage does not split them by TTL.
    A message without content or usage, or with usage that is not whole numbers, is malformed (retryable)."""
    u = getattr(message, "usage", None)
    if not isinstance(getattr(message, "content", None), list) or u is None:
        raise malformed("the message has no content or no usage")
    for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = getattr(u, name, 0)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise malformed(f"usage.{name} is {value!r}, not a whole number")
    text = "".join(str(getattr(block, "text", "")) for block in message.content if getattr(block, "type", "") == "text")
    writes = getattr(u, "cache_creation_input_tokens", 0) or 0
    split = getattr(u, "cache_creation", None)
    writes_1h = (getattr(split, "ephemeral_1h_input_tokens", 0) or 0) if split is not None else \
        (writes if ttl == "1h" else 0)
    usage = Usage(
        input_tokens=u.input_tokens or 0,
        output_tokens=u.output_tokens or 0,
        cache_creation_tokens=writes,
        cache_read_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
        cache_creation_1h_tokens=writes_1h,
    )
    return LLMResponse(text=text, stop_reason=message.stop_reason or "", usage=usage)


def classify_status(status: int, message: str, headers: Any) -> RetryableError | FatalError:
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableError(f"HTTP {status}: {message}", status, _retry_after(headers))
    return FatalError(f"HTTP {status}: {message}", status, abort_run=status in RUN_FATAL_STATUS)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_message(e: anthropic.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str(error.get("message") or error.get("type") or type(e).__name__)[:300]
