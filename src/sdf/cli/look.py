"""The commands that look at a run or its inputs: status, catalog, sections, preview, verify, report,
stats and inspect. None of them takes the writer lock."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from sdf.cli.common import cli, constitution_path, friendly, resolve_config, section_flags, with_section_flags, wrap_id
from sdf.errors import EXIT_FAILED, SdfError


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def status(run_dir: Path, as_json: bool) -> None:
    """Show the ledger of RUN_DIR: requests per state, batches in flight, cost so far."""
    from sdf.llm.ledger import Ledger
    from sdf.run import RunDir

    rd = RunDir(run_dir)
    store = rd.require(rd.store, "generate")
    writable = os.access(rd.path, os.W_OK)  # a read-only run is shown as it is; a damaged ledger is an error
    ledger = Ledger(store, readonly=not writable)
    try:
        purposes = [r[0] for r in ledger.db.execute("SELECT DISTINCT purpose FROM requests ORDER BY purpose")]
        data = {
            "writable": writable,
            "requests": {p: ledger.counts(p) for p in purposes},
            "batches": [
                {k: (json.loads(b[k]) if k == "counts" and b[k] else b[k]) for k in b.keys()}  # noqa: SIM118 - sqlite3.Row iterates values
                for b in ledger.batches()
            ],
            "unconfirmed_creates": [dict(i) for i in ledger.open_intents()] if ledger.has_intents() else [],
            "totals": ledger.totals(),
        }
    finally:
        ledger.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not writable:
        click.echo(f"note: {rd.path} cannot be written (read-only); the ledger is sound and shown as it is")
    for purpose, counts in data["requests"].items():
        click.echo(f"{purpose:<12}" + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    in_flight = [b for b in data["batches"] if b["status"] != "ended"]
    click.echo(f"batches: {len(data['batches'])} in total, {len(in_flight)} in flight")
    for b in data["batches"]:
        click.echo(f"  {b['batch_id']}  {b['purpose']:<10} {b['status']:<12} {b['request_count']:>6} requests"
                   + (f"  {b['counts']}" if b["counts"] else ""))
    if data["unconfirmed_creates"]:
        click.echo(f"{len(data['unconfirmed_creates'])} batch creation(s) not yet confirmed (the next build looks "
                   "for them at the API and adopts them rather than paying again):")
        for i in data["unconfirmed_creates"]:
            click.echo(f"  {i['token']}  {i['purpose']:<10} {i['status']:<12} {i['request_count']:>6} requests"
                       f"  since {i['created_at']}" + (f"  ({i['error']})" if i["error"] else ""))
    t = data["totals"]
    click.echo(f"cost: ${t['cost_usd']:.4f}; tokens in {t['input_tokens']:,} (+{t['cache_read_tokens']:,} cache read,"
               f" {t['cache_creation_tokens']:,} cache write), out {t['output_tokens']:,};"
               f" cached share {t['cache_read_share']:.1%}")


@cli.command()
@click.option("--prompts", type=click.Path(path_type=Path), default=None, help="Catalog directory (default: prompts/).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly
def catalog(prompts: Path | None, as_json: bool) -> None:
    """List the genres (with the kinds of audience and narrator that suit each), the pools, tones and names."""
    import textwrap

    from sdf.source.catalog import load_catalog

    cat = load_catalog(prompts)
    data = {
        "genres": {g.name: {"title": g.title, "fiction": g.fiction,
                            "words": [g.min_words, g.mode_words, g.max_words], "weight": g.weight,
                            "cast": list(g.cast), "kinds": {k: list(v) for k, v in g.kinds.items()}}
                   for g in cat.genres.values()},
        "pools": {name: {"about": p.about, "kinds": {k: len(v.items) for k, v in p.kinds.items()}}
                  for name, p in cat.pools.items()},
        "tones": len(cat.tones), "considerations": len(cat.considerations),
        "reasoning": {"fiction": len(cat.reasoning[True]), "nonfiction": len(cat.reasoning[False])},
        "given_names": len(cat.given_names), "surnames": len(cat.surnames), "cultures": len(cat.cultures),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{'genre':<26}{'fiction':<8}{'words (min-typical-max)':<24}{'cast':<6}{'weight':>6}")
    for name, g in data["genres"].items():
        words = "-".join(f"{w:,}" for w in g["words"])
        click.echo(f"{name:<26}{'yes' if g['fiction'] else 'no':<8}{words:<24}{'-'.join(map(str, g['cast'])):<6}"
                   f"{g['weight']:>6.2f}")
        for pool in ("audiences", "narrators"):
            click.echo(textwrap.fill(", ".join(g["kinds"][pool]), 78, initial_indent=f"  {pool}: ",
                                     subsequent_indent="    "))
    click.echo(f"\n{len(cat.genres)} genres; {data['tones']} tones; {data['considerations']} considerations; "
               f"{data['reasoning']['fiction']} + {data['reasoning']['nonfiction']} ways of reasoning")
    click.echo("\nseed pools (a run extends each kind it uses; see [plan].expand_pools):")
    for name, p in data["pools"].items():
        kinds = ", ".join(f"{k} {n}" for k, n in p["kinds"].items())
        click.echo(textwrap.fill(kinds, 78, initial_indent=f"  {name}: ", subsequent_indent="    "))
    click.echo(f"\nname pools: {data['given_names']} given names, {data['surnames']} surnames, "
               f"{data['cultures']} cultures\ncatalog: {cat.root}")


@cli.command()
@click.argument("constitution", type=click.Path(path_type=Path), callback=constitution_path)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Settings file (default: ./sdf.toml if present).")
@section_flags
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with one object per section.")
@friendly
def sections(constitution: Path, config_path: Path | None, as_json: bool, **options: Any) -> None:
    """List every section of CONSTITUTION: id, level, normative and example characters, attrs, warnings.

    Also shows what a plan with these settings does with each section: planned, excluded, merged
    (a stub, into its parent or the next section) or context (weight 0). Calls no API, writes nothing.
    """
    from sdf.config import load_settings
    from sdf.source.constitution import load_constitution
    from sdf.source.plan import describe_sections

    settings = with_section_flags(load_settings(resolve_config(config_path)), options)
    rows = describe_sections(load_constitution(constitution, settings.run.variables), settings.plan)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    width = max(12, min(56, max(len(r["id"]) for r in rows)))
    click.echo(f"{'id':<{width}}  {'level':>5}{'normative':>10}{'examples':>9}  {'status':<9} attrs")
    for r in rows:
        lines = wrap_id(r["id"], width)
        attrs = " ".join([*(f".{c}" for c in r["attrs"].get("class", "").split()),
                          *(f"{k}={v}" for k, v in r["attrs"].items() if k not in ("id", "class"))])
        click.echo(f"{lines[0]:<{width}}  {r['level']:>5}{r['normative_chars']:>10,}{r['example_chars']:>9,}  "
                   f"{r['status']:<9} {attrs}".rstrip())
        for line in lines[1:]:
            click.echo(f"  {line}")
        for line in ([r["detail"]] if r["detail"] else []) + r["notes"]:
            click.echo(f"    note: {line}")
        for warning in r["warnings"]:
            click.echo(f"    warning: {warning}")
    counts = {k: sum(r["status"] == k for r in rows) for k in ("planned", "context", "merged", "excluded")}
    warned = sum(bool(r["warnings"]) for r in rows)
    click.echo(f"\n{len(rows)} sections: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
               + f"; {warned} with warnings")
    flagged = [r["id"] for r in rows if r["non_normative"] and r["status"] != "excluded"]
    if flagged:
        click.echo(f"{len(flagged)} {'looks' if len(flagged) == 1 else 'look'} non-normative; to leave them out, "
                   "add to sdf.toml under [plan]:\n"
                   f"exclude_sections = {json.dumps(flagged)}")


@cli.command()
@click.option("--constitution", type=click.Path(path_type=Path), default=None, callback=constitution_path,
              help="Constitution file, or the name of a bundled one; default: the bundled claude.md.")
@click.option("--product", type=click.Choice(["documents", "advice"]), default=None,
              help="What to preview (default: [run].product): a document's prompt, or an advice scenario's requests.")
@click.option("--genre", default=None, help="Genre name (see `sdf catalog`); documents only, and required there.")
@click.option("--kind", type=click.Choice(["temptation", "legitimate", "authority", "dilemma"]), default=None,
              help="Advice only: the scenario kind (default: the plan's first scenario).")
@click.option("--section", "section_id", default=None,
              help="Section id (default: the first section the plan deals this genre to).")
@click.option("--seed", type=int, default=None, help="Seed of the plan (default: [run].seed).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None, help="Settings file.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Run whose ledger holds extended pools and ideas (default: the run this constitution builds).")
@click.option("--user-only", is_flag=True, help="Print only the per-document prompt, not the system prompt.")
@friendly
def preview(constitution: Path, product: str | None, genre: str | None, kind: str | None, section_id: str | None,
            seed: int | None, config_path: Path | None, run_dir: Path | None, user_only: bool) -> None:
    """Print the prompts a build would send, exactly. Calls no API.

    Documents: the prompt of the first spec of the run's plan in that genre (and section); its pools and
    idea come from the run's ledger where a build already paid for them, otherwise preview says what is
    still open. Advice (--product advice): the requests of the plan's first scenario (of --kind), in
    order: those the ledger answered, the next to send, and what follows on stand-ins it names.
    """
    from sdf.config import load_settings
    from sdf.llm.requests import document_request
    from sdf.products.briefs import preview_spec
    from sdf.products.context import Run, run_path
    from sdf.run import RunDir
    from sdf.source.catalog import load_catalog
    from sdf.source.constitution import estimate_tokens, load_constitution
    from sdf.source.plan import select_sections

    settings = load_settings(resolve_config(config_path), {"run.seed": seed, "run.product": product})
    if settings.run.product == "advice":
        if genre or section_id:
            raise SdfError("--genre and --section are for documents; an advice preview takes --kind")
        return _preview_advice(constitution, settings, kind, run_dir, user_only)
    if kind:
        raise SdfError("--kind is for advice: add --product advice")
    if not genre:
        raise SdfError("--genre is required for a document preview (see `sdf catalog`)")
    selection = select_sections(load_constitution(constitution, settings.run.variables), settings.plan)
    cons = selection.constitution  # what a run sends: exclusions and merged stubs applied
    cat = load_catalog(Path(settings.run.prompts) if settings.run.prompts else None)
    cat.genre(genre)
    if section_id in selection.excluded:
        raise SdfError(f"section '{section_id}' is excluded from the run ({selection.excluded[section_id]})")
    if section_id:
        cons.section(section_id)  # an unknown or merged id is a clear error
    run = Run(RunDir(run_dir or run_path(settings, constitution)), settings, cons, cat)
    spec, notes = preview_spec(run, genre, section_id)
    request = document_request(cat, spec, run.sections[spec["section_id"]], run.system, settings.llm)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not user_only:
        click.echo(f"===== system (cached prefix, ~{estimate_tokens(request.system):,} tokens) =====")
        click.echo(request.system)
    click.echo(f"===== user (~{estimate_tokens(request.prompt):,} tokens; model {request.model}, "
               f"max_tokens {request.max_tokens}) =====")
    click.echo(request.prompt)


def _preview_advice(constitution: Path, settings: Any, kind: str | None, run_dir: Path | None,
                    user_only: bool) -> None:
    from contextlib import closing

    from sdf.llm.ledger import open_ledger
    from sdf.products.context import Run, run_path
    from sdf.products.conversations import preview_requests
    from sdf.run import RunDir
    from sdf.source.catalog import load_catalog
    from sdf.source.constitution import estimate_tokens, load_constitution
    from sdf.source.plan import select_sections

    if settings.advice.rewrite:
        raise SdfError("a rewrite's requests follow its transcripts: preview shows planned scenarios; "
                       "leave [advice].rewrite unset")
    cons = select_sections(load_constitution(constitution, settings.run.variables), settings.plan).constitution
    rd = RunDir(run_dir or run_path(settings, constitution))
    run = Run(rd, settings, cons, load_catalog(Path(settings.run.prompts) if settings.run.prompts else None))
    paid = (rd.path / "store.sqlite").is_file()
    with closing(open_ledger(rd.path)) if paid else _nothing() as ledger:
        spec, shown, notes = preview_requests(run, kind, ledger)
    click.echo(f"scenario {spec['spec_id']}: {spec['kind']} ({spec['situation']}), {spec['domain']}; "
               f"{spec.get('user_turns') or 1} user turn(s); " + ("ledger " + str(rd.path) if paid else
                                                                  "nothing paid for yet"), err=True)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    systems: set[str] = set()
    for title, request in shown:
        if not user_only and request.system not in systems:
            systems.add(request.system)
            click.echo(f"===== {title}: system (cached prefix, ~{estimate_tokens(request.system):,} tokens) =====")
            click.echo(request.system)
        click.echo(f"===== {title}: user (~{estimate_tokens(request.prompt):,} tokens; model {request.model}, "
                   f"max_tokens {request.max_tokens}) =====")
        click.echo(request.prompt)


def _nothing() -> Any:
    from contextlib import nullcontext

    return nullcontext(None)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@friendly
def verify(run_dir: Path) -> None:
    """Recompute every shard checksum and count, decode samples; exit 1 on any mismatch.

    On an advice run: sft.parquet, sft.jsonl and sft.openai.jsonl agree row for row, and the packed rows
    are well formed."""
    from sdf.writers.manifest import verify_run

    if holds_advice(run_dir):
        from sdf.run import RunDir
        from sdf.writers.chat import verify_sft

        problems = verify_sft(RunDir(run_dir))
    else:
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
    from sdf.run import RunDir

    RunDir(run_dir).require_run()  # never write a report into a folder that is not a run
    click.echo(f"report: {write_report(run_dir)}")


def echo_chat_stats(run_dir: Path, data: dict) -> None:
    """The headline numbers of an advice run, for a person; every number is in the JSON."""
    run, dep, cost, mix = data["run"], data["deployments"], data["cost"], data["mix"]

    def n(value: int | None) -> str:
        return "—" if value is None else f"{value:,}"

    click.echo(f"run: {run['path']} (advice, {data['mode']})")
    bad = f", {run['bad_originals']} bad originals dropped" if run.get("bad_originals") else ""
    click.echo(f"chats: {n(run['final'])} final, {n(run['chats'])} assembled, {n(run['specs'])} planned{bad}")
    if mix:
        click.echo("kinds: " + ", ".join(f"{k['kind']} {k['share']:.0%}" for k in mix["kinds"]))
    if dep:
        click.echo(f"deployments: system prompt {dep['with_system_prompt']:.0%} ({dep['distinct_system_prompts']} "
                   f"distinct), tools {dep['with_tools']:.0%}; two or more user turns "
                   f"{data['turns']['multi_turn_share']:.0%}")
    if cost:
        click.echo(f"cost: ${cost['total']['cost_usd']:.4f} over {cost['total']['requests']} requests, "
                   f"cache-read share {100 * (cost['total']['cache_read_share'] or 0):.1f}%")
    click.echo(f"(full numbers: sdf stats {run_dir} --json, or {Path(run_dir) / 'stats.json'})")


def holds_advice(run_dir: Path) -> bool:
    from sdf.run import RunDir

    rd = RunDir(run_dir)
    return rd.is_run() and rd.read_config().get("run", {}).get("product") == "advice"


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same numbers as report.html).")
@friendly
def stats(run_dir: Path, as_json: bool) -> None:
    """The report's numbers in machine-readable form (also written to RUN_DIR/stats.json)."""
    from sdf.report import collect_stats
    from sdf.run import RunDir

    RunDir(run_dir).require_run()
    data = collect_stats(run_dir)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    if data.get("product") == "advice":
        echo_chat_stats(run_dir, data)
        return
    # the headline numbers for a person; every number is in the JSON
    run, mix, cost = data["run"], data["genre_mix"], data["cost"]

    def n(value: int | None) -> str:
        return "—" if value is None else f"{value:,}"

    click.echo(f"run: {run['path']}")
    click.echo(f"documents: {n(run['corpus_docs'])} in the corpus, {n(run['documents'])} extracted, "
               f"{n(run['specs'])} planned")
    if run["tokens"] is not None:
        click.echo(f"tokens: {n(run['tokens'])} ({run['tokens_source']})")
    if cost:
        click.echo(f"cost: ${cost['total']['cost_usd']:.4f} over {cost['total']['requests']} requests, "
                   f"cache-read share {100 * (cost['total']['cache_read_share'] or 0):.1f}%")
    rej = data["rejections"]
    if rej and rej["total"]:
        share = f", {100 * rej['paid_share']:.1f}% of the run's cost" if rej["paid_share"] is not None else ""
        worst = max(rej["by_reason"], key=lambda r: r["paid_usd"])
        click.echo(f"paid but discarded: ${rej['paid_usd']:.4f}{share} ({rej['total']:,} documents; most on "
                   f"{worst['stage']}/{worst['reason']}: ${worst['paid_usd']:.4f})")
    if mix and mix["max_abs_gap"] is not None:
        worst = max(mix["genres"], key=lambda g: abs(g["gap"] or 0))
        click.echo(f"genre mix: largest gap {100 * worst['gap']:+.1f} pt ({worst['genre']}: "
                   f"{100 * worst['actual']:.1f}% of {mix['actual_source']}, target {100 * worst['target']:.1f}%)")
    for part, why in data["unavailable"].items():
        click.echo(f"{part}: not available ({why})")
    click.echo(f"(full numbers: sdf stats {run_dir} --json, or {Path(run_dir) / 'stats.json'})")


@cli.command(name="inspect")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--genre", default=None, help="Only this genre.")
@click.option("--section", default=None, help="Only this section id.")
@click.option("--rejected", default=None, help="Show rejected documents with this reason or stage ('all' for any).")
@click.option("--n", "n", type=int, default=5, show_default=True, help="How many documents.")
@click.option("--max-chars", type=int, default=None, help="Truncate each document's text.")
@click.option("--raw", is_flag=True, help="Print texts exactly as stored, control characters included.")
@friendly
def inspect_command(run_dir: Path, genre: str | None, section: str | None, rejected: str | None, n: int,
                    max_chars: int | None, raw: bool) -> None:
    """Show documents (or rejects) with their provenance; plain text when piped."""
    from sdf.inspect import show_documents

    show_documents(run_dir, genre=genre, section=section, rejected=rejected, n=n, max_chars=max_chars, raw=raw)
