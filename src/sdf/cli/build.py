"""The commands that make a run: plan, build, generate, filter, dedup and pack."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sdf.cli.common import (
    check_prices,
    cli,
    friendly,
    overrides_from,
    reset_ledger_if_asked,
    resolve_config,
    settings_options,
    with_section_flags,
)
from sdf.cli.plan_view import echo_plan
from sdf.config import PRODUCTS
from sdf.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, SdfError


def _set_workers(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        from sdf.workers import configure

        configure(value)


workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None, expose_value=False, callback=_set_workers,
    help="Worker processes for the per-record steps (default: the CPU count); the output is the same for any number.")


@cli.command()
@settings_options
@friendly
def plan(constitution: Path, config_path: Path | None, **options: Any) -> None:
    """Parse the constitution and plan document specs; prints counts and the estimated cost.

    Calls no API. Writes config.toml, sections.jsonl and specs.parquet into the run directory.
    """
    from sdf.config import load_settings
    from sdf.products.context import create_run
    from sdf.products.documents import plan_stage

    settings = with_section_flags(load_settings(resolve_config(config_path), overrides_from(**options)), options)
    run = create_run(settings, constitution)
    plan_stage(run)
    echo_plan(run)
    click.echo(f"\nwrote {run.dir.specs}")


def echo_generation(summary: Any, ledger_totals: dict) -> None:
    click.echo(
        f"requests: {summary.requested} planned, {summary.already_done} already in the ledger, "
        f"{summary.succeeded} answered now, {summary.failed} failed"
    )
    for kind, n in sorted(summary.failures.items()):
        click.echo(f"  failed: {n} x {kind}")
    if summary.adopted_batches:
        click.echo(f"  adopted {summary.adopted_batches} batch(es) an earlier create did not get to record")
    if summary.unknown_results:
        click.echo(f"  ignored {summary.unknown_results} batch result(s) with a custom_id this run never sent")
    click.echo(
        f"cost: ${summary.cost_usd:.4f} this run, ${ledger_totals['cost_usd']:.4f} in total; "
        f"cached share of input tokens {ledger_totals['cache_read_share']:.1%}"
    )


def generation_verdict(summary: Any, extracted: dict) -> tuple[int, str | None]:
    """The exit code of a generation and, unless it is 0, the one line on stderr that explains it."""
    missing = extracted["no_answer"]
    if summary.fatal:
        return EXIT_BAD_INPUT, (f"the API refused the run ({summary.fatal}); check ANTHROPIC_API_KEY, its "
                                "permissions and [llm].model: rerunning will not help until that is fixed")
    if summary.interrupted:
        return EXIT_INTERRUPTED, (f"interrupted: every answer received is recorded ({summary.succeeded} this run); "
                                  f"{missing} spec(s) still have no answer; rerun the same command to resume")
    if not (summary.stopped or missing):
        return EXIT_OK, None
    failures = ", ".join(f"{n} x {k}" for k, n in sorted(summary.failures.items(), key=lambda kv: -kv[1]))
    why = "; ".join(p for p in (summary.stopped, failures) if p) or "the run stopped before every request was sent"
    if summary.failed and not summary.succeeded and not extracted["documents"]:
        why = f"every request failed: {why}"
    return EXIT_INCOMPLETE, (f"stopped early: {missing} of {extracted['specs']} specs have no answer yet ({why}); "
                             "rerun the same command to resume")


def run_generation(run: Any, backend: Any, progress: bool) -> Any:
    from sdf.products.documents import generate_stage

    return generate_stage(run, backend, progress=progress)


def check_executor(settings: Any) -> None:
    from sdf.products import check_executor as check
    from sdf.products import product

    check(product(settings.run.product), settings.executor.kind)


def require_documents(run: Any, what: str) -> None:
    if run.settings.run.product != "documents":
        raise SdfError(f"{what} works on documents runs; {run.dir.path} is a {run.settings.run.product} run")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--batch/--no-batch", default=None, help="Use the Message Batches API (half price, slower).")
@click.option("--max-cost", type=float, default=None, help="Stop sending once this many USD are spent.")
@click.option("--concurrency", type=int, default=None, help="Concurrent requests in messages mode.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run filter, dedup and pack in this process (local) or on Ray Data ([executor] address).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--reset-ledger", is_flag=True, help="Set a damaged store.sqlite aside and start a new ledger.")
@click.option("--shard", default=None, metavar="I/N",
              help="Send only part I of N of the plan, into RUN_DIR/parts/I-of-N (its own ledger); see `sdf merge`.")
@friendly
def generate(run_dir: Path, progress: bool, reset_ledger: bool, shard: str | None, **options: Any) -> None:
    """Send the planned prompts of RUN_DIR (resumable), then extract documents.parquet."""
    from sdf.llm import make_backend
    from sdf.products import product_of
    from sdf.products.context import open_run
    from sdf.products.parts import generate_part, open_part, parse_shard

    part = parse_shard(shard) if shard is not None else None
    run = open_run(run_dir, overrides_from(**options), write=part is None)  # parts lock only their own directory
    prod = product_of(run)
    if part is not None:
        require_documents(run, "--shard")
    check_prices(run.settings)
    backend = make_backend(run.settings.llm)
    if part is not None:
        run = open_part(run, *part, overrides_from(**options))
    reset_ledger_if_asked(run, reset_ledger)
    if part is not None:
        summary = generate_part(run, backend, *part, progress=progress)
    else:
        summary = prod.stage("generate")(run, backend, progress)
    extracted = prod.stage("extract")(run)
    echo_extraction(run, summary, extracted)
    code, line = generation_verdict(summary, extracted)
    if line:
        click.echo(f"error: {line}" if code == EXIT_BAD_INPUT else line, err=True)
    sys.exit(code)


@cli.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", "into", required=True, type=click.Path(path_type=Path),
              help="The run the parts were made from (`sdf generate RUN --shard I/N`).")
@friendly
def merge(parts: tuple[Path, ...], into: Path) -> None:
    """Merge the ledgers and documents of parts of one run into it; sends no request."""
    from sdf.products.context import open_run
    from sdf.products.parts import merge_parts

    run = open_run(into, write=True)
    require_documents(run, "sdf merge")
    m = merge_parts(run, list(parts))
    planned = run.dir.read_plan().get("docs", m["specs"])
    click.echo(f"merge: {m['parts']} part(s), {m['rows']} ledger rows copied, {m['conflicts']} conflicting answers "
               f"(the first kept); {m['specs']} of {planned} planned specs "
               f"-> {m['documents']} documents ({m['no_answer']} with no answer) -> {run.dir.documents}")
    if m["specs"] < planned:
        click.echo(f"{planned - m['specs']} planned specs are in no part: `sdf generate {into}` sends only those")


def echo_extraction(run: Any, summary: Any, extracted: dict) -> None:
    from sdf.products import product_of

    item = product_of(run).item
    ledger = run.ledger()
    echo_generation(summary, ledger.totals())
    ledger.close()
    failed = extracted["specs"] - extracted["documents"]
    click.echo(f"{item}: {extracted['documents']} extracted, {failed} specs recorded as failures "
               f"({extracted['no_answer']} with no answer) -> {getattr(run.dir, item)}")


@cli.command()
@settings_options
@click.option("--tokenizer", default=None, help="tokenizer.json path or directory, HF hub id, or tiktoken name.")
@click.option("--seq-len", type=int, default=None, help="Sequence length of packed shards.")
@click.option("--format", "formats", multiple=True, help="Shard format: npy, megatron, nanotron, hf (repeatable).")
@click.option("--mix", "mixes", multiple=True, help="PATH:RATIO replay text to interleave (repeatable).")
@click.option("--decontaminate", "decontaminate", multiple=True, type=click.Path(path_type=Path),
              help="Eval prompts (a jsonl, txt or md file, or a directory of them): documents sharing a 13-gram, "
                   "their distinctive entities or a MinHash-similar text are dropped (repeatable).")
@click.option("--builtin-evals/--no-builtin-evals", "builtin_evals", default=None,
              help="Drop documents using the entities of public evaluations listed in prompts/evals/ (default on).")
@click.option("--batch/--no-batch", default=None, help="Use the Message Batches API (half price, slower).")
@click.option("--max-cost", type=float, default=None, help="Stop sending once this many USD are spent.")
@click.option("--concurrency", type=int, default=None, help="Concurrent requests in messages mode.")
@click.option("--dry-run", is_flag=True, help="Parse and plan, print the plan and cost, call no API.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@click.option("--reset-ledger", is_flag=True, help="Set a damaged store.sqlite aside and start a new ledger.")
@workers_option
@click.option("--product", type=click.Choice(PRODUCTS), default=None,
              help="documents (default): a midtraining corpus; advice: difficult-advice transcripts for SFT.")
@click.option("--yes", is_flag=True, help="Pay again for requests that a changed constitution or settings make new.")
@click.option("--rewrite", "rewrite", type=click.Path(path_type=Path), default=None,
              help="Rewrite mode of the advice product: a jsonl of chats ('messages', optional 'tools') whose "
                   "assistant turns gain deliberation, with the same words and tool calls.")
@click.option("--rewrite-turns", type=click.Choice(["final", "all", "decisions"]), default=None,
              help="With --rewrite: the assistant turns that gain a deliberation: the final one (default), all, or "
                   "the decisions (the turns the screen judges put values at stake).")
@friendly
def build(constitution: Path, config_path: Path | None, dry_run: bool, progress: bool, mixes: tuple[str, ...],
          decontaminate: tuple[Path, ...], builtin_evals: bool | None, reset_ledger: bool, product: str | None,
          rewrite: Path | None, rewrite_turns: str | None, yes: bool, **options: Any) -> None:
    """Run every stage: parse, plan, generate, filter, dedup, pack and report.

    With --product advice (or --rewrite FILE) the stages build SFT transcripts instead: sft.parquet
    and sft.jsonl. Resumable: rerun the same command after a crash, Ctrl-C or budget stop and only
    the missing work is done; nothing recorded in the ledger is paid for twice.
    """
    from sdf.config import load_settings
    from sdf.llm import make_backend
    from sdf.products.context import create_run
    from sdf.products.documents import check_inputs, extract_stage, plan_stage

    overrides = overrides_from(**options)
    if mixes:
        overrides["pack.mix"] = list(mixes)
    if decontaminate:
        overrides["dedup.decontaminate"] = [str(p) for p in decontaminate]
    if builtin_evals is not None:
        overrides["dedup.decontaminate_builtin"] = builtin_evals
    if rewrite is not None:
        if product == "documents":
            raise SdfError("--rewrite belongs to the advice product; drop --product documents")
        overrides["advice.rewrite"] = str(rewrite.resolve())
        product = "advice"
    if rewrite_turns is not None:
        overrides["advice.rewrite_turns"] = rewrite_turns
    if product:
        overrides["run.product"] = product
    settings = with_section_flags(load_settings(resolve_config(config_path), overrides), options)
    check_product(settings, constitution)
    check_executor(settings)  # before anything is paid for: an executor the product lacks, or Ray not installed
    if settings.run.product == "advice":
        build_advice(settings, constitution, dry_run, progress, reset_ledger)
        return
    check_inputs(settings)  # tokenizer, mix and eval files fail now, not after the money is spent
    check_prices(settings)
    backend = None if dry_run else make_backend(settings.llm)  # a missing key fails before anything is written
    run = create_run(settings, constitution)
    reset_ledger_if_asked(run, reset_ledger)
    planned = plan_stage(run)
    if dry_run:
        echo_plan(run)
        click.echo(f"\ndry run: stopped before generation; plan in {run.dir.specs}")
        return
    check_before_sending(run, yes)
    click.echo(f"run {run.dir.path}: {planned} documents planned over {len(run.constitution.sections)} sections")
    summary = run_generation(run, backend, progress)
    echo_extraction(run, summary, extracted := extract_stage(run))
    finish_generation(run, backend, progress, summary, extracted)


def check_before_sending(run: Any, yes: bool) -> None:
    """Refuse a plan the model cannot read, and a changed constitution or settings that would silently pay
    again for documents this run already has (unless --yes)."""
    from sdf.llm.limits import context_problem
    from sdf.products.documents import paid_specs
    from sdf.source.constitution import estimate_tokens

    problem = context_problem(run.settings.llm, estimate_tokens(run.system))
    if problem:
        raise SdfError(problem)
    if yes or not run.dir.store.exists():
        return
    specs = run.dir.read_specs()
    paid, _ = paid_specs(run, specs)
    ledger = run.ledger()
    try:
        answered = {r[0] for r in ledger.db.execute(
            "SELECT spec_id FROM requests WHERE purpose = 'generate' AND status = 'ok'")}
    finally:
        ledger.close()
    paid_ids = {s["spec_id"] for s in paid}
    again = [s for s in specs if s["spec_id"] in answered and s["spec_id"] not in paid_ids]
    if answered and (again or not paid):  # answered before, under inputs that are not today's
        new = len(specs) - len(paid)
        raise SdfError(f"the constitution or the settings changed since this run's last build: {new} of "
                       f"{len(specs)} planned document requests would be new ({len(again) or len(answered)} of them "
                       "answered before under the old inputs); rerun with --yes to pay for them, or build into a "
                       "fresh run with --name")


def check_product(settings: Any, constitution: Path) -> None:
    """A run directory holds one product: refuse to build another into it."""
    from sdf.products.context import run_path
    from sdf.run import RunDir

    rd = RunDir(run_path(settings, constitution))
    if rd.is_run():
        existing = rd.read_config().get("run", {}).get("product", "documents")
        if existing != settings.run.product:
            raise SdfError(f"{rd.path} holds the {existing} product; build the {settings.run.product} product "
                           "under another --name (a run directory holds one product)")


def build_advice(settings: Any, constitution: Path, dry_run: bool, progress: bool, reset_ledger: bool) -> None:
    """The advice product end to end: plan, generate, assemble, filter, dedup, sft, pack, report."""
    from collections import Counter

    from sdf.llm import make_backend
    from sdf.products import transcripts
    from sdf.products.context import create_run

    if settings.plan.tokens > 0:
        raise SdfError("--tokens plans documents; give the advice product a number of chats with --docs")
    from sdf.steps.decontam.evals import load_builtin, load_evals

    if settings.dedup.decontaminate:
        load_evals(settings.dedup.decontaminate)  # a bad eval file fails before money is spent
    if settings.dedup.decontaminate_builtin:
        load_builtin(settings.run.prompts or None)
    if settings.advice.chat_tokenizer:
        from sdf.writers.chat import load_chat_tokenizer, reasoning_warning

        tokenizer = load_chat_tokenizer(settings.advice.chat_tokenizer)
        earlier = bool(settings.advice.rewrite) and settings.advice.rewrite_turns != "final"
        if settings.advice.deliberation != "inline" and (
                warning := reasoning_warning(tokenizer, settings.advice.chat_tokenizer, earlier=earlier)):
            click.echo(f"warning: {warning}", err=True)
    check_prices(settings)
    backend = None if dry_run else make_backend(settings.llm)
    run = create_run(settings, constitution)
    reset_ledger_if_asked(run, reset_ledger)
    specs = transcripts.plan_stage(run)
    what = "transcripts to rewrite" if settings.advice.rewrite else "advice scenarios"
    click.echo(f"run {run.dir.path}: {len(specs)} {what} planned (product advice)")
    if dry_run:
        for key in ("temptation", "operator", "tool_format"):
            counts = Counter(s[key] or "(none)" for s in specs)
            click.echo(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        u, model = transcripts.usage_estimate(run, specs), settings.llm.model
        click.echo(f"\nestimated tokens ({u['requests']} requests): input {u['input_tokens']:,} + cache write "
                   f"{u['cache_creation_tokens']:,} + cache read {u['cache_read_tokens']:,}; "
                   f"output {u['output_tokens']:,}")
        if u["cost_usd"] is None:
            click.echo(f"estimated cost: unknown (no price for {model}; add [pricing.\"{model}\"] to sdf.toml)")
        else:
            click.echo(f"estimated cost with {model}: ${u['cost_usd']:.2f} (messages), ${u['batch_cost_usd']:.2f} "
                       "(--batch)")
        click.echo(f"\ndry run: stopped before generation; plan in {run.dir.specs}")
        return
    summary = transcripts.generate_stage(run, backend, progress)
    echo_extraction(run, summary, extracted := transcripts.assemble_stage(run))
    finish_generation(run, backend, progress, summary, extracted)


def finish_generation(run: Any, backend: Any, progress: bool, summary: Any, extracted: dict) -> None:
    """The exit of a build after generation: a partial set of items is still filtered, packed and reported."""
    code, line = generation_verdict(summary, extracted)
    if code in (EXIT_OK, EXIT_INCOMPLETE):
        survived, judge_stopped = finish_build(run, backend, progress)
        if code == EXIT_OK and judge_stopped:
            code, line = EXIT_INCOMPLETE, (f"stopped early: the judge stopped ({judge_stopped}); items it did not "
                                           "score are held back; rerun the same command to resume")
        code = code if code != EXIT_OK or survived else EXIT_FAILED
    if line:
        click.echo(f"error: {line}" if code == EXIT_BAD_INPUT else line, err=True)
    sys.exit(code)


def finish_build(run: Any, backend: Any, progress: bool) -> tuple[bool, str]:
    """The run's product's stages after extraction (filter -> dedup -> pack -> report) on its executor, each
    summarised in one line. Returns whether any item survived, and why the judge stopped early ("" if not)."""
    from sdf.products import product_of, stage_of

    prod = product_of(run)
    f = stage_of(run, "filter")(run, backend, progress)
    echo_filter(run, f)
    m = stage_of(run, "dedup")(run)
    echo_dedup(m)
    if m["corpus"]:
        echo_pack(run, stage_of(run, "pack")(run, progress))
    else:
        click.echo(f"pack: skipped, no {prod.item} survived (see `sdf inspect {run.dir.path} --rejected all`)")
    click.echo(f"report: {prod.stage('report')(run)}")
    return bool(m["corpus"]), f.get("stopped", "")


def echo_skipped(stage: str, summary: dict | None) -> None:
    if summary and summary.get("skipped"):
        click.echo(f"{stage}: skipped: its inputs, the settings and its outputs are as when it last ran; "
                   "the line above is from then")


def echo_filter(run: Any, f: dict) -> None:
    from sdf.products import product_of

    before = f.get("after_quality", f.get("after_rules"))
    click.echo(f"filter: {f['input']} {product_of(run).item} -> {f['kept']} kept"
               + (f" ({before} after heuristics)" if before is not None and "judge_cost_usd" in f else "")
               + f" -> {run.dir.filtered}")
    echo_skipped("filter", f)


def echo_pack(run: Any, manifest: dict | None) -> None:
    _echo_pack(run, manifest)
    echo_skipped("pack", manifest)


def _echo_pack(run: Any, manifest: dict | None) -> None:
    if run.settings.run.product == "advice":  # SFT files, and packed rows with a chat tokenizer
        rd, packed = run.dir, manifest["packed"]
        click.echo(f"sft: {manifest['sft']} chats -> {rd.sft}, {rd.sft_jsonl.name} and {rd.sft_openai.name}")
        if packed is None:
            click.echo("pack: no [advice].chat_tokenizer set, so no packed rows")
        else:
            click.echo(f"pack: {packed['chats']} chats, {packed['tokens']:,} tokens in {packed['rows']} rows of "
                       f"at most {packed['seq_len']} ({packed['too_long']} too long) -> {rd.sft_packed}")
            if packed.get("warning"):
                click.echo(f"warning: {packed['warning']}", err=True)
        return
    rows = (f"; hf/npy: {manifest['sequences']} rows of {manifest['seq_len']}"
            if {"hf", "npy"} & set(manifest["formats"]) else "")
    click.echo(f"pack: {manifest['documents']} documents, {manifest['tokens']:,} tokens as "
               f"{', '.join(manifest['formats'])}{rows} -> {run.dir.shards}")
    from sdf.steps.tokens.tokenizer import tokenizer_warning

    if warning := tokenizer_warning(manifest["tokenizer"]["name"]):
        click.echo(f"warning: {warning}", err=True)


def echo_dedup(m: dict) -> None:
    stages = m["stages"]
    dropped = {s: stages.get(s, {}).get("dropped", {}) for s in ("decontaminate", "dedup", "diversity")}
    click.echo(f"dedup: {m['input']} -> {m['corpus']} ({dropped['dedup'].get('exact_duplicate', 0)} exact and "
               f"{dropped['dedup'].get('near_duplicate', 0)} near duplicates, "
               f"{sum(dropped['decontaminate'].values())} contaminated, "
               f"{sum(dropped['diversity'].values())} over caps; {m['caps'].get('renamed', 0)} renamed and "
               f"{m['caps'].get('opener_trimmed', 0)} stock openers cut instead of dropped; NER read "
               f"{m['caps'].get('ner_documents', 0)} documents)")
    echo_skipped("dedup", m)


@cli.command(name="filter")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--judge/--no-judge", default=None, help="Score documents with the LLM judge.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run filter, dedup and pack in this process (local) or on Ray Data ([executor] address).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@workers_option
@friendly
def filter_command(run_dir: Path, progress: bool, **options: Any) -> None:
    """Apply the quality filters (and the optional LLM judge) to RUN_DIR's documents."""
    from sdf.llm import make_backend
    from sdf.products import stage_of
    from sdf.products.context import open_run

    run = open_run(run_dir, overrides_from(**options), write=True)
    filter_stage = stage_of(run, "filter")  # an executor that is not installed fails before the judge's key
    backend = make_backend(run.settings.llm) if run.settings.judge.enabled else None
    echo_filter(run, filter_stage(run, backend, progress))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--decontaminate", "decontaminate", multiple=True, type=click.Path(path_type=Path),
              help="Eval prompts (a jsonl, txt or md file, or a directory of them) that must not leak into the "
                   "corpus (repeatable).")
@click.option("--builtin-evals/--no-builtin-evals", "builtin_evals", default=None,
              help="Drop documents using the entities of public evaluations listed in prompts/evals/ (default on).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run filter, dedup and pack in this process (local) or on Ray Data ([executor] address).")
@workers_option
@friendly
def dedup(run_dir: Path, decontaminate: tuple[Path, ...], builtin_evals: bool | None, executor: str | None) -> None:
    """Decontaminate, remove exact and near duplicates and apply diversity caps -> corpus.parquet."""
    from sdf.products import product_of, stage_of
    from sdf.products.context import open_run

    overrides: dict[str, Any] = {"dedup.decontaminate": [str(p) for p in decontaminate]} if decontaminate else {}
    if builtin_evals is not None:
        overrides["dedup.decontaminate_builtin"] = builtin_evals
    if executor is not None:
        overrides["executor.kind"] = executor
    run = open_run(run_dir, overrides or None, write=True)
    prod = product_of(run)
    m = stage_of(run, "dedup")(run)
    echo_dedup(m)
    click.echo(f"{prod.final}: {m['corpus']} {prod.item} -> {getattr(run.dir, prod.final)}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--tokenizer", default=None, help="tokenizer.json path or directory, HF hub id, or tiktoken name.")
@click.option("--seq-len", type=int, default=None, help="Sequence length.")
@click.option("--format", "formats", multiple=True, help="npy, megatron, nanotron, hf (repeatable).")
@click.option("--mix", "mixes", multiple=True, help="PATH:RATIO replay text to interleave (repeatable).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Run filter, dedup and pack in this process (local) or on Ray Data ([executor] address).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@workers_option
@friendly
def pack(run_dir: Path, progress: bool, mixes: tuple[str, ...], **options: Any) -> None:
    """Tokenize and pack RUN_DIR's corpus into shards plus shards/manifest.json."""
    from sdf.products import stage_of
    from sdf.products.context import open_run

    overrides = overrides_from(**options)
    if mixes:
        overrides["pack.mix"] = list(mixes)
    run = open_run(run_dir, overrides, write=True)
    echo_pack(run, stage_of(run, "pack")(run, progress))
