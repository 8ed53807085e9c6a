"""Any LangChain `BaseChatModel` as a backend (vLLM or Ollama via langchain_openai, and so on).

The model is named by import path (`module:Class`) with keyword arguments from the config, and
goes through the same ledger, retries and budget as the Anthropic backend. Every request passes its
own max_tokens and temperature. With `ChatAnthropic` the system prompt (the constitution) goes as one
text block marked for caching, with the native backend's TTL ([llm].cache_ttl, else 5m: LangChain
sends no batches), so a run pays the cached price there too.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from sdf.config import LLMConfig
from sdf.errors import SdfError
from sdf.llm import FatalError, RetryableError
from sdf.llm.ledger import LLMRequest, LLMResponse, Usage
from sdf.redact import redact_text

RETRYABLE_NAMES = ("timeout", "ratelimit", "rate_limit", "overloaded", "connection", "unavailable", "serviceerror")
STOP_REASONS = {"length": "max_tokens", "max_tokens": "max_tokens", "stop": "end_turn", "end_turn": "end_turn"}


class LangChainBackend:
    name = "langchain"
    supports_batch = False

    def __init__(self, model: BaseChatModel, cache_ttl: str = "5m") -> None:
        self.model = model
        self.cache_ttl = cache_ttl
        self.marks_cache = is_anthropic(model)

    @classmethod
    def from_config(cls, cfg: LLMConfig) -> LangChainBackend:
        module_name, _, class_name = cfg.langchain_class.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise SdfError(f"[llm].langchain_class: cannot import '{module_name}'; pip install it first") from None
        model_cls = getattr(module, class_name, None)
        if model_cls is None or not (isinstance(model_cls, type) and issubclass(model_cls, BaseChatModel)):
            raise SdfError(f"[llm].langchain_class: '{cfg.langchain_class}' is not a LangChain BaseChatModel")
        try:
            return cls(model_cls(**cfg.langchain_kwargs), cfg.ttl(batch=False))
        except Exception as e:  # noqa: BLE001 - constructor validation errors come in many types
            raise SdfError(f"[llm].langchain_kwargs rejected by {class_name}: {type(e).__name__}") from None

    def messages(self, request: LLMRequest) -> list[BaseMessage]:
        """The request as chat messages; for Anthropic the system prompt is one cache-marked block."""
        if self.marks_cache:
            block = {"type": "text", "text": request.system,
                     "cache_control": {"type": "ephemeral", "ttl": self.cache_ttl}}  # fmt: skip
            system = SystemMessage(content=[block])
        else:
            system = SystemMessage(content=request.system)
        return [system, HumanMessage(content=request.prompt)]

    async def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            reply = await self.model.ainvoke(self.messages(request), **request_options(request))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - providers raise their own exception types
            raise classify_exception(e) from None
        return to_response(reply, self.cache_ttl)

    async def aclose(self) -> None:
        return None


def request_options(request: LLMRequest) -> dict[str, Any]:
    """Per-request settings every LangChain chat model takes as invoke keyword arguments."""
    options: dict[str, Any] = {"max_tokens": request.max_tokens}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    return options


def is_anthropic(model: BaseChatModel) -> bool:
    try:
        from langchain_anthropic import ChatAnthropic
    except ImportError:  # without the package no model can be a ChatAnthropic
        return False
    return isinstance(model, ChatAnthropic)


def classify_exception(e: Exception) -> RetryableError | FatalError:
    status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
    label = f"{type(e).__name__}" + (f" (HTTP {status})" if status else "")
    if isinstance(status, int):
        if status in (408, 429) or status >= 500:
            return RetryableError(label, status)
        return FatalError(label, status, abort_run=status in (401, 403, 404))
    name = type(e).__name__.lower()
    if isinstance(e, (TimeoutError, ConnectionError)) or any(n in name for n in RETRYABLE_NAMES):
        return RetryableError(label)
    return FatalError(f"{label}: {redact_text(str(e))[:200]}")


def to_response(reply: Any, ttl: str = "5m") -> LLMResponse:
    """`ttl` is the TTL the request asked for: it prices cache writes when usage does not split them."""
    content = reply.content
    if isinstance(content, list):
        content = "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    meta = getattr(reply, "response_metadata", {}) or {}
    raw_stop = meta.get("stop_reason") or meta.get("finish_reason") or "end_turn"
    usage = getattr(reply, "usage_metadata", None) or {}
    details = usage.get("input_token_details", {}) or {}
    cache_read = details.get("cache_read", 0) or 0
    cache_write = details.get("cache_creation", 0) or 0
    written_1h = details.get("ephemeral_1h_input_tokens")
    write_1h = (written_1h or 0) if written_1h is not None else (cache_write if ttl == "1h" else 0)
    return LLMResponse(
        text=str(content),
        stop_reason=STOP_REASONS.get(str(raw_stop), str(raw_stop)),
        usage=Usage(
            input_tokens=max(0, (usage.get("input_tokens", 0) or 0) - cache_read - cache_write),
            output_tokens=usage.get("output_tokens", 0) or 0,
            cache_creation_tokens=cache_write,
            cache_read_tokens=cache_read,
            cache_creation_1h_tokens=write_1h,
        ),
    )
