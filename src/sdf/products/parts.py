"""Generation past one machine: `sdf generate RUN --shard i/n` and `sdf merge PARTS... --into RUN`.

A part is a run directory of its own, `RUN/parts/<i>-of-<n>/`: RUN's config.toml and sections.jsonl,
its own ledger (store.sqlite, started as a copy of RUN's, so nothing RUN already paid for is paid
again), its own specs.parquet (the part's specs, settled) and documents.parquet. Part i holds the
specs in blocks of `ideas_per_request` consecutive plan positions whose block number is i mod n:
disjoint across parts, and a spec never changes part when the plan grows (prefix-stable). A part
also sends the pool extensions and the ideas requests its briefs depend on; parts may share those,
and merging keeps one answer per request key.

`sdf merge` copies every part's ledger rows into RUN's ledger (a row RUN lacks, or one RUN has not
answered), takes the parts' settled specs as RUN's specs and extracts documents.parquet from the
merged ledger: no request is sent. A later `sdf generate RUN` sends only what no part answered.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from sdf.config import Settings
from sdf.errors import SdfError
from sdf.llm import Backend
from sdf.llm.engine import RunSummary
from sdf.products.context import Run, open_run
from sdf.run import RunDir

PART_FILE = "part.json"
# [llm] keys that change how requests travel, not what they ask: parts may differ in them
TRANSPORT = re.compile(r"concurrency|requests_per_minute|retries|retry|failures|timeout|deadline|drain|backoff|batch"
                       r"|poll|cache_ttl")


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise SdfError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def part_dir(run_dir: Path, i: int, n: int) -> Path:
    return Path(run_dir) / "parts" / f"{i}-of-{n}"


def shard_of(index: int, block: int, n: int) -> int:
    """The part that holds the spec at plan position `index`."""
    return (index // block) % n


def content_settings(settings: Settings) -> dict[str, Any]:
    """The settings that decide what is asked: parts merge only when these are equal."""
    data = settings.to_dict()
    run = {k: v for k, v in data["run"].items() if k not in ("out", "name")}
    llm = {k: v for k, v in data["llm"].items() if not TRANSPORT.search(k)}
    return {"run": run, "plan": data["plan"], "llm": llm, "advice": data["advice"]}


def open_part(run: Run, i: int, n: int, overrides: dict | None) -> Run:
    """RUN's part i of n, created on first use from RUN's config, sections and ledger."""
    path = part_dir(run.dir.path, i, n)
    if not (path / PART_FILE).is_file():
        path.mkdir(parents=True, exist_ok=True)
        for name in ("config.toml", "sections.jsonl"):
            shutil.copyfile(run.dir.path / name, path / name)
        if run.dir.store.exists() and not (path / "store.sqlite").exists():
            _copy_ledger(run.dir.store, path / "store.sqlite")
        (path / PART_FILE).write_text(json.dumps({"shard": i, "of": n}) + "\n", encoding="utf-8")
    return open_run(path, overrides, write=True)


def _copy_ledger(source: Path, target: Path) -> None:
    """A consistent copy of a ledger another process may be reading (SQLite's backup, via a temp file)."""
    tmp = target.with_suffix(".sqlite.tmp")
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(tmp)) as dst:
        src.backup(dst)
    tmp.replace(target)


def generate_part(part: Run, backend: Backend, i: int, n: int, progress: bool = True) -> RunSummary:
    """products.documents.generate_stage for the specs of part i of n: the pool extensions and the ideas
    their briefs depend on, then their documents and re-deals; specs.parquet holds the part's specs."""
    from sdf.llm.requests import unsuitable_document
    from sdf.products.briefs import Briefs, expand_stage, padded_plan
    from sdf.products.documents import _final_row, _send_documents, plan_stage

    cfg = part.settings.plan
    block = cfg.ideas_per_request
    with closing(part.ledger()) as ledger:
        pools, summary = expand_stage(part, ledger, backend, progress)
        if summary.stopped:
            return summary
        padded, size = padded_plan(part, pools)
        plan_stage(part, pools, padded[:size])
        mine = [k for k in range(size) if shard_of(k, block, n) == i]
        if not mine:
            part.dir.write_specs([])
            return summary
        end = mine[-1] + 1  # the ideas of every block up to the part's last one: later waves read earlier ones
        briefs = Briefs(part, ledger, backend, pools, progress)
        settled, waiting = briefs.ideas(padded[: end + (-end) % block], end)
        summary.add(briefs.summary)
        specs = [settled[k] for k in mine]
        for _ in range(cfg.max_redeals + 1):
            ready = [s for s in specs if not s["unsuitable"] and s["spec_id"] not in waiting]
            if not ready or summary.stopped:
                break
            summary.add(_send_documents(part, ledger, ready, progress, backend))
            redo = {}
            for k, spec in enumerate(specs):
                row = _final_row(part, ledger, spec) if spec["spec_id"] not in waiting else None
                reason = unsuitable_document(row["response_text"]) if row is not None else None
                if reason and not spec["unsuitable"]:
                    redo[k] = briefs.redeal(spec, reason)
            if not redo:
                break
            specs = [redo.get(k, s) for k, s in enumerate(specs)]
            briefs.summary = RunSummary()
            specs, waiting = briefs.alone(specs, waiting)
            summary.add(briefs.summary)
        part.dir.write_specs(specs)
        return summary


# -- merge ---------------------------------------------------------------------------------------------


def _check_part(path: Path, into: Run) -> Run:
    rd = RunDir(path)
    rd.require_run()
    if not (path / PART_FILE).is_file():
        raise SdfError(f"{path} is not a part of a sharded generation (no {PART_FILE}); make parts with "
                       "`sdf generate RUN --shard i/n`")
    if not rd.store.exists() or not rd.specs.exists():
        raise SdfError(f"{path} has not generated anything yet; run `sdf generate RUN --shard i/n` first")
    part = open_run(path)
    if (path / "sections.jsonl").read_bytes() != (into.dir.path / "sections.jsonl").read_bytes():
        raise SdfError(f"{path} was planned from another constitution than {into.dir.path}; merge only parts of "
                       "one run")
    mine, theirs = content_settings(part.settings), content_settings(into.settings)
    if mine != theirs:
        differ = sorted(f"[{t}].{k}" for t in mine for k in {*mine[t], *theirs[t]}
                        if mine[t].get(k) != theirs[t].get(k))
        raise SdfError(f"{path} was made with other settings than {into.dir.path} ({', '.join(differ)}); merge "
                       "only parts of one run")
    with closing(part.ledger()) as ledger:
        if (ledger.has_intents() and ledger.open_intents()) or ledger.active_batches():
            raise SdfError(f"{path} still has batches in flight; finish them with `sdf generate RUN --shard i/n` "
                           "before merging")
    return part


def merge_ledger(into: Path, part: Path) -> tuple[int, int]:
    """Copy `part`'s requests into the ledger at `into` where it lacks them or has no answer; returns
    the rows copied and the answered keys whose answer differs (the first one is kept). Attempts and
    prefixes of the copied rows come along."""
    with closing(sqlite3.connect(into)) as db:
        db.execute("ATTACH DATABASE ? AS part", (str(part),))
        columns = [r[1] for r in db.execute("PRAGMA main.table_info(requests)")]
        theirs = {r[1] for r in db.execute("PRAGMA part.table_info(requests)")}
        shared = ", ".join(c for c in columns if c in theirs)
        with db:
            db.execute("CREATE TEMP TABLE copied AS SELECT p.key FROM part.requests p LEFT JOIN main.requests r "
                       "ON r.key = p.key WHERE r.key IS NULL OR (r.status != 'ok' AND p.status = 'ok')")
            db.execute(f"INSERT OR REPLACE INTO main.requests ({shared}) SELECT {shared} FROM part.requests "
                       "WHERE key IN (SELECT key FROM copied)")
            db.execute("INSERT INTO main.attempts (key, mode, status, http_status, error, batch_id, at) "
                       "SELECT key, mode, status, http_status, error, batch_id, at FROM part.attempts "
                       "WHERE key IN (SELECT key FROM copied)")
            db.execute("INSERT OR IGNORE INTO main.prefixes SELECT * FROM part.prefixes")
            db.execute("INSERT OR IGNORE INTO main.batches SELECT * FROM part.batches")
            copied = db.execute("SELECT count(*) FROM copied").fetchone()[0]
            conflicts = db.execute("SELECT count(*) FROM part.requests p JOIN main.requests r ON r.key = p.key "
                                   "WHERE r.status = 'ok' AND p.status = 'ok' AND r.response_text IS NOT "
                                   "p.response_text").fetchone()[0]
            db.execute("DROP TABLE copied")
        db.execute("DETACH DATABASE part")
    return copied, conflicts


def merge_parts(into: Run, parts: list[Path]) -> dict[str, Any]:
    """Merge the parts' ledgers and settled specs into `into`, then extract its documents (no request)."""
    from sdf.products.documents import extract_stage

    opened = [_check_part(Path(p), into) for p in parts]
    with closing(into.ledger()):  # creates the ledger's tables when RUN has none yet
        pass
    counts = [merge_ledger(into.dir.store, p.dir.store) for p in opened]
    specs: dict[str, dict] = {}
    for part in opened:
        for spec in part.dir.read_specs():
            specs.setdefault(spec["spec_id"], spec)
    into.dir.write_specs([specs[k] for k in sorted(specs)])  # spec ids start with their plan position
    shutil.copyfile(opened[0].dir.plan, into.dir.plan)
    extracted = extract_stage(into)
    return {"parts": len(opened), "rows": sum(c for c, _ in counts), "conflicts": sum(c for _, c in counts),
            "specs": len(specs), **extracted}
