"""Statistics, plots and a self-contained HTML report of a run: see the corpus before training on it.

    stats.py   every number of a documents run, read through the run-directory contract and the ledger
    chats.py   every number of an advice run, the shared parts by stats.py's functions
    plots.py   one matplotlib figure per part of the stats
    html.py    report.html from templates/report.html.j2 (jinja2, autoescaped)

`write_report` renders report.html FROM the numbers of `collect_stats`, so the page and `sdf stats` never disagree.
"""

from __future__ import annotations

import base64
import errno
import os
from pathlib import Path
from typing import Any

from sdf.errors import SdfError
from sdf.report.stats import NEEDS, compute_stats, load_run, why_unavailable
from sdf.run import RunDir, write_bytes


def _product(run_dir: str | Path) -> str:
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise SdfError(f"run directory not found: {rd.path} (pass a run directory such as corpus/<name>)")
    if not rd.is_run():
        return "documents"  # the documents report says what is missing
    return str((rd.read_config().get("run") or {}).get("product") or "documents")  # garbage: one line, exit 2


def _numbers(run_dir: str | Path) -> tuple[RunDir, dict[str, Any], dict[str, list[dict[str, Any]]], str]:
    """(the run, its stats, its sample items by group, why there are no samples) for either product."""
    if _product(run_dir) == "advice":
        from sdf.report.chats import chat_stats

        stats = chat_stats(run_dir)
        return RunDir(Path(run_dir)), stats, {}, why_unavailable(stats["artifacts"], ("sft.parquet",))
    run = load_run(run_dir)
    return run.dir, compute_stats(run), run.samples, why_unavailable(run.artifacts, NEEDS["samples"])


def collect_stats(run_dir: str | Path) -> dict[str, Any]:
    """The run's numbers as a JSON-ready dict; also written to `<run>/stats.json` when the run can be written
    (a read-only run, an archive say, still gets its numbers)."""
    rd, stats, _, _ = _numbers(run_dir)
    if os.access(rd.path, os.W_OK):
        rd.write_stats(stats)
    return stats


def write_report(run_dir: str | Path) -> Path:
    """Write `<run>/report.html` (plots embedded), `plots/*.png` and `stats.json`; return the HTML path."""
    # matplotlib and jinja2 load only here: `sdf stats` needs neither
    from sdf.report.html import render_html
    from sdf.report.plots import PLOTS, png, render_plots

    rd, stats, samples, unavailable = _numbers(run_dir)
    if not os.access(rd.path, os.W_OK):
        raise OSError(errno.EROFS, "the run cannot be written (`sdf stats` prints its numbers)", str(rd.report))
    rd.write_stats(stats)
    rd.plots.mkdir(exist_ok=True)
    images: dict[str, str] = {}
    for name, fig in render_plots(stats).items():
        data = png(fig)
        write_bytes(rd.plots / f"{name}.png", data)
        images[name] = base64.b64encode(data).decode("ascii")
    for name in PLOTS:
        if name not in images:  # a plot from an earlier build must not outlive its data
            (rd.plots / f"{name}.png").unlink(missing_ok=True)
    html = render_html(stats, samples, images, unavailable)
    write_bytes(rd.report, html.encode("utf-8"))
    return rd.report
