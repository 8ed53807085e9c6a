"""Message Batches through the ledger: submit at most once, adopt what an interrupted create left, collect.

A batch create is the one call that can pay for many requests at once, and the API has no idempotency
key for it. So the intent (the request keys and a client token) is committed before the create, the
create is sent once (no automatic retries), and whenever an intent has no batch id (the create timed
out, failed, or the process died before recording it) the API's list of recent batches is searched
for a batch that this ledger does not know, created after the intent, with as many requests as the
intent: that batch is adopted rather than paid again. Results whose custom_id the ledger never sent
are ignored and counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from tqdm import tqdm

from sdf.errors import SdfError
from sdf.llm import BatchCreateError
from sdf.llm.engine import Dispatch, _affordable, backoff_delay, cache_ttl, chunk_batch, request_cost, response_problem
from sdf.llm.ledger import LLMRequest

ADOPT_SLACK = timedelta(minutes=10)  # the API's clock and ours may disagree by this much


def run_batches(d: Dispatch, todo: Sequence[LLMRequest]) -> None:
    by_key = {r.key: r for r in todo}
    purpose = todo[0].purpose if todo else d.desc
    bar = tqdm(total=len(todo), desc=f"{d.desc} (batch)", unit="req", dynamic_ncols=True,
               disable=None if d.progress else True)  # None: bars on a terminal only
    try:
        # First the batches an earlier run created: adopted if never recorded, collected, never resubmitted.
        adopt_created(d)
        collect(d, purpose, by_key, bar)
        tries: dict[str, int] = {}
        create_failures = 0  # in a row; a failed create never ran its requests, so it uses none of their tries
        rng = random.Random()
        while not d.summary.stopped:  # every round submits a batch, or fails a create (at most max_retries in a
            # row), or stops, so this ends
            statuses = d.ledger.statuses(list(by_key))
            pending = [r for k, r in by_key.items() if statuses.get(k) == "pending"]
            pending = [r for r in pending if tries.get(r.key, 0) < d.cfg.batch_max_attempts]
            if not pending:
                break
            if d.budget.exhausted():
                d.summary.stopped = f"budget of ${d.budget.max:.2f} reached (spent ${d.budget.spent:.4f})"
                break
            pending = _affordable(pending, d.budget, d.price_of, cache_ttl(d.backend, True) or "5m")
            if not pending:
                d.summary.stopped = (f"budget of ${d.budget.max:.2f} cannot cover another request at its worst case "
                                     f"(spent ${d.budget.spent:.4f})")
                break
            for chunk in chunk_batch(pending, d.backend):
                error = submit(d, purpose, chunk, create_failures + 1, rng)
                if error is None:
                    create_failures = 0
                    for r in chunk:
                        tries[r.key] = tries.get(r.key, 0) + 1
                    continue
                create_failures += 1
                if not d.summary.stopped and create_failures > d.cfg.max_retries:
                    d.summary.stopped = f"{error} ({create_failures} times in a row)"
                break  # the next round looks at what is pending again
            collect(d, purpose, by_key, bar)
        for key, status in d.ledger.statuses(list(by_key)).items():
            if status == "pending" and tries.get(key, 0) >= d.cfg.batch_max_attempts:
                d.ledger.record_attempt_failure(key, "batch", "batch attempts exhausted", final=True)
                d.summary.note_failure("batch attempts exhausted")
    finally:
        bar.close()


def submit(d: Dispatch, purpose: str, chunk: list[LLMRequest], attempt: int, rng: random.Random) -> str | None:
    """Create one batch for `chunk`, its intent committed first. None when a batch now holds the chunk (created
    or adopted), else why not (after a backoff, or with the run stopped when retry-after is beyond the cap)."""
    keys = [r.key for r in chunk]
    token = d.ledger.add_intent(purpose, keys)
    try:
        batch_id = d.backend.create_batch(chunk)  # type: ignore[attr-defined]
    except BatchCreateError as e:
        if token in adopt_created(d):  # the create reached the API after all: adopt it, pay nothing again
            return None
        d.ledger.fail_intent(token, str(e))  # kept: a batch that shows up later is still adopted
        for key in keys:
            d.ledger.record_attempt_failure(key, "batch", str(e))
        if not e.retryable:
            raise SdfError(str(e), exit_code=1) from None
        if e.retry_after is not None and e.retry_after > d.cfg.max_retry_after_s:
            d.summary.stopped = (f"the API asked to wait {e.retry_after:g}s before creating a batch (retry-after), "
                                 f"beyond [llm].max_retry_after_s = {d.cfg.max_retry_after_s:g}s; rerun later")
            return str(e)
        time.sleep(backoff_delay(attempt, d.cfg, e.retry_after, rng))
        return str(e)
    d.ledger.add_batch(batch_id, purpose, keys, token)
    return None


def adopt_created(d: Dispatch) -> set[str]:
    """Match intents without a batch id to unknown batches at the API; returns the tokens adopted."""
    intents = d.ledger.open_intents()
    if not intents:
        return set()
    since = min(datetime.fromisoformat(i["created_at"]) for i in intents) - ADOPT_SLACK
    try:
        listed = d.backend.recent_batches(since)  # type: ignore[attr-defined]
    except BatchCreateError:
        return set()  # the API cannot be asked now; the intents stay open for the next look
    known = set(d.ledger.batch_ids())
    adopted: set[str] = set()
    for batch in listed:  # oldest first, as the intents are
        if batch.batch_id in known:
            continue
        match = next((i for i in intents if i["token"] not in adopted and i["request_count"] == batch.request_count
                      and batch.created_at >= datetime.fromisoformat(i["created_at"]) - ADOPT_SLACK), None)
        if match is None:
            continue
        d.ledger.add_batch(batch.batch_id, match["purpose"], d.ledger.intent_keys(match["token"]), match["token"])
        adopted.add(match["token"])
        d.summary.adopted_batches += 1
    return adopted


def collect(d: Dispatch, purpose: str, by_key: dict[str, LLMRequest], bar: tqdm) -> None:
    """Poll every open batch of this purpose with backoff, streaming results into the ledger."""
    interval = d.cfg.poll_interval_s
    while True:
        open_batches = d.ledger.active_batches(purpose)
        if not open_batches:
            return
        progressed = False
        for batch in open_batches:
            state = d.backend.batch_state(batch["batch_id"])  # type: ignore[attr-defined]
            if not state.ended:
                continue
            progressed = True
            outcomes: dict[str, int] = {}
            for result in d.backend.batch_results(batch["batch_id"]):  # type: ignore[attr-defined]
                status = d.ledger.statuses([result.key]).get(result.key)
                if status is None:  # a custom_id this ledger never sent: counting it would inflate the run
                    d.summary.unknown_results += 1
                    continue
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                if status == "ok":
                    continue
                request = by_key.get(result.key)
                problem = response_problem(result.response, request.max_tokens) if result.response and request \
                    else ""
                if result.response is not None and not problem:
                    model = request.model if request else d.cfg.model
                    cost = request_cost(result.response, d.price_of(model), batch=True)
                    d.ledger.record_success(result.key, result.response, cost, "batch", batch["batch_id"],
                                            cache_ttl=cache_ttl(d.backend, batch=True))
                    d.budget.spent += cost or 0.0
                    d.summary.cost_usd += cost or 0.0
                    d.summary.succeeded += 1
                    bar.update(1)
                else:
                    error = f"malformed response: {problem}" if problem else (result.error or result.outcome)
                    final = not (result.retryable or problem)
                    d.ledger.record_attempt_failure(result.key, "batch", error, final=final,
                                                    batch_id=batch["batch_id"])
                    if final:
                        d.summary.note_failure(error)
            d.ledger.end_batch(batch["batch_id"], outcomes)
        if progressed:
            interval = d.cfg.poll_interval_s
        else:
            time.sleep(interval)
            interval = min(d.cfg.poll_max_interval_s, max(interval * 1.5, 0.01))
