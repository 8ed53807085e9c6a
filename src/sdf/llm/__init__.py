"""Chat-model backends behind one small interface.

A backend turns an `LLMRequest` into an `LLMResponse`, or raises `RetryableError` (worth trying
again after a pause) or `FatalError` (not worth retrying; `abort_run` when no other request can
succeed either, such as a bad API key). Retries, budget and bookkeeping live in generate.py so
every backend gets the same behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sdf.config import LLMConfig
from sdf.llm.ledger import LLMRequest, LLMResponse


class RetryableError(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def malformed(reason: str) -> RetryableError:
    """A 200 answer that cannot be what it claims: the server may have billed it, but a retry can succeed."""
    return RetryableError(f"malformed response: {reason}", 200)


class BatchCreateError(Exception):
    """A batch create that failed; `retryable` when it may succeed later (it may also have reached the server)."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class FatalError(Exception):
    def __init__(self, message: str, status: int | None = None, abort_run: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.abort_run = abort_run


@dataclass(frozen=True)
class BatchState:
    batch_id: str
    ended: bool
    counts: dict[str, int]


@dataclass(frozen=True)
class ListedBatch:
    batch_id: str
    created_at: datetime
    request_count: int
    ended: bool


@dataclass(frozen=True)
class BatchResult:
    key: str
    outcome: str  # succeeded | errored | expired | canceled
    response: LLMResponse | None
    error: str | None
    retryable: bool


class Backend(Protocol):
    name: str
    supports_batch: bool

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...


class BatchBackend(Backend, Protocol):
    def batch_body(self, request: LLMRequest) -> dict: ...

    def create_batch(self, requests: Sequence[LLMRequest]) -> str: ...

    def batch_state(self, batch_id: str) -> BatchState: ...

    def batch_results(self, batch_id: str) -> Iterator[BatchResult]: ...

    def recent_batches(self, since: datetime) -> list[ListedBatch]: ...


def make_backend(cfg: LLMConfig) -> Backend:
    if cfg.provider == "langchain":
        from sdf.llm.langchain import LangChainBackend

        return LangChainBackend.from_config(cfg)
    from sdf.llm.anthropic import AnthropicBackend

    return AnthropicBackend.from_env(cfg)
