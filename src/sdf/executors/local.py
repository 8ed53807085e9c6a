"""The local executor's memory: a stage whose inputs, settings and code are unchanged since it last completed,
and whose outputs are still as it left them, is skipped, and its summary from then is returned.

Inputs are compared by content (xxh3 of every byte: an upstream stage that ran again and wrote the same
bytes does not make this one run again); outputs by size and modification time (cheap, and enough to see a
file replaced or removed by hand). Settings are the run's config_hash (every setting but where it runs),
plus the contents of the files settings point to (eval lists, mix sources, tokenizers, the prompts) and
sdf's version. What a stage records goes to `<run>/stages.json` only after it completed; a stage stopped
early (a judge out of budget) records nothing, so the next run resumes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import xxhash

import sdf
from sdf.run import RunDir, write_json

CHUNK = 1 << 20  # bytes read at a time while hashing: memory stays flat however large the input


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                if not name.endswith(".tmp"):
                    yield Path(root) / name


def _hash_into(h: Any, path: Path) -> None:
    h.update(str(path.name).encode() + b"\0")
    for file in _files(path):
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as f:
            while block := f.read(CHUNK):
                h.update(block)


def _setting_files(run: Any) -> list[Path]:
    """Files and folders the settings point to, whose contents shape a stage's output."""
    s = run.settings
    paths = [*s.dedup.decontaminate, *(m.rsplit(":", 1)[0] for m in s.pack.mix), s.pack.tokenizer,
             s.advice.chat_tokenizer, str(run.catalog.root)]
    return [Path(p) for p in paths if p and Path(p).exists()]


def stage_key(run: Any, name: str, reads: tuple[str, ...]) -> str | None:
    """The content key of running stage `name` now; None when an input is missing (the stage will say so)."""
    h = xxhash.xxh3_128()
    h.update(f"{sdf.__version__}\0{run.settings.config_hash()}\0{name}\0".encode())
    for attr in reads:
        path = getattr(run.dir, attr)
        if not path.exists():
            return None
        _hash_into(h, path)
    for path in _setting_files(run):
        _hash_into(h, path)
    return h.hexdigest()


def fingerprint(paths: list[Path]) -> dict[str, list[int] | None]:
    """Size and modification time of every file of `paths` (None for a path that does not exist)."""
    out: dict[str, list[int] | None] = {}
    for path in paths:
        files = list(_files(path))
        if not files:
            out[str(path)] = None
        for file in files:
            st = file.stat()
            out[str(file)] = [st.st_size, st.st_mtime_ns]
    return out


def _records(rd: RunDir) -> dict[str, Any]:
    try:
        return json.loads(rd.stage_keys.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every stage runs, which is always safe


def skipping(run: Any, name: str, reads: tuple[str, ...], writes: Callable[[], list[Path]],
             fn: Callable[..., dict[str, Any] | None]) -> Callable[..., dict[str, Any] | None]:
    """`fn` (a stage over `run`) that returns its recorded summary, marked "skipped", instead of running when
    nothing it depends on has changed; otherwise runs it and records what it ran on."""

    def run_or_skip(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        rd = run.dir
        key = stage_key(run, name, reads)
        done = _records(rd).get(name)
        if key and done and done.get("key") == key and done.get("outputs") == fingerprint(writes()):
            return {**done["summary"], "skipped": True}
        summary = fn(*args, **kwargs)
        if key and isinstance(summary, dict) and not summary.get("stopped"):
            records = _records(rd)
            records[name] = {"key": key, "outputs": fingerprint(writes()), "summary": summary}
            write_json(rd.stage_keys, records)
        return summary

    return run_or_skip
