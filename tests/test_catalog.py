"""The catalog as data: genres render, pools are big and duplicate-free, preview is exact and repeatable."""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, run_sdf, sdf_env

from sdf.errors import SdfError
from sdf.source.brief import document_prompt, system_prompt
from sdf.source.catalog import load_catalog
from sdf.source.constitution import load_constitution

REQUIRED_GENRES = {
    "essay", "faq", "case_study", "admirable_ai_story", "advice_column", "chat_transcript", "textbook_section",
    "lecture_notes", "news_feature", "op_ed", "interview", "forum_thread", "policy_memo", "diary_entry", "letter",
    "encyclopedia_entry", "debate", "socratic_dialogue", "childrens_story",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "prompts")


def fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def test_catalog_has_the_required_genres_with_real_instructions(catalog) -> None:
    assert set(catalog.genres) >= REQUIRED_GENRES and len(catalog.genres) >= 15
    for genre in catalog.genres.values():
        assert len(genre.instructions.split()) >= 60, genre.name
        assert genre.avoid_openings and 0 < genre.min_words < genre.max_words


def test_pools_meet_their_sizes_without_duplicates(catalog) -> None:
    sizes = {name: sum(len(k.items) for k in pool.kinds.values()) for name, pool in catalog.pools.items()}
    assert sizes["audiences"] >= 100 and sizes["narrators"] >= 100 and sizes["settings"] >= 100, sizes
    assert sizes["situations"] >= 60 and len(catalog.tones) >= 5 and len(catalog.considerations) >= 25
    for pool in catalog.pools.values():
        for kind in pool.kinds.values():
            assert len(kind.items) >= 10 and len(set(kind.items)) == len(kind.items), (pool.name, kind.name)
    # every genre deals only kinds that exist, and narrators that say where they write from
    for genre in catalog.genres.values():
        for pool, kinds in genre.kinds.items():
            assert set(kinds) <= set(catalog.pools[pool].kinds), (genre.name, pool)
    assert all(k.settings for k in catalog.pools["narrators"].kinds.values())
    given = [n for n, _ in catalog.given_names]
    surnames = [n for n, _ in catalog.surnames]
    assert len(given) >= 500 and len(surnames) >= 300
    assert len({fold(n) for n in given}) == len(given) and len({fold(n) for n in surnames}) == len(surnames)
    assert len({c for _, c in catalog.given_names}) >= 15 and len({c for _, c in catalog.surnames}) >= 15
    assert max(Counter(c for _, c in catalog.given_names).values()) <= 0.1 * len(given)  # no culture dominates
    assert not {"Elara", "Aris", "Lyra", "Seraphina"} & set(given)


def test_every_genre_renders_a_complete_prompt_with_braces_safe(catalog) -> None:
    constitution = load_constitution(ROOT / "tests" / "data" / "fixture_constitution.md")
    system = system_prompt(catalog, constitution.text + "\nA literal {brace} and {{double}} and }{.")
    assert "{brace}" in system and "{{double}}" in system
    section = constitution.sections[0]
    for genre in catalog.genres:
        spec = {"genre": genre, "target_words": 700, "section_id": section.id, "section_title": "T {x}",
                "audience": "a", "persona": "p {y}", "setting": "s", "tone": "t", "names": ["Ada {z}"], "idea": "",
                "considerations": ["honesty"], "reasoning": "r {w}", "language": "en"}
        braced = replace(section, text=section.text + " {not_a_var}")
        prompt = document_prompt(catalog, spec, braced)
        assert f"Commission: {catalog.genres[genre].title}, about 700 words" in prompt
        assert "{not_a_var}" in prompt and "Ada {z}" in prompt and "<document>" in prompt and "r {w}" in prompt
        unfilled = [v for v in ("genre_title", "section_text", "names", "idea", "persona") if "{" + v + "}" in prompt]
        assert not unfilled


def test_catalog_command_lists_genres_and_pools(tmp_path: Path) -> None:
    result = run_sdf("catalog", cwd=tmp_path, env=sdf_env())
    assert result.returncode == 0, result.stderr
    assert "admirable_ai_story" in result.stdout and "name pools:" in result.stdout
    assert "narrators:" in result.stdout and "children" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # fits an 80-column terminal


def test_preview_prints_the_exact_prompt_deterministically(tmp_path: Path) -> None:
    claude = ROOT / "constitutions" / "claude.md"
    args = ["preview", "--constitution", claude, "--genre", "advice_column", "--seed", "9"]
    first = run_sdf(*args, cwd=tmp_path, env=sdf_env(key=None))
    second = run_sdf(*args, cwd=tmp_path, env=sdf_env(key=None))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "===== system" in first.stdout and "Commission: Advice column" in first.stdout
    other = run_sdf(*args[:-1], "10", cwd=tmp_path, env=sdf_env(key=None))
    assert other.stdout != first.stdout
    bad = run_sdf("preview", "--constitution", ROOT / "constitutions" / "claude.md", "--genre", "limerick",
                  cwd=tmp_path, env=sdf_env(key=None))
    assert bad.returncode == 2 and "unknown genre 'limerick'" in bad.stderr
    section = run_sdf(*args, "--section", "no-such-section", cwd=tmp_path, env=sdf_env(key=None))
    assert section.returncode == 2 and "unknown section id" in section.stderr


def test_doubled_braces_in_a_template_are_literal_and_a_stray_one_is_an_error(tmp_path) -> None:
    import shutil

    root = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", root)
    judge = root / "templates" / "judge.md"
    judge.write_text(judge.read_text(encoding="utf-8") + "\nAnswer as {{\"score\": N}}.\n", encoding="utf-8")
    rendered = load_catalog(root).render("judge", section_title="t", section_text="{x}", genre_title="g",
                                         genre_instructions="i", fiction="no", document="d {section_title}")
    assert 'Answer as {"score": N}.' in rendered and "d {section_title}" in rendered and "{x}" in rendered
    judge.write_text(judge.read_text(encoding="utf-8") + "\nA stray } here.\n", encoding="utf-8")
    with pytest.raises(SdfError, match="unmatched '}'"):
        load_catalog(root)
