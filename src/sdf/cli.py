"""The `sdf` command line: `sdf build` runs every stage; each stage also has its own command."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from sdf import __version__
from sdf.errors import SdfError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SdfError into one line on stderr plus a meaningful exit code; never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SdfError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: everything answered so far is in the ledger; rerun the same command to resume",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by commands that start from a constitution."""
    options = [
        click.option("--constitution", "constitution", type=click.Path(path_type=Path), default=None,
                     callback=_constitution, help="Constitution file (markdown or plain text), or the name of a "
                     "bundled one; default: the bundled claude.md."),
        click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                     help="Settings file (default: ./sdf.toml if present)."),
        click.option("--out", default=None, help="Output root for runs (default: corpus)."),
        click.option("--name", default=None, help="Run directory name (default: the constitution's file stem)."),
        click.option("--docs", type=int, default=None, help="Number of documents to plan."),
        click.option("--tokens", type=int, default=None, help="Plan enough documents for about this many tokens."),
        click.option("--model", default=None, help="Model name, e.g. claude-sonnet-4-5."),
        click.option("--seed", type=int, default=None, help="Seed for planning and packing."),
        click.option("--genre", "genres", multiple=True, help="Restrict to this genre (repeatable)."),
        click.option("--brainstorm/--no-brainstorm", default=None, help="Brainstorm ideas per section and genre."),
        click.option("--judge/--no-judge", default=None, help="Score documents with the LLM judge."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _constitution(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    from sdf.source.constitution import resolve_constitution

    return resolve_constitution(value)


def resolve_config(path: Path | None) -> Path | None:
    if path is not None:
        return path
    default = Path("sdf.toml")
    return default if default.is_file() else None


def overrides_from(**values: Any) -> dict[str, Any]:
    keys = {
        "out": "run.out", "name": "run.name", "seed": "run.seed", "docs": "plan.docs", "tokens": "plan.tokens",
        "model": "llm.model", "batch": "llm.batch", "concurrency": "llm.concurrency",
        "max_cost": "budget.max_cost_usd", "tokenizer": "pack.tokenizer", "seq_len": "pack.seq_len",
        "brainstorm": "plan.brainstorm", "judge": "judge.enabled",
    }
    out = {keys[k]: v for k, v in values.items() if k in keys and v is not None}
    if values.get("genres"):
        out["plan.genres"] = list(values["genres"])
    if values.get("formats"):
        out["pack.formats"] = list(values["formats"])
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sdf")
def cli() -> None:
    """sdf: turn an AI constitution into a diverse, deduplicated, tokenized midtraining corpus.

    Start with `sdf plan --constitution constitutions/claude.md` (no API calls, prints the cost),
    then `sdf build --constitution constitutions/claude.md`.
    """


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    cli()


# -- plan and build -----------------------------------------------------------------------------


def echo_plan(run: Any, specs: list[dict]) -> None:
    from sdf.products.documents import usage_estimate
    from sdf.source.plan import genre_weights, summarize

    summary = summarize(specs)
    weights = genre_weights(run.catalog, run.settings.plan)
    click.echo(f"plan: {summary.docs} documents over {len(summary.by_section)} of "
               f"{len(run.constitution.sections)} sections and {len(summary.by_genre)} genres")
    click.echo(f"\n{'genre':<24}{'docs':>6}{'share':>8}{'target':>8}")
    for genre, n in summary.by_genre.items():
        click.echo(f"{genre:<24}{n:>6}{n / summary.docs:>8.1%}{weights.get(genre, 0):>8.1%}")
    click.echo(f"\n{'section':<52}{'tokens':>8}{'docs':>6}")
    for section in run.constitution.sections:
        click.echo(f"{section.id[:51]:<52}{section.tokens:>8}{summary.by_section.get(section.id, 0):>6}")
    usage = usage_estimate(run, specs)
    model = run.settings.llm.model
    click.echo(f"\nestimated tokens: input {usage['input_tokens']:,} + cache write {usage['cache_creation_tokens']:,}"
               f" + cache read {usage['cache_read_tokens']:,}; output {usage['output_tokens']:,}")
    if usage["cost_usd"] is None:
        click.echo(f"estimated cost: unknown (no price for {model}; add [pricing.\"{model}\"] to sdf.toml)")
        return
    extras = [(k, usage[k]) for k in ("brainstorm", "judge") if k in usage]
    for name, part in extras:
        click.echo(f"  + {name}: {part['requests']:,} requests, ${part['cost_usd']:.2f} (messages), "
                   f"${part['batch_cost_usd']:.2f} (--batch)")
    total = usage["cost_usd"] + sum(p["cost_usd"] for _, p in extras)
    total_batch = usage["batch_cost_usd"] + sum(p["batch_cost_usd"] for _, p in extras)
    what = "generation" + "".join(f" + {name}" for name, _ in extras)
    click.echo(f"estimated cost with {model} ({what}): ${total:.2f} (messages), ${total_batch:.2f} (--batch)")


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

    settings = load_settings(resolve_config(config_path), overrides_from(**options))
    run = create_run(settings, constitution)
    specs = plan_stage(run)
    echo_plan(run, specs)
    click.echo(f"\nwrote {run.dir.specs}")


def echo_generation(summary: Any, ledger_totals: dict) -> None:
    click.echo(
        f"requests: {summary.requested} planned, {summary.already_done} already in the ledger, "
        f"{summary.succeeded} answered now, {summary.failed} failed"
    )
    for kind, n in sorted(summary.failures.items()):
        click.echo(f"  failed: {n} x {kind}")
    click.echo(
        f"cost: ${summary.cost_usd:.4f} this run, ${ledger_totals['cost_usd']:.4f} in total; "
        f"cached share of input tokens {ledger_totals['cache_read_share']:.1%}"
    )
    if summary.stopped:
        click.echo(f"stopped early: {summary.stopped}. Rerun the same command to resume.", err=True)


def run_generation(run: Any, backend: Any, progress: bool) -> Any:
    from sdf.products.documents import brainstorm_stage, generate_stage

    if run.settings.plan.brainstorm:
        ideas = brainstorm_stage(run, backend, progress=progress)
        if ideas.stopped:
            return ideas
    return generate_stage(run, backend, progress=progress)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--batch/--no-batch", default=None, help="Use the Message Batches API (half price, slower).")
@click.option("--max-cost", type=float, default=None, help="Stop sending once this many USD are spent.")
@click.option("--concurrency", type=int, default=None, help="Concurrent requests in messages mode.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@friendly
def generate(run_dir: Path, progress: bool, **options: Any) -> None:
    """Send the planned prompts of RUN_DIR (resumable), then extract documents.parquet."""
    from sdf.llm import make_backend
    from sdf.products.context import open_run
    from sdf.products.documents import extract_stage

    run = open_run(run_dir, overrides_from(**options))
    backend = make_backend(run.settings.llm)
    summary = run_generation(run, backend, progress)
    docs, failed = extract_stage(run)
    ledger = run.ledger()
    echo_generation(summary, ledger.totals())
    ledger.close()
    click.echo(f"documents: {docs} extracted, {failed} specs recorded as failures -> {run.dir.documents}")
    sys.exit(EXIT_INCOMPLETE if summary.stopped else EXIT_OK)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def status(run_dir: Path, as_json: bool) -> None:
    """Show the ledger of RUN_DIR: requests per state, batches in flight, cost so far."""
    from sdf.llm.ledger import Ledger
    from sdf.run import RunDir

    rd = RunDir(run_dir)
    ledger = Ledger(rd.require(rd.store, "generate"))
    try:
        purposes = [r[0] for r in ledger.db.execute("SELECT DISTINCT purpose FROM requests ORDER BY purpose")]
        data = {
            "requests": {p: ledger.counts(p) for p in purposes},
            "batches": [
                {k: (json.loads(b[k]) if k == "counts" and b[k] else b[k]) for k in b.keys()}  # noqa: SIM118 - sqlite3.Row iterates values
                for b in ledger.batches()
            ],
            "totals": ledger.totals(),
        }
    finally:
        ledger.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for purpose, counts in data["requests"].items():
        click.echo(f"{purpose:<12}" + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    in_flight = [b for b in data["batches"] if b["status"] != "ended"]
    click.echo(f"batches: {len(data['batches'])} in total, {len(in_flight)} in flight")
    for b in data["batches"]:
        click.echo(f"  {b['batch_id']}  {b['purpose']:<10} {b['status']:<12} {b['request_count']:>6} requests"
                   + (f"  {b['counts']}" if b["counts"] else ""))
    t = data["totals"]
    click.echo(f"cost: ${t['cost_usd']:.4f}; tokens in {t['input_tokens']:,} (+{t['cache_read_tokens']:,} cache read,"
               f" {t['cache_creation_tokens']:,} cache write), out {t['output_tokens']:,};"
               f" cached share {t['cache_read_share']:.1%}")


@cli.command()
@click.option("--prompts", type=click.Path(path_type=Path), default=None, help="Catalog directory (default: prompts/).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def catalog(prompts: Path | None, as_json: bool) -> None:
    """List genres, audiences, personas, settings, tones and name pools."""
    from sdf.source.catalog import load_catalog

    cat = load_catalog(prompts)
    data = {
        "genres": {g.name: {"title": g.title, "fiction": g.fiction, "words": [g.min_words, g.max_words],
                            "weight": g.weight} for g in cat.genres.values()},
        "audiences": len(cat.audiences), "personas": len(cat.personas), "settings": len(cat.settings),
        "tones": len(cat.tones), "given_names": len(cat.given_names), "surnames": len(cat.surnames),
        "cultures": len(cat.cultures),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{'genre':<22}{'title':<28}{'fiction':>8}{'words':>12}{'weight':>8}")
    for name, g in data["genres"].items():
        words = f"{g['words'][0]}-{g['words'][1]}"
        click.echo(f"{name:<22}{g['title'][:27]:<28}{'yes' if g['fiction'] else 'no':>8}{words:>12}{g['weight']:>8.2f}")
    click.echo(f"\n{len(cat.genres)} genres; audiences {data['audiences']}; personas {data['personas']}; "
               f"settings {data['settings']}; tones {data['tones']}")
    click.echo(f"name pools: {data['given_names']} given names, {data['surnames']} surnames, "
               f"{data['cultures']} cultures ({cat.root})")
    click.echo("\naudiences:")
    for a in cat.audiences:
        click.echo(f"  - {a}")


@cli.command()
@click.option("--constitution", type=click.Path(path_type=Path), default=None, callback=_constitution,
              help="Constitution file, or the name of a bundled one; default: the bundled claude.md.")
@click.option("--genre", required=True, help="Genre name (see `sdf catalog`).")
@click.option("--section", "section_id", default=None, help="Section id (default: the first section).")
@click.option("--seed", type=int, default=None, help="Seed for the sampled audience, persona, names...")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="Settings file.")
@click.option("--user-only", is_flag=True, help="Print only the per-document prompt, not the system prompt.")
@friendly
def preview(constitution: Path, genre: str, section_id: str | None, seed: int | None, config_path: Path | None,
            user_only: bool) -> None:
    """Print one fully rendered prompt exactly as it would be sent. Calls no API."""
    from dataclasses import replace

    from sdf.config import load_settings
    from sdf.llm.requests import document_request
    from sdf.source.catalog import load_catalog, system_prompt
    from sdf.source.constitution import estimate_tokens, load_constitution
    from sdf.source.plan import plan_specs

    settings = load_settings(resolve_config(config_path), {"run.seed": seed})
    cons = load_constitution(constitution, settings.run.variables)
    cat = load_catalog(Path(settings.run.prompts) if settings.run.prompts else None)
    cat.genre(genre)
    section = cons.section(section_id) if section_id else cons.sections[0]
    plan_cfg = replace(settings.plan, genres=[genre], genre_weights={}, docs=1, tokens=0, min_docs_per_section=1)
    spec = plan_specs([section], cat, plan_cfg, settings.run.seed)[0]
    request = document_request(cat, spec, section, system_prompt(cat, cons.text), settings.llm)
    if not user_only:
        click.echo(f"===== system (cached prefix, ~{estimate_tokens(request.system):,} tokens) =====")
        click.echo(request.system)
    click.echo(f"===== user (~{estimate_tokens(request.prompt):,} tokens; model {request.model}, "
               f"max_tokens {request.max_tokens}) =====")
    click.echo(request.prompt)


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
@friendly
def build(constitution: Path, config_path: Path | None, dry_run: bool, progress: bool, mixes: tuple[str, ...],
          decontaminate: tuple[Path, ...], builtin_evals: bool | None, **options: Any) -> None:
    """Run every stage: parse, plan, generate, filter, dedup, pack and report.

    Resumable: rerun the same command after a crash, Ctrl-C or budget stop and only the missing
    work is done; nothing recorded in the ledger is paid for twice.
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
    settings = load_settings(resolve_config(config_path), overrides)
    check_inputs(settings)  # tokenizer, mix and eval files fail now, not after the money is spent
    backend = None if dry_run else make_backend(settings.llm)  # a missing key fails before anything is written
    run = create_run(settings, constitution)
    specs = plan_stage(run)
    if dry_run:
        echo_plan(run, specs)
        click.echo(f"\ndry run: stopped before generation; plan in {run.dir.specs}")
        return
    click.echo(f"run {run.dir.path}: {len(specs)} documents planned over {len(run.constitution.sections)} sections")
    summary = run_generation(run, backend, progress)
    docs, failed = extract_stage(run)
    ledger = run.ledger()
    echo_generation(summary, ledger.totals())
    ledger.close()
    click.echo(f"documents: {docs} extracted, {failed} specs recorded as failures")
    packed = finish_build(run, backend, progress)
    sys.exit(EXIT_INCOMPLETE if summary.stopped else EXIT_OK if packed else EXIT_FAILED)


def finish_build(run: Any, backend: Any, progress: bool) -> bool:
    """filter -> dedup -> pack -> report, each summarised in one line; False when the corpus is empty."""
    from sdf.products.documents import dedup_stage, filter_stage, pack_stage, report_stage

    f = filter_stage(run, backend, progress)
    click.echo(f"filter: {f['input']} documents -> {f['kept']} kept"
               + (f" ({f['after_quality']} after heuristics)" if "after_judge" in f else ""))
    m = dedup_stage(run)
    echo_dedup(m)
    if m["corpus"]:
        manifest = pack_stage(run, progress)
        click.echo(f"pack: {manifest['documents']} documents, {manifest['tokens']:,} tokens in "
                   f"{manifest['sequences']} sequences of {run.settings.pack.seq_len} -> {run.dir.shards}")
    else:
        click.echo(f"pack: skipped, no document survived (see `sdf inspect {run.dir.path} --rejected all`)")
    click.echo(f"report: {report_stage(run)}")
    return bool(m["corpus"])


def echo_dedup(m: dict) -> None:
    stages = m["stages"]
    dropped = {s: stages.get(s, {}).get("dropped", {}) for s in ("decontaminate", "dedup", "diversity")}
    click.echo(f"dedup: {m['input']} -> {m['corpus']} ({dropped['dedup'].get('exact_duplicate', 0)} exact and "
               f"{dropped['dedup'].get('near_duplicate', 0)} near duplicates, "
               f"{sum(dropped['decontaminate'].values())} contaminated, "
               f"{sum(dropped['diversity'].values())} over caps)")


@cli.command(name="filter")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--judge/--no-judge", default=None, help="Score documents with the LLM judge.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@friendly
def filter_command(run_dir: Path, progress: bool, **options: Any) -> None:
    """Apply the quality filters (and the optional LLM judge) to RUN_DIR's documents."""
    from sdf.llm import make_backend
    from sdf.products.context import open_run
    from sdf.products.documents import filter_stage

    run = open_run(run_dir, overrides_from(**options))
    backend = make_backend(run.settings.llm) if run.settings.judge.enabled else None
    counts = filter_stage(run, backend, progress)
    click.echo(f"filter: {counts['input']} documents -> {counts['kept']} kept -> {run.dir.filtered}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--decontaminate", "decontaminate", multiple=True, type=click.Path(path_type=Path),
              help="Eval prompts (a jsonl, txt or md file, or a directory of them) that must not leak into the "
                   "corpus (repeatable).")
@click.option("--builtin-evals/--no-builtin-evals", "builtin_evals", default=None,
              help="Drop documents using the entities of public evaluations listed in prompts/evals/ (default on).")
@friendly
def dedup(run_dir: Path, decontaminate: tuple[Path, ...], builtin_evals: bool | None) -> None:
    """Decontaminate, remove exact and near duplicates and apply diversity caps -> corpus.parquet."""
    from sdf.products.context import open_run
    from sdf.products.documents import dedup_stage

    overrides: dict[str, Any] = {"dedup.decontaminate": [str(p) for p in decontaminate]} if decontaminate else {}
    if builtin_evals is not None:
        overrides["dedup.decontaminate_builtin"] = builtin_evals
    run = open_run(run_dir, overrides or None)
    m = dedup_stage(run)
    echo_dedup(m)
    click.echo(f"corpus: {m['corpus']} documents -> {run.dir.corpus}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--tokenizer", default=None, help="tokenizer.json path or directory, HF hub id, or tiktoken name.")
@click.option("--seq-len", type=int, default=None, help="Sequence length.")
@click.option("--format", "formats", multiple=True, help="npy, megatron, nanotron, hf (repeatable).")
@click.option("--mix", "mixes", multiple=True, help="PATH:RATIO replay text to interleave (repeatable).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@friendly
def pack(run_dir: Path, progress: bool, mixes: tuple[str, ...], **options: Any) -> None:
    """Tokenize and pack RUN_DIR's corpus into shards plus shards/manifest.json."""
    from sdf.products.context import open_run
    from sdf.products.documents import pack_stage

    overrides = overrides_from(**options)
    if mixes:
        overrides["pack.mix"] = list(mixes)
    run = open_run(run_dir, overrides)
    manifest = pack_stage(run, progress)
    click.echo(f"pack: {manifest['documents']} documents, {manifest['tokens']:,} tokens, "
               f"{manifest['sequences']} sequences -> {run.dir.shards}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@friendly
def verify(run_dir: Path) -> None:
    """Recompute every shard checksum and count, decode samples; exit 1 on any mismatch."""
    from sdf.steps.tokens.pack import verify_run

    problems = verify_run(run_dir)
    for problem in problems:
        click.echo(f"FAIL {problem}")
    if problems:
        click.echo(f"verify: {len(problems)} problem(s) in {run_dir}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"verify: OK ({run_dir})")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@friendly
def report(run_dir: Path) -> None:
    """Write RUN_DIR/report.html: mix, coverage, lengths, funnel, costs, dedup, diversity, samples."""
    from sdf.report import write_report

    click.echo(f"report: {write_report(run_dir)}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same numbers as report.html).")
@friendly
def stats(run_dir: Path, as_json: bool) -> None:
    """The report's numbers in machine-readable form (also written to RUN_DIR/stats.json)."""
    from sdf.report import collect_stats

    data = collect_stats(run_dir)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    for key, value in data.items():
        if isinstance(value, (int, float, str)):
            click.echo(f"{key}: {value}")
    click.echo(f"(full numbers: sdf stats {run_dir} --json, or {Path(run_dir) / 'stats.json'})")


@cli.command(name="inspect")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--genre", default=None, help="Only this genre.")
@click.option("--section", default=None, help="Only this section id.")
@click.option("--rejected", default=None, help="Show rejected documents with this reason or stage ('all' for any).")
@click.option("--n", "n", type=int, default=5, show_default=True, help="How many documents.")
@click.option("--max-chars", type=int, default=None, help="Truncate each document's text.")
@friendly
def inspect_command(run_dir: Path, genre: str | None, section: str | None, rejected: str | None, n: int,
                    max_chars: int | None) -> None:
    """Show documents (or rejects) with their provenance; plain text when piped."""
    from sdf.inspect import show_documents

    show_documents(run_dir, genre=genre, section=section, rejected=rejected, n=n, max_chars=max_chars)
