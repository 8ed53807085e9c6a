from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from sdf.config import PlanConfig
from sdf.errors import SdfError
from sdf.run import SPEC_SCHEMA, write_rows
from sdf.source.catalog import load_catalog
from sdf.source.constitution import load_constitution, parse_constitution
from sdf.source.plan import TOKENS_PER_WORD, apportion, genre_weights, plan_specs, section_quotas

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
    assert max(personas.values()) - min(personas.values()) <= 1  # dealt evenly from a deck
    lengths = [s["target_words"] for s in specs]
    assert len(set(lengths)) > 50


def test_fiction_gets_a_cast(catalog, claude) -> None:
    cfg = replace(PlanConfig(docs=40), genres=["admirable_ai_story", "essay"])
    for spec in plan_specs(claude.sections, catalog, cfg, seed=2):
        assert len(spec["names"]) == (3 if catalog.genres[spec["genre"]].fiction else 2)
