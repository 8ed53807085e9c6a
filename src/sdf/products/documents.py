"""The stages of a build, each a function over the run directory's artifacts.

parse -> plan -> (brainstorm) -> generate -> extract -> filter -> dedup -> pack -> report.
Every stage reads what the stage before it wrote and rewrites only its own artifacts, so any
stage can be rerun alone, and a rerun of `sdf build` skips what the ledger already holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sdf.config import Settings, load_settings
from sdf.errors import SdfError
from sdf.llm import Backend
from sdf.llm.engine import RunSummary, run_requests
from sdf.llm.ledger import Ledger, LLMRequest, open_ledger
from sdf.run import CORPUS_SCHEMA, DOCUMENT_SCHEMA, FILTERED_SCHEMA, RunDir, read_rows, write_json, write_rows
from sdf.source.catalog import Catalog, document_prompt, load_catalog, system_prompt
from sdf.source.constitution import Constitution, Section, load_constitution, write_sections
from sdf.source.plan import genre_weights, plan_specs, read_specs, select_sections, write_specs

ENVELOPE = re.compile(r"<document>\s*(.*?)\s*</document>", re.DOTALL | re.IGNORECASE)
IDEA = re.compile(r"<idea>\s*(.*?)\s*</idea>", re.DOTALL | re.IGNORECASE)


@dataclass
class Run:
    dir: RunDir
    settings: Settings
    constitution: Constitution
    catalog: Catalog

    @property
    def system(self) -> str:
        return system_prompt(self.catalog, self.constitution.text)

    def ledger(self) -> Ledger:
        return open_ledger(self.dir.path)


def run_path(settings: Settings, constitution_path: Path) -> Path:
    return Path(settings.run.out) / (settings.run.name or constitution_path.stem)


def create_run(settings: Settings, constitution_path: Path, run_dir: Path | None = None) -> Run:
    """Parse the constitution and write config.toml and sections.jsonl (validation first, then I/O)."""
    parsed = load_constitution(constitution_path, settings.run.variables)
    constitution = select_sections(parsed, settings.plan).constitution  # exclusions, {.skip}, merged stubs
    catalog = load_catalog(Path(settings.run.prompts) if settings.run.prompts else None)
    genre_weights(catalog, settings.plan)  # an unknown genre fails here, before anything is written
    settings = replace(settings, run=replace(settings.run, constitution=str(constitution_path)))
    rd = RunDir(run_dir or run_path(settings, constitution_path))
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.config.write_text(settings.to_toml(), encoding="utf-8")
    write_sections(constitution, rd.sections)
    return Run(rd, settings, constitution, catalog)


def open_run(path: Path, overrides: dict | None = None) -> Run:
    """Reopen an existing run from its config.toml and sections.jsonl."""
    rd = RunDir(path)
    if not rd.config.is_file():
        raise SdfError(f"{path} is not a run directory (no config.toml); create one with `sdf build` or `sdf plan`")
    settings = load_settings(rd.config, overrides)
    sections = tuple(
        Section(**{**row, "path": tuple(row["path"])})
        for row in map(json.loads, rd.require(rd.sections, "plan").read_text(encoding="utf-8").splitlines())
    )
    catalog = load_catalog(Path(settings.run.prompts) if settings.run.prompts else None)
    return Run(rd, settings, Constitution("", sections), catalog)


# -- plan ---------------------------------------------------------------------------------------


def plan_stage(run: Run) -> list[dict]:
    specs = plan_specs(run.constitution.sections, run.catalog, run.settings.plan, run.settings.run.seed)
    write_specs(specs, run.dir.specs)
    return specs


def document_request(run: Run, spec: dict, system: str, max_tokens: int | None = None) -> LLMRequest:
    section = run.constitution.section(spec["section_id"])
    llm = run.settings.llm
    return LLMRequest(
        purpose="generate",
        spec_id=spec["spec_id"],
        model=llm.model,
        system=system,
        prompt=document_prompt(run.catalog, spec, section.text, " > ".join(section.path)),
        max_tokens=max_tokens or llm.max_tokens,
        temperature=llm.temperature,
    )


# -- brainstorm ---------------------------------------------------------------------------------


def brainstorm_stage(run: Run, backend: Backend, progress: bool = True) -> RunSummary:
    """Ask for concrete document ideas per (section, genre), in rounds that each avoid earlier ideas.

    Ideas are cached in the ledger like any response, so a rerun rebuilds the same list for free,
    then they are dealt to that pair's specs in order.
    """
    specs = read_specs(run.dir.specs)
    cfg, llm = run.settings.plan, run.settings.llm
    pairs = sorted({(s["section_id"], s["genre"]) for s in specs})
    ideas: dict[tuple[str, str], list[str]] = {p: [] for p in pairs}
    system = run.system
    ledger = run.ledger()
    total = RunSummary()
    try:
        for _ in range(cfg.brainstorm_rounds):
            requests = {p: brainstorm_request(run, p, ideas[p], system) for p in pairs}
            summary = run_requests(list(requests.values()), ledger, backend, llm, run.settings.budget.max_cost_usd,
                                   run.settings.price, desc="brainstorm", progress=progress)
            _add_summary(total, summary)
            for pair, request in requests.items():
                row = ledger.get(request.key)
                if row is not None and row["status"] == "ok":
                    ideas[pair] += _new_ideas(row["response_text"], ideas[pair])
            if summary.stopped:
                break
    finally:
        ledger.close()
    dealt: dict[tuple[str, str], int] = {}
    for spec in specs:
        pair = (spec["section_id"], spec["genre"])
        if ideas[pair]:
            spec["idea"] = ideas[pair][dealt.get(pair, 0) % len(ideas[pair])]
            dealt[pair] = dealt.get(pair, 0) + 1
    write_specs(specs, run.dir.specs)
    return total


def brainstorm_request(run: Run, pair: tuple[str, str], existing: list[str], system: str) -> LLMRequest:
    section = run.constitution.section(pair[0])
    genre = run.catalog.genre(pair[1])
    prompt = run.catalog.render(
        "brainstorm",
        section_title=section.title,
        section_path=" > ".join(section.path),
        section_text=section.text,
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        n=run.settings.plan.ideas_per_round,
        existing="\n".join(f"- {i}" for i in existing) or "(none yet)",
    )
    llm = run.settings.llm
    return LLMRequest("brainstorm", None, llm.model, system, prompt, 2048, llm.temperature)


def _new_ideas(text: str, existing: Sequence[str]) -> list[str]:
    seen = {_norm(i) for i in existing}
    fresh = []
    for idea in IDEA.findall(text or ""):
        idea = " ".join(idea.split())
        if idea and _norm(idea) not in seen:
            seen.add(_norm(idea))
            fresh.append(idea)
    return fresh


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# -- generate -----------------------------------------------------------------------------------


def generate_stage(run: Run, backend: Backend, progress: bool = True) -> RunSummary:
    """Send every spec's prompt; a max_tokens stop is retried once with the larger limit."""
    specs = read_specs(run.dir.specs)
    system = run.system
    llm = run.settings.llm
    ledger = run.ledger()
    try:
        first = [document_request(run, s, system) for s in specs]
        summary = run_requests(first, ledger, backend, llm, run.settings.budget.max_cost_usd, run.settings.price,
                               desc="generate", progress=progress)
        if llm.truncation_retry_max_tokens > llm.max_tokens and not summary.stopped:
            retries = [
                document_request(run, s, system, llm.truncation_retry_max_tokens)
                for s, r in zip(specs, first, strict=True)
                if _truncated(ledger, r.key)
            ]
            if retries:
                again = run_requests(retries, ledger, backend, llm, run.settings.budget.max_cost_usd,
                                     run.settings.price, desc="retry truncated", progress=progress)
                _add_summary(summary, again)
        return summary
    finally:
        ledger.close()


def _truncated(ledger: Ledger, key: str) -> bool:
    row = ledger.get(key)
    return row is not None and row["status"] == "ok" and row["stop_reason"] == "max_tokens"


def _add_summary(total: RunSummary, part: RunSummary) -> None:
    total.requested += part.requested
    total.already_done += part.already_done
    total.succeeded += part.succeeded
    total.failed += part.failed
    total.cost_usd += part.cost_usd
    total.stopped = total.stopped or part.stopped
    for k, v in part.failures.items():
        total.failures[k] = total.failures.get(k, 0) + v


def extract_document(response_text: str) -> str | None:
    """The text inside the <document> envelope; anything outside it (preambles, sign-offs) is dropped."""
    match = ENVELOPE.search(response_text or "")
    return match.group(1).strip() if match else None


def extract_stage(run: Run) -> tuple[int, int]:
    """Turn ledger responses into documents.parquet; every spec becomes a document or a recorded failure."""
    specs = read_specs(run.dir.specs)
    system = run.system
    llm = run.settings.llm
    ledger = run.ledger()
    documents, rejected = [], []
    try:
        for spec in specs:
            rows = [ledger.get(document_request(run, spec, system).key)]
            if llm.truncation_retry_max_tokens > llm.max_tokens:
                rows.append(ledger.get(document_request(run, spec, system, llm.truncation_retry_max_tokens).key))
            doc, failure = _document_from(spec, [r for r in rows if r is not None])
            if doc is not None:
                documents.append(doc)
            else:
                rejected.append(failure)
    finally:
        ledger.close()
    write_rows(run.dir.documents, documents, DOCUMENT_SCHEMA)
    run.dir.replace_rejected(["generate"], rejected)
    return len(documents), len(rejected)


def _document_from(spec: dict, rows: list) -> tuple[dict | None, dict]:
    base = {"doc_id": spec["spec_id"], "stage": "generate", "genre": spec["genre"], "section_id": spec["section_id"]}
    answered = [r for r in rows if r["status"] == "ok"]
    if not answered:
        status = rows[0]["status"] if rows else "pending"
        error = rows[0]["error"] if rows else None
        if status == "failed":
            return None, {**base, "reason": "api_error", "detail": error or "request failed"}
        return None, {**base, "reason": "not_generated", "detail": f"request {status}: run stopped before it finished"}
    final = answered[-1]
    cost = sum(r["cost_usd"] or 0.0 for r in answered)
    if final["stop_reason"] == "max_tokens":
        return None, {**base, "reason": "max_tokens", "detail": "truncated at max_tokens, also after one retry",
                      "text": final["response_text"]}
    text = extract_document(final["response_text"])
    if text is None:
        return None, {**base, "reason": "missing_envelope", "detail": "no <document> envelope in the response",
                      "text": final["response_text"]}
    if not text:
        return None, {**base, "reason": "empty", "detail": "the envelope was empty"}
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
        cost_usd=cost,
        request_key=final["key"],
    )
    return doc, {}


def read_documents(run: Run) -> list[dict]:
    return read_rows(run.dir.require(run.dir.documents, "generate"))


# -- estimates ----------------------------------------------------------------------------------


def estimate_usage(run: Run, specs: Sequence[dict]) -> dict:
    """Tokens and cost of generating `specs`, from the rendered prompts; no API is called.

    The first request writes the prompt cache and the rest read it (generate.py sends one request
    alone before opening concurrency for exactly this reason). Output is the target length.
    Brainstorm and judge requests, when enabled, are estimated under "brainstorm" and "judge".
    """
    from sdf.source.constitution import estimate_tokens
    from sdf.source.plan import TOKENS_PER_WORD

    system = run.system
    prompts = [estimate_tokens(document_request(run, s, system).prompt) for s in specs]
    outputs = [round(s["target_words"] * TOKENS_PER_WORD) + ENVELOPE_TOKENS for s in specs]
    usage = _usage(run, estimate_tokens(system), prompts, outputs)
    if run.settings.plan.brainstorm:
        cfg = run.settings.plan
        pairs = sorted({(s["section_id"], s["genre"]) for s in specs})
        idea_tokens = IDEA_TOKENS * cfg.ideas_per_round
        brainstorm = [estimate_tokens(brainstorm_request(run, p, [], system).prompt) + idea_tokens * r
                      for p in pairs for r in range(cfg.brainstorm_rounds)]
        usage["brainstorm"] = _usage(run, estimate_tokens(system), brainstorm, [idea_tokens] * len(brainstorm))
    if run.settings.judge.enabled:
        empty = {"doc_id": "", "text": ""}
        judge = [estimate_tokens(judge_request(run, {**s, **empty}, system).prompt) + out
                 for s, out in zip(specs, outputs, strict=True)]
        usage["judge"] = _usage(run, estimate_tokens(system), judge, [JUDGE_TOKENS] * len(judge))
    return usage


def _usage(run: Run, system_tokens: int, prompts: Sequence[int], outputs: Sequence[int]) -> dict:
    n = len(prompts)
    usage = {
        "requests": n,
        "input_tokens": sum(prompts),
        "cache_creation_tokens": system_tokens if n else 0,
        "cache_read_tokens": system_tokens * max(0, n - 1),
        "output_tokens": sum(outputs),
    }
    price = run.settings.price(run.settings.llm.model)
    for key, batch in (("cost_usd", False), ("batch_cost_usd", True)):
        usage[key] = (
            price.cost(usage["input_tokens"], usage["output_tokens"], usage["cache_creation_tokens"],
                       usage["cache_read_tokens"], batch)
            if price else None
        )
    return usage


IDEA_TOKENS = 60  # one brainstormed idea, a sentence or two
JUDGE_TOKENS = 350  # five short justifications and the score
ENVELOPE_TOKENS = 8  # the <document></document> tags around each answer


# -- judge --------------------------------------------------------------------------------------

SCORE = re.compile(r"<score>\s*([0-5](?:\.\d+)?)\s*</score>", re.IGNORECASE)


def judge_request(run: Run, doc: dict, system: str) -> LLMRequest:
    section = run.constitution.section(doc["section_id"])
    genre = run.catalog.genre(doc["genre"])
    prompt = run.catalog.render(
        "judge",
        section_title=section.title,
        section_text=section.text,
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        fiction="yes" if genre.fiction else "no",
        document=doc["text"],
    )
    cfg = run.settings.judge
    return LLMRequest("judge", doc["doc_id"], cfg.model or run.settings.llm.model, system, prompt, cfg.max_tokens,
                      run.settings.llm.temperature)


def parse_score(text: str | None) -> float | None:
    """The last <score>N</score> in a judge's answer (0-5), or None when it gave none."""
    found = SCORE.findall(text or "")
    return float(found[-1]) if found else None


def judge_documents(run: Run, docs: list[dict], backend: Backend, progress: bool = True
                    ) -> tuple[list[dict], list[dict], RunSummary]:
    """Score documents 0-5 against their section; below `min_score` they are rejected (judge_low)."""
    system = run.system
    requests = [judge_request(run, d, system) for d in docs]
    ledger = run.ledger()
    try:
        summary = run_requests(requests, ledger, backend, run.settings.llm, run.settings.budget.max_cost_usd,
                               run.settings.price, desc="judge", progress=progress)
        kept, rejected = [], []
        for doc, request in zip(docs, requests, strict=True):
            row = ledger.get(request.key)
            score = parse_score(row["response_text"]) if row is not None and row["status"] == "ok" else None
            base = {"doc_id": doc["doc_id"], "stage": "judge", "genre": doc["genre"],
                    "section_id": doc["section_id"], "text": doc["text"]}
            if score is None:
                status = row["status"] if row is not None else "pending"
                rejected.append({**base, "reason": "judge_missing", "detail": f"no score (request {status})"})
            elif score < run.settings.judge.min_score:
                detail = f"score {score:g} < {run.settings.judge.min_score}"
                rejected.append({**base, "reason": "judge_low", "detail": detail})
            else:
                kept.append({**doc, "judge_score": score})
        return kept, rejected, summary
    finally:
        ledger.close()


# -- filter, dedup, pack, report ---------------------------------------------------------------


def filter_stage(run: Run, backend: Backend | None = None, progress: bool = True) -> dict[str, int]:
    """Heuristic quality filters, then the optional LLM judge; writes filtered.parquet."""
    from sdf.steps.filters.quality import filter_documents, slop_hits

    docs = read_documents(run)
    result = filter_documents(docs, run.catalog.genres, run.settings.quality)
    kept = []
    for doc in result.kept:
        words = max(1, len(doc["text"].split()))
        slop_per_1k = sum(slop_hits(doc["text"], run.settings.quality).values()) * 1000 / words
        # Without a judge, fewer slop phrases per 1,000 words is the tie-breaker dedup keeps by.
        score = max(0.0, 1.0 - slop_per_1k / run.settings.quality.slop_max_per_1k)
        kept.append({**doc, "quality_score": round(score, 4), "judge_score": None})
    rejected = list(result.rejected)
    counts = {"input": len(docs), "after_quality": len(kept)}
    if run.settings.judge.enabled:
        if backend is None:
            raise SdfError("the judge is enabled but no model backend was given")
        kept, judged_out, summary = judge_documents(run, kept, backend, progress)
        for doc in kept:
            doc["quality_score"] = doc["judge_score"]
        rejected += judged_out
        counts["after_judge"] = len(kept)
        counts["judge_cost_usd"] = round(summary.cost_usd, 6)  # type: ignore[assignment]
    write_rows(run.dir.filtered, kept, FILTERED_SCHEMA)
    run.dir.replace_rejected(["quality", "judge"], rejected)
    counts["kept"] = len(kept)
    return counts


def dedup_stage(run: Run) -> dict:
    """Decontaminate, drop exact and near duplicates, apply diversity caps; writes corpus.parquet."""
    from sdf.source.plan import genre_weights
    from sdf.steps.decontam.ngrams import decontaminate, load_eval_texts
    from sdf.steps.dedup.minhash import deduplicate
    from sdf.steps.diversity.caps import apply_caps, diversity_metrics

    cfg = run.settings
    docs = read_rows(run.dir.require(run.dir.filtered, "filter"))
    rejected: list[dict] = []
    counts: dict = {"input": len(docs)}
    if cfg.dedup.decontaminate:
        clean = decontaminate(docs, load_eval_texts(cfg.dedup.decontaminate), cfg.dedup.decontaminate_ngram)
        docs, rejected = clean.kept, rejected + clean.rejected
        counts["contaminated"] = clean.counts.get("contaminated", 0)
    unique = deduplicate(docs, cfg.dedup)
    rejected += unique.rejected
    counts["exact_duplicate"] = unique.counts.get("exact_duplicate", 0)
    counts["near_duplicate"] = unique.counts.get("near_duplicate", 0)
    varied = apply_caps(unique.kept, run.catalog.genres, cfg.diversity)
    rejected += varied.rejected
    counts["name_cap"] = varied.counts.get("name_cap", 0)
    counts["opener_cap"] = varied.counts.get("opener_cap", 0)
    corpus = sorted(varied.kept, key=lambda d: d["doc_id"])
    counts["corpus"] = len(corpus)
    metrics = {
        "diversity": diversity_metrics(corpus, genre_weights(run.catalog, cfg.plan), varied.names, cfg.diversity),
        "dedup": {"cluster_sizes": unique.cluster_sizes, "counts": unique.counts},
        "caps": varied.caps,
        "counts": counts,
    }
    write_rows(run.dir.corpus, corpus, CORPUS_SCHEMA)
    run.dir.replace_rejected(["decontaminate", "dedup", "diversity"], rejected)
    write_json(run.dir.metrics, metrics)
    return metrics


def pack_stage(run: Run, progress: bool = True) -> dict:
    from sdf.steps.tokens.pack import pack_corpus

    metrics = json.loads(run.dir.metrics.read_text(encoding="utf-8")) if run.dir.metrics.exists() else {}
    extra = {k: metrics[k] for k in ("diversity", "dedup") if k in metrics}
    return pack_corpus(run.dir.require(run.dir.corpus, "dedup"), run.dir.shards, run.settings.pack,
                       run.settings.run.seed, run.settings.config_hash(), extra=extra, progress=progress)


def report_stage(run: Run) -> Path:
    from sdf.report import write_report

    return write_report(run.dir.path)


def check_inputs(settings: Settings) -> None:
    """Fail on a bad tokenizer, mix file or eval file before any money is spent."""
    from sdf.steps.decontam.ngrams import load_eval_texts
    from sdf.steps.tokens.pack import mix_sources
    from sdf.steps.tokens.tokenizer import load_tokenizer

    load_tokenizer(settings.pack.tokenizer, settings.pack.eos_id, settings.pack.bos_id)
    mix_sources(settings.pack.mix_ratios())
    if settings.dedup.decontaminate:
        load_eval_texts(settings.dedup.decontaminate)
