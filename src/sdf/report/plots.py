"""The report's figures: each takes one part of the stats and returns a Figure, or None when there is nothing
to draw. Figures are at most REPORT_WIDTH inches wide at 100 dpi, so the page shows them at their true size
and their text stays legible.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Figure objects render through Agg without touching pyplot's global backend (safe inside notebooks).
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, StrMethodFormatter

REPORT_WIDTH = 10.8  # inches: the page's content column is 1080 px wide
ROW = 0.3  # inches per bar or heatmap row
TARGET_COLOR = "#b8c2cc"
ACTUAL_COLOR = "#2f6690"
MEDIAN_COLOR = "#d1495b"
STAGE_COLORS = {
    "generate": "#8e6c8a",
    "quality": "#d1495b",
    "judge": "#edae49",
    "decontaminate": "#30638e",
    "dedup": "#00798c",
    "diversity": "#66a182",
}


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(min(width, REPORT_WIDTH), height), dpi=100, layout="constrained")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _rows(ax: Axes, labels: Sequence[str], fontsize: float = 9, slots: int = 0) -> None:
    """Label horizontal rows top-down; `slots` rows of room, so panels side by side share a bar height."""
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=fontsize)
    ax.set_ylim(max(slots, len(labels)) - 0.5, -0.5)
    ax.spines[["top", "right"]].set_visible(False)


def _barh(ax: Axes, labels: Sequence[str], values: Sequence[float], color: Any = ACTUAL_COLOR, slots: int = 0
          ) -> None:
    ax.barh(np.arange(len(values)), values, 0.65, color=color)
    _rows(ax, labels, slots=slots)
    ax.grid(axis="x", alpha=0.3)


def plot_genre_mix(mix: dict[str, Any]) -> Figure:
    rows = mix["genres"]
    y = np.arange(len(rows))
    fig = _figure(8.5, 1.0 + ROW * len(rows))
    ax = fig.add_subplot()
    has_target = mix["target_source"] is not None
    h = 0.4 if has_target else 0.65
    if has_target:
        ax.barh(y - h / 2, [100 * (r["target"] or 0) for r in rows], h, color=TARGET_COLOR, label="target (plan)")
    ax.barh(y + (h / 2 if has_target else 0), [100 * r["actual"] for r in rows], h, color=ACTUAL_COLOR,
            label=f"actual ({mix['actual_source']})")
    _rows(ax, [r["genre"] for r in rows])
    ax.set_xlabel("share of documents (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_coverage(cov: dict[str, Any]) -> Figure | None:
    if not cov["sections"] or not cov["genres"]:
        return None
    counts = np.asarray(cov["counts"], dtype=float)
    n_rows, n_cols = counts.shape
    fig = _figure(3.6 + 0.34 * n_cols, 1.9 + 0.32 * n_rows)
    ax = fig.add_subplot()
    vmax = max(1.0, float(counts.max()))
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_yticks(np.arange(n_rows), [_clip(s["title"], 36) for s in cov["sections"]], fontsize=8)
    ax.set_xticks(np.arange(n_cols), cov["genres"], rotation=50, ha="right", rotation_mode="anchor", fontsize=8)
    for tick, s in zip(ax.get_yticklabels(), cov["sections"], strict=True):
        if not s["total"]:
            tick.set_color("#c0392b")  # sections with no documents at all stand out
    if counts.size <= 1500:
        for (i, j), v in np.ndenumerate(counts):
            if v:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 * vmax else "#1b2631")
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.01, label="documents")
    bar.locator = MaxNLocator(integer=True)  # counts: no 0.25 of a document
    bar.update_ticks()
    return fig


def plot_lengths(lengths: dict[str, Any]) -> Figure:
    """One row per genre, one dot per document: readable with one document per genre or hundreds."""
    items = list(lengths["per_genre"].items())
    fig = _figure(8.5, 1.0 + ROW * len(items))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the same run draws the same picture
    for i, (_, entry) in enumerate(items):
        values = np.asarray(entry["values"], dtype=float)
        ax.scatter(values, i + rng.uniform(-0.22, 0.22, len(values)), s=14, alpha=0.6, color=ACTUAL_COLOR,
                   linewidths=0)
        ax.plot([entry["median"]] * 2, [i - 0.32, i + 0.32], color=MEDIAN_COLOR, linewidth=2)
    _rows(ax, [f"{g} (n={e['n']})" for g, e in items])
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel(f"{lengths.get('unit', 'model output tokens per document')} (red: median)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_funnel(funnel: list[dict[str, Any]]) -> Figure | None:
    steps = [s for s in funnel if s["count"] is not None]
    if len(steps) < 2:
        return None  # one bar is no funnel; the table says the same
    fig = _figure(8.5, 0.9 + 0.4 * len(steps))
    ax = fig.add_subplot()
    counts = [s["count"] for s in steps]
    _barh(ax, [s["label"] for s in steps], counts)
    top = max(max(counts), 1)
    for i, c in enumerate(counts):
        ax.text(c + top * 0.01, i, f"{c:,}  ({100 * c / top:.0f}%)", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(funnel[0].get("item", "documents"))
    return fig


def plot_rejections(rej: dict[str, Any]) -> Figure | None:
    rows = rej["by_reason"]
    if not rows:
        return None
    fig = _figure(8.5, 0.9 + ROW * len(rows))
    ax = fig.add_subplot()
    _barh(ax, [f"{r['stage']}: {r['reason']}" for r in rows], [r["count"] for r in rows],
          [STAGE_COLORS.get(r["stage"], "#7f8c8d") for r in rows])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rejected documents")
    return fig


def plot_cost(cost: dict[str, Any]) -> Figure | None:
    if not cost["total"]["requests"]:
        return None
    n = max(len(cost["by_purpose"]), len(cost["by_model"]))
    fig = _figure(REPORT_WIDTH, 1.3 + 0.45 * n)
    for k, (key, title) in enumerate((("purpose", "Cost by stage"), ("model", "Cost by model"))):
        ax = fig.add_subplot(1, 3, k + 1)
        rows = cost[f"by_{key}"]
        _barh(ax, [_clip(str(r[key]), 22) for r in rows], [r["cost_usd"] for r in rows], slots=n)
        ax.xaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(title, fontsize=10)
    ax = fig.add_subplot(1, 3, 3)
    rows = cost["by_purpose"]
    left = np.zeros(len(rows))
    for key, label, color in (("cache_read_tokens", "cache read", "#66a182"),
                              ("cache_creation_tokens", "cache write", "#edae49"),
                              ("input_tokens", "uncached", TARGET_COLOR)):
        values = np.asarray([r[key] for r in rows], dtype=float)
        ax.barh(np.arange(len(rows)), values, 0.65, left=left, color=color, label=label)
        left += values
    _rows(ax, [r["purpose"] for r in rows], slots=n)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    share = cost["total"]["cache_read_share"]
    ax.set_title("Prompt tokens" + (f" ({100 * share:.0f}% cache reads)" if share is not None else ""), fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower right", ncols=3, frameon=False, fontsize=8)
    return fig


def plot_dedup_clusters(dedup: dict[str, Any]) -> Figure | None:
    hist = dedup["size_histogram"]
    if not hist:
        return None
    fig = _figure(1.8 + 0.5 * hist[-1]["size"], 2.6)
    ax = fig.add_subplot()
    sizes = range(2, hist[-1]["size"] + 1)  # every size from a pair up, so one cluster is not one wide block
    ax.bar([h["size"] for h in hist], [h["clusters"] for h in hist], color="#00798c", width=0.6)
    ax.set_xticks(sizes)
    ax.set_xlim(1.2, max(sizes) + 0.8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("cluster size (kept document + its duplicates)")
    ax.set_ylabel("clusters")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_diversity(div: dict[str, Any]) -> Figure | None:
    panels = [(key, label, title) for key, label, title in (("top_names", "name", "Most frequent names"),
                                                             ("top_openers", "opener", "Most frequent openers"))
              if div[key]]
    if not panels:
        return None
    n = max(len(div[key]) for key, _, _ in panels)
    fig = _figure(5.4 * len(panels), 1.0 + 0.26 * n)
    for k, (key, label, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        rows = div[key]
        _barh(ax, [_clip(r[label], 34) for r in rows], [r["count"] for r in rows], slots=n)
        ax.tick_params(axis="y", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("documents")
        ax.set_title(title, fontsize=10)
    return fig


def plot_mix(mix: dict[str, Any]) -> Figure | None:
    """An advice run's chats by kind of scenario."""
    rows = mix["kinds"]
    if not rows:
        return None
    fig = _figure(8.5, 0.9 + ROW * len(rows))
    ax = fig.add_subplot()
    _barh(ax, [r["kind"] for r in rows], [r["chats"] for r in rows])
    for i, r in enumerate(rows):
        ax.text(r["chats"], i, f"  {r['chats']:,} ({100 * r['share']:.0f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(r["chats"] for r in rows) * 1.25)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chats")
    return fig


def plot_scores(scores: dict[str, Any]) -> Figure | None:
    """Histograms of the judge's and the quality rules' scores of the final items."""
    items = list(scores.items())
    fig = _figure(4.2 * len(items), 2.6)
    for i, (name, entry) in enumerate(items, 1):
        ax = fig.add_subplot(1, len(items), i)
        edges = np.asarray(entry["hist"]["edges"])
        ax.bar(edges[:-1], entry["hist"]["counts"], width=np.diff(edges), align="edge", color=ACTUAL_COLOR)
        ax.axvline(entry["median"], color=MEDIAN_COLOR, linewidth=2)
        ax.set_xlabel(f"{name.replace('_', ' ')} (red: median)")
        ax.spines[["top", "right"]].set_visible(False)
    return fig


PLOTS: dict[str, Callable[[Any], Figure | None]] = {
    "mix": plot_mix,
    "scores": plot_scores,
    "genre_mix": plot_genre_mix,
    "coverage": plot_coverage,
    "lengths": plot_lengths,
    "funnel": plot_funnel,
    "rejections": plot_rejections,
    "cost": plot_cost,
    "dedup_clusters": plot_dedup_clusters,
    "diversity": plot_diversity,
}


CHAT_PLOTS = ("mix", "scores")  # parts only an advice run's stats have


def render_plots(stats: dict[str, Any]) -> dict[str, Figure]:
    """Figures keyed by the stats part they draw, for every part that has something to draw."""
    figures = {}
    for part, make in PLOTS.items():
        fig = make(stats[part]) if stats.get(part) else None
        if fig is not None:
            figures[part] = fig
    return figures


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()
