"""Settling the documents' briefs before any document is paid for: pools, ideas and re-deals.

    expand  one request per (pool, kind) the plan's genres use: the model extends the seed list
    plan    deal specs from the extended lists (prefix-stable, see `sdf.source.deal`)
    ideas   one request per run of `ideas_per_request` consecutive specs proposes one idea per brief,
            in waves; each wave is shown the ideas the waves before it took for the same sections
    re-deal a brief the model calls UNSUITABLE (in its idea, or instead of its document) is dealt anew
            and asked for again alone, at most `max_redeals` times, then dropped with its reason

Every answer lives in the ledger, so settling the same plan again is free and gives the same briefs:
a rerun, a resumed run and a grown run all rebuild exactly what was paid for. The ideas of the last run
of specs are asked for the specs just beyond the plan too, so a grown plan finds them answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

from sdf.errors import SdfError
from sdf.llm import Backend
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger
from sdf.llm.requests import expand_request, ideas_request, parse_ideas, unsuitable_reason
from sdf.products.context import Run
from sdf.source.deal import Dealer, plan_specs
from sdf.source.plan import genre_weights, plan_size
from sdf.source.pools import DealPools, expansion_targets, extended_pools, seed_pools

IDEA_WAVE = 16  # ideas requests in flight at once; later waves see the ideas earlier ones took
TAKEN_SHOWN = 6  # ideas already taken per section that an ideas request is shown


def expansions(run: Run) -> list[tuple[tuple[str, str], Any]]:
    """The (pool, kind) lists this run extends, each with its request; none when expansion is off."""
    cfg = run.settings.plan
    if not cfg.expand_pools:
        return []
    targets = expansion_targets(run.catalog, genre_weights(run.catalog, cfg), cfg.ai_self_stakes > 0)
    return [(t, expand_request(run.catalog, *t, cfg.pool_items, run.system, run.settings.llm)) for t in targets]


def cached_pools(run: Run, ledger: Ledger | None) -> tuple[DealPools, list[tuple[str, str]]]:
    """The pools the ledger already extends (API-free), and the (pool, kind) lists still to extend."""
    wanted = expansions(run)
    if not wanted:
        return seed_pools(run.catalog), []
    answers = {}
    for target, request in wanted:
        row = ledger.get(request.key) if ledger is not None else None
        answers[target] = row["response_text"] if row is not None and row["status"] == "ok" else None
    return extended_pools(run.catalog, answers), [t for t, text in answers.items() if text is None]


def pools_for_plan(run: Run) -> tuple[DealPools, list[tuple[str, str]]]:
    """`cached_pools` for a command that may run before any ledger exists (`sdf plan`, `sdf preview`)."""
    if not run.dir.store.exists():
        return cached_pools(run, None)
    with closing(run.ledger()) as ledger:
        return cached_pools(run, ledger)


def expand_stage(run: Run, ledger: Ledger, backend: Backend, progress: bool) -> tuple[DealPools, RunSummary]:
    """Send the expansions the ledger lacks; the pools are complete only when the summary has not stopped."""
    wanted = expansions(run)
    summary = run.send(ledger, [r for _, r in wanted], "extend pools", progress, backend) if wanted else RunSummary()
    pools, missing = cached_pools(run, ledger)
    if missing and not summary.stopped:
        summary.stopped = f"{len(missing)} pool extension(s) have no answer"
    return pools, summary


def padded_plan(run: Run, pools: DealPools) -> tuple[list[dict], int]:
    """The plan's specs plus those up to the end of its last ideas run, and the plan's own size."""
    cfg = run.settings.plan
    n = plan_size(run.catalog, cfg, genre_weights(run.catalog, cfg))
    extra = (-n) % cfg.ideas_per_request if cfg.brainstorm else 0
    return plan_specs(run.constitution.sections, run.catalog, cfg, run.settings.run.seed, pools, extra), n


def settled_from_ledger(run: Run, ledger: Ledger, specs: list[dict]) -> list[dict]:
    """`specs` (the plan as dealt from the cached pools) with the ideas and idea-time re-deals the ledger
    already holds, sending nothing; specs still waiting for an answer keep an empty idea."""
    if not run.settings.plan.brainstorm or not specs:
        return specs
    pools = cached_pools(run, ledger)[0]
    size = run.settings.plan.ideas_per_request
    extra = (-len(specs)) % size
    padded = plan_specs(run.constitution.sections, run.catalog, run.settings.plan, run.settings.run.seed, pools,
                        extra)[: len(specs) + extra] if extra else specs
    return Briefs(run, ledger, None, pools, False).ideas(padded, len(specs))[0]


class Briefs:
    """Settles ideas and re-deals for a run's specs through its ledger."""

    def __init__(self, run: Run, ledger: Ledger, backend: Backend | None, pools: DealPools, progress: bool) -> None:
        self.run, self.ledger, self.backend, self.progress = run, ledger, backend, progress
        self.cfg = run.settings.plan
        self.dealer = Dealer(run.constitution.sections, run.catalog, self.cfg, run.settings.run.seed, pools)
        self.summary = RunSummary()

    def _answer(self, request: Any) -> str | None:
        row = self.ledger.get(request.key)
        return row["response_text"] if row is not None and row["status"] == "ok" else None

    def _send(self, requests: list, desc: str) -> bool:
        """Send what the ledger lacks (nothing without a backend); False once the run has stopped."""
        if self.backend is not None and requests and not self.summary.stopped:
            self.summary.add(self.run.send(self.ledger, requests, desc, self.progress, self.backend))
        return not self.summary.stopped

    def ideas(self, padded: list[dict], n: int) -> tuple[list[dict], set[str]]:
        """The first `n` specs with their ideas settled, and the ids of those still waiting for an answer."""
        if not self.cfg.brainstorm:
            return padded[:n], set()
        size, run = self.cfg.ideas_per_request, self.run
        chunks = [padded[i:i + size] for i in range(0, len(padded), size)]
        taken: dict[str, list[str]] = {}
        found: dict[str, str | None] = {}
        waiting: set[str] = set()
        for w in range(0, len(chunks), IDEA_WAVE):
            wave = chunks[w:w + IDEA_WAVE]
            requests = [ideas_request(run.catalog, chunk, run.sections, self._taken(chunk, taken), run.system,
                                      run.settings.llm) for chunk in wave]
            self._send(requests, "ideas")
            for chunk, request in zip(wave, requests, strict=True):
                text = self._answer(request)
                parsed = parse_ideas(text, len(chunk))
                for i, spec in enumerate(chunk):
                    if text is None:
                        waiting.add(spec["spec_id"])
                    found[spec["spec_id"]] = parsed.get(i + 1)
                    if parsed.get(i + 1) and unsuitable_reason(parsed[i + 1]) is None:
                        taken.setdefault(spec["section_id"], []).append(parsed[i + 1])
        settled = []
        for spec in padded[:n]:
            if spec["spec_id"] in waiting:
                settled.append(spec)
            else:
                settled.append(self._verdict(spec, found.get(spec["spec_id"])))
        return self.alone(settled, waiting)

    @staticmethod
    def _taken(chunk: Sequence[dict], taken: dict[str, list[str]]) -> dict[str, list[str]]:
        sections = dict.fromkeys(s["section_id"] for s in chunk)
        return {sid: taken[sid][-TAKEN_SHOWN:] for sid in sections if taken.get(sid)}

    def _verdict(self, spec: dict, idea: str | None) -> dict:
        """The spec with its idea; a brief called unsuitable is re-dealt (idea None: ask alone) or dropped."""
        if idea is None:
            return {**spec, "idea": None}
        reason = unsuitable_reason(idea)
        if reason is None:
            return {**spec, "idea": idea}
        return self.redeal(spec, reason)

    def redeal(self, spec: dict, reason: str) -> dict:
        if spec["redeals"] >= self.cfg.max_redeals:
            return {**spec, "idea": "", "unsuitable": reason}
        return {**self.dealer.redeal(spec, spec["redeals"] + 1), "idea": None if self.cfg.brainstorm else ""}

    def alone(self, specs: list[dict], waiting: set[str]) -> tuple[list[dict], set[str]]:
        """Ask for the idea of each spec whose idea is None, one brief per request, re-dealing as answered."""
        for _ in range(self.cfg.max_redeals + 2):
            ask = [i for i, s in enumerate(specs) if s["idea"] is None and s["spec_id"] not in waiting]
            if not ask:
                break
            requests = {i: ideas_request(self.run.catalog, [specs[i]], self.run.sections, {}, self.run.system,
                                         self.run.settings.llm) for i in ask}
            self._send(list(requests.values()), "ideas (re-dealt)")
            for i, request in requests.items():
                text = self._answer(request)
                if text is None:
                    waiting.add(specs[i]["spec_id"])
                else:  # an answer without a usable idea leaves the premise to the writer
                    specs[i] = self._verdict(specs[i], parse_ideas(text, 1).get(1) or "")
        for s in specs:
            if s["idea"] is None:  # ran out of rounds
                s["idea"] = ""
        return specs, waiting


PREVIEW_LOOKAHEAD = 200_000  # how far along the run's sequence preview looks for a (section, genre) slot


def preview_spec(run: Run, genre: str, section_id: str | None) -> tuple[dict, list[str]]:
    """The first spec of the run's sequence in `genre` (and `section_id`), with its brief settled from the
    ledger where the ledger already answers it, and notes on what is not settled yet. Sends nothing."""
    from sdf.source.deal import iter_specs

    if genre not in genre_weights(run.catalog, run.settings.plan):
        raise SdfError(f"genre '{genre}' is not in this run's mix ([plan].genres or genre_weights leave it out)")
    pools, missing = pools_for_plan(run)
    notes = [f"pools: {len(missing)} of {len(expansions(run))} lists not extended yet; dealt from the seed lists"
             ] if missing else []
    seq = iter_specs(run.constitution.sections, run.catalog, run.settings.plan, run.settings.run.seed, pools)
    padded = []
    for spec in seq:
        padded.append(spec)
        if spec["genre"] == genre and section_id in (None, spec["section_id"]):
            break
        if len(padded) >= PREVIEW_LOOKAHEAD:
            raise SdfError(f"no '{genre}' document for section '{section_id}' in the first {PREVIEW_LOOKAHEAD:,} "
                           "specs of this run's plan; raise that section's weight or pick another genre")
    index = len(padded) - 1
    cfg = run.settings.plan
    if not cfg.brainstorm:
        return padded[-1], notes
    size = cfg.ideas_per_request
    padded += [next(seq) for _ in range((-len(padded)) % size)]
    if not run.dir.store.exists():
        return padded[index], [*notes, "idea: none yet; a build asks the model for it first"]
    with closing(run.ledger()) as ledger:
        specs, waiting = Briefs(run, ledger, None, pools, False).ideas(padded, index + 1)
    spec = specs[index]
    if spec["spec_id"] in waiting or not spec["idea"]:
        notes.append("idea: none in the ledger yet; a build asks the model for it first")
    elif spec["redeals"]:
        notes.append(f"this brief was dealt anew {spec['redeals']} time(s): the model called an earlier one unsuitable")
    return spec, notes
