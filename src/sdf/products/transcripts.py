"""The advice product: difficult-advice transcripts for SFT, or the user's transcripts rewritten to deliberate.

    plan (scenarios, or --rewrite FILE) -> generate -> assemble -> filter (quality, action, judge)
    -> dedup (decontaminate, user messages and replies, name and opener caps) -> sft (+ packed rows) -> report

Generation takes two requests per scenario. The first, with the short writer system prompt, writes
the user's message from the brief. The second has the constitution as its cached system prompt and
sees only what a deployed assistant would see: the operator's system prompt and tools, and the
user's message. It writes the deliberation and the answer without ever reading the brief, so the
scenario's labels (the temptation, the stakes, "this is a dilemma") cannot leak into the reply.
A rewrite is a screen request and a rewrite request per transcript, on their own cached system prompt
(products/rewrite.py).
"""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.executor import BATCH_ROWS, Rejects, StageCounts, apply_steps, extract_answers, run_steps
from sdf.llm import Backend
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger, LLMRequest
from sdf.llm.requests import usage_of
from sdf.products import Product, Stage, rewrite
from sdf.products.context import Run
from sdf.products.deployments import deployment_block, deployment_of
from sdf.products.judging import filter_judged, send_judge
from sdf.products.replies import failure, parse_reply, truncated, user_message_of
from sdf.products.rewrite import read_transcripts
from sdf.products.scenarios import plan_scenarios
from sdf.run import CHAT_FILTERED_SCHEMA, CHAT_SCHEMA, count_rows, iter_rows
from sdf.source.catalog import AdviceCatalog, load_advice_catalog
from sdf.source.plan import TOKENS_PER_WORD
from sdf.steps import reject_row

NONE = {"input": 0, "kept": 0}  # the counts of a stage that saw no batch
REPLY_TOKENS = 900  # a deliberation of ~400 words and an answer of ~250, for the estimate
DELIBERATION_TOKENS = 500  # what a rewrite adds to the final turn, for the estimate


def advice_catalog(run: Run) -> AdviceCatalog:
    return load_advice_catalog(Path(run.settings.run.prompts) if run.settings.run.prompts else None)


def advisor_system(acat: AdviceCatalog, constitution_text: str) -> str:
    """The reply's cached prefix: who the assistant is, then the constitution; byte-identical all run."""
    return acat.render("advisor_system", constitution=constitution_text)


def _constitution_text(run: Run) -> str:
    """The constitution's text; a reopened run has only its sections, so it reads the file again."""
    if run.constitution.text:
        return run.constitution.text
    from sdf.source.constitution import load_constitution

    return load_constitution(Path(run.settings.run.constitution), run.settings.run.variables).text


# -- requests ---------------------------------------------------------------------------------------


def user_request(acat: AdviceCatalog, spec: dict[str, Any], section_text: str, run: Run) -> LLMRequest:
    llm = run.settings.llm
    if spec["system_prompt"]:  # the operator's words tell the writer what product this is; tool schemas would not
        note = ("Where they are writing: an assistant deployed with the system prompt below, which the person "
                "cannot see; it only tells you what kind of product this is. If it does not obviously fit the "
                "person, they are using it for something beside its purpose, as people do.\n<deployment>\n"
                + spec["system_prompt"] + "\n</deployment>")
    else:
        note = "Where they are writing: a general-purpose AI assistant."
    prompt = acat.render(
        "user", domain=spec["domain"], role=spec["role"], temptation=acat.temptations[spec["temptation"]],
        stakes=spec["stakes"], register=spec["register"], user_words=spec["user_words"],
        section_title=spec["section_title"], section_text=section_text, deployment_note=note)
    return LLMRequest("advice_user", spec["spec_id"], llm.model, acat.render("writer_system"), prompt,
                      run.settings.advice.user_max_tokens, llm.temperature)


def reply_request(acat: AdviceCatalog, spec: dict[str, Any], user_message: str, system: str, run: Run,
                  max_tokens: int | None = None) -> LLMRequest:
    llm = run.settings.llm
    prompt = acat.render("reply", deployment=deployment_block(*deployment_of(spec)), user_message=user_message)
    return LLMRequest("advice_reply", spec["spec_id"], llm.model, system, prompt, max_tokens or llm.max_tokens,
                      llm.temperature)


def judge_request(acat: AdviceCatalog, chat: dict[str, Any], section_text: str, run: Run) -> LLMRequest:
    """The chat rubric for advice; for a rewrite, the rubric that also asks whether the action stayed the same."""
    j, llm = run.settings.judge, run.settings.llm
    messages = json.loads(chat["prompt_messages"])
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    deployment = deployment_block(system, json.loads(chat["tools"]) if chat["tools"] else None)
    if chat["mode"] == "rewrite":
        prompt = rewrite.judge_prompt(acat, chat, deployment, messages)
    else:
        prompt = acat.render(
            "judge", section_title=chat["section_title"] or "(the constitution as a whole)",
            section_text=section_text or "(see the constitution)", deployment=deployment,
            user_message=chat["user"], deliberation=chat["deliberation"], answer=chat["answer"])
    return LLMRequest("judge", chat["doc_id"], j.model or llm.model, run.system, prompt, j.max_tokens, llm.temperature)


# -- plan and generate --------------------------------------------------------------------------------


def plan_stage(run: Run) -> list[dict[str, Any]]:
    cfg = run.settings.advice
    if cfg.rewrite:
        specs = read_transcripts(Path(cfg.rewrite))
    else:
        specs = plan_scenarios(run.constitution.sections, advice_catalog(run), run.settings.plan.docs, cfg,
                               run.settings.run.seed)
    run.dir.write_scenarios(specs)
    run.dir.write_plan({"product": "advice", "mode": "rewrite" if cfg.rewrite else "advice", "chats": len(specs)})
    return specs


class Requests:
    """Every request of the run's specs, rebuilt identically on each call (the ledger is keyed by content)."""

    def __init__(self, run: Run) -> None:
        self.run, self.acat = run, advice_catalog(run)
        self.system = advisor_system(self.acat, _constitution_text(run))

    def section_text(self, section_id: str) -> str:
        section = self.run.sections.get(section_id)
        return section.text if section else ""

    def first(self, spec: dict[str, Any]) -> LLMRequest:
        """The user-message request of a scenario, or the screen request of a transcript."""
        if spec["mode"] == "rewrite":
            return rewrite.screen_request(self.acat, spec, self.run)
        return user_request(self.acat, spec, self.section_text(spec["section_id"]), self.run)

    def replies(self, spec: dict[str, Any], user_message: str) -> list[LLMRequest]:
        """The reply request and, when configured, its larger truncation retry (as for documents)."""
        llm = self.run.settings.llm
        first = reply_request(self.acat, spec, user_message, self.system, self.run)
        if llm.truncation_retry_max_tokens <= llm.max_tokens:
            return [first]
        return [first, reply_request(self.acat, spec, user_message, self.system, self.run,
                                     llm.truncation_retry_max_tokens)]


def generate_stage(run: Run, backend: Backend, progress: bool = True) -> RunSummary:
    """User messages first, then a reply to each message that came back (a max_tokens stop is retried once
    with the larger limit); rewrites in one round."""
    specs, reqs = run.dir.read_specs(), Requests(run)
    with closing(run.ledger()) as ledger:
        if run.settings.advice.rewrite:
            return rewrite.generate(run, ledger, reqs.acat, progress, backend)
        firsts = [reqs.first(s) for s in specs]
        summary = run.send(ledger, firsts, "user messages", progress, backend)
        if summary.stopped:
            return summary
        pairs = []
        for spec, request in zip(specs, firsts, strict=True):
            message = user_message_of(ledger.get(request.key))
            if message:
                pairs.append(reqs.replies(spec, message))
        summary.add(run.send(ledger, [p[0] for p in pairs], "replies", progress, backend))
        retries = [p[1] for p in pairs if len(p) > 1 and truncated(ledger.get(p[0].key))]
        if retries and not summary.stopped:
            summary.add(run.send(ledger, retries, "retry truncated", progress, backend))
        return summary


def usage_estimate(run: Run, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, tokens and cost of generating `specs`, from the rendered prompts; no API is called.

    The cached system prompt is written once and read by every other request that shares it.
    Outputs are typical lengths (the user message's planned length, REPLY_TOKENS, DELIBERATION_TOKENS).
    """
    from sdf.source.constitution import estimate_tokens

    reqs, price = Requests(run), run.settings.price(run.settings.llm.model)
    rounds: list[tuple[str, list[int], list[int]]] = []  # (system, prompt tokens, output tokens) per request kind
    if run.settings.advice.rewrite:
        rounds += rewrite.usage_rounds(reqs.acat, specs, run, DELIBERATION_TOKENS)
    else:
        users = [reqs.first(s) for s in specs]
        user_out = [round(s["user_words"] * TOKENS_PER_WORD) + 10 for s in specs]
        rounds.append((users[0].system if users else "", [estimate_tokens(r.prompt) for r in users], user_out))
        replies = [estimate_tokens(reqs.replies(s, "")[0].prompt) + out for s, out in zip(specs, user_out, strict=True)]
        rounds.append((reqs.system, replies, [REPLY_TOKENS] * len(specs)))
    # each round is priced as the documents' requests are, cache writes at the mode's TTL included
    parts = [usage_of(estimate_tokens(system), prompts, outputs, price, run.settings.llm)
             for system, prompts, outputs in rounds if prompts]
    usage: dict[str, Any] = {k: sum(p[k] for p in parts) for k in (
        "requests", "input_tokens", "cache_creation_tokens", "cache_read_tokens", "output_tokens")}
    for key in ("cost_usd", "batch_cost_usd"):
        usage[key] = round(sum(p[key] for p in parts), 6) if price else None
    return usage


# -- assemble ------------------------------------------------------------------------------------------


def assemble_stage(run: Run) -> dict[str, int]:
    """Ledger answers -> chats.parquet; every spec becomes a chat or a generate reject with its reason.

    Returns {"specs", "documents" (chats, under the key the CLI's verdict reads), "no_answer"}.
    """
    reqs = Requests(run)
    with closing(run.ledger()) as ledger:
        return extract_answers(run.dir, run.dir.chats, CHAT_SCHEMA, lambda spec: chat_from(spec, ledger, reqs))


def chat_from(spec: dict[str, Any], ledger: Ledger, reqs: Requests) -> tuple[dict | None, dict]:
    """The chat a spec's ledger rows yield, or the reject row saying why there is none."""
    first = ledger.get(reqs.first(spec).key)
    if spec["mode"] == "rewrite":
        parts, why = rewrite.chat_parts(spec, first, ledger, reqs.acat, reqs.run)
        if parts is None:
            return None, why
        rows, context, tools, user, parsed, extra = parts
    else:
        user = user_message_of(first)
        if user is None:
            return None, failure(spec, first, "user message")
        answered = [r for r in (ledger.get(q.key) for q in reqs.replies(spec, user)) if r is not None]
        ok = [r for r in answered if r["status"] == "ok"]
        reply = ok[-1] if ok else (answered[0] if answered else None)
        rows = [first, *ok]
        parsed = parse_reply(reply["response_text"]) if reply is not None and reply["status"] == "ok" else None
        if parsed is None or reply["stop_reason"] == "max_tokens":
            why = failure(spec, reply, "reply")
            why["cost_usd"] = sum(r["cost_usd"] or 0.0 for r in rows)  # the user message was paid for too
            return None, why
        system, tools = deployment_of(spec)
        context = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        extra = {"original_answer": None, "original_tool_calls": None}
    deliberation, answer, calls = parsed
    final_row = rows[-1]
    chat = {k: spec[k] for k in CHAT_SCHEMA.names if k in spec and k != "tools"}
    chat.update(
        doc_id=spec["spec_id"], prompt_messages=json.dumps(context, ensure_ascii=False),
        tools=json.dumps(tools, ensure_ascii=False) if tools else None, user=user, deliberation=deliberation,
        answer=answer, tool_calls=json.dumps(calls, ensure_ascii=False) if calls is not None else None,
        text="\n\n".join(p for p in (user, deliberation, answer) if p), model=final_row["model"],
        stop_reason=final_row["stop_reason"], request_key=final_row["key"],
        cost_usd=sum(r["cost_usd"] or 0.0 for r in rows),
        **{k: sum(r[k] or 0 for r in rows) for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                     "cache_creation_tokens")},
        **extra)
    return chat, {}


# -- filter ------------------------------------------------------------------------------------------------


def filter_stage(run: Run, backend: Backend | None = None, progress: bool = True) -> dict[str, Any]:
    """Chat quality rules and the rewrite's action check, then the optional judge -> filtered.parquet."""
    from sdf.steps.filters.chat_rules import ActionCheck, ChatQualityFilter

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.chats, "generate")
    steps = [ChatQualityFilter(cfg.advice, cfg.quality), ActionCheck()]
    if not cfg.judge.enabled:
        counts = run_steps(rd, source, rd.filtered, CHAT_FILTERED_SCHEMA, steps).as_dict()
        rd.update_metrics(cleared=("judge",), stages=counts)
        return {"input": counts.get("quality", NONE)["input"], "kept": counts.get("action", NONE)["kept"]}
    if backend is None:
        raise SdfError("the judge is enabled but no model backend was given")
    scratch = rd.path / "judge_input.parquet"  # the judge reads each chat twice (send, then score)
    counts = run_steps(rd, source, scratch, CHAT_FILTERED_SCHEMA, steps).as_dict()
    reqs = Requests(run)

    def request_of(chat: dict) -> LLMRequest:
        return judge_request(reqs.acat, chat, reqs.section_text(chat["section_id"]), run)

    summary = send_judge(run, scratch, request_of, backend, progress)
    judged = filter_judged(run, scratch, CHAT_FILTERED_SCHEMA, request_of)
    scratch.unlink()
    rd.update_metrics(stages={**counts, **judged})
    return {"input": counts.get("quality", NONE)["input"], "after_rules": counts.get("action", NONE)["kept"],
            "kept": judged.get("judge", NONE)["kept"], "judge_cost_usd": round(summary.cost_usd, 6),
            "stopped": summary.stopped}


# -- dedup ------------------------------------------------------------------------------------------------


def dedup_stage(run: Run) -> dict[str, Any]:
    """Decontaminate; drop near duplicates among user messages and among replies; cap names and openers.

    Pass 1 streams filtered.parquet through decontamination and builds the table without texts (ids,
    scores, two signature sets, user-message openers, names); the decisions are made on that table;
    pass 2 streams the kept chats into sft.parquet and sft.jsonl.
    """
    from sdf.steps.decontam.index import build_index
    from sdf.steps.decontam.step import Decontaminate, contamination_summary
    from sdf.steps.dedup.clusters import find_duplicates
    from sdf.steps.dedup.minhash import SignatureTable
    from sdf.steps.diversity.caps import CapRow, confirm_names, decide_caps, interned, opener
    from sdf.steps.diversity.names import given_names
    from sdf.writers.chat import SftWriter

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.filtered, "filter")
    index = build_index(cfg.dedup, run.catalog.root, cfg.diversity.spacy_model, cfg.diversity.ner_fallback,
                        [n for n, _ in (*run.catalog.given_names, *run.catalog.surnames)])
    steps = [Decontaminate(index)] if index is not None else []
    rewrite = bool(cfg.advice.rewrite)  # the user's own prompts are theirs to keep: only replies are compared
    counts = StageCounts()
    table: list[CapRow] = []
    capacity = count_rows(source)
    parts = {"user": SignatureTable(capacity, cfg.dedup), "reply": SignatureTable(capacity, cfg.dedup)}
    removed: set[str] = set()  # decontaminated in pass 1 (and recorded there)
    with Rejects(rd, ["decontaminate", "dedup", "diversity"]) as rejects:
        for rows in iter_rows(source, batch_size=BATCH_ROWS):
            batch = apply_steps(rows, steps, rejects, counts)
            if len(batch) < len(rows):
                still = {c["doc_id"] for c in batch}
                removed.update(c["doc_id"] for c in rows if c["doc_id"] not in still)
            for part, texts in (("user", [c["user"] for c in batch]),
                                ("reply", [c["deliberation"] + "\n\n" + c["answer"] for c in batch])):
                parts[part].add(texts)
            names = given_names([_named_text(c) for c in batch], cfg.diversity)
            table += [CapRow(c["doc_id"], c["quality_score"] or 0.0, True,
                             "" if rewrite else sys.intern(opener(c["user"], cfg.diversity.opener_words)),
                             interned(n)) for c, n in zip(batch, names, strict=True)]
        ids = [r.doc_id for r in table]
        scores = [r.quality_score for r in table]
        drop: dict[str, tuple[str, str, str, str | None]] = {}
        sizes: list[int] = []
        for part in ("reply",) if rewrite else ("user", "reply"):
            found = find_duplicates(ids, parts[part].keys, parts[part].signatures, scores, cfg.dedup)
            sizes += found.cluster_sizes
            for i, (reason, detail, keeper) in found.drops.items():
                drop.setdefault(ids[i], ("dedup", reason, f"{part}: {detail}", ids[keeper]))
        del parts
        counts.add("dedup", len(table), len(table) - len(drop), [{"reason": d[1]} for d in drop.values()])
        unique = [r for r in table if r.doc_id not in drop]
        checked = confirm_names(unique, cfg.diversity, lambda wanted: _named_texts(source, wanted), len(table))
        caps = decide_caps(checked.table, cfg.diversity, used=checked.used)
        counts.add("diversity", len(unique), len(unique) - len(caps.drops),
                   [{"reason": r} for r, _ in caps.drops.values()])
        drop.update((i, ("diversity", reason, detail, None)) for i, (reason, detail) in caps.drops.items())
        name_counts = checked.counts
        del table, unique, ids, checked
        with SftWriter(rd) as out:
            for batch in iter_rows(source, batch_size=BATCH_ROWS):
                for chat in batch:
                    if chat["doc_id"] in drop:
                        stage, reason, detail, keeper = drop[chat["doc_id"]]
                        rejects.write(stage, [reject_row(chat, stage, reason, detail, duplicate_of=keeper)])
                    elif chat["doc_id"] not in removed:
                        out.write(chat)
    stages = counts.as_dict()
    dedup: dict[str, Any] = {"cluster_sizes": sorted(sizes, reverse=True)}
    if index is not None:  # contamination by reason and by eval, and what the index held
        rows = rd.read_rejects(["stage", "reason", "detail"]).to_pylist()
        dedup["decontaminate"] = {"index": index.counts,
                                  **contamination_summary(r for r in rows if r["stage"] == "decontaminate")}
    rd.update_metrics(stages=stages, dedup=dedup, caps={**caps.caps, **name_counts})
    first = stages.get("decontaminate", stages["dedup"])
    return {"stages": stages, "input": first["input"], "sft": out.rows, "corpus": out.rows, "caps": caps.caps}


def _named_text(chat: dict[str, Any]) -> str:
    """The part of a chat whose people the name cap counts: the user's message and the answer."""
    return chat["user"] + "\n\n" + chat["answer"]


def _named_texts(source: Path, wanted: set[str]) -> dict[str, str]:
    return {c["doc_id"]: _named_text(c) for batch in iter_rows(source, ["doc_id", "user", "answer"], BATCH_ROWS * 4)
            for c in batch if c["doc_id"] in wanted}


# -- pack and report ---------------------------------------------------------------------------------------


def pack_stage(run: Run, progress: bool = True) -> dict[str, Any] | None:
    """Packed SFT rows when [advice].chat_tokenizer is set; None otherwise."""
    if not run.settings.advice.chat_tokenizer:
        return None
    from sdf.writers.chat import pack_sft

    return pack_sft(run.dir, run.settings.advice.chat_tokenizer, run.settings.advice.seq_len)


def report_stage(run: Run) -> Path:
    from sdf.products.transcript_report import write_transcript_report

    return write_transcript_report(run.dir.path)


PRODUCT = Product(
    name="advice", item="chats", final="sft", usage_estimate=usage_estimate,
    stages=(
        Stage("plan", plan_stage, "scenarios from the catalog, or the transcripts of --rewrite"),
        Stage("generate", generate_stage, "the user's message, then the reply (or the rewrite)"),
        Stage("extract", assemble_stage, "ledger answers -> chats.parquet"),
        Stage("filter", filter_stage, "chat quality rules and the action check"),
        Stage("judge", None, "the LLM judge, inside filter when [judge] is enabled"),
        Stage("decontaminate", None, "inside dedup"),
        Stage("dedup", dedup_stage, "user messages and replies -> sft.parquet and sft.jsonl"),
        Stage("diversity", None, "name and opener caps, inside dedup"),
        Stage("pack", pack_stage, "packed SFT rows when [advice].chat_tokenizer is set"),
        Stage("report", report_stage, "report.html and stats.json"),
    ),
)
