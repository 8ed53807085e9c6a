"""The report, `sdf stats` numbers and `sdf inspect`, on a real build against the fake API (report_build.py)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import markupsafe
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import run_sdf
from report_build import DUPLICATE_GENRES, FAILING_GENRE, GENRE_WEIGHTS, MARKUP, MARKUP_GENRE

from sdf.errors import SdfError
from sdf.inspect import format_document, iter_documents, show_documents
from sdf.report import collect_stats, write_report
from sdf.report.html import SECTIONS, usd
from sdf.report.plots import CHAT_PLOTS, PLOTS
from sdf.report.stats import PLOTTED_LENGTHS
from sdf.run import CORPUS_SCHEMA, RunDir


@pytest.fixture(scope="module")
def report(built_run: Path) -> str:
    path = write_report(built_run)
    assert path == built_run / "report.html"
    return path.read_text(encoding="utf-8")


@pytest.fixture
def copy(built_run: Path, tmp_path: Path) -> Path:
    """A copy of the built run, for tests that break or remove artifacts."""
    return Path(shutil.copytree(built_run, tmp_path / "run"))


def column(path: Path, col: str) -> list:
    return pq.read_table(path, columns=[col]).column(col).to_pylist()


def rejects(run: Path) -> list[dict]:
    return RunDir(run).read_rejects().to_pylist()


# --- report.html --------------------------------------------------------------------------------------


def test_report_has_every_section_with_a_heading_and_a_toc_link(report: str) -> None:
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in report
        assert f'href="#{sid}"' in report
    assert "Not available" not in report  # the full build has every artifact


def test_report_embeds_its_plots_and_saves_them_beside_it(built_run: Path, report: str) -> None:
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    names = [p for p in PLOTS if p not in CHAT_PLOTS]
    assert len(embedded) == len(names)  # the build has something for every plot, duplicates included
    for name, data in zip(names, embedded, strict=True):
        assert base64.b64decode(data) == (built_run / "plots" / f"{name}.png").read_bytes()
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in report and "https://" not in report  # self-contained: no external resources


def test_document_markup_is_escaped(built_run: Path, report: str) -> None:
    corpus = pq.read_table(built_run / "corpus.parquet").to_pylist()
    assert any(d["text"].startswith(MARKUP) for d in corpus if d["genre"] == MARKUP_GENRE)
    assert "<script" not in report and MARKUP not in report
    assert str(markupsafe.escape(MARKUP)) in report


def test_samples_show_the_first_two_documents_of_each_genre(built_run: Path, report: str) -> None:
    samples = report.split('<section id="samples">')[1].split("</section>")[0]
    corpus = pq.read_table(built_run / "corpus.parquet", columns=["doc_id", "genre"]).to_pylist()
    per_genre = Counter(d["genre"] for d in corpus)
    assert samples.count('<article class="doc">') == sum(min(2, n) for n in per_genre.values())
    for genre, n in per_genre.items():
        assert f"<summary>{genre} ({min(2, n)})</summary>" in samples
        first = next(d["doc_id"] for d in corpus if d["genre"] == genre)
        assert f"<header>{first} ·" in samples


def test_report_shows_the_numbers_of_the_stats(built_run: Path, report: str) -> None:
    stats = json.loads((built_run / "stats.json").read_text())
    assert f"<b>{stats['run']['corpus_docs']:,}</b>" in report
    assert usd(stats["cost"]["total"]["cost_usd"]) in report  # as the page rounds it
    for step in stats["funnel"]:
        assert f'<td>{step["label"]}</td><td class="n">{step["count"]:,}</td>' in report
    for row in stats["rejections"]["by_reason"]:
        assert f'<td>{row["stage"]}</td><td>{row["reason"]}</td><td class="n">{row["count"]:,}</td>' in report
    for g in stats["genre_mix"]["genres"]:
        assert f'<td>{g["genre"]}</td><td class="n">{100 * g["target"]:.1f}%</td>' in report


# --- stats ------------------------------------------------------------------------------------------


def test_stats_are_json_and_written_beside_the_run(built_run: Path) -> None:
    stats = collect_stats(built_run)
    on_disk = RunDir(built_run).read_stats()
    assert on_disk == json.loads(json.dumps(stats))
    assert stats["unavailable"] == {}


def test_genre_targets_are_what_the_planner_aimed_at_not_the_overrides(built_run: Path) -> None:
    """[plan].genre_weights overrides two of 23 genres; the targets are still the planner's whole mix."""
    planned = RunDir(built_run).read_plan()["genre_targets"]
    assert len(planned) == 23 and set(GENRE_WEIGHTS) < set(planned)
    for stats in (collect_stats(built_run),
                  json.loads(run_sdf("stats", built_run, "--json", cwd=built_run).stdout)):
        mix = {g["genre"]: g for g in stats["genre_mix"]["genres"]}
        assert stats["genre_mix"]["target_source"] == "plan.json genre_targets"
        assert {g: m["target"] for g, m in mix.items()} == pytest.approx(planned)
        assert mix["admirable_ai_story"]["target"] == pytest.approx(2.0 / 25)  # 2 of 19 x 1.0 + 1.5 + 0.5 + 2 x 2
        assert sum(m["target"] for m in mix.values()) == pytest.approx(1.0)


def test_sdf_stats_prints_the_headline_numbers_for_a_person(built_run: Path, dry_run: Path) -> None:
    built = run_sdf("stats", built_run, cwd=built_run)
    assert built.returncode == 0, built.stderr
    run = RunDir(built_run).read_stats()["run"]
    assert f"documents: {run['corpus_docs']:,} in the corpus, {run['documents']:,} extracted" in built.stdout
    assert "cache-read share" in built.stdout and "genre mix: largest gap" in built.stdout
    assert "not available" not in built.stdout
    dry = run_sdf("stats", dry_run, cwd=dry_run).stdout
    assert "documents: — in the corpus, — extracted, 60 planned" in dry
    assert "cost: not available (needs store.sqlite (store.sqlite missing))" in dry


def test_stats_count_what_the_artifacts_hold(built_run: Path) -> None:
    stats = collect_stats(built_run)
    corpus = Counter(column(built_run / "corpus.parquet", "genre"))
    mix = {g["genre"]: g for g in stats["genre_mix"]["genres"]}
    assert {g: m["docs"] for g, m in mix.items() if m["docs"]} == dict(corpus)
    assert {g: m["specs"] for g, m in mix.items()} == Counter(column(built_run / "specs.parquet", "genre"))
    assert mix[FAILING_GENRE]["docs"] == 0 and mix[FAILING_GENRE]["specs"] > 0  # planned, never generated

    metrics = RunDir(built_run).read_metrics()["stages"]
    funnel = {s["step"]: s["count"] for s in stats["funnel"]}
    assert funnel["specs"] == len(column(built_run / "specs.parquet", "spec_id"))
    assert funnel["generate"] == len(column(built_run / "documents.parquet", "doc_id"))
    assert {s: funnel[s] for s in metrics} == {s: m["kept"] for s, m in metrics.items()}
    assert funnel["diversity"] == funnel["packed"] == sum(corpus.values())
    # every answer becomes a document (the unwrapped ones are salvaged), so responses == generate
    assert funnel["specs"] > funnel["responses"] >= funnel["generate"] > funnel["judge"] > funnel["dedup"]

    dropped = rejects(built_run)
    assert stats["rejections"]["total"] == len(dropped)
    assert {s["stage"]: s["count"] for s in stats["rejections"]["by_stage"]} == Counter(r["stage"] for r in dropped)
    by_reason = {(r["stage"], r["reason"]): r["count"] for r in stats["rejections"]["by_reason"]}
    assert by_reason == Counter((r["stage"], r["reason"]) for r in dropped)
    assert stats["rejections"]["paid_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in dropped), abs=1e-6)

    cov = stats["coverage"]
    assert sum(map(sum, cov["counts"])) == sum(corpus.values())
    assert [s["id"] for s in cov["sections"]] == [s["id"] for s in RunDir(built_run).read_sections()]
    assert len(cov["genres"]) == 23  # planned genres without a document are empty columns, not missing

    lengths = stats["lengths"]["per_genre"]
    assert {g: e["n"] for g, e in lengths.items()} == dict(corpus)
    tokens = pq.read_table(built_run / "corpus.parquet", columns=["genre", "output_tokens"]).to_pylist()
    for genre, entry in lengths.items():  # every document's length, as the fixture has fewer than PLOTTED_LENGTHS
        assert entry["values"] == sorted(d["output_tokens"] for d in tokens if d["genre"] == genre)


def test_a_large_genre_keeps_an_even_sample_of_its_lengths_for_the_plot(copy: Path) -> None:
    corpus = pq.read_table(copy / "corpus.parquet")
    many = pa.concat_tables([corpus.slice(0, 1)] * 1000)  # one genre, 1,000 documents of lengths 1..1000
    many = many.set_column(many.schema.get_field_index("output_tokens"), "output_tokens",
                           pa.array(range(1000, 0, -1), pa.int64()))
    with RunDir(copy).writer(RunDir(copy).corpus, CORPUS_SCHEMA) as out:
        out.write(many)
    entry = collect_stats(copy)["lengths"]["per_genre"][corpus["genre"][0].as_py()]
    assert entry["n"] == 1000 and len(entry["values"]) == PLOTTED_LENGTHS
    assert entry["values"][0] == 1 and entry["values"][-1] == 1000 and entry["values"] == sorted(entry["values"])


def test_a_section_without_documents_is_named(copy: Path) -> None:
    last = RunDir(copy).read_sections()[-1]
    corpus = pq.read_table(copy / "corpus.parquet")
    with RunDir(copy).writer(RunDir(copy).corpus, CORPUS_SCHEMA) as out:
        out.write(corpus.filter(pc.not_equal(corpus["section_id"], last["id"])))
    html = write_report(copy).read_text()
    assert RunDir(copy).read_stats()["coverage"]["uncovered"] == [last["id"]]
    assert f'<p class="bad">Sections without any document: {last["id"]} {last["title"]}</p>' in html


def test_cost_and_cache_share_come_from_the_ledger(built_run: Path) -> None:
    cost = collect_stats(built_run)["cost"]
    with sqlite3.connect(built_run / "store.sqlite") as con:
        inp, read, write, usd = con.execute(
            "SELECT SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens), SUM(cost_usd) FROM requests"
        ).fetchone()
        per_purpose = dict(con.execute("SELECT purpose, SUM(cost_usd) FROM requests GROUP BY purpose"))
        statuses = dict(con.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
    assert cost["total"]["cost_usd"] == pytest.approx(usd, abs=1e-6)
    assert cost["total"]["cache_read_share"] == pytest.approx(read / (inp + read + write), abs=1e-6)
    assert {r["purpose"]: r["cost_usd"] for r in cost["by_purpose"]} == pytest.approx(per_purpose, abs=1e-6)
    assert set(per_purpose) == {"generate", "judge"} and cost["requests_by_status"] == statuses
    assert statuses["failed"] > 0  # the fixture's failing genre


def test_dedup_clusters_count_the_kept_document_and_its_duplicates(built_run: Path) -> None:
    dedup = collect_stats(built_run)["dedup_clusters"]
    pointers = Counter(r["duplicate_of"] for r in rejects(built_run) if r["stage"] == "dedup")
    assert {h["size"]: h["clusters"] for h in dedup["size_histogram"]} == Counter(1 + n for n in pointers.values())
    assert dedup["duplicates"] == sum(pointers.values()) and dedup["largest"] == 1 + max(pointers.values())
    assert sorted(RunDir(built_run).read_metrics()["dedup"]["cluster_sizes"]) == sorted(
        1 + n for n in pointers.values())
    assert dedup["largest_clusters"][0]["genre"] in DUPLICATE_GENRES


def test_diversity_comes_from_metrics_json(built_run: Path) -> None:
    div = collect_stats(built_run)["diversity"]
    metrics = RunDir(built_run).read_metrics()["diversity"]
    assert div["distinct_n"] == metrics["distinct_n"]
    assert div["metrics"]["compression_ratio"] == metrics["compression_ratio"]
    assert [[r["opener"], r["count"]] for r in div["top_openers"]] == metrics["top_openers"]


def test_packing_summary_reads_the_manifest(built_run: Path) -> None:
    packing = collect_stats(built_run)["packing"]
    manifest = RunDir(built_run).read_manifest()
    assert (packing["documents"], packing["tokens"], packing["sequences"]) == (
        manifest["documents"], manifest["tokens"], manifest["sequences"])
    assert packing["formats"] == manifest["formats"] and packing["shard_files"] == len(manifest["shards"])
    assert packing["seq_len"] == 256 and packing["padding_share"] == manifest["packing"]["padding_share"]


# --- unfinished and broken runs ---------------------------------------------------------------------


def test_a_dry_run_reports_its_plan_and_says_what_is_not_there_yet(dry_run: Path) -> None:
    html = write_report(dry_run).read_text()
    stats = RunDir(dry_run).read_stats()
    assert set(stats["unavailable"]) == {"lengths", "rejections", "contamination", "cost", "dedup_clusters",
                                         "diversity", "packing"}
    assert stats["genre_mix"]["actual_source"] == "specs.parquet (planned)"
    assert stats["genre_mix"]["target_source"] == "plan.json genre_targets"
    assert [s["step"] for s in stats["funnel"] if s["count"] is not None] == ["specs"]
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert html.count('class="na">Not available') == len(stats["unavailable"]) + 1  # + samples
    assert "Not available: needs store.sqlite (store.sqlite missing)." in html


def test_without_shards_only_packing_is_missing(copy: Path) -> None:
    shutil.rmtree(copy / "shards")
    stats = collect_stats(copy)
    assert set(stats["unavailable"]) == {"packing"}
    assert stats["run"]["tokens_source"] == "corpus.parquet (model output tokens)"
    assert next(s for s in stats["funnel"] if s["step"] == "packed")["count"] is None


def test_unreadable_artifacts_are_reported_not_raised(copy: Path) -> None:
    (copy / "corpus.parquet").write_bytes(b"not a parquet file")
    (copy / "shards" / "manifest.json").write_text("{ torn")
    for wal in copy.glob("store.sqlite*"):
        wal.unlink()
    (copy / "store.sqlite").write_bytes(b"garbage" * 1000)
    html = write_report(copy).read_text()
    stats = RunDir(copy).read_stats()
    for name in ("corpus.parquet", "shards/manifest.json", "store.sqlite"):
        assert stats["artifacts"][name].startswith("unreadable"), name
    assert stats["lengths"]["source"] == "documents.parquet"  # falls back to all extracted documents
    assert set(stats["unavailable"]) == {"cost", "packing"}
    assert '<td class="bad">unreadable' in html


def test_a_directory_without_artifacts_reports_every_part_missing(tmp_path: Path) -> None:
    stats = collect_stats(tmp_path)
    assert set(stats["unavailable"]) == {"genre_mix", "coverage", "lengths", "funnel", "rejections",
                                         "contamination", "cost", "dedup_clusters", "briefs", "diversity",
                                         "packing"}
    assert set(stats["artifacts"].values()) == {"missing"}


def test_a_missing_run_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SdfError, match="run directory not found"):
        collect_stats(tmp_path / "nope")


# --- inspect ----------------------------------------------------------------------------------------


def test_inspect_filters_by_genre_and_section(built_run: Path) -> None:
    genre = next(iter(Counter(column(built_run / "corpus.parquet", "genre")).most_common()))[0]
    docs = list(iter_documents(built_run, genre=genre, n=100))
    assert len(docs) == Counter(column(built_run / "corpus.parquet", "genre"))[genre]
    assert {d["genre"] for d in docs} == {genre}
    section = docs[0]["section_id"]
    narrowed = list(iter_documents(built_run, genre=genre, section=section, n=100))
    assert narrowed and all(d["section_id"] == section for d in narrowed)
    assert len(list(iter_documents(built_run, n=3))) == 3
    assert list(iter_documents(built_run, genre="no_such_genre")) == []


def test_inspect_records_carry_provenance(built_run: Path) -> None:
    doc = next(iter_documents(built_run, n=1))
    first = pq.read_table(built_run / "corpus.parquet").slice(0, 1).to_pylist()[0]
    assert doc["text"] == first["text"] and doc["doc_id"] == first["doc_id"]
    for key in ("genre", "section_id", "section_title", "audience", "persona", "setting", "names", "model",
                "output_tokens", "cost_usd", "judge_score"):
        assert doc[key] == first[key], key


def test_inspect_rejects_by_reason_or_stage(built_run: Path) -> None:
    dups = list(iter_documents(built_run, rejected="dedup", n=100))
    assert dups and all(d["stage"] == "dedup" and d["duplicate_of"] for d in dups)
    exact = list(iter_documents(built_run, rejected="exact_duplicate", n=100))
    assert [d["doc_id"] for d in exact] == [d["doc_id"] for d in dups]
    failed = next(iter_documents(built_run, rejected="api_error", n=1))
    assert failed["text"] is None and failed["genre"] == FAILING_GENRE
    assert failed["audience"] and failed["persona"]  # provenance from the spec when no document exists
    assert "rejected at generate: api_error" in format_document(failed)
    everything = list(iter_documents(built_run, rejected="all", n=1000))
    assert [d["doc_id"] for d in everything] == [r["doc_id"] for r in rejects(built_run)]  # pipeline order


def test_inspect_output_is_plain_when_piped(built_run: Path) -> None:
    result = run_sdf("inspect", built_run, "--rejected", "dedup", "--n", "2", "--max-chars", "80", cwd=built_run)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert result.stdout.count("━━ ") == 2 and "rejected at dedup" in result.stdout and "duplicate of" in result.stdout
    assert "\x1b[" in format_document(next(iter_documents(built_run, n=1)), color=True)


def test_inspect_says_so_when_nothing_matches(built_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert show_documents(built_run, genre="no_such_genre") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no documents match genre=no_such_genre" in captured.err


def test_inspect_explains_missing_artifacts(dry_run: Path) -> None:
    with pytest.raises(SdfError, match="no documents"):
        list(iter_documents(dry_run))
    with pytest.raises(SdfError, match="no document has been rejected"):
        list(iter_documents(dry_run, rejected="all"))
