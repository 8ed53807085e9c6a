"""Worker processes for per-record work: batches go out in order and come back in order, so the output
never depends on how many workers ran. Tokenisation uses the tokenizers' native threads instead (`configure`).

`ordered_map(fn, items, state, workers)` yields ``fn(state, item)`` for every item, in input order. With one
worker it runs in-process; with more, forked processes receive `state` once (when they start, never per
item) and at most two items per worker are in flight, so memory stays bounded however long the input.
`fn` and the items cross a process boundary, so they must pickle; `state` need not (it is inherited).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT: int = 0  # the CLI's --workers; 0 = the CPU count
_STATE: Any = None  # what a worker process was started with


def configure(workers: int) -> None:
    """Use `workers` processes by default, and as many native threads in the tokenizers: both backends
    encode a batch on Rust threads without the GIL (HF tokenizers on rayon, tiktoken on its own), which
    beats worker processes that would pickle every token id back."""
    global DEFAULT
    DEFAULT = workers
    os.environ["RAYON_NUM_THREADS"] = str(workers)  # read when HF tokenizers first encodes in parallel
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if workers > 1 else "false"


def count(workers: int | None = None) -> int:
    """Worker processes to use: the given number, else the CLI's --workers, else the CPU count."""
    if workers or DEFAULT:
        return max(1, workers or DEFAULT)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _start(state: Any) -> None:
    global _STATE
    _STATE = state
    # Ctrl-C reaches the whole process group: the parent alone stops the run (and says so, exit 130),
    # letting the batches in flight finish; SIGTERM ends a worker at once
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _call(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_STATE, item)


def ordered_map(fn: Callable[[Any, T], R], items: Iterable[T], state: Any = None, workers: int | None = None,
                started: Callable[[], None] | None = None) -> Iterator[R]:
    """``fn(state, item)`` for each item, in order, on `count(workers)` processes. `started` is called once
    the worker processes exist (the place to start a thread: never before a fork)."""
    n = count(workers)
    if n < 2 or "fork" not in multiprocessing.get_all_start_methods():
        if started is not None:
            started()
        for item in items:
            yield fn(state, item)
        return
    # fork: workers inherit the loaded modules and `state` as they are, and start in milliseconds
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=_start,
                               initargs=(state,))
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(_call, fn, item))
            if started is not None:  # with fork, the first submit starts every worker process
                started()
                started = None
            if len(pending) >= 2 * n:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
