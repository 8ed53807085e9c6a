"""Run LLM requests through the ledger: concurrency, rate limit, retries, budget and batches.

`run_requests` is the one entry point for generation, brainstorming and judging. It registers
every request in the ledger, skips those already answered, and sends the rest either as
concurrent Messages calls or as Message Batches. Every attempt and every answer is committed
before it is used, so a crash or Ctrl-C followed by a rerun resumes without paying twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from sdf.config import LLMConfig, Price
from sdf.errors import Interrupted, SdfError
from sdf.llm import Backend, FatalError, RetryableError
from sdf.llm.ledger import Ledger, LLMRequest, LLMResponse

MAX_BATCH_REQUESTS = 100_000  # API limit per batch
MAX_BATCH_BYTES = 256 * 1024 * 1024  # API limit per batch
BATCH_BYTES_MARGIN = 0.9  # stay clear of the byte limit: the SDK's JSON may differ slightly from ours


@dataclass
class RunSummary:
    requested: int = 0
    already_done: int = 0  # answered before this run, including `reused`
    reused: int = 0  # answered by a finished answer to the same prompt under another max_tokens
    succeeded: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    stopped: str = ""  # why the run stopped early, if it did
    failures: dict[str, int] = field(default_factory=dict)
    fatal: str = ""  # an error no rerun can fix (bad key, no permission, unknown model)
    interrupted: bool = False  # Ctrl-C or SIGTERM; the answers in flight were waited for and recorded
    unknown_results: int = 0  # batch results under custom_ids this ledger never sent: ignored
    adopted_batches: int = 0  # batches found at the API that an earlier create did not get to record

    def note_failure(self, error: str) -> None:
        self.failed += 1
        kind = error.split(":")[0][:60]
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def add(self, part: RunSummary) -> None:
        """Fold in the summary of a later round (truncation retries, brainstorm rounds, judge chunks)."""
        self.requested += part.requested
        self.already_done += part.already_done
        self.reused += part.reused
        self.succeeded += part.succeeded
        self.failed += part.failed
        self.cost_usd += part.cost_usd
        self.stopped = self.stopped or part.stopped
        self.fatal = self.fatal or part.fatal
        self.interrupted = self.interrupted or part.interrupted
        self.unknown_results += part.unknown_results
        self.adopted_batches += part.adopted_batches
        for k, v in part.failures.items():
            self.failures[k] = self.failures.get(k, 0) + v


class Budget:
    """The cap holds whatever the concurrency: each request reserves its worst case before it is sent,
    and the difference is released when its answer lands."""

    def __init__(self, max_cost_usd: float, spent: float) -> None:
        self.max = max_cost_usd
        self.spent = spent
        self.reserved = 0.0

    def exhausted(self) -> bool:
        return self.max > 0 and self.spent >= self.max

    def remaining(self) -> float:
        return float("inf") if self.max <= 0 else max(0.0, self.max - self.spent - self.reserved)

    def reserve(self, worst: float) -> bool:
        if self.max > 0 and self.spent + self.reserved + worst > self.max:
            return False
        self.reserved += worst
        return True

    def settle(self, worst: float, cost: float) -> None:
        self.reserved -= worst
        self.spent += cost

    def stop_reason(self) -> str:
        return (f"budget of ${self.max:.2f} reached: ${self.spent:.4f} spent, and the next request could cost up "
                f"to its worst case; rerun with a higher --max-cost to continue")


def worst_cost(request: LLMRequest, price: Price | None, batch: bool, ttl: str = "5m") -> float:
    """The most a request can cost: every input token at the cache-write rate of its TTL (3 characters a
    token, fewer than English averages) and the whole of max_tokens as output."""
    if price is None:
        return 0.0
    tokens = len(request.system + request.prompt) // 3 + 1
    return price.cost(0, request.max_tokens, cache_write=tokens, batch=batch,
                      cache_write_1h=tokens if ttl == "1h" else 0)


class RateLimiter:
    """Space request starts evenly to stay under `per_minute` (0 disables it)."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            delay = self.next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.next_at = max(self.next_at, time.monotonic()) + self.interval


def backoff_delay(attempt: int, cfg: LLMConfig, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter; a server's retry-after is a floor, never ignored."""
    ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
    delay = rng.uniform(0, ceiling)
    return max(delay, retry_after) if retry_after is not None else delay


FAR_BEYOND_CHARS_PER_TOKEN = 20  # no tokenizer packs this many characters into a token on average


def response_problem(response: LLMResponse, max_tokens: int) -> str:
    """Why an answer cannot be true ("" when it can): negative usage, more output than max_tokens allows,
    or text far longer than max_tokens tokens could hold."""
    u = response.usage
    for name in ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
                 "cache_creation_1h_tokens"):
        if getattr(u, name) < 0:
            return f"usage.{name} is negative ({getattr(u, name)})"
    if u.output_tokens > max_tokens:
        return f"{u.output_tokens} output tokens, beyond max_tokens = {max_tokens}"
    if len(response.text) > max_tokens * FAR_BEYOND_CHARS_PER_TOKEN:
        return f"{len(response.text):,} characters of text, far beyond max_tokens = {max_tokens}"
    return ""


def cache_ttl(backend: Backend, batch: bool) -> str | None:
    """The prompt-cache TTL a backend sends in this mode, or None when it sets none (LangChain)."""
    ttl = getattr(backend, "ttl", None)
    return ttl.get(batch) if isinstance(ttl, dict) else None


def request_cost(response: LLMResponse, price: Price | None, batch: bool) -> float | None:
    if price is None:
        return None
    u = response.usage
    return price.cost(u.input_tokens, u.output_tokens, u.cache_creation_tokens, u.cache_read_tokens, batch,
                      u.cache_creation_1h_tokens)


def run_requests(
    requests: Sequence[LLMRequest],
    ledger: Ledger,
    backend: Backend,
    cfg: LLMConfig,
    max_cost_usd: float,
    price_of: Callable[[str], Price | None],
    desc: str = "generate",
    progress: bool = True,
) -> RunSummary:
    unique = list({r.key: r for r in requests}.values())
    ledger.register(unique)
    statuses = ledger.statuses([r.key for r in unique])
    todo = [r for r in unique if statuses.get(r.key) != "ok"]
    reused = set(ledger.reuse_answers(todo))  # a changed max_tokens does not pay again for finished answers
    todo = [r for r in todo if r.key not in reused]
    summary = RunSummary(requested=len(unique), already_done=len(unique) - len(todo), reused=len(reused))
    if max_cost_usd > 0 and any(price_of(r.model) is None for r in todo):
        missing = sorted({r.model for r in todo if price_of(r.model) is None})
        raise SdfError(f'--max-cost needs prices for {", ".join(missing)}: add them under [pricing."<model>"]')
    ledger.reset_failed([r.key for r in todo])  # a rerun gives earlier failures a fresh chance
    dispatch = Dispatch(ledger, backend, cfg, Budget(max_cost_usd, ledger.spent()), price_of, summary, desc, progress)
    if cfg.batch and backend.supports_batch:
        from sdf.llm.batches import run_batches  # imports this module's helpers

        run_batches(dispatch, todo)
    elif todo:
        asyncio.run(dispatch.messages(todo))
    return summary


@dataclass
class Dispatch:
    """One run of requests: where answers are recorded, what they cost, and how far the budget goes."""

    ledger: Ledger
    backend: Backend
    cfg: LLMConfig
    budget: Budget
    price_of: Callable[[str], Price | None]
    summary: RunSummary
    desc: str
    progress: bool

    async def messages(self, todo: Sequence[LLMRequest]) -> None:
        queue: asyncio.Queue[LLMRequest] = asyncio.Queue()
        for r in todo:
            queue.put_nowait(r)
        limiter = RateLimiter(self.cfg.requests_per_minute)
        rng = random.Random()
        consecutive_failures = 0
        in_flight = 0
        flying: dict[str, LLMRequest] = {}  # by key: what a second Ctrl-C abandons
        settled = asyncio.Condition()
        bar = tqdm(total=len(todo), desc=self.desc, unit="req", dynamic_ncols=True,
                   disable=None if self.progress else True)  # None: bars on a terminal only

        async def reserve(worst: float) -> bool:
            # A request that does not fit waits for reservations in flight to settle; it gives up only
            # when nothing is in flight and it still does not fit.
            async with settled:
                while not self.budget.reserve(worst):
                    if self.budget.reserved <= 0 or self.summary.stopped:
                        return False
                    await settled.wait()
                return True

        async def settle(worst: float, cost: float) -> None:
            self.budget.settle(worst, cost)
            async with settled:
                settled.notify_all()

        def stop(reason: str) -> None:
            if not self.summary.stopped:
                self.summary.stopped = reason

        async def attempt_once(request: LLMRequest) -> LLMResponse:
            """One attempt within its total deadline; an answer that cannot be true is a retryable error."""
            try:
                response = await asyncio.wait_for(self.backend.complete(request), self.cfg.request_deadline_s)
            except asyncio.TimeoutError:
                raise RetryableError(f"no complete answer within request_deadline_s = "
                                     f"{self.cfg.request_deadline_s:g}s") from None
            problem = response_problem(response, request.max_tokens)
            if problem:
                raise RetryableError(f"malformed response: {problem}", 200)
            return response

        async def send(request: LLMRequest) -> None:
            nonlocal consecutive_failures, in_flight
            price = self.price_of(request.model)
            ttl = cache_ttl(self.backend, batch=False)
            worst = worst_cost(request, price, batch=False, ttl=ttl or "5m")
            for attempt in range(1, self.cfg.max_retries + 2):
                if self.summary.stopped:
                    return
                if not await reserve(worst):
                    stop(self.budget.stop_reason())
                    return
                await limiter.wait()
                in_flight += 1
                flying[request.key] = request
                try:
                    response = await attempt_once(request)
                except RetryableError as e:
                    await settle(worst, 0.0)
                    final = attempt > self.cfg.max_retries
                    self.ledger.record_attempt_failure(request.key, "messages", str(e), e.status, final=final)
                    if not final and e.retry_after is not None and e.retry_after > self.cfg.max_retry_after_s:
                        stop(f"the API asked to wait {e.retry_after:g}s before retrying (retry-after), beyond "
                             f"[llm].max_retry_after_s = {self.cfg.max_retry_after_s:g}s; rerun later")
                        return
                    if final:
                        self.summary.note_failure(str(e))
                        consecutive_failures += 1
                        if consecutive_failures >= self.cfg.max_consecutive_failures:
                            stop(f"the API failed {consecutive_failures} requests in a row (last: {e})")
                        return
                    await asyncio.sleep(backoff_delay(attempt, self.cfg, e.retry_after, rng))
                    continue
                except FatalError as e:
                    await settle(worst, 0.0)
                    self.ledger.record_attempt_failure(request.key, "messages", str(e), e.status, final=True)
                    self.summary.note_failure(str(e))
                    if e.abort_run:
                        self.summary.fatal = str(e)
                        stop(str(e))
                    return
                finally:
                    in_flight -= 1
                    flying.pop(request.key, None)
                cost = request_cost(response, price, batch=False)
                self.ledger.record_success(request.key, response, cost, "messages", cache_ttl=ttl)
                await settle(worst, cost or 0.0)
                self.summary.cost_usd += cost or 0.0
                self.summary.succeeded += 1
                consecutive_failures = 0
                return

        async def worker() -> None:
            while not queue.empty() and not self.summary.stopped:
                request = queue.get_nowait()
                await send(request)
                bar.update(1)
                bar.set_postfix(cost=f"${self.summary.cost_usd:.3f}", fail=self.summary.failed, refresh=False)

        async def run_all() -> None:
            # One request alone first: it writes the prompt cache, so the concurrent wave reads it.
            await send(queue.get_nowait())
            bar.update(1)
            # every worker's outcome is collected, so a second worker failing the same way (a full disk) is
            # not left as an unretrieved task exception that asyncio prints as a traceback
            results = await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, queue.qsize()))),
                                           return_exceptions=True)
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome

        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(run_all())
        signals = 0
        left: list[str] = []  # what was given up, named before cancellation empties `flying`

        def abandon() -> None:
            left[:] = [abandoned(flying.values(), queue.qsize())]
            main.cancel()

        def interrupt() -> None:
            # The first Ctrl-C (or SIGTERM) stops sending and lets answers in flight land in the ledger;
            # a second one, or the drain timeout, abandons them.
            nonlocal signals
            signals += 1
            if signals == 1:
                self.summary.interrupted = True
                stop("interrupted")
                bar.write(f"interrupted: sending stopped; waiting up to {self.cfg.drain_timeout_s:.0f}s for "
                          f"{in_flight} answer(s) in flight to be recorded (Ctrl-C again to quit now)", file=sys.stderr)
                loop.call_later(self.cfg.drain_timeout_s, abandon)
            else:
                abandon()

        handled = [s for s in (signal.SIGINT, signal.SIGTERM) if _can_handle(loop, s, interrupt)]
        try:
            await main
        except asyncio.CancelledError:
            raise Interrupted(f"interrupted: {self.summary.succeeded} answer(s) recorded this run; "
                              f"{left[0] if left else abandoned(flying.values(), queue.qsize())} were abandoned and "
                              "a rerun sends them again") from None
        finally:
            for s in handled:
                loop.remove_signal_handler(s)
            bar.close()
            await self.backend.aclose()


def abandoned(flying: Iterable[LLMRequest], unsent: int) -> str:
    """Name what a second Ctrl-C leaves behind: the requests in flight by spec, and how many were never sent."""
    names = sorted(r.spec_id or r.key[:12] for r in flying)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"{len(names)} request(s) in flight ({shown or 'none'}) and {unsent} not yet sent"


def _affordable(pending: list[LLMRequest], budget: Budget, price_of: Callable[[str], Price | None],
                ttl: str = "1h") -> list[LLMRequest]:
    """Submit only as many requests as the remaining budget can pay for at their worst case."""
    remaining = budget.remaining()
    if remaining == float("inf"):
        return pending
    chosen, total = [], 0.0
    for r in pending:
        worst = worst_cost(r, price_of(r.model), batch=True, ttl=ttl)
        if total + worst > remaining:
            break
        chosen.append(r)
        total += worst
    return chosen


def _can_handle(loop: asyncio.AbstractEventLoop, sig: signal.Signals, handler: Callable[[], None]) -> bool:
    try:
        loop.add_signal_handler(sig, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return False
    return True


def chunk_batch(requests: Sequence[LLMRequest], backend: Backend) -> list[list[LLMRequest]]:
    """Split into batches within the API's limits on request count and body size."""
    chunks: list[list[LLMRequest]] = [[]]
    size = 0
    for r in requests:
        body = len(json.dumps({"custom_id": r.key, "params": backend.batch_body(r)}).encode())  # type: ignore[attr-defined]
        if chunks[-1] and (len(chunks[-1]) >= MAX_BATCH_REQUESTS or size + body > MAX_BATCH_BYTES * BATCH_BYTES_MARGIN):
            chunks.append([])
            size = 0
        chunks[-1].append(r)
        size += body
    return [c for c in chunks if c]
