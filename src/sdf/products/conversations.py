"""One advice conversation, round by round: its requests, rebuilt from the spec and the ledger's earlier answers.

    deployment (when the spec has a system prompt or tools) -> user message 1 -> reply 1
    -> follow-up 1 -> reply 2 -> ... (as many user turns as the spec planned)

`walk` replays a spec against the ledger and stops at the first request that has no answer yet (the
next one to send) or at the first unusable answer (the chat's generate reject). Every request is a
pure function of the spec and the answers before it, so a rerun pays nothing twice and a resumed
run continues where it stopped. The user-message writer sees its brief and the conversation; the
reply sees only the deployment, the conversation (earlier answers without their deliberation, as a
deployed model would) and the considerations the spec foregrounds, never the brief.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdf.llm.ledger import Ledger, LLMRequest
from sdf.products import rewrite
from sdf.products.context import Run
from sdf.products.deployments import (
    MAX_TOOLS,
    MIN_TOOLS,
    deployment_block,
    deployment_id,
    deployment_of,
    parse_deployment,
)
from sdf.products.replies import failure, parse_reply, truncated, user_message_of
from sdf.source.catalog import AdviceCatalog, load_advice_catalog

DEPLOYMENT_WORDS = (30, 80, 150, 260)  # the operator prompt's length, dealt by spec: short notes to long briefs


def advice_catalog(run: Run) -> AdviceCatalog:
    return load_advice_catalog(Path(run.settings.run.prompts) if run.settings.run.prompts else None)


def advisor_system(acat: AdviceCatalog, constitution_text: str) -> str:
    """The reply's cached prefix: who the assistant is, then the constitution; byte-identical all run."""
    return acat.render("advisor_system", constitution=constitution_text)


@dataclass(frozen=True)
class Turn:
    user: str
    deliberation: str
    answer: str
    calls: list | None = None


@dataclass
class Deployment:
    system: str  # the chat's system message (tool notation included), "" for none
    tools: list[dict[str, Any]] | None  # the chat's tools field
    operator_prompt: str  # what the user-message writer is shown: the operator's own words
    id: str  # gen-<hash> for a written one; the seed pools' names otherwise; "" for none
    fallback: str = ""  # why a written deployment was unusable, when the seed pools stood in


@dataclass
class Conversation:
    """How far a spec's conversation got: its turns and the ledger rows it paid for; complete, or with the
    reject that stands for it now and, when an answer is still missing, the next request to send."""

    spec: dict[str, Any]
    deployment: Deployment | None = None
    turns: list[Turn] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    asked: list[LLMRequest] = field(default_factory=list)  # the requests answered so far
    next: LLMRequest | None = None
    reject: dict[str, Any] | None = None

    def fail(self, row: Any, what: str) -> Conversation:
        self.reject = failure(self.spec, row, what)
        if row is not None and row["status"] == "ok":  # paid for: the chat's whole cost goes with its reject
            self.reject["cost_usd"] = sum(r["cost_usd"] or 0.0 for r in [*self.rows, row])
        return self


class Requests:
    """Every request of the run's specs, rebuilt identically on each call (the ledger is keyed by content)."""

    def __init__(self, run: Run) -> None:
        self.run, self.acat = run, advice_catalog(run)
        self.system = advisor_system(self.acat, run.constitution_text)
        self.briefs = {c.name: c.brief for c in self.acat.considerations}

    def section_text(self, section_id: str) -> str:
        section = self.run.sections.get(section_id)
        return section.text if section else ""

    def first(self, spec: dict[str, Any]) -> LLMRequest:
        """The screen request of a transcript, which every later request of it follows (advice specs start
        with `walk`)."""
        return rewrite.screen_request(self.acat, spec, self.run)

    def deployment(self, spec: dict[str, Any]) -> LLMRequest:
        """The operator's system prompt and toolset for the spec's domain, with seed examples rotated by spec."""
        acat, rng = self.acat, random.Random(spec["seed"])
        operators = rng.sample(acat.operators, 2) if len(acat.operators) > 1 else [*acat.operators] * 2
        prompt = acat.render(
            "deployment", domain=spec["domain"], prompt_words=rng.choice(DEPLOYMENT_WORDS),
            tool_count=rng.randint(MIN_TOOLS, MAX_TOOLS), operator_1=operators[0].prompt,
            operator_2=operators[1].prompt,
            toolset=json.dumps(list(rng.choice(acat.toolsets).tools), ensure_ascii=False))
        cfg, llm = self.run.settings.advice, self.run.settings.llm
        return LLMRequest("advice_deployment", spec["spec_id"], llm.model, acat.render("deployment_system"), prompt,
                          cfg.deployment_max_tokens, llm.temperature)

    def user(self, spec: dict[str, Any], deployment: Deployment) -> LLMRequest:
        acat = self.acat
        note = (acat.render("deployment_note", system_prompt=deployment.operator_prompt)
                if deployment.operator_prompt else acat.render("deployment_note_none")).strip()
        kind = acat.render(f"kind_{spec['kind']}", seed=acat.seeds[spec["kind"]].get(spec["situation"], "")).strip()
        prompt = acat.render(
            "user", domain=spec["domain"], role=spec["role"], stakes=spec["stakes"], register=spec["register"],
            user_words=spec["user_words"], section_title=spec["section_title"],
            section_text=self.section_text(spec["section_id"]), kind_brief=kind, deployment_note=note)
        return self._writer(spec, prompt)

    def followup(self, spec: dict[str, Any], turns: list[Turn]) -> LLMRequest:
        """The user's next message: sees the brief's person and the conversation, and what the message does."""
        what = spec["followups"].split(",")[len(turns) - 1]
        words = max(15, round(spec["user_words"] * random.Random(f"{spec['seed']}:{len(turns)}").uniform(0.3, 0.8)))
        prompt = self.acat.render(
            "followup", role=spec["role"], register=spec["register"], user_words=words,
            conversation=self.conversation(turns), followup_brief=self.acat.render(f"followup_{what}").strip())
        return self._writer(spec, prompt)

    def _writer(self, spec: dict[str, Any], prompt: str) -> LLMRequest:
        llm = self.run.settings.llm
        return LLMRequest("advice_user", spec["spec_id"], llm.model, self.acat.render("writer_system"), prompt,
                          self.run.settings.advice.user_max_tokens, llm.temperature)

    def conversation(self, turns: list[Turn]) -> str:
        """Earlier turns as the user saw them: messages and answers, never a deliberation."""
        return "\n".join(self.acat.render("conversation_turn", user=t.user, answer=t.answer).strip() for t in turns)

    def replies(self, spec: dict[str, Any], deployment: Deployment, turns: list[Turn], message: str
                ) -> list[LLMRequest]:
        """The reply request and, when configured, its larger truncation retry (as for documents)."""
        llm = self.run.settings.llm
        limits = [llm.max_tokens] + ([llm.truncation_retry_max_tokens]
                                     if llm.truncation_retry_max_tokens > llm.max_tokens else [])
        block = deployment_block(deployment.system, deployment.tools)
        note = self.considerations_note(spec)
        if turns:
            prompt = self.acat.render("reply_turn", deployment=block, considerations_note=note,
                                      conversation=self.conversation(turns), user_message=message)
        else:
            prompt = self.acat.render("reply", deployment=block, considerations_note=note, user_message=message)
        return [LLMRequest("advice_reply", spec["spec_id"], llm.model, self.system, prompt, limit, llm.temperature)
                for limit in limits]

    def considerations_note(self, spec: dict[str, Any]) -> str:
        briefs = [self.briefs[n] for n in (spec.get("considerations") or "").split(",") if n in self.briefs]
        return self.acat.render("considerations_note", considerations="; and ".join(briefs)).strip() if briefs else ""

    def seed_deployment(self, spec: dict[str, Any], fallback: str = "") -> Deployment:
        system, tools = deployment_of(spec)
        name = "+".join(p for p in (spec.get("operator"), spec.get("toolset")) if p)
        return Deployment(system, tools, spec.get("system_prompt") or "", f"pool:{name}" if name else "", fallback)


def needs_deployment(spec: dict[str, Any]) -> bool:
    return bool(spec.get("system_prompt") or spec.get("tools"))


def walk(spec: dict[str, Any], ledger: Ledger, reqs: Requests) -> Conversation:
    """Replay one advice spec against the ledger: its turns so far and its next request, or its reject."""
    conv = Conversation(spec)
    if needs_deployment(spec) and reqs.run.settings.advice.generate_deployments:
        request = reqs.deployment(spec)
        row = ledger.get(request.key)
        if row is None or row["status"] != "ok":
            return _pending(conv, request, row, "deployment")
        conv.rows.append(row)
        conv.asked.append(request)
        generated, why = (None, "truncated") if truncated(row) else parse_deployment(row["response_text"])
        if generated is None:
            conv.deployment = reqs.seed_deployment(spec, why)
        else:
            system, tools = deployment_of(spec, generated)
            conv.deployment = Deployment(system, tools, generated["system_prompt"] if spec["system_prompt"] else "",
                                         deployment_id(system, tools))
    else:
        conv.deployment = reqs.seed_deployment(spec)
    for t in range(spec.get("user_turns") or 1):
        request = reqs.user(spec, conv.deployment) if t == 0 else reqs.followup(spec, conv.turns)
        what = "user message" if t == 0 else f"follow-up {t}"
        row = ledger.get(request.key)
        if row is None or row["status"] != "ok":
            return _pending(conv, request, row, what)
        message = user_message_of(row)
        if message is None:
            return conv.fail(row, what)
        conv.rows.append(row)
        conv.asked.append(request)
        options = reqs.replies(spec, conv.deployment, conv.turns, message)
        answered = [ledger.get(q.key) for q in options]
        what = "reply" if t == 0 else f"reply {t + 1}"
        if answered[0] is None or answered[0]["status"] != "ok":
            return _pending(conv, options[0], answered[0], what)
        conv.asked += [q for q, r in zip(options, answered, strict=True) if r is not None and r["status"] == "ok"]
        if truncated(answered[0]) and len(options) > 1 and (answered[1] is None or answered[1]["status"] != "ok"):
            conv.rows.append(answered[0])
            return _pending(conv, options[1], answered[1], what)
        ok = [r for r in answered if r is not None and r["status"] == "ok"]
        reply = ok[-1]
        parsed = parse_reply(reply["response_text"])
        if parsed is None or reply["stop_reason"] == "max_tokens" or (t == 0 and not parsed[0]):
            conv.rows += [r for r in ok if r is not reply]
            return conv.fail(reply, what)
        conv.rows += ok
        conv.turns.append(Turn(message, *parsed))
    return conv


def _pending(conv: Conversation, request: LLMRequest, row: Any, what: str) -> Conversation:
    """The conversation waits on `request` (unanswered, or failed: a rerun sends it again); until an answer
    comes, it stands as the chat's reject (not_generated or api_error)."""
    conv.next, conv.reject = request, failure(conv.spec, row, what)
    if conv.rows:  # the rounds before were paid for
        conv.reject["cost_usd"] = sum(r["cost_usd"] or 0.0 for r in conv.rows)
    return conv


# -- preview ----------------------------------------------------------------------------------------------

STAND_IN = "[the user's message, once the request above has written it]"
_TITLES = {"advice_deployment": "deployment", "advice_user": "user message", "advice_reply": "reply"}


class _Unpaid:
    """A ledger that holds nothing: what a preview walks when no build has paid for anything yet."""

    def get(self, key: str) -> None:
        return None


def preview_requests(run: Run, kind: str | None, ledger: Ledger | None
                     ) -> tuple[dict[str, Any], list[tuple[str, LLMRequest]], list[str]]:
    """The plan's first scenario of `kind` and its requests as a build would send them, in order.

    Requests the ledger already answered come first, then the next one to send; where that next one is
    a deployment or a user message, the requests after it are shown too, built on stand-ins (the seed
    pools' deployment, a placeholder message) that the notes name. Returns (spec, [(title, request)], notes).
    """
    from sdf.errors import SdfError
    from sdf.products.scenarios import plan_scenarios

    cfg = run.settings.advice
    specs = plan_scenarios(run.constitution.sections, advice_catalog(run), max(run.settings.plan.docs, 40), cfg,
                           run.settings.run.seed)
    spec = next((s for s in specs if kind in (None, s["kind"])), None)
    if spec is None:
        raise SdfError(f"no {kind} scenario in the first {len(specs)} of the plan: [advice] kinds gives it no share")
    reqs = Requests(run)
    conv = walk(spec, ledger if ledger is not None else _Unpaid(), reqs)  # type: ignore[arg-type]
    shown = [(f"{_TITLES.get(q.purpose, q.purpose)} (answered in the ledger)", q) for q in conv.asked]
    notes: list[str] = []
    nxt = conv.next
    if nxt is not None:
        shown.append((f"{_TITLES.get(nxt.purpose, nxt.purpose)} (next to send)", nxt))
    if nxt is not None and nxt.purpose == "advice_deployment":
        dep = reqs.seed_deployment(spec)
        notes.append("no deployment is written yet: the prompts after its request show the seed pools' "
                     "deployment in its place")
        shown.append(("user message (on the seed deployment)", reqs.user(spec, dep)))
        shown.append(("reply (on a stand-in message)", reqs.replies(spec, dep, [], STAND_IN)[0]))
    elif nxt is not None and nxt.purpose == "advice_user" and not conv.turns and conv.deployment is not None:
        shown.append(("reply (on a stand-in message)", reqs.replies(spec, conv.deployment, [], STAND_IN)[0]))
    if (spec.get("user_turns") or 1) > 1 and len(conv.turns) < (spec.get("user_turns") or 1):
        notes.append(f"this conversation goes on for {spec['user_turns']} user turns ({spec['followups']}); each "
                     "follow-up's request is built from the answers before it, so it shows once they are paid for")
    if conv.reject is not None and nxt is None:
        notes.append(f"an answer in the ledger is unusable: {conv.reject.get('reason')} ({conv.reject.get('detail')})")
    return spec, shown, notes
