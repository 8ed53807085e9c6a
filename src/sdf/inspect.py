"""Browse a run's documents, or its rejects, in the terminal with their provenance (`sdf inspect RUN`).

Output is plain text when piped (no colour, no pager) and lightly styled on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc

from sdf.errors import SdfError
from sdf.run import STAGES, RunDir, iter_batches

# Columns worth carrying from documents.parquet onto corpus rows and rejects (the rest is already there).
PROVENANCE = (
    "doc_id", "genre", "section_id", "section_title", "audience", "persona", "setting", "tone", "names",
    "target_words", "idea", "considerations", "redeals", "model", "stop_reason", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_creation_tokens", "cost_usd", "quality_score", "judge_score",
)  # fmt: skip
REJECT_FIELDS = ("stage", "reason", "detail", "duplicate_of")


def iter_documents(
    run_dir: str | Path,
    *,
    genre: str | None = None,
    section: str | None = None,
    rejected: str | None = None,
    n: int = 5,
) -> Iterator[dict[str, Any]]:
    """Yield up to `n` records in file order, each with its text and provenance.

    Without `rejected`, records come from corpus.parquet (else documents.parquet; on an advice run,
    chats.parquet). With it, they come from
    rejected/<stage>.parquet in pipeline order: a stage name reads that stage's file, "all" every file, and
    anything else is matched against the reason. `genre` and `section` (a section id) narrow either.
    """
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise SdfError(f"run directory not found: {rd.path} (pass a run directory such as corpus/<name>)")
    if n < 1:
        raise SdfError(f"--n must be at least 1, got {n}")
    if rejected is not None:
        files = [rd.rejects(rejected)] if rejected in STAGES else rd.reject_files()
        files = [f for f in files if f.is_file()]
        if not files:
            where = rd.rejects(rejected) if rejected in STAGES else rd.rejected_dir
            raise SdfError(f"no document has been rejected in this run yet ({where} not found)")
    else:
        files = [next((f for f in (rd.corpus, rd.documents, rd.chats) if f.is_file()), None)]
        if files[0] is None:
            raise SdfError(f"no documents in {rd.path} yet: corpus.parquet, documents.parquet and chats.parquet "
                           "are missing")

    reason = rejected if rejected not in (None, "all", *STAGES) else None
    rows = _head(files, {"genre": genre, "section_id": section, "reason": reason}, n)
    if not rows:
        return
    ids = [r["doc_id"] for r in rows]
    extra = _by_id(rd.documents, ids, "doc_id") if files[0] != rd.documents else {}
    missing = [i for i in ids if i not in extra]
    if missing:  # failed generations have no document, but their spec still says what was asked for
        extra.update(_by_id(rd.specs, missing, "spec_id"))
    titles = {str(s["id"]): str(s["title"]) for s in rd.read_sections()} if rd.sections.is_file() else {}
    for row in rows:
        known = extra.get(row["doc_id"], {})
        record = {k: row[k] if row.get(k) is not None else known.get(k) for k in PROVENANCE}
        if not record.get("section_title"):
            record["section_title"] = titles.get(str(record.get("section_id")))
        if rejected is not None:
            record.update({k: row.get(k) for k in REJECT_FIELDS})
        record["text"] = row.get("text") if row.get("text") is not None else known.get("text")
        yield record


def _head(files: Sequence[Path], equal: dict[str, str | None], n: int) -> list[dict[str, Any]]:
    """The first `n` rows of the files, in order, whose columns equal the given values (None: any)."""
    rows: list[dict[str, Any]] = []
    for path in files:
        for batch in _batches(path):
            mask = None
            for col, value in equal.items():
                if value is not None:
                    if col not in batch.schema.names:
                        raise SdfError(f"{path} has no {col} column to filter on")
                    match = pc.fill_null(pc.equal(batch.column(col), value), False)
                    mask = match if mask is None else pc.and_(mask, match)
            rows += (batch if mask is None else batch.filter(mask)).slice(0, n - len(rows)).to_pylist()
            if len(rows) >= n:
                return rows
    return rows


def _by_id(path: Path, ids: list[Any], key: str) -> dict[Any, dict[str, Any]]:
    """Provenance (and any text) of the given ids from documents or specs; empty if the file is absent."""
    if not path.is_file():
        return {}
    found: dict[Any, dict[str, Any]] = {}
    wanted = pa.array(ids, pa.string())
    for batch in _batches(path):
        found.update((r[key], r) for r in batch.filter(pc.is_in(batch.column(key), wanted)).to_pylist())
    return found


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from iter_batches(path)
    except (OSError, pa.ArrowException) as exc:
        raise SdfError(f"cannot read {path}: {exc}", exit_code=1) from exc


_CONTROLS = dict.fromkeys(c for c in range(0x100) if (c < 0x20 and c not in (9, 10)) or 0x7F <= c < 0xA0)


def printable(text: str) -> str:
    """The text without control characters (terminal escapes, carriage returns, bells): a model's answer
    must never drive the terminal it is shown on. Newlines and tabs stay."""
    return text.translate(_CONTROLS)


def format_document(doc: dict[str, Any], *, color: bool = False, max_chars: int | None = None,
                    raw: bool = False) -> str:
    """One record as readable text; ANSI styling only when `color` is true; control characters in the
    record's own strings are removed unless `raw`."""
    if not raw:
        doc = {k: printable(v) if isinstance(v, str) else v for k, v in doc.items()}
        if doc.get("names"):
            doc["names"] = [printable(str(n)) for n in doc["names"]]

    def style(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    def field(label: str, value: Any) -> str:
        return f"{style(label + ':', dim=True)} {value}"

    def line(*pairs: tuple[str, Any]) -> str | None:
        shown = [field(k, v) for k, v in pairs if v not in (None, "", [])]
        return "   ".join(shown) if shown else None

    section = " ".join(str(x) for x in (doc.get("section_id"), doc.get("section_title")) if x)
    header = " · ".join(
        x for x in (str(doc.get("doc_id")), doc.get("genre"), f"§{section}" if section else "") if x
    )
    lines = [style(f"━━ {header}", bold=True, fg="cyan")]
    names = ", ".join(doc["names"]) if doc.get("names") else None
    tokens = None
    if doc.get("output_tokens") is not None:
        tokens = f"{doc['output_tokens']:,} out / {doc.get('input_tokens') or 0:,} in"
        if doc.get("cache_read_tokens"):
            tokens += f" (+{doc['cache_read_tokens']:,} cached)"
    cost = f"${doc['cost_usd']:.4f}" if doc.get("cost_usd") is not None else None
    scores = " / ".join(
        f"{k.split('_')[0]} {doc[k]:g}" for k in ("quality_score", "judge_score") if doc.get(k) is not None
    )
    for pairs in (
        (("audience", doc.get("audience")), ("persona", doc.get("persona"))),
        (("setting", doc.get("setting")), ("tone", doc.get("tone")), ("names", names)),
        (("idea", doc.get("idea")), ("target words", doc.get("target_words"))),
        (("considerations", "; ".join(doc.get("considerations") or []) or None),
         ("re-deals", doc.get("redeals") or None)),
        (("model", doc.get("model")), ("tokens", tokens), ("cost", cost), ("scores", scores)),
    ):
        text = line(*pairs)
        if text:
            lines.append(text)
    if doc.get("stage") or doc.get("reason"):
        why = f"rejected at {doc.get('stage')}: {doc.get('reason')}"
        if doc.get("detail"):
            why += f" ({doc['detail']})"
        if doc.get("duplicate_of"):
            why += f"; duplicate of {doc['duplicate_of']}"
        lines.append(style(why, fg="red"))
    text = doc.get("text")
    if text is None:
        body = style("(no text)", dim=True)
    elif max_chars is not None and len(text) > max_chars:
        body = text[:max_chars].rstrip() + style(f" … [{len(text) - max_chars:,} more characters]", dim=True)
    else:
        body = text
    return "\n".join(lines) + "\n\n" + body + "\n"


def show_documents(
    run_dir: str | Path,
    *,
    genre: str | None = None,
    section: str | None = None,
    rejected: str | None = None,
    n: int = 5,
    max_chars: int | None = None,
    color: bool | None = None,
    raw: bool = False,
) -> int:
    """Print matching records to stdout (colour only on a terminal unless `color` says otherwise).

    Returns how many were shown; says so on stderr when none match.
    """
    if color is None:
        color = sys.stdout.isatty()
    shown = 0
    for doc in iter_documents(run_dir, genre=genre, section=section, rejected=rejected, n=n):
        text = format_document(doc, color=color, max_chars=max_chars, raw=raw)
        if raw:
            sys.stdout.write(text + "\n")  # click.echo would strip the escape sequences asked for
        else:
            click.echo(text, color=color)
        shown += 1
    if not shown:
        asked = ", ".join(
            f"{k}={v}" for k, v in (("genre", genre), ("section", section), ("rejected", rejected)) if v
        )
        click.echo(f"no documents match{' ' + asked if asked else ''}", err=True)
    return shown
