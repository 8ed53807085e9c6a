"""The advice product: difficult-advice transcripts for SFT, or the user's transcripts rewritten to deliberate.

    plan (scenarios, or --rewrite FILE) -> generate -> assemble -> filter (quality, action, judge)
    -> dedup (decontaminate, user messages and replies, name and opener caps) -> sft (+ packed rows) -> report

A scenario is one of four kinds (a temptation, a shortcut that is fine, an instruction from someone
without the standing to give it, a dilemma), and some conversations go on for more user turns.
Generation goes in rounds (products/conversations.py): the deployment the model writes for the
scenario's domain, then the user's message from the writer's brief, then the reply, then each
follow-up and its reply. The reply has the constitution as its cached system prompt and sees only
what a deployed assistant would see: the operator's system prompt and tools and the conversation. It
never reads the brief, so the scenario's labels (the kind, the stakes) cannot leak into the reply.
A rewrite is a screen request and a rewrite request per transcript, on their own cached system prompt
(products/rewrite.py).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.executors.local import BATCH_ROWS, Rejects, StageCounts, apply_steps, extract_answers, run_steps
from sdf.llm import Backend
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger, LLMRequest
from sdf.llm.requests import usage_of
from sdf.products import Product, Stage, rewrite
from sdf.products.context import Run
from sdf.products.conversations import Requests, Turn, advice_catalog, needs_deployment, walk
from sdf.products.dedup import decide, finish_dedup
from sdf.products.deployments import deployment_block
from sdf.products.judging import filter_judged, send_judge
from sdf.products.rewrite import read_transcripts
from sdf.products.scenarios import plan_scenarios
from sdf.run import CHAT_FILTERED_SCHEMA, CHAT_SCHEMA, TableWriter, count_rows, iter_rows
from sdf.source.plan import TOKENS_PER_WORD
from sdf.steps import reject_row
from sdf.steps.filters.chat_rules import conversation_text

NONE = {"input": 0, "kept": 0}  # the counts of a stage that saw no batch
REPLY_TOKENS = 900  # a deliberation of ~400 words and an answer of ~250, for the estimate
ANSWER_TOKENS = 350  # an earlier answer as a later request shows it, for the estimate
DEPLOYMENT_TOKENS = 700  # a written system prompt and its tools, for the estimate
DELIBERATION_TOKENS = 500  # what a rewrite adds to the final turn, for the estimate
ROUND_NAMES = {"advice_deployment": "deployments", "advice_user": "user messages", "advice_reply": "replies"}


# -- requests ---------------------------------------------------------------------------------------


def judge_request(reqs: Requests, chat: dict[str, Any], run: Run) -> LLMRequest:
    """The rubric of the chat's kind; for a rewrite, the rubric that also asks whether the action stayed the same."""
    acat, j, llm = reqs.acat, run.settings.judge, run.settings.llm
    messages = json.loads(chat["prompt_messages"])
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    deployment = deployment_block(system, json.loads(chat["tools"]) if chat["tools"] else None)
    if chat["mode"] == "rewrite":
        prompt = rewrite.judge_prompt(acat, chat, deployment, messages)
    else:
        talk = [m for m in messages if m["role"] in ("user", "assistant")]
        turns = [Turn(u["content"], "", a["content"]) for u, a in zip(talk[:-1:2], talk[1::2], strict=False)]
        conversation = "\n".join(p for p in (reqs.conversation(turns), f"<user>\n{chat['user']}\n</user>") if p)
        kind = chat.get("kind") if chat.get("kind") in acat.seeds else "temptation"
        prompt = acat.render(
            "judge", section_title=chat["section_title"] or "(the constitution as a whole)",
            section_text=reqs.section_text(chat["section_id"]) or "(see the constitution)", deployment=deployment,
            conversation=conversation, deliberation=chat["deliberation"] or "(none)", answer=chat["answer"],
            rubric=acat.render(f"rubric_{kind}"))
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


def generate_stage(run: Run, backend: Backend, progress: bool = True) -> RunSummary:
    """Rewrites in one round; scenarios in rounds, each one send over every conversation still going:
    deployments, user messages, replies (a max_tokens stop retried once with the larger limit), follow-ups."""
    specs, reqs = run.dir.read_specs(), Requests(run)
    with closing(run.ledger()) as ledger:
        if run.settings.advice.rewrite:
            return rewrite.generate(run, ledger, reqs.acat, progress, backend)
        convs = [walk(s, ledger, reqs) for s in specs]
        # the first round also lists what earlier runs answered, so the summary counts it as already done
        first = [q for c in convs for q in c.asked] + [c.next for c in convs if c.next is not None]
        summary = run.send(ledger, first, _round_name(c.next for c in convs), progress, backend)
        sent = {q.key for q in first}
        while not (summary.stopped or summary.fatal or summary.interrupted):
            convs = [walk(c.spec, ledger, reqs) for c in convs if c.next is not None]
            wanted = [c.next for c in convs if c.next is not None and c.next.key not in sent]
            if not wanted:
                break
            summary.add(run.send(ledger, wanted, _round_name(wanted), progress, backend))
            sent.update(q.key for q in wanted)
        return summary


def _round_name(requests: Any) -> str:
    purposes = Counter(q.purpose for q in requests if q is not None)
    return ROUND_NAMES.get(purposes.most_common(1)[0][0], "requests") if purposes else "requests"


def usage_estimate(run: Run, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, tokens and cost of generating `specs`, from the rendered prompts; no API is called.

    The cached system prompt is written once and read by every other request that shares it.
    Outputs are typical lengths (the user message's planned length, REPLY_TOKENS, DEPLOYMENT_TOKENS); a
    later turn's prompts grow by the turns before it.
    """
    from sdf.source.constitution import estimate_tokens

    reqs, price = Requests(run), run.settings.price(run.settings.llm.model)
    rounds: list[tuple[str, list[int], list[int]]] = []  # (system, prompt tokens, output tokens) per request kind
    if run.settings.advice.rewrite:
        rounds += rewrite.usage_rounds(reqs.acat, specs, run, DELIBERATION_TOKENS)
    else:
        writer = reqs.acat.render("writer_system")
        planned = [s for s in specs if needs_deployment(s) and run.settings.advice.generate_deployments]
        deployments = [reqs.deployment(s) for s in planned]
        if deployments:
            rounds.append((deployments[0].system, [estimate_tokens(r.prompt) for r in deployments],
                           [DEPLOYMENT_TOKENS] * len(deployments)))
        users, user_out, replies = [], [], []
        for s in specs:
            words = round(s["user_words"] * TOKENS_PER_WORD) + 10
            dep = reqs.seed_deployment(s)
            base_user = estimate_tokens(reqs.user(s, dep).prompt)
            base_reply = estimate_tokens(reqs.replies(s, dep, [], "")[0].prompt)
            for t in range(s.get("user_turns") or 1):
                history = t * (words + ANSWER_TOKENS)
                users.append(base_user + history)
                user_out.append(words if t == 0 else words // 2)
                replies.append(base_reply + history + words)
        rounds.append((writer, users, user_out))
        rounds.append((reqs.system, replies, [REPLY_TOKENS] * len(replies)))
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

    Also records in metrics.json how the chats' deployments came about (written, seed pools, and why a
    written one was unusable) and how many distinct ones there are.
    Returns {"specs", "documents" (chats, under the key the CLI's verdict reads), "no_answer"}.
    """
    reqs = Requests(run)
    origins: Counter[str] = Counter()  # generated / seed_pools / unusable:<reason>, over assembled chats
    distinct: set[str] = set()

    def item_from(spec: dict[str, Any]) -> tuple[dict | None, dict]:
        chat, why = chat_from(spec, ledger, reqs, origins)
        if chat is not None and chat["deployment"]:
            distinct.add(chat["deployment"])
        return chat, why

    with closing(run.ledger()) as ledger:
        counts = extract_answers(run.dir, run.dir.chats, CHAT_SCHEMA, item_from)
    unusable = {k.split(":", 1)[1]: n for k, n in origins.items() if k.startswith("unusable:")}
    run.dir.update_metrics(deployments={"generated": origins["generated"], "seed_pools": origins["seed_pools"],
                                        "distinct": len(distinct), "unusable": unusable})
    return counts


def chat_from(spec: dict[str, Any], ledger: Ledger, reqs: Requests, origins: Counter[str] | None = None
              ) -> tuple[dict | None, dict]:
    """The chat a spec's ledger rows yield, or the reject row saying why there is none."""
    if spec["mode"] == "rewrite":
        parts, why = rewrite.chat_parts(spec, ledger.get(reqs.first(spec).key), ledger, reqs.acat, reqs.run)
        if parts is None:
            return None, why
        rows, context, tools, user, parsed, extra = parts
        deployment, text = "", ""
    else:
        conv = walk(spec, ledger, reqs)
        if conv.reject is not None:
            return None, conv.reject
        dep = conv.deployment
        context = [{"role": "system", "content": dep.system}] if dep.system else []
        for turn in conv.turns[:-1]:
            context += [{"role": "user", "content": turn.user},
                        {"role": "assistant", "content": turn.answer, "reasoning_content": turn.deliberation or None}]
        final = conv.turns[-1]
        context.append({"role": "user", "content": final.user})
        rows, tools, user = conv.rows, dep.tools, final.user
        parsed = (final.deliberation, final.answer, final.calls)
        extra = {"original_answer": None, "original_tool_calls": None}
        deployment = dep.id
        if origins is not None and dep.id:
            origins["generated" if dep.id.startswith("gen-") else "seed_pools"] += 1
            origins.update([f"unusable:{dep.fallback}"] if dep.fallback else [])
        text = conversation_text(context, final.deliberation, final.answer)
    deliberation, answer, calls = parsed
    final_row = rows[-1]
    chat = {k: spec[k] for k in CHAT_SCHEMA.names if k in spec and k != "tools"}
    chat.update(
        doc_id=spec["spec_id"], prompt_messages=json.dumps(context, ensure_ascii=False),
        tools=json.dumps(tools, ensure_ascii=False) if tools else None, user=user, deliberation=deliberation,
        answer=answer, tool_calls=json.dumps(calls, ensure_ascii=False) if calls is not None else None,
        text=text or "\n\n".join(p for p in (user, deliberation, answer) if p), model=final_row["model"],
        stop_reason=final_row["stop_reason"], request_key=final_row["key"], deployment=deployment,
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
        return judge_request(reqs, chat, run)

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

    Pass 1 streams filtered.parquet through decontamination and builds the table without texts (a CapRow
    and two signatures per chat: its user messages and its replies); the decisions are products.dedup's,
    as for documents; pass 2 streams the kept chats into corpus.parquet (`sdf pack` writes the SFT files).
    """
    from sdf.steps.decontam.index import build_index
    from sdf.steps.decontam.step import Decontaminate
    from sdf.steps.dedup.clusters import find_duplicates
    from sdf.steps.dedup.minhash import SignatureTable
    from sdf.steps.diversity.caps import CapRow, interned, opener
    from sdf.steps.diversity.names import given_names

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
            sides = [_sides(c) for c in batch]
            parts["user"].add([u for u, _ in sides])
            parts["reply"].add([r for _, r in sides])
            names = given_names([_named_text(c) for c in batch], cfg.diversity)
            table += [CapRow(c["doc_id"], c["quality_score"] or 0.0, True,
                             "" if rewrite else sys.intern(opener(_first_user(c), cfg.diversity.opener_words)),
                             interned(n)) for c, n in zip(batch, names, strict=True)]
        ids = [r.doc_id for r in table]
        scores = [r.quality_score for r in table]
        found = [(part, find_duplicates(ids, parts[part].keys, parts[part].signatures, scores, cfg.dedup))
                 for part in (("reply",) if rewrite else ("user", "reply"))]
        del parts, ids, scores
        # no name pools: an over-used name in a chat is the user's words, so the chat is dropped, not renamed
        drop, _, caps_metrics, tally = decide(run, table, found, counts, len(table),
                                              lambda wanted: _named_texts(source, wanted))
        del table
        with TableWriter(rd.corpus, CHAT_FILTERED_SCHEMA) as out:
            for batch in iter_rows(source, batch_size=BATCH_ROWS):
                kept = []
                for chat in batch:
                    if chat["doc_id"] in drop:
                        stage, reason, detail, keeper = drop[chat["doc_id"]]
                        rejects.write(stage, [reject_row(chat, stage, reason, detail, duplicate_of=keeper)])
                    elif chat["doc_id"] not in removed:
                        kept.append(chat)
                        tally.add(chat)
                out.write(kept)
    return finish_dedup(run, counts, tally, [d for _, d in found], index, caps_metrics)


def _talk(chat: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in json.loads(chat["prompt_messages"] or "[]") if m["role"] in ("user", "assistant")]


def _first_user(chat: dict[str, Any]) -> str:
    """The message that opens the conversation: where the scenario is told (the last one on one turn)."""
    return next((m["content"] for m in _talk(chat) if m["role"] == "user" and m["content"]), chat["user"])


def _sides(chat: dict[str, Any]) -> tuple[str, str]:
    """What dedup compares: the opening user message, where the scenario is told (two conversations that
    open alike are the same scenario whatever their follow-ups), and every reply with its deliberation."""
    earlier = [m for m in _talk(chat) if m["role"] == "assistant"]
    replies = [p for m in earlier for p in (m.get("reasoning_content"), m["content"]) if p]
    return _first_user(chat), "\n\n".join(p for p in (*replies, chat["deliberation"], chat["answer"]) if p)


def _named_text(chat: dict[str, Any]) -> str:
    """The part of a chat whose people the name cap counts: every user message and every answer."""
    return "\n\n".join(p for p in (*[m["content"] for m in _talk(chat)], chat["answer"]) if p)


def _named_texts(source: Path, wanted: set[str]) -> dict[str, str]:
    return {c["doc_id"]: _named_text(c)
            for batch in iter_rows(source, ["doc_id", "prompt_messages", "user", "answer"], BATCH_ROWS * 4)
            for c in batch if c["doc_id"] in wanted}


# -- pack and report ---------------------------------------------------------------------------------------


def pack_stage(run: Run, progress: bool = True) -> dict[str, Any]:
    """corpus.parquet's chats -> sft.parquet, sft.jsonl and sft.openai.jsonl, then packed SFT rows when
    [advice].chat_tokenizer is set. Returns {"sft": chats written, "packed": pack_sft's numbers or None}."""
    from sdf.writers.chat import SftWriter, pack_sft

    rd = run.dir
    with SftWriter(rd) as out:
        for batch in iter_rows(rd.require(rd.corpus, "dedup"), batch_size=BATCH_ROWS):
            for chat in batch:
                out.write(chat)
    packed = None
    if run.settings.advice.chat_tokenizer:
        packed = pack_sft(rd, run.settings.advice.chat_tokenizer, run.settings.advice.seq_len)
    return {"sft": out.rows, "packed": packed}


def report_stage(run: Run) -> Path:
    from sdf.report import write_report

    return write_report(run.dir.path)


PRODUCT = Product(
    name="advice", item="chats", final="corpus", usage_estimate=usage_estimate,
    stages=(
        Stage("plan", plan_stage, "scenarios from the catalog, or the transcripts of --rewrite"),
        Stage("generate", generate_stage, "the user's message, then the reply (or the rewrite)"),
        Stage("extract", assemble_stage, "ledger answers -> chats.parquet"),
        Stage("filter", filter_stage, "chat quality rules and the action check", reads=("chats", "sections"),
              writes=("filtered",), drops=("quality", "action", "judge")),
        Stage("judge", None, "the LLM judge, inside filter when [judge] is enabled"),
        Stage("decontaminate", None, "inside dedup"),
        Stage("dedup", dedup_stage, "user messages and replies -> corpus.parquet", reads=("filtered",),
              writes=("corpus",), drops=("decontaminate", "dedup", "diversity")),
        Stage("diversity", None, "name and opener caps, inside dedup"),
        Stage("pack", pack_stage, "sft.parquet, sft.jsonl, sft.openai.jsonl; packed rows with a chat tokenizer",
              reads=("corpus",), writes=("sft", "sft_jsonl", "sft_openai", "sft_packed")),
        Stage("report", report_stage, "report.html and stats.json"),
    ),
)
