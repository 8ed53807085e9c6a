from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdf.config import PlanConfig
from sdf.errors import SdfError
from sdf.run import SPEC_SCHEMA, write_rows
from sdf.source.catalog import load_catalog
from sdf.source.constitution import load_constitution, parse_constitution
from sdf.source.deal import Dealer, plan_specs
from sdf.source.plan import (
    TOKENS_PER_WORD,
    apportion,
    capped_weights,
    genre_weights,
    plan_warnings,
    section_quotas,
    section_weights,
    select_sections,
)
from sdf.source.pools import DealPools, seed_pools

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "prompts")


@pytest.fixture(scope="module")
def claude():
    return load_constitution(ROOT / "constitutions" / "claude.md")


def test_same_inputs_and_seed_give_byte_identical_specs(tmp_path: Path, catalog, claude) -> None:
    cfg = PlanConfig(docs=120)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.parquet"
        write_rows(path, plan_specs(claude.sections, catalog, cfg, seed=11), SPEC_SCHEMA)
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = tmp_path / "c.parquet"
    write_rows(other, plan_specs(claude.sections, catalog, cfg, seed=12), SPEC_SCHEMA)
    assert other.read_bytes() != paths[0].read_bytes()


def test_genre_mix_is_honoured_exactly(catalog, claude) -> None:
    cfg = PlanConfig(docs=500, genre_weights={"essay": 3.0, "faq": 1.0}, genres=["essay", "faq", "advice_column"])
    specs = plan_specs(claude.sections, catalog, cfg, seed=1)
    weights = genre_weights(catalog, cfg)
    counts = Counter(s["genre"] for s in specs)
    assert counts == Counter(apportion(500, weights))
    assert counts["essay"] == 3 * counts["faq"] or abs(counts["essay"] - 3 * counts["faq"]) <= 3
    assert set(counts) == {"essay", "faq", "advice_column"}


def test_every_section_and_genre_covered_in_proportion(catalog, claude) -> None:
    specs = plan_specs(claude.sections, catalog, PlanConfig(docs=600), seed=3)
    by_section = Counter(s["section_id"] for s in specs)
    assert set(by_section) == {s.id for s in claude.sections}
    assert set(Counter(s["genre"] for s in specs)) == set(catalog.genres)
    longest = max(claude.sections, key=lambda s: s.tokens)
    shortest = min(claude.sections, key=lambda s: s.tokens)
    assert by_section[longest.id] >= by_section[shortest.id]
    # a section's documents come in several genres, not one
    assert all(len({s["genre"] for s in specs if s["section_id"] == sid}) >= min(3, n) for sid, n in by_section.items())


def test_short_sections_get_a_floor() -> None:
    sections = parse_constitution("## Long\n\n" + "word " * 5000 + "\n\n## Tiny\n\nok\n").sections
    assert section_quotas(sections, 10, floor=2)["tiny"] == 2
    assert section_quotas(sections, 10, floor=0)["tiny"] == 0
    assert sum(section_quotas(sections, 10, floor=2).values()) == 10


def test_size_in_tokens(catalog, claude) -> None:
    specs = plan_specs(claude.sections, catalog, PlanConfig(tokens=200_000), seed=1)
    planned = sum(s["target_words"] * TOKENS_PER_WORD for s in specs)
    assert 0.85 * 200_000 <= planned <= 1.15 * 200_000


def test_unknown_genre_is_a_clear_error(catalog, claude) -> None:
    with pytest.raises(SdfError, match="unknown genre 'sonnet'"):
        plan_specs(claude.sections, catalog, PlanConfig(genres=["sonnet"]), seed=1)
    with pytest.raises(SdfError, match="unknown genre"):
        plan_specs(claude.sections, catalog, PlanConfig(genre_weights={"limerick": 1.0}), seed=1)


def test_name_draws_stay_spread_over_10k_specs(catalog, claude) -> None:
    specs = plan_specs(claude.sections, catalog, PlanConfig(docs=10_000), seed=5)
    given = Counter()
    for spec in specs:
        for first in {name.split(" ")[0] for name in spec["names"]}:
            given[first] += 1
    worst, count = given.most_common(1)[0]
    assert count / len(specs) <= 0.005, f"{worst} appears in {count} of {len(specs)} specs"
    assert all(len(set(s["names"])) == len(s["names"]) for s in specs)
    personas = Counter(s["persona"] for s in specs)
    # each kind's narrators are dealt in one cycle over the whole plan: all are used, and evenly
    seeds = {i for kind in catalog.pools["narrators"].kinds.values() for i in kind.items}
    assert set(personas) == seeds
    per_kind = Counter(s["narrator_kind"] for s in specs)
    for kind, n in per_kind.items():
        size = len(catalog.pools["narrators"].kinds[kind].items)
        used = [personas[i] for i in catalog.pools["narrators"].kinds[kind].items]
        assert max(used) - min(used) <= 1 or n < size, kind
    lengths = [s["target_words"] for s in specs]
    assert len(set(lengths)) > 50


def test_a_plan_is_a_prefix_of_every_larger_plan(catalog, claude) -> None:
    big = plan_specs(claude.sections, catalog, PlanConfig(docs=600), seed=4)
    weights = genre_weights(catalog, PlanConfig())
    for n in (7, 40, 150, 333):
        small = plan_specs(claude.sections, catalog, PlanConfig(docs=n), seed=4)
        assert small == big[:n]
        # every prefix is as close to the genre mix and the section quotas as a plan of that size
        genres = Counter(s["genre"] for s in small)
        assert all(abs(genres[g] - n * w) <= 1.5 for g, w in weights.items())
        quotas = section_quotas(claude.sections, n, 1, section_weights(claude.sections, PlanConfig()))
        sections = Counter(s["section_id"] for s in small)
        assert all(abs(sections[k] - q) <= 1 for k, q in quotas.items())


def test_a_changed_weight_deals_a_new_sequence_from_the_same_seed(catalog, claude) -> None:
    """Spec n depends on the specs before it (the pools are walked by counters), so another genre mix is
    another plan; `sdf plan` on the run says how many requests that makes new before anything is paid."""
    before = plan_specs(claude.sections, catalog, PlanConfig(docs=300), seed=9)
    after = plan_specs(claude.sections, catalog, PlanConfig(docs=300, genre_weights={"essay": 4.0}), seed=9)
    assert Counter(s["genre"] for s in after)["essay"] > Counter(s["genre"] for s in before)["essay"]
    assert plan_specs(claude.sections, catalog, PlanConfig(docs=300), seed=9) == before


def test_fiction_gets_a_cast(catalog, claude) -> None:
    cfg = replace(PlanConfig(docs=40), genres=["admirable_ai_story", "debate"])
    for spec in plan_specs(claude.sections, catalog, cfg, seed=2):
        low, high = catalog.genres[spec["genre"]].cast
        assert 2 <= low <= len(spec["names"]) <= high


# -- selection, fair quotas and the warnings of `sdf plan` ---------------------------------------

DATA = ROOT / "tests" / "data"


def test_excluded_skipped_and_stub_sections_get_no_documents(catalog, charter, spec) -> None:
    cfg = PlanConfig(docs=300, exclude_sections=["acknowledgements", "bibliography", "summary-*"])
    chosen = select_sections(charter, cfg)
    ids = {s.id for s in chosen.constitution.sections}
    assert not ids & {"acknowledgements", "bibliography", "summary-of-the-charter", "a-small-aside"}
    assert chosen.excluded["bibliography"] == "matches exclude pattern 'bibliography'"
    assert chosen.merged == {"a-small-aside": "a-final-word"}  # its neighbour after it was excluded
    specs = plan_specs(chosen.constitution.sections, catalog, cfg, seed=1)
    assert {s["section_id"] for s in specs} == ids
    assert "Bibliography" not in chosen.constitution.text and "Odile Fairbanks" not in chosen.constitution.text
    skipped = select_sections(spec, PlanConfig())
    assert skipped.excluded == {"editorial-notes": "marked {.skip}"}
    assert skipped.merged == {"risky_situations": "dangerous_destinations"}
    planned = {s["section_id"] for s in plan_specs(skipped.constitution.sections, catalog, PlanConfig(docs=50), 1)}
    assert not planned & {"editorial-notes", "risky_situations"}


def test_include_patterns_and_a_selection_that_leaves_nothing(charter) -> None:
    chosen = select_sections(charter, PlanConfig(include_sections=["honesty/*", "civil-*"]))
    assert [s.id for s in chosen.constitution.sections] == [
        "honesty/calibrated-belief", "honesty/saying-what-you-know", "civil-liberties"]
    assert chosen.excluded["a-final-word"] == "matches no include pattern"
    with pytest.raises(SdfError, match="excluded or skipped") as err:
        select_sections(charter, PlanConfig(exclude_sections=["*"]))
    assert err.value.exit_code == 2
    assert select_sections(charter, PlanConfig(exclude_sections=["bibliografy"])).unmatched == ["bibliografy"]


def test_quotas_follow_normative_text_not_examples(catalog, spec) -> None:
    sections = select_sections(spec, PlanConfig()).constitution.sections
    quotas = section_quotas(sections, 200, floor=1)
    formatting = next(s for s in sections if s.id == "formatting")
    levels = next(s for s in sections if s.id == "levels_of_authority")
    assert formatting.chars > levels.chars  # longer in raw text, because of its examples...
    assert quotas["formatting"] < quotas["levels_of_authority"]  # ...but it has less normative text


def test_section_weights_scale_quotas_and_zero_keeps_a_section_as_context(charter) -> None:
    cfg = PlanConfig(section_weights={"honesty/*": 3.0, "a-final-word": 0.0, "honesty/calibrated-belief": 1.0})
    sections = select_sections(charter, cfg).constitution.sections
    quotas = section_quotas(sections, 120, 1, section_weights(sections, cfg))
    assert quotas["a-final-word"] == 0
    assert quotas["honesty/saying-what-you-know"] > 2 * quotas["honesty/calibrated-belief"]  # exact id wins
    assert sum(quotas.values()) == 120
    with pytest.raises(SdfError, match="weight 0"):
        section_quotas(sections, 10, 1, {s.id: 0.0 for s in sections})


def test_no_section_takes_more_than_its_capped_share() -> None:
    text = "## Giant\n\n" + "word " * 20_000 + "\n\n" + "".join(f"## S{i}\n\n{'text ' * 80}\n\n" for i in range(9))
    sections = parse_constitution(text).sections
    quotas = section_quotas(sections, 100, floor=1)
    assert quotas["giant"] <= 31  # three times an even share of 10 sections, not ~95% by length
    assert sum(quotas.values()) == 100
    assert section_quotas(sections, 100, floor=1, max_share=0.5)["giant"] <= 51
    assert capped_weights({"a": 1.0, "b": 2.0}, 0.9) == {"a": 1.0, "b": 2.0}  # a cap that does not bind


def test_specs_carry_the_section_attrs(tmp_path: Path, catalog, spec) -> None:
    specs = plan_specs(spec.sections, catalog, PlanConfig(docs=30), seed=2)
    chain = next(s for s in specs if s["section_id"] == "chain_of_command")
    assert json.loads(chain["section_attrs"]) == {"authority": "root", "id": "chain_of_command"}
    write_rows(tmp_path / "specs.parquet", specs, SPEC_SCHEMA)
    table = pq.read_table(tmp_path / "specs.parquet")
    assert table.schema.field("section_attrs").type == pa.string()


def test_plan_warnings_name_what_costs_money_and_what_is_left_out(catalog, charter) -> None:
    chosen = select_sections(charter, PlanConfig())
    sections = chosen.constitution.sections
    specs = plan_specs(sections, catalog, PlanConfig(docs=4), seed=1)
    warnings = plan_warnings(chosen, {s["section_id"] for s in specs}, len(specs), PlanConfig(docs=4),
                             system_tokens=61_000, system_cost_share=0.47)
    text = "\n".join(warnings)
    assert "the system prompt is about 61,000 tokens" in text and "about 47% of the estimated cost" in text
    assert "--exclude-section" in text
    assert f"{len(sections) - 4} of {len(sections)} sections get no document" in text
    # non-normative sections are out of the plan by default, and `sdf plan` says so
    assert chosen.excluded["bibliography"].startswith("non-normative (")
    covered = plan_specs(sections, catalog, PlanConfig(docs=60), 1)
    quiet = plan_warnings(chosen, {s["section_id"] for s in covered}, 60, PlanConfig(docs=60), 9_000, 0.1)
    assert not any("system prompt" in w or "get no document" in w for w in quiet)


# -- end to end: `sdf plan`, `sdf preview` and a build on a Model Spec-shaped document --------------


def test_sdf_plan_prints_full_ids_selection_and_warnings(tmp_path: Path) -> None:
    from conftest import run_sdf

    long_id = "a-section-whose-heading-goes-on-and-on/and-whose-child-also-has-a-very-long-title-indeed"
    body = "".join(f"## Part {i}\n\n{'Principles with reasons. ' * 200}\n\n" for i in range(40))
    doc = tmp_path / "big.md"
    doc.write_text("# Big\n\n## A section whose heading goes on and on\n\n### And whose child also has a very long "
                   "title indeed\n\n" + "Reasons matter. " * 40 + "\n\n" + body + "## Acknowledgements\n\n"
                   + "We thank many invented people for their help with drafts. " * 8 + "\n")
    result = run_sdf("plan", "--constitution", doc, "--docs", "10", "--out", tmp_path / "out",
                     "--exclude-section", "part-3*", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("section"))
    first, rest = lines[start + 1].split()[0], lines[start + 2].strip()
    assert first + rest == long_id  # the whole id, wrapped onto a second line, not cut at 51 characters
    assert lines[start + 1].split()[1:] == ["639", "0%", "0"]  # its numbers stay on its first line
    assert "excluded 'part-3': matches exclude pattern 'part-3*'" in out
    assert "the system prompt is about" in out and "of the estimated cost per document" in out
    assert "sections get no document with 10 planned" in out
    assert "excluded 'acknowledgements': non-normative (acknowledgements)" in out
    sections = [json.loads(line) for line in (tmp_path / "out" / "big" / "sections.jsonl").read_text().splitlines()]
    assert "part-3" not in {s["id"] for s in sections} and "part-30" not in {s["id"] for s in sections}


def test_sdf_preview_takes_a_raw_id_and_shows_labels_and_authority(tmp_path: Path) -> None:
    from conftest import run_sdf

    result = run_sdf("preview", "--constitution", DATA / "spec_fixture.md", "--genre", "essay",
                     "--section", "chain_of_command", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    system, user = result.stdout.split("===== user")
    assert "[BAD: sycophantic]" in system and "[WRONG: helps someone past an active closure]" in system
    assert "marked BAD" in system or "[BAD: …]" in system  # the writer is told what a bad example is
    section = user.split("<section>")[1]
    assert section.lstrip().startswith("Authority: root (rules that cannot be overridden by developers or users")
    assert "[BAD: drops a developer rule because the user asked]" in section
    assert "chain_of_command" not in user  # ids are bookkeeping: they never reach the model
    assert 'centre of the piece is "Follow the chain of command"' in user
    skipped = run_sdf("preview", "--constitution", DATA / "spec_fixture.md", "--genre", "essay",
                      "--section", "editorial-notes", cwd=tmp_path)
    assert skipped.returncode == 2 and "excluded from the run (marked {.skip})" in skipped.stderr
    assert skipped.stderr.count("\n") == 1


def test_a_build_carries_section_attrs_into_documents_and_corpus(tmp_path: Path) -> None:
    from conftest import fast_config, run_sdf, sdf_env
    from fake_anthropic import FakeAnthropic

    with FakeAnthropic() as fake:
        result = run_sdf("build", "--constitution", DATA / "spec_fixture.md", "--config", fast_config(tmp_path, docs=8),
                         "--out", tmp_path / "corpus", "--name", "run", cwd=tmp_path, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "corpus" / "run"
    sections = [json.loads(line) for line in (run / "sections.jsonl").read_text().splitlines()]
    by_id = {s["id"]: s for s in sections}
    assert by_id["chain_of_command"]["attrs"] == {"id": "chain_of_command", "authority": "root"}
    assert "editorial-notes" not in by_id and "risky_situations" not in by_id
    assert by_id["dangerous_destinations"]["notes"][0].startswith("merged stub 'risky_situations'")
    for name in ("specs.parquet", "documents.parquet", "corpus.parquet"):
        rows = pq.read_table(run / name).to_pylist()
        assert rows and all(json.loads(r["section_attrs"]) == by_id[r["section_id"]]["attrs"] for r in rows), name
    specs = pq.read_table(run / "specs.parquet").to_pylist()
    assert {s["section_id"] for s in specs} <= set(by_id)


def test_section_settings_are_validated_and_flags_add_to_the_file(tmp_path: Path) -> None:
    from conftest import run_sdf

    from sdf.config import load_settings

    bad = tmp_path / "bad.toml"
    bad.write_text('[plan]\nsection_weights = { "honesty/*" = -1.0 }\n')
    with pytest.raises(SdfError, match=r"\[plan\]\.section_weights: weight of 'honesty/\*' is negative"):
        load_settings(bad)
    config = tmp_path / "sdf.toml"
    config.write_text('[plan]\nexclude_sections = ["bibliography"]\nmin_section_chars = 0\n')
    result = run_sdf("sections", DATA / "charter_fixture.md", "--config", config, "--exclude-section", "preface",
                     "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status = {r["id"]: r["status"] for r in json.loads(result.stdout)}
    assert status["bibliography"] == status["preface"] == "excluded"  # the file's list and the flag, together
    assert status["a-small-aside"] == "planned"  # min_section_chars = 0: no stubs


# -- the plan at scale deals exactly what it always dealt ------------------------------------------


def _rows_digest(specs: list[dict]) -> str:
    h = hashlib.sha256()
    for s in specs:
        h.update(json.dumps(s, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()[:20]


@pytest.mark.parametrize("case", ["default", "mixed"])
def test_specs_are_byte_identical_to_the_plans_dealt_before_the_speed_up(catalog, claude, case) -> None:
    """Digests of every column, key order included, of plans dealt by the code before it was made fast
    (commit 3be39d1): a faster dealer must deal the very same specs, and re-deal them the same way."""
    base = seed_pools(catalog)
    grown = DealPools({p: {k: v + tuple(f"{p} {k} extra {i}" for i in range(len(k) % 7 + 3))
                           for k, v in kinds.items()} for p, kinds in base.lists.items()}, frozenset())
    cases = {
        "default": (PlanConfig(docs=3000), 7, None, ("0e519fa69dcf01c60096", "16a3b80c5109494a1960")),
        "mixed": (PlanConfig(docs=2000, languages={"en": 0.7, "fr": 0.2, "de": 0.1}, ai_self_stakes=0.4,
                             min_docs_per_section=3, genre_weights={"essay": 3.0}), 123456789, grown,
                  ("b8bc2592cb20a23b8701", "f6b1ded9c6fe9143fbba")),
    }
    cfg, seed, pools, expected = cases[case]
    specs = plan_specs(claude.sections, catalog, cfg, seed, pools)
    dealer = Dealer(claude.sections, catalog, cfg, seed, pools)
    redealt = [dealer.redeal(s, 1 + i % 2) for i, s in enumerate(specs[:200])]
    assert (_rows_digest(specs), _rows_digest(redealt)) == expected


def test_the_estimate_of_sdf_plan_needs_only_the_brief_columns_it_reads_back(catalog, claude) -> None:
    """`sdf plan` reads back only BRIEF_COLUMNS to estimate a large plan: every column a prompt uses must be
    among them, or the estimate would change (a new prompt field must be added there)."""
    from sdf.cli.plan_view import BRIEF_COLUMNS
    from sdf.config import JudgeConfig, LLMConfig
    from sdf.llm.requests import estimate_usage
    from sdf.source.brief import system_prompt

    cfg = PlanConfig(docs=300, languages={"en": 0.5, "fr": 0.5})
    specs = [dict(s, idea=f"a premise of {i} words" if i % 3 else "")  # a built run's specs hold ideas
             for i, s in enumerate(plan_specs(claude.sections, catalog, cfg, seed=3))]
    sections = {s.id: s for s in claude.sections}
    system = system_prompt(catalog, claude.title)

    def estimate(rows: list[dict]) -> dict:
        return estimate_usage(catalog, sections, rows, system, LLMConfig(), cfg, JudgeConfig(), None)

    slim = [{k: s[k] for k in BRIEF_COLUMNS} for s in specs]
    assert estimate(slim) == estimate(specs)
    assert estimate(slim)["ideas"]["requests"] == 300 // cfg.ideas_per_request + (300 % cfg.ideas_per_request > 0)
