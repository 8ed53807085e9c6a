"""What `sdf plan` (and `build --dry-run`) prints: the mix, the sections, the briefs, the cost, the warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sdf.cli.common import wrap_id

# what the document and ideas prompts read of a spec: `sdf plan` reads back no other column to estimate them
BRIEF_COLUMNS = ("section_id", "genre", "target_words", "names", "persona", "audience", "setting", "situation", "tone",
                 "idea", "considerations", "reasoning", "language")


def echo_plan(run: Any) -> None:
    """What `sdf plan` prints, read back from specs.parquet batch by batch (a large plan is never held)."""
    from collections import Counter

    import pyarrow.parquet as pq

    from sdf.llm.limits import context_problem
    from sdf.products.documents import usage_estimate
    from sdf.run import iter_rows
    from sdf.source.constitution import estimate_tokens, load_constitution
    from sdf.source.plan import genre_weights, plan_warnings, select_sections, selection_notes

    table = pq.read_table(run.dir.specs, columns=["genre", "section_id"])
    by_genre = Counter(table.column("genre").to_pylist())
    by_section = Counter(table.column("section_id").to_pylist())
    planned = table.num_rows
    del table
    weights = genre_weights(run.catalog, run.settings.plan)
    sections = run.constitution.sections
    click.echo(f"plan: {planned} documents over {len(by_section)} of "
               f"{len(sections)} sections and {len(by_genre)} genres")
    click.echo(f"\n{'genre':<24}{'docs':>6}{'share':>8}{'target':>8}")
    for genre, n in sorted(by_genre.items()):
        click.echo(f"{genre:<24}{n:>6}{n / planned:>8.1%}{weights.get(genre, 0):>8.1%}")
    width = max(12, min(56, max(len(s.id) for s in sections)))
    click.echo(f"\n{'section':<{width}}  {'normative':>9}{'examples':>9}{'docs':>6}")
    for section in sections:
        lines = wrap_id(section.id, width)
        click.echo(f"{lines[0]:<{width}}  {section.normative_chars:>9,}{section.example_share:>9.0%}"
                   f"{by_section.get(section.id, 0):>6}")
        for line in lines[1:]:
            click.echo(f"  {line}")
    echo_briefs(run, planned)
    # the prompts' lengths need only the brief's columns (the judge's request takes the whole spec)
    columns = None if run.settings.judge.enabled else BRIEF_COLUMNS
    usage = usage_estimate(run, (spec for batch in iter_rows(run.dir.specs, columns, batch_size=8192)
                                 for spec in batch))
    model = run.settings.llm.model
    click.echo(f"\nestimated tokens: input {usage['input_tokens']:,} + cache write {usage['cache_creation_tokens']:,}"
               f" + cache read {usage['cache_read_tokens']:,}; output {usage['output_tokens']:,}")
    price = run.settings.price(model)
    if usage["cost_usd"] is None:
        click.echo(f"estimated cost: unknown (no price for {model}; add [pricing.\"{model}\"] to sdf.toml)")
    else:
        extras = [(k, usage[k]) for k in ("expand", "ideas", "judge") if k in usage]
        for name, part in extras:
            click.echo(f"  + {name}: {part['requests']:,} requests, ${part['cost_usd']:.2f} (messages), "
                       f"${part['batch_cost_usd']:.2f} (--batch)")
        total = usage["cost_usd"] + sum(p["cost_usd"] for _, p in extras)
        total_batch = usage["batch_cost_usd"] + sum(p["batch_cost_usd"] for _, p in extras)
        what = "documents" + "".join(f" + {name}" for name, _ in extras)
        click.echo(f"estimated cost with {model} ({what}): ${total:.2f} (messages), ${total_batch:.2f} (--batch)")
    if run.dir.store.exists():
        echo_increment(run, run.dir.read_specs())
    system_cost = price.cost(0, 0, usage["cache_creation_tokens"], usage["cache_read_tokens"]) if price else None
    share = system_cost / usage["cost_usd"] if system_cost is not None and usage["cost_usd"] else None
    parsed = load_constitution(Path(run.settings.run.constitution), run.settings.run.variables)
    selection = select_sections(parsed, run.settings.plan)
    notes = selection_notes(selection)
    if notes:
        click.echo("\nselection:")
        for note in notes:
            click.echo(f"  {note}")
    warnings = plan_warnings(selection, set(by_section), planned, run.settings.plan, estimate_tokens(run.system),
                             share)
    warnings += [p for p in [context_problem(run.settings.llm, estimate_tokens(run.system))] if p]
    from sdf.steps.tokens.tokenizer import tokenizer_warning

    if tokens := tokenizer_warning(run.settings.pack.tokenizer):
        warnings.append(tokens)
    if warnings:
        click.echo("\nwarnings:")
        for warning in warnings:
            click.echo(f"  - {warning}")


def echo_briefs(run: Any, planned: int) -> None:
    """How the briefs will be dealt: from extended or seed pools, with or without ideas, and what that sends."""
    from sdf.products.briefs import expansions, pools_for_plan

    pools, missing = pools_for_plan(run)
    cfg = run.settings.plan
    sizes = ", ".join(f"{k} {v:,}" for k, v in pools.sizes().items())
    wanted = len(expansions(run))
    if not cfg.expand_pools:
        click.echo(f"\npools: the seed lists only ([plan].expand_pools = false): {sizes}")
    elif missing:
        click.echo(f"\npools: seed lists ({sizes}); the build first sends {len(missing)} of {wanted} pool "
                   "extensions, then deals the briefs again from the extended lists")
    else:
        click.echo(f"\npools: extended, from the ledger ({sizes})")
    if cfg.brainstorm:
        click.echo(f"ideas: one request per {cfg.ideas_per_request} specs ({-(-planned // cfg.ideas_per_request)} "
                   "requests); a brief the model calls unsuitable is dealt anew, at most "
                   f"{cfg.max_redeals} times")
    else:
        click.echo("ideas: off ([plan].brainstorm = false): each writer chooses its own premise")


def echo_increment(run: Any, specs: list[dict]) -> None:
    """On an existing run: how many document requests the ledger already holds, and what the rest cost."""
    from sdf.products.documents import paid_specs, usage_estimate

    paid, spent = paid_specs(run, specs)
    if not run.dir.store.exists():
        return
    click.echo(f"already paid: {len(paid)} of {len(specs)} document requests are answered in the ledger "
               f"(${spent:.4f} spent on this run so far)")
    ids = {s["spec_id"] for s in paid}
    new = [s for s in specs if s["spec_id"] not in ids]
    usage = usage_estimate(run, new) if new else {"requests": 0, "cost_usd": 0.0, "batch_cost_usd": 0.0}
    if usage["cost_usd"] is None:
        click.echo(f"increment: {len(new)} requests, cost unknown (no price for {run.settings.llm.model})")
    else:
        click.echo(f"increment: {len(new)} requests, ${usage['cost_usd']:.2f} (messages), "
                   f"${usage['batch_cost_usd']:.2f} (--batch), before pool extensions, ideas and judge")
