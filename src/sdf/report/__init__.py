"""Statistics, plots and a self-contained HTML report of a run: see the corpus before training on it.

    stats.py   every number, read through the run-directory contract and the ledger
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

from sdf.report.stats import NEEDS, compute_stats, load_run, why_unavailable
from sdf.run import write_bytes


def collect_stats(run_dir: str | Path) -> dict[str, Any]:
    """The run's numbers as a JSON-ready dict; also written to `<run>/stats.json` when the run can be written
    (a read-only run, an archive say, still gets its numbers)."""
    run = load_run(run_dir)
    stats = compute_stats(run)
    if os.access(run.dir.path, os.W_OK):
        run.dir.write_stats(stats)
    return stats


def write_report(run_dir: str | Path) -> Path:
    """Write `<run>/report.html` (plots embedded), `plots/*.png` and `stats.json`; return the HTML path."""
    # matplotlib and jinja2 load only here: `sdf stats` needs neither
    from sdf.report.html import render_html
    from sdf.report.plots import PLOTS, png, render_plots

    run = load_run(run_dir)
    if not os.access(run.dir.path, os.W_OK):
        raise OSError(errno.EROFS, "the run cannot be written (`sdf stats` prints its numbers)", str(run.dir.report))
    stats = compute_stats(run)
    run.dir.write_stats(stats)
    run.dir.plots.mkdir(exist_ok=True)
    images: dict[str, str] = {}
    for name, fig in render_plots(stats).items():
        data = png(fig)
        write_bytes(run.dir.plots / f"{name}.png", data)
        images[name] = base64.b64encode(data).decode("ascii")
    for name in PLOTS:
        if name not in images:  # a plot from an earlier build must not outlive its data
            (run.dir.plots / f"{name}.png").unlink(missing_ok=True)
    html = render_html(stats, run.samples, images, why_unavailable(run.artifacts, NEEDS["samples"]))
    write_bytes(run.dir.report, html.encode("utf-8"))
    return run.dir.report
