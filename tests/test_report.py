"""The report, `sdf stats` numbers and `sdf inspect` against a realistic run directory."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from run_fixture import ARTIFACTS, TRICKY_TEXT, build_run

from sdf.errors import SdfError
from sdf.inspect import format_document, iter_documents, show_documents
from sdf.report import PLOT_NAMES, SECTIONS, collect_stats, write_report

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("runs"), docs_per_section=12)


@pytest.fixture(scope="module")
def report(run: Path) -> str:
    path = write_report(run)
    assert path == run / "report.html"
    return path.read_text(encoding="utf-8")


def column(run: Path, name: str, col: str) -> list:
    return pq.read_table(run / name, columns=[col]).column(col).to_pylist()


# --- report.html --------------------------------------------------------------------------------------


def test_report_has_every_section_with_a_heading_and_a_toc_link(report: str) -> None:
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in report
        assert f'href="#{sid}"' in report
    assert "Not available" not in report  # the full fixture has every artifact


def test_report_embeds_its_plots_and_saves_them_beside_it(run: Path, report: str) -> None:
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert len(embedded) == len(PLOT_NAMES)
    for data in embedded:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    for name in PLOT_NAMES:
        assert (run / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    assert "<script" not in report.replace("&lt;script", "")  # no JavaScript, no external resources
    assert "http://" not in report and "https://" not in report


def test_sample_text_is_escaped(report: str) -> None:
    assert "<script>alert" not in report
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt; &amp; other markup" in report
    assert "Tom &amp; Jerry would agree that 3 &lt; 4 &amp;&amp; 5 &gt; 2." in report
    assert TRICKY_TEXT not in report


def test_samples_show_two_documents_per_genre(run: Path, report: str) -> None:
    samples = report.split('<section id="samples">')[1].split("</section>")[0]
    genres = set(column(run, "corpus.parquet", "genre"))
    assert samples.count('<article class="doc">') == sum(
        min(2, n) for n in Counter(column(run, "corpus.parquet", "genre")).values()
    )
    for genre in genres:
        assert f"<h3>{genre}</h3>" in samples


def test_report_shows_the_numbers_of_the_stats(run: Path, report: str) -> None:
    stats = json.loads((run / "stats.json").read_text())
    assert f"<b>{stats['run']['corpus_docs']:,}</b>" in report
    total = stats["cost"]["total"]["cost_usd"]
    assert f"${total:,.2f}" in report
    for step in stats["funnel"]:
        assert f"<td>{step['label']}</td><td class=\"n\">{step['count']:,}</td>" in report
    for row in stats["rejections"]["by_reason"]:
        cells = f"<td>{row['stage']}</td><td>{row['reason']}</td><td class=\"n\">{row['count']:,}</td>"
        assert cells in report


# --- stats ------------------------------------------------------------------------------------------


def test_stats_are_json_and_written_beside_the_run(run: Path) -> None:
    stats = collect_stats(run)
    on_disk = json.loads((run / "stats.json").read_text())
    on_disk["run"]["generated_at"] = stats["run"]["generated_at"]
    assert on_disk == json.loads(json.dumps(stats))
    assert stats["unavailable"] == {}


def test_stats_count_what_the_artifacts_hold(run: Path) -> None:
    stats = collect_stats(run)
    corpus_genres = Counter(column(run, "corpus.parquet", "genre"))
    mix = {g["genre"]: g for g in stats["genre_mix"]["genres"]}
    assert {g: m["docs"] for g, m in mix.items() if m["docs"]} == dict(corpus_genres)
    assert sum(m["target"] for m in mix.values()) == pytest.approx(1.0)
    assert stats["genre_mix"]["target_source"] == "config.toml [plan].genre_weights"

    funnel = {s["step"]: s["count"] for s in stats["funnel"]}
    assert funnel["specs"] == len(column(run, "specs.parquet", "spec_id"))
    assert funnel["documents"] == len(column(run, "documents.parquet", "doc_id"))
    assert funnel["corpus"] == sum(corpus_genres.values())
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert funnel["packed"] == manifest["documents"]
    assert funnel["specs"] >= funnel["responses"] >= funnel["documents"] >= funnel["after_quality"]
    assert funnel["after_quality"] >= funnel["after_dedup"] >= funnel["corpus"]

    stages = column(run, "rejected", "stage")
    reasons = column(run, "rejected", "reason")
    assert stats["rejections"]["total"] == len(stages)
    assert {s["stage"]: s["count"] for s in stats["rejections"]["by_stage"]} == dict(Counter(stages))
    by_reason = {(r["stage"], r["reason"]): r["count"] for r in stats["rejections"]["by_reason"]}
    assert by_reason == dict(Counter(zip(stages, reasons, strict=True)))

    cov = stats["coverage"]
    assert sum(map(sum, cov["counts"])) == funnel["corpus"]
    assert len(cov["counts"]) == len(cov["sections"]) and len(cov["counts"][0]) == len(cov["genres"])
    assert cov["uncovered"] == [cov["sections"][-1]["id"]]  # the fixture plans nothing for the last section

    assert set(stats["lengths"]["per_genre"]) == set(corpus_genres)
    assert stats["lengths"]["unit"] == "tokens"
    assert sum(e["n"] for e in stats["lengths"]["per_genre"].values()) == funnel["corpus"]


def test_cost_and_cache_share_come_from_the_ledger(run: Path) -> None:
    cost = collect_stats(run)["cost"]
    con = sqlite3.connect(run / "store.sqlite")
    inp, read, write, usd = con.execute(
        "SELECT SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), SUM(cost_usd) "
        "FROM requests"
    ).fetchone()
    per_purpose = dict(con.execute("SELECT purpose, SUM(cost_usd) FROM requests GROUP BY purpose"))
    con.close()
    assert cost["total"]["cost_usd"] == pytest.approx(usd)
    assert cost["total"]["cache_read_share"] == pytest.approx(read / (inp + read + write), abs=1e-6)
    assert {r["purpose"]: r["cost_usd"] for r in cost["by_purpose"]} == pytest.approx(per_purpose)
    assert {r["model"] for r in cost["by_model"]} == {"claude-sonnet-4-5", "claude-haiku-4-5"}


def test_dedup_cluster_sizes_count_the_kept_document_and_its_duplicates(run: Path) -> None:
    dedup = collect_stats(run)["dedup_clusters"]
    pointers = [p for p in column(run, "rejected", "duplicate_of") if p]
    expected = Counter(1 + n for n in Counter(pointers).values())
    assert {h["size"]: h["clusters"] for h in dedup["size_histogram"]} == dict(expected)
    assert dedup["duplicates"] == len(pointers)
    assert dedup["largest"] == max(expected)


def test_diversity_comes_from_the_manifest(run: Path) -> None:
    div = collect_stats(run)["diversity"]
    manifest = json.loads((run / "shards" / "manifest.json").read_text())["diversity"]
    assert div["distinct_n"] == manifest["distinct_n"]
    assert div["metrics"]["compression_ratio"] == manifest["compression_ratio"]
    assert [(r["name"], r["count"]) for r in div["top_names"]] == [tuple(x) for x in manifest["top_names"]]
    assert div["top_openers"][0]["opener"] == manifest["top_openers"][0][0]


def test_packing_summary_reads_the_manifest(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    packing = collect_stats(run)["packing"]
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert (packing["total_docs"], packing["total_tokens"], packing["total_sequences"]) == (
        manifest["documents"], manifest["tokens"], manifest["sequences"])
    assert packing["shards"] == 2 and packing["shard_files"] == 4 and packing["shard_formats"] == ["megatron"]
    assert packing["tokenizer"]["name"] == "cl100k_base" and packing["seq_len"] == 2048
    # Older or other packers spell the totals total_docs / total_tokens / total_sequences.
    for key in ("documents", "tokens", "sequences"):
        manifest["total_" + ("docs" if key == "documents" else key)] = manifest.pop(key)
    (run / "shards" / "manifest.json").write_text(json.dumps(manifest))
    again = collect_stats(run)["packing"]
    assert again["total_docs"] == packing["total_docs"] and again["total_tokens"] == packing["total_tokens"]


# --- missing and broken artifacts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kept", "unavailable"),
    [
        (("config.toml", "sections.jsonl", "specs.parquet"),  # a dry run: planned, nothing generated
         {"lengths", "rejections", "cost", "dedup_clusters", "diversity", "packing"}),
        (tuple(a for a in ARTIFACTS if a != "shards"), {"diversity", "packing"}),
        (tuple(a for a in ARTIFACTS if a not in ("store.sqlite", "config.toml")), set()),
        ((), {"genre_mix", "coverage", "lengths", "funnel", "rejections", "cost", "dedup_clusters",
              "diversity", "packing"}),
    ],
    ids=["dry-run", "no-shards", "no-ledger-no-config", "empty"],
)  # fmt: skip
def test_missing_artifacts_make_parts_not_available(tmp_path: Path, kept: tuple, unavailable: set) -> None:
    run = build_run(tmp_path, artifacts=kept)
    html = write_report(run).read_text()
    stats = json.loads((run / "stats.json").read_text())
    assert set(stats["unavailable"]) == unavailable
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert html.count('class="na">Not available') >= len(unavailable - {"packing"})


def test_fallbacks_without_ledger_or_config(tmp_path: Path) -> None:
    run = build_run(tmp_path, artifacts=[a for a in ARTIFACTS if a not in ("store.sqlite", "config.toml")])
    stats = collect_stats(run)
    assert stats["cost"]["source"] == "documents.parquet (generation only)"
    assert stats["genre_mix"]["target_source"] == "shards/manifest.json diversity.genre_mix"
    assert next(s for s in stats["funnel"] if s["step"] == "responses")["count"] is None


def test_unreadable_artifacts_are_reported_not_raised(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    (run / "corpus.parquet").write_bytes(b"not a parquet file")
    (run / "shards" / "manifest.json").write_text("{ torn")
    (run / "store.sqlite").unlink()
    (run / "store.sqlite").write_bytes(b"garbage" * 100)
    html = write_report(run).read_text()
    stats = json.loads((run / "stats.json").read_text())
    assert stats["artifacts"]["corpus.parquet"].startswith("unreadable")
    assert stats["artifacts"]["shards/manifest.json"].startswith("unreadable")
    assert stats["artifacts"]["store.sqlite"].startswith("unreadable")
    assert stats["lengths"]["source"] == "documents.parquet"  # falls back to all extracted documents
    assert "unreadable" in html


def test_a_missing_run_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SdfError, match="run directory not found"):
        collect_stats(tmp_path / "nope")


# --- inspect ----------------------------------------------------------------------------------------


def test_inspect_filters_by_genre_and_section(run: Path) -> None:
    docs = list(iter_documents(run, genre="essay", n=100))
    assert docs and {d["genre"] for d in docs} == {"essay"}
    assert len(docs) == Counter(column(run, "corpus.parquet", "genre"))["essay"]
    section = docs[0]["section_id"]
    narrowed = list(iter_documents(run, genre="essay", section=section, n=100))
    assert narrowed and all(d["section_id"] == section for d in narrowed)
    assert len(list(iter_documents(run, n=3))) == 3
    assert list(iter_documents(run, genre="no_such_genre")) == []


def test_inspect_records_carry_provenance(run: Path) -> None:
    doc = next(iter_documents(run, n=1))
    assert doc["text"] == TRICKY_TEXT
    for key in ("doc_id", "genre", "section_id", "section_title", "audience", "persona", "setting", "names",
                "model", "output_tokens", "cost_usd"):
        assert key in doc
    assert doc["model"] == "claude-sonnet-4-5" and doc["section_title"] == "Overview"


def test_inspect_rejects_by_reason_or_stage(run: Path) -> None:
    dups = list(iter_documents(run, rejected="dedup", n=100))
    assert dups and all(d["stage"] == "dedup" and d["duplicate_of"] for d in dups)
    slop = list(iter_documents(run, rejected="near_duplicate", n=100))
    assert all(d["reason"] == "near_duplicate" for d in slop)
    failed = next(iter_documents(run, rejected="api_error", n=1))
    assert failed["text"] is None and failed["audience"]  # provenance from the spec when no document exists
    assert "rejected at generate: api_error" in format_document(failed)
    everything = list(iter_documents(run, rejected="all", n=1000))
    assert len(everything) == len(column(run, "rejected", "doc_id"))


def test_inspect_output_is_plain_when_piped(run: Path) -> None:
    code = (
        "from sdf.inspect import show_documents; "
        f"show_documents({str(run)!r}, rejected='dedup', n=2, max_chars=80)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""}).stdout  # fmt: skip
    assert "\x1b[" not in out
    assert out.count("━━ ") == 2 and "rejected at dedup" in out and "duplicate of" in out
    assert "\x1b[" in format_document(next(iter_documents(run, n=1)), color=True)


def test_inspect_says_so_when_nothing_matches(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert show_documents(run, genre="no_such_genre") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no documents match genre=no_such_genre" in captured.err


def test_inspect_explains_missing_artifacts(tmp_path: Path) -> None:
    dry = build_run(tmp_path, artifacts=["specs.parquet"])
    with pytest.raises(SdfError, match="no documents"):
        list(iter_documents(dry))
    with pytest.raises(SdfError, match="rejected not found"):
        list(iter_documents(dry, rejected="slop"))
