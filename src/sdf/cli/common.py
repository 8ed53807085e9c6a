"""What every command shares: the group, one-line errors and exit codes, and the settings options."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from sdf import __version__
from sdf.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED, SdfError
from sdf.redact import redact_text

CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SdfError into one line on stderr plus a meaningful exit code; never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SdfError as e:
            click.echo(f"error: {redact_text(str(e))}", err=True)
            sys.exit(e.exit_code)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # every artifact is written whole or not at all: a rerun resumes
                click.echo(f"error: disk full at {e.filename or 'the run'}: free space and rerun; every answer "
                           "recorded before is kept", err=True)
                sys.exit(EXIT_INCOMPLETE)
            if e.errno in CANNOT_WRITE:
                click.echo(f"error: cannot write {e.filename or 'the run'}: {e.strerror or os.strerror(e.errno)}",
                           err=True)
                sys.exit(EXIT_BAD_INPUT)
            raise
        except KeyboardInterrupt:  # outside the engine's own handling: every answer received is in the ledger
            click.echo("\ninterrupted: every answer received is recorded in the ledger; rerun the same command to "
                       "resume", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by commands that start from a constitution."""
    options = [
        click.option("--constitution", "constitution", type=click.Path(path_type=Path), default=None,
                     callback=constitution_path, help="Constitution file (markdown or plain text), or the name of a "
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
        *section_options(),
        click.option("--brainstorm/--no-brainstorm", default=None,
                     help="Ask the model for one concrete idea per brief before writing (default on)."),
        click.option("--judge/--no-judge", default=None, help="Score documents with the LLM judge."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def constitution_path(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    from sdf.source.constitution import resolve_constitution

    return resolve_constitution(value)


def check_prices(settings: Any) -> None:
    """A budget needs a price for every model it pays for; without a budget, an unknown price is a warning."""
    models = {settings.llm.model} | ({settings.judge.model or settings.llm.model} if settings.judge.enabled else set())
    for model in sorted(m for m in models if settings.price(m) is None):
        hint = f'add [pricing."{model}"] with input and output USD per million tokens to sdf.toml'
        if settings.budget.max_cost_usd > 0:
            raise SdfError(f"--max-cost needs a price for {model}: {hint}")
        click.echo(f"warning: no price known for {model}, so costs show as $0.0000; {hint}", err=True)


def reset_ledger_if_asked(run: Any, reset: bool) -> None:
    from sdf.llm.ledger import reset_ledger

    if reset and (aside := reset_ledger(run.dir.store)) is not None:
        click.echo(f"set the old ledger aside as {aside}; a new one starts now", err=True)


def section_options() -> list[Callable[..., Any]]:
    return [
        click.option("--exclude-section", "exclude_sections", multiple=True, metavar="GLOB",
                     help="Leave out sections whose id matches GLOB: no documents, not in the system prompt "
                          "(repeatable; added to [plan].exclude_sections)."),
        click.option("--include-section", "include_sections", multiple=True, metavar="GLOB",
                     help="Use only sections whose id matches GLOB (repeatable; added to [plan].include_sections)."),
    ]


def section_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(section_options()):
        fn = option(fn)
    return fn


def with_section_flags(settings: Any, options: dict[str, Any]) -> Any:
    """--exclude-section and --include-section add to the settings file's lists rather than replace them."""
    from dataclasses import replace

    plan = replace(settings.plan,
                   exclude_sections=[*settings.plan.exclude_sections, *options.get("exclude_sections", ())],
                   include_sections=[*settings.plan.include_sections, *options.get("include_sections", ())])
    return replace(settings, plan=plan)


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
        "brainstorm": "plan.brainstorm", "judge": "judge.enabled", "executor": "executor.kind",
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


def wrap_id(text: str, width: int) -> list[str]:
    """Cut a long section id into lines of at most `width`, preferring to break after '/' or '-'."""
    lines = []
    while len(text) > width:
        cut = max(text.rfind("/", 0, width), text.rfind("-", 0, width)) + 1 or width
        lines.append(text[:cut])
        text = text[cut:]
    return [*lines, text]
