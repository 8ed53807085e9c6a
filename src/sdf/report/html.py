"""report.html: templates/report.html.j2 rendered from the stats, the samples and the plots' PNGs.

Autoescape is on, so every string from a run (document texts, names, paths) reaches the page as text.
"""

from __future__ import annotations

from typing import Any

import jinja2

from sdf.report.stats import SAMPLES_PER_GENRE

# (anchor, heading) of the report's sections, in page order: a documents run's, then an advice run's.
SECTIONS = (
    ("summary", "Summary"),
    ("genre-mix", "Genre mix"),
    ("coverage", "Section coverage"),
    ("briefs", "Briefs"),
    ("lengths", "Document lengths"),
    ("funnel", "Funnel"),
    ("rejections", "Rejections"),
    ("contamination", "Contamination"),
    ("cost", "Cost and caching"),
    ("dedup", "Duplicate clusters"),
    ("diversity", "Diversity"),
    ("samples", "Sample documents"),
    ("artifacts", "Artifacts"),
)
CHAT_SECTIONS = (
    ("summary", "Summary"),
    ("scenario-mix", "Scenario mix"),
    ("deployments", "Deployments"),
    ("turns", "Turns"),
    ("lengths", "Lengths"),
    ("scores", "Scores"),
    ("funnel", "Funnel"),
    ("rejections", "Rejections"),
    ("contamination", "Contamination"),
    ("cost", "Cost and caching"),
    ("dedup", "Duplicate clusters"),
    ("samples", "Sample chats"),
    ("artifacts", "Artifacts"),
)


def count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def pct(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def usd(value: Any) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3f}" if abs(value) >= 0.01 else f"${value:.4f}"


def num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def tokenizer(tok: dict[str, Any]) -> str:
    parts = [f"{tok['name']} ({tok['kind']})", f"vocabulary {tok['vocab_size']:,}"]
    parts += [f"{k.split('_')[0].upper()} {tok[k]}" for k in ("eos_id", "bos_id") if tok.get(k) is not None]
    return ", ".join(parts)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("sdf.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a renamed stats key fails the render instead of printing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(count=count, pct=pct, usd=usd, num=num, tokenizer=tokenizer)


def render_html(stats: dict[str, Any], samples: dict[str, list[dict[str, Any]]], images: dict[str, str],
                unavailable_samples: str) -> str:
    """The whole report as one page; `images` maps stats parts to base64-encoded PNGs. An advice run's stats
    (stats["product"] == "advice") carry their sample chats themselves."""
    if stats.get("product") == "advice":
        return _ENV.get_template("report.html.j2").render(
            stats=stats, sections=CHAT_SECTIONS, images=images, samples=[], item="chats",
            unavailable_samples=unavailable_samples, samples_per_genre=SAMPLES_PER_GENRE)
    order = [g["genre"] for g in (stats["genre_mix"] or {}).get("genres", [])]
    genres = [g for g in order if g in samples] + sorted(set(samples) - set(order))
    return _ENV.get_template("report.html.j2").render(
        stats=stats, sections=SECTIONS, images=images, samples=[(g, samples[g]) for g in genres], item="documents",
        unavailable_samples=unavailable_samples, samples_per_genre=SAMPLES_PER_GENRE)
