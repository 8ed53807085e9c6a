"""The documents product: which steps run, in which order, over which artifacts.

    plan -> generate (extend pools, plan again, ideas, documents, re-deals: see products/briefs.py)
    -> extract -> filter (quality, judge) -> dedup (decontaminate, exact and near duplicates, caps,
    metrics) -> pack -> report

Each stage reads what the stage before it wrote (through `sdf.run`) and rewrites only its own
artifacts, so any stage can be rerun alone, and a rerun of `sdf build` skips what the ledger holds.
Record steps stream batch by batch; dedup and the caps decide on a per-document table without
texts, then a second pass streams the kept rows out.
"""

from __future__ import annotations

import re
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from sdf.config import Settings
from sdf.errors import SdfError
from sdf.executors.local import BATCH_ROWS, Rejects, StageCounts, extract_answers, record, run_steps, texts_of
from sdf.llm import Backend
from sdf.llm.engine import RunSummary
from sdf.llm.ledger import Ledger
from sdf.llm.requests import document_request, estimate_usage, judge_request, unsuitable_document
from sdf.products import Product, Stage
from sdf.products.briefs import Briefs, expand_stage, padded_plan, pools_for_plan, settled_from_ledger
from sdf.products.context import Run
from sdf.products.dedup import decide, finish_dedup
from sdf.products.judging import filter_judged, send_judge
from sdf.run import CORPUS_SCHEMA, DOCUMENT_SCHEMA, FILTERED_SCHEMA, TableWriter, count_rows, iter_rows
from sdf.source.deal import iter_specs, name_pools
from sdf.source.plan import genre_weights, plan_size
from sdf.source.pools import DealPools
from sdf.steps import reject_row

ENVELOPE = re.compile(r"<document>\s*(.*?)\s*</document>", re.DOTALL | re.IGNORECASE)
OPENING_TAG = re.compile(r"<document>", re.IGNORECASE)

# -- plan and generate ---------------------------------------------------------------------------


def plan_stage(run: Run, pools: DealPools | None = None, specs: list[dict] | None = None) -> int:
    """Deal the run's specs (from `pools`, else the pools the ledger already extends) into specs.parquet,
    streaming; returns how many."""
    pools = pools or pools_for_plan(run)[0]
    cfg = run.settings.plan
    targets = genre_weights(run.catalog, cfg)  # already shares that sum to 1
    if specs is None:
        dealt = iter_specs(run.constitution.sections, run.catalog, cfg, run.settings.run.seed, pools)
        specs = islice(dealt, plan_size(run.catalog, cfg, targets))
    n = run.dir.write_specs(specs)
    run.dir.write_plan({"docs": n, "genre_targets": {g: round(w, 6) for g, w in targets.items()},
                        "pool_sizes": pools.sizes(), "pools_extended": len(pools.expanded)})
    return n


def _requests(run: Run, spec: dict) -> list[Any]:
    """The spec's first request and, when configured, its larger truncation retry."""
    llm = run.settings.llm
    section = run.sections[spec["section_id"]]
    first = document_request(run.catalog, spec, section, run.system, llm)
    if llm.truncation_retry_max_tokens <= llm.max_tokens:
        return [first]
    return [first, document_request(run.catalog, spec, section, run.system, llm, llm.truncation_retry_max_tokens)]


def generate_stage(run: Run, backend: Backend, progress: bool = True) -> RunSummary:
    """Settle every brief, then send each spec's prompt; a max_tokens stop is retried once with the larger
    limit, and a brief the writer calls unsuitable is re-dealt and sent again (see products/briefs.py).

    specs.parquet ends holding each spec's settled brief, so extraction renders the very requests sent."""
    with _ledger(run) as ledger:
        pools, summary = expand_stage(run, ledger, backend, progress)
        if summary.stopped:
            return summary
        padded, n = padded_plan(run, pools)
        plan_stage(run, pools, padded[:n])  # the plan as dealt from the extended lists, their sizes in plan.json
        briefs = Briefs(run, ledger, backend, pools, progress)
        specs, waiting = briefs.ideas(padded, n)
        summary.add(briefs.summary)
        todo = list(range(len(specs)))  # first every spec, then only the ones dealt anew
        for _ in range(run.settings.plan.max_redeals + 1):
            todo = [i for i in todo if not specs[i]["unsuitable"] and specs[i]["spec_id"] not in waiting]
            if not todo or summary.stopped:
                break
            summary.add(_send_documents(run, ledger, [specs[i] for i in todo], progress, backend))
            redo = {}
            for i in todo:
                row = _final_row(run, ledger, specs[i])
                if row is not None and (reason := unsuitable_document(row["response_text"])):
                    redo[i] = briefs.redeal(specs[i], reason)
            if not redo:
                break
            specs = [redo.get(i, s) for i, s in enumerate(specs)]
            briefs.summary = RunSummary()
            specs, waiting = briefs.alone(specs, waiting)
            summary.add(briefs.summary)
            todo = sorted(redo)
        run.dir.write_specs(specs)
        return summary


def _send_documents(run: Run, ledger: Ledger, specs: list[dict], progress: bool, backend: Backend) -> RunSummary:
    pairs = [_requests(run, s) for s in specs]
    summary = run.send(ledger, [p[0] for p in pairs], "generate", progress, backend)
    retries = [p[1] for p in pairs if len(p) > 1 and _truncated(ledger, p[0].key)]
    if retries and not summary.stopped:
        summary.add(run.send(ledger, retries, "retry truncated", progress, backend))
    return summary


def _final_row(run: Run, ledger: Ledger, spec: dict) -> Any:
    """The ledger row of a spec's last answered request (its truncation retry when there is one)."""
    rows = [ledger.get(q.key) for q in _requests(run, spec)]
    answered = [r for r in rows if r is not None and r["status"] == "ok"]
    return answered[-1] if answered else None


def _ledger(run: Run) -> closing[Ledger]:
    return closing(run.ledger())


def _truncated(ledger: Ledger, key: str) -> bool:
    row = ledger.get(key)
    return row is not None and row["status"] == "ok" and row["stop_reason"] == "max_tokens"


def extract_document(response_text: str) -> str | None:
    """The text inside the <document> envelope; anything outside it (preambles, sign-offs) is dropped."""
    match = ENVELOPE.search(response_text or "")
    return match.group(1).strip() if match else None


def extract_stage(run: Run) -> dict[str, int]:
    """Turn ledger responses into documents.parquet; every spec becomes a document or a recorded failure.

    Returns {"specs", "documents", "no_answer"}: no_answer counts specs the API never answered
    (api_error, not_generated), which a rerun sends again."""
    with _ledger(run) as ledger:
        def item_from(spec: dict) -> tuple[dict | None, dict]:
            # an answer reused across max_tokens is read from the row that paid for it, so costs are right
            paid = (ledger.paid(q.key) for q in _requests(run, spec))
            return document_from(spec, list({r["key"]: r for r in paid if r is not None}.values()))

        return extract_answers(run.dir, run.dir.documents, DOCUMENT_SCHEMA, item_from)


def document_from(spec: dict, rows: list) -> tuple[dict | None, dict]:
    """The document a spec's ledger rows yield, or the reject row saying why there is none."""
    base = {"doc_id": spec["spec_id"], "genre": spec["genre"], "section_id": spec["section_id"]}
    if spec.get("unsuitable"):
        return None, reject_row(base, "generate", "unsuitable",
                                f"the brief was called unsuitable after {spec['redeals']} re-deal(s): "
                                f"{spec['unsuitable']}")
    answered = [r for r in rows if r["status"] == "ok"]
    if not answered:
        status = rows[0]["status"] if rows else "pending"
        if status == "failed":
            return None, reject_row(base, "generate", "api_error", rows[0]["error"] or "request failed")
        return None, reject_row(base, "generate", "not_generated",
                                f"request {status}: run stopped before it finished")
    final = answered[-1]
    paid = {**base, "cost_usd": sum(r["cost_usd"] or 0.0 for r in answered), "text": final["response_text"]}
    if final["stop_reason"] == "max_tokens":
        return None, reject_row(paid, "generate", "max_tokens", "truncated at max_tokens, also after one retry")
    if (reason := unsuitable_document(final["response_text"])) is not None:
        return None, reject_row(paid, "generate", "unsuitable", f"the writer declined the brief: {reason}")
    text = extract_document(final["response_text"])
    salvaged = False
    if text is None:
        response = final["response_text"] or ""
        if OPENING_TAG.search(response):  # an envelope opened and never closed: the answer was cut short
            return None, reject_row(paid, "generate", "missing_envelope", "a <document> envelope that is never closed")
        if final["stop_reason"] != "end_turn":
            return None, reject_row(paid, "generate", "missing_envelope",
                                    f"no <document> envelope, and the answer stopped with {final['stop_reason']!r}")
        # paid for and finished, only without the envelope: the whole text goes on, and the meta-commentary
        # strip and the filters decide what of it is a document
        text, salvaged = response.strip(), True
    if not text:
        return None, reject_row(paid, "generate", "empty", "the envelope was empty")
    doc = {k: v for k, v in spec.items() if k != "spec_id"}
    doc.update(
        doc_id=spec["spec_id"],
        text=text,
        model=final["model"],
        stop_reason=final["stop_reason"],
        input_tokens=sum(r["input_tokens"] or 0 for r in answered),
        output_tokens=sum(r["output_tokens"] or 0 for r in answered),
        cache_read_tokens=sum(r["cache_read_tokens"] or 0 for r in answered),
        cache_creation_tokens=sum(r["cache_creation_tokens"] or 0 for r in answered),
        cost_usd=paid["cost_usd"],
        request_key=final["key"],
        envelope_missing=salvaged,
    )
    return doc, {}


def paid_specs(run: Run, specs: list[dict]) -> tuple[list[dict], float]:
    """The specs whose document request the run's ledger already answered (or can answer from an answer
    under another max_tokens), and what the ledger has spent in all; nothing is sent or written.

    The specs are first given the ideas and re-deals the ledger holds, as a build would settle them."""
    if not run.dir.store.exists():
        return [], 0.0
    with _ledger(run) as ledger:
        paid = []
        for spec in settled_from_ledger(run, ledger, specs):
            first = _requests(run, spec)[0]
            row = ledger.get(first.key)
            if (row is not None and row["status"] == "ok") or ledger.reusable(first) is not None:
                paid.append(spec)
        return paid, ledger.spent()


def usage_estimate(run: Run, specs: list[dict], expansions: list[tuple[str, str]] | None = None) -> dict:
    """What `specs` cost to generate; `expansions` (default: those the ledger lacks) are counted too."""
    s = run.settings
    missing = pools_for_plan(run)[1] if expansions is None else expansions
    return estimate_usage(run.catalog, run.sections, specs, run.system, s.llm, s.plan, s.judge, s.price(s.llm.model),
                          missing)


# -- filter ----------------------------------------------------------------------------------------


def filter_stage(run: Run, backend: Backend | None = None, progress: bool = True) -> dict[str, Any]:
    """Heuristic quality filters, then the optional LLM judge; writes filtered.parquet."""
    from sdf.steps.filters.quality import QualityFilter

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.documents, "generate")
    quality = QualityFilter(run.catalog.genres, cfg.quality)
    if not cfg.judge.enabled:
        counts = run_steps(rd, source, rd.filtered, FILTERED_SCHEMA, [quality]).as_dict()
        rd.clear_rejects("judge")  # a judge of an earlier run no longer applies
        rd.update_metrics(stages=counts, cleared=["judge"])
        q = counts.get("quality", {"input": 0, "kept": 0})
        return {"input": q["input"], "after_quality": q["kept"], "kept": q["kept"]}
    if backend is None:
        raise SdfError("the judge is enabled but no model backend was given")
    # the judge reads every quality-passed document twice (send, then score), so they are kept apart
    scratch = rd.path / "judge_input.parquet"
    counts = run_steps(rd, source, scratch, FILTERED_SCHEMA, [quality]).as_dict()
    summary = send_judge(run, scratch, lambda doc: judge_request_of(run, doc), backend, progress)
    judged = filter_judged(run, scratch, FILTERED_SCHEMA, lambda doc: judge_request_of(run, doc))
    scratch.unlink()
    rd.update_metrics(stages={**counts, **judged})
    q, j = counts.get("quality", {"input": 0, "kept": 0}), judged.get("judge", {"kept": 0})
    return {"input": q["input"], "after_quality": q["kept"], "after_judge": j["kept"], "kept": j["kept"],
            "judge_cost_usd": round(summary.cost_usd, 6), "stopped": summary.stopped}


def judge_request_of(run: Run, doc: dict) -> Any:
    return judge_request(run.catalog, doc, run.sections[doc["section_id"]], run.system, run.settings.judge,
                         run.settings.llm)


# -- dedup -----------------------------------------------------------------------------------------


def _dedup_features(state: tuple, batch: list[dict]) -> tuple:
    """Pass 1 of dedup for one batch (in a worker process): decontamination, then the kept documents'
    signatures, exact keys and cap rows."""
    from sdf.executors.local import run_batch
    from sdf.steps.dedup.minhash import minhash_signatures
    from sdf.steps.diversity.caps import cap_features

    steps, dedup_cfg, genres, diversity_cfg = state
    outcome = run_batch(steps, batch)
    kept = outcome.kept
    return (outcome._replace(kept=[d["doc_id"] for d in kept]),
            *minhash_signatures([d["text"] for d in kept], dedup_cfg), cap_features(kept, genres, diversity_cfg))


def dedup_stage(run: Run) -> dict:
    """Decontaminate, drop exact and near duplicates, apply diversity caps; writes corpus.parquet.

    Pass 1 streams filtered.parquet through decontamination and builds the per-document table without
    texts (a `CapRow`, a MinHash signature and an exact key per document: about 1 KB); the duplicate
    and cap decisions are made on that table, which is then freed; pass 2 streams the kept documents
    into corpus.parquet, each drop into its rejects, and the final corpus into the metrics' tally.
    """
    from sdf.steps.decontam.index import build_index
    from sdf.steps.decontam.step import Decontaminate
    from sdf.steps.dedup.clusters import find_duplicates
    from sdf.steps.dedup.minhash import SignatureTable
    from sdf.steps.diversity.caps import CapRow, apply_edit, reinterned
    from sdf.steps.diversity.names import preload_ner
    from sdf.workers import ordered_map

    rd, cfg = run.dir, run.settings
    source = rd.require(rd.filtered, "filter")
    index = build_index(cfg.dedup, run.catalog.root, cfg.diversity.spacy_model, cfg.diversity.ner_fallback,
                        [n for n, _ in (*run.catalog.given_names, *run.catalog.surnames)])
    steps = [Decontaminate(index)] if index is not None else []
    counts = StageCounts()
    table: list[CapRow] = []  # per document: no text
    signatures = SignatureTable(count_rows(source), cfg.dedup)
    removed: set[str] = set()  # decontaminated in pass 1 (and recorded there)
    with Rejects(rd, ["decontaminate", "dedup", "diversity"]) as rejects:
        batches = iter_rows(source, batch_size=BATCH_ROWS)
        state = (steps, cfg.dedup, run.catalog.genres, cfg.diversity)
        # spaCy loads on a thread meanwhile, for the names above the cap
        for outcome, sig, keys, rows in ordered_map(_dedup_features, batches, state,
                                                    started=lambda: preload_ner(cfg.diversity)):
            record(outcome, rejects, counts)
            removed.update(r["doc_id"] for _, _, _, dropped in outcome.steps for r in dropped)
            signatures.put(sig, keys)
            table += (reinterned(r) for r in rows)
        scanned = len(table)
        duplicates = find_duplicates(
            [r.doc_id for r in table], signatures.keys, signatures.signatures,
            np.fromiter((r.quality_score for r in table), dtype=np.float64, count=len(table)), cfg.dedup)
        del signatures
        drop, edits, caps_metrics, tally = decide(run, table, [("", duplicates)], counts, scanned,
                                                  lambda wanted: texts_of(source, wanted),
                                                  name_pools(run.catalog, cfg.run.seed))
        del table

        with TableWriter(rd.corpus, CORPUS_SCHEMA) as out:
            for batch in iter_rows(source, batch_size=BATCH_ROWS):
                kept = []
                for doc in batch:
                    if doc["doc_id"] in drop:
                        stage, reason, detail, keeper = drop[doc["doc_id"]]
                        rejects.write(stage, [reject_row(doc, stage, reason, detail, duplicate_of=keeper)])
                    elif doc["doc_id"] not in removed:
                        doc = apply_edit(doc, edits.get(doc["doc_id"]))
                        kept.append(doc)
                        tally.add(doc)
                out.write(kept)
    return finish_dedup(run, counts, tally, [duplicates], index, caps_metrics,
                        genre_weights(run.catalog, cfg.plan))


# -- pack, report, checks ----------------------------------------------------------------------------


def pack_stage(run: Run, progress: bool = True) -> dict:
    from sdf.steps.tokens.pack import pack_corpus

    metrics = run.dir.read_metrics()
    extra = {"diversity": metrics["diversity"], "dedup": metrics["dedup"]}
    return pack_corpus(run.dir.require(run.dir.corpus, "dedup"), run.dir.shards, run.settings.pack,
                       run.settings.run.seed, run.settings.config_hash(), extra=extra, progress=progress)


def report_stage(run: Run) -> Path:
    from sdf.report import write_report

    return write_report(run.dir.path)


def check_inputs(settings: Settings) -> None:
    """Fail on a bad tokenizer, mix file or eval file before any money is spent."""
    from sdf.steps.decontam.evals import load_builtin, load_evals
    from sdf.steps.tokens.mix import mix_sources
    from sdf.steps.tokens.tokenizer import load_tokenizer

    load_tokenizer(settings.pack.tokenizer, settings.pack.eos_id, settings.pack.bos_id)
    mix_sources(settings.pack.mix_ratios())
    if settings.dedup.decontaminate:
        load_evals(settings.dedup.decontaminate)
    if settings.dedup.decontaminate_builtin:
        load_builtin(settings.run.prompts or None)


PRODUCT = Product(
    name="documents", item="documents", final="corpus", usage_estimate=usage_estimate,
    stages=(
        Stage("plan", plan_stage, "seeded specs: a section, a genre and a brief per document"),
        Stage("generate", generate_stage, "pools, ideas and documents through the engine"),
        Stage("extract", extract_stage, "ledger answers -> documents.parquet"),
        Stage("filter", filter_stage, "quality heuristics", reads=("documents", "sections"),
              writes=("filtered",), drops=("quality", "judge")),
        Stage("judge", None, "the LLM judge, inside filter when [judge] is enabled"),
        Stage("decontaminate", None, "inside dedup"),
        Stage("dedup", dedup_stage, "exact and near duplicates -> corpus.parquet", reads=("filtered",),
              writes=("corpus",), drops=("decontaminate", "dedup", "diversity")),
        Stage("diversity", None, "name and opener caps, inside dedup"),
        Stage("pack", pack_stage, "token shards and shards/manifest.json", reads=("corpus",), writes=("shards",)),
        Stage("report", report_stage, "report.html and stats.json"),
    ),
    executors={"ray": "sdf.executors.ray"},
)
