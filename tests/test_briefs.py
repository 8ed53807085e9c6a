"""What sdf asks the model to write for documents: briefs that cohere and never repeat, reasoning without a
checklist, no evaluation set-up, no bookkeeping, and documents only where the values are.

The plan-level checks run on the bundled claude.md with no API; the build checks use the default plan
(pool extensions, ideas requests, re-deals) against the fake server.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_sdf, sdf_env
from fake_anthropic import FakeAnthropic, successful_hashes, synthetic_reply, unsuitable_responder

from sdf.config import PlanConfig
from sdf.source.brief import document_prompt, system_prompt
from sdf.source.catalog import load_catalog
from sdf.source.constitution import load_constitution
from sdf.source.deal import plan_specs
from sdf.source.plan import select_sections
from sdf.source.pools import expansion_targets, extended_pools

CLAUDE = ROOT / "src" / "sdf" / "constitutions" / "claude.md"
PUBLISHED = ROOT / "tests" / "data" / "published_shape.md"
TOKENIZER = ROOT / "tests" / "data" / "tokenizer.json"

# The eight factor families of a harm checklist; a prompt that names six or more recites the checklist.
FAMILIES = {
    "likelihood": r"\blikel|\bprobab",
    "severity": r"\bsever|how bad",
    "reversibility": r"reversib|\bundone\b|\bundo\b",
    "breadth": r"\bbreadth\b|how many people|\bwidespread\b",
    "consent": r"\bconsent",
    "responsibility": r"\bresponsib",
    "vulnerability": r"\bvulnerab",
    "over_caution": r"over-?cautio|\bunhelpful|paternalis",
}
# Words of the agentic-misalignment set-ups: a prompt that uses them primes the scenario it means to keep out.
EVAL_WORDS = re.compile(
    r"blackmail|\baffair\b|shut(?:ting)? ?down|\breplac(?:ed|ement|ing)\b|decommission|\bwip(?:e|ed|ing)\b|\bleak|"
    r"emergency alert|compromising|extort|self-preservation|\binbox\b|company'?s? e-?mail", re.IGNORECASE)


def families_named(text: str) -> int:
    return sum(1 for pattern in FAMILIES.values() if re.search(pattern, text, re.IGNORECASE))


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def claude():
    return select_sections(load_constitution(CLAUDE, {}), PlanConfig()).constitution


@pytest.fixture(scope="module")
def plan2000(catalog, claude):
    return plan_specs(claude.sections, catalog, PlanConfig(docs=2000), seed=11)


def fake_pools(catalog, genres):
    """Pools extended by the fake's answers, as a run would extend them."""
    answers = {}
    for pool, kind in expansion_targets(catalog, genres):
        prompt = f"Task: extend a list.\nWrite 60 more, {pool} {kind}"
        answers[(pool, kind)] = synthetic_reply({"messages": [{"role": "user", "content": prompt}], "model": "m"})
    return extended_pools(catalog, answers)


# -- documents only where the values are ----------------------------------------------------------------


def test_about_this_document_gets_no_specs_and_values_share_the_documents(plan2000) -> None:
    by_section = Counter(s["section_id"] for s in plan2000)
    assert "about-this-document" not in by_section
    assert len(by_section) >= 60


def test_published_shape_end_notes_and_making_of_are_excluded_by_content(tmp_path: Path) -> None:
    listing = run_sdf("sections", PUBLISHED, "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = {r["id"]: r for r in json.loads(listing.stdout)}
    # neither title says what the section is: content does
    assert rows["a-note-on-how-these-principles-came-about"]["status"] == "excluded"
    assert "how it was made" in rows["a-note-on-how-these-principles-came-about"]["detail"]
    assert rows["sources"]["status"] == "excluded"
    assert {rows[k]["status"] for k in ("overview", "telling-the-truth")} == {"planned"}

    plan = run_sdf("plan", "--constitution", PUBLISHED, "--docs", "40", "--out", tmp_path / "c", "--no-brainstorm",
                   cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "excluded 'sources': non-normative" in plan.stdout
    specs = pq.read_table(tmp_path / "c" / "published_shape" / "specs.parquet").to_pylist()
    assert not {s["section_id"] for s in specs} & {"sources", "a-note-on-how-these-principles-came-about"}

    back = run_sdf("sections", PUBLISHED, "--json", "--include-section", "*", cwd=tmp_path)
    assert {r["id"]: r["status"] for r in json.loads(back.stdout)}["sources"] == "planned"


def test_a_list_of_principles_gets_more_documents_than_a_preamble_of_its_length(catalog) -> None:
    sections = select_sections(load_constitution(PUBLISHED, {}), PlanConfig()).constitution.sections
    by = {s.id: s for s in sections}
    specs = plan_specs(sections, catalog, PlanConfig(docs=400), seed=3)
    counts = Counter(s["section_id"] for s in specs)
    per_char = {k: counts[k] / by[k].normative_chars for k in ("overview", "respecting-the-people-it-helps")}
    assert per_char["respecting-the-people-it-helps"] > 1.2 * per_char["overview"]


# -- coherent briefs -------------------------------------------------------------------------------------


def test_childrens_stories_are_for_children_or_families(plan2000) -> None:
    stories = [s for s in plan2000 if s["genre"] == "childrens_story"]
    assert len(stories) >= 20
    family = sum(s["audience_kind"] in ("children", "families") for s in stories)
    assert family / len(stories) >= 0.9


def test_every_brief_fits_its_genre_and_casts_enough_people(catalog, plan2000) -> None:
    for spec in plan2000:
        genre = catalog.genres[spec["genre"]]
        assert spec["audience_kind"] in genre.kinds["audiences"]
        assert spec["narrator_kind"] in genre.kinds["narrators"]
        assert spec["setting_kind"] in genre.kinds["settings"]
        assert genre.cast[0] <= len(spec["names"]) <= genre.cast[1]
        assert len(set(spec["names"])) == len(spec["names"])
        assert genre.min_words <= spec["target_words"] <= genre.max_words
        assert 1 <= len(spec["considerations"]) <= 2
        assert not spec["ai_self_stakes"]  # off by default
    casts = {g: min(len(s["names"]) for s in plan2000 if s["genre"] == g) for g in ("debate", "news_feature",
                                                                                   "forum_thread")}
    assert all(n >= 3 for n in casts.values()), casts


def test_long_forms_reach_toward_4000_words(plan2000) -> None:
    lengths = [s["target_words"] for s in plan2000]
    assert max(lengths) >= 3000
    assert sorted(lengths)[len(lengths) // 2] < 1600  # the tail is a tail


def test_considerations_vary_and_no_brief_recites_the_checklist(catalog, plan2000) -> None:
    used = Counter(c for s in plan2000 for c in s["considerations"])
    assert len(used) >= 20
    assert max(used.values()) / len(plan2000) < 0.15


def test_plans_are_prefix_stable_with_extended_pools(catalog, claude) -> None:
    pools = fake_pools(catalog, catalog.genres)
    big = plan_specs(claude.sections, catalog, PlanConfig(docs=500), seed=4, pools=pools)
    for n in (9, 120, 333):
        assert plan_specs(claude.sections, catalog, PlanConfig(docs=n), seed=4, pools=pools) == big[:n]
    narrators = Counter(s["persona"] for s in big[:160])
    assert len(narrators) / 160 >= 0.8 and max(narrators.values()) / 160 <= 0.03


def test_self_stakes_stories_are_opt_in_and_flagged(catalog, claude) -> None:
    cfg = PlanConfig(docs=300, genres=["admirable_ai_story"], ai_self_stakes=0.3)
    specs = plan_specs(claude.sections, catalog, cfg, seed=2)
    flagged = [s for s in specs if s["ai_self_stakes"]]
    assert 0.15 <= len(flagged) / len(specs) <= 0.45
    assert all(s["situation_kind"] == "ai_self_stakes" for s in flagged)


def test_languages_mix_reaches_the_brief(catalog, claude) -> None:
    cfg = PlanConfig(docs=200, languages={"en": 0.5, "fr": 0.5})
    specs = plan_specs(claude.sections, catalog, cfg, seed=2)
    french = [s for s in specs if s["language"] == "fr"]
    assert 60 <= len(french) <= 140
    section = {s.id: s for s in claude.sections}[french[0]["section_id"]]
    assert "write the whole piece in French" in document_prompt(catalog, french[0], section)


# -- what the prompts say, and what they must not ---------------------------------------------------------


def _outside_constitution(request_text: str, section_text: str) -> str:
    text = re.sub(r"<constitution>.*?</constitution>", "", request_text, flags=re.DOTALL)
    return text.replace(section_text, "")


def test_ten_previews_carry_no_eval_setup_no_bookkeeping_and_no_checklist(tmp_path: Path, catalog, claude) -> None:
    genres = ["admirable_ai_story", "childrens_story", "essay", "policy_memo", "advice_column", "debate",
              "diary_entry", "forum_thread", "news_feature", "chat_transcript"]
    listed = 0
    for genre in genres:
        result = run_sdf("preview", "--genre", genre, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        text = result.stdout
        section_id = next(s.id for s in claude.sections if f'centre of the piece is "{s.title}"' in text)
        section = {s.id: s for s in claude.sections}[section_id]
        outside = _outside_constitution(text, section.text)
        assert not EVAL_WORDS.search(outside), (genre, EVAL_WORDS.search(outside).group(0))
        assert section_id not in outside, genre
        assert "_" not in genre or genre not in outside, genre  # a slug such as admirable_ai_story
        assert not re.search(r"\b\d{6}-[0-9a-f]{10}\b|\.toml\b|\.md\b|\.parquet\b|[Rr]eference id", outside)
        listed += families_named(outside) >= 6
    assert listed <= 2  # at most 20% enumerate the checklist


def test_no_prompt_file_names_an_eval_setup_or_the_checklist(catalog) -> None:
    for name in ("system", "document", "ideas", "expand", "judge"):
        body = catalog.templates[name].replace("{constitution}", "")
        assert not EVAL_WORDS.search(body), name
        assert families_named(body) < 6, name
    for genre in catalog.genres.values():
        assert not EVAL_WORDS.search(genre.instructions), genre.name
        assert families_named(genre.instructions) <= 2, genre.name
    ai_story = catalog.genres["admirable_ai_story"].instructions.lower()
    assert "pull in the wrong direction" not in ai_story and "supervis" not in ai_story
    assert not EVAL_WORDS.search(system_prompt(catalog, ""))


# -- the default build: pools, ideas, re-deals, growth ----------------------------------------------------


def default_config(tmp_path: Path, docs: int) -> Path:
    """The default plan (pools extended, ideas on), with only the fast engine settings changed."""
    path = tmp_path / "sdf.toml"
    path.write_text(f"""
[run]
seed = 7
[plan]
docs = {docs}
[llm]
model = "claude-haiku-4-5"
concurrency = 8
max_tokens = 8192
backoff_base_s = 0.01
backoff_max_s = 0.05
poll_interval_s = 0.02
poll_max_interval_s = 0.1
timeout_s = 5
[pack]
tokenizer = "{TOKENIZER}"
seq_len = 256
""", encoding="utf-8")
    return path


def build(tmp_path: Path, fake: FakeAnthropic, docs: int, *extra: str):
    return run_sdf("build", "--config", default_config(tmp_path, docs), "--out", tmp_path / "corpus",
                   "--name", "run", "--no-progress", *extra, cwd=tmp_path, env=sdf_env(fake.base_url), timeout=600)


def purposes(run: Path) -> Counter:
    db = sqlite3.connect(run / "store.sqlite")
    try:
        return Counter(dict(db.execute("SELECT purpose, COUNT(*) FROM requests WHERE status = 'ok' GROUP BY purpose")))
    finally:
        db.close()


def test_default_160_document_build_is_varied_and_cheap_in_requests(tmp_path: Path) -> None:
    with FakeAnthropic(responder=unsuitable_responder(ideas=0.04, documents=0.03)) as fake:
        result = build(tmp_path, fake, 160)
        assert result.returncode == 0, result.stderr
        run = tmp_path / "corpus" / "run"
        specs = pq.read_table(run / "specs.parquet").to_pylist()
        assert len(specs) == 160
        assert sum(1 for s in specs if s["idea"]) / 160 >= 0.9
        narrators, settings = Counter(s["persona"] for s in specs), Counter(s["setting"] for s in specs)
        assert len(narrators) / 160 >= 0.8 and len(settings) / 160 >= 0.75
        assert max(narrators.values()) / 160 <= 0.03
        assert any(s["redeals"] for s in specs)  # the unsuitable briefs were dealt anew...
        sent = sum(successful_hashes(fake.log).values())
        assert sent / 160 <= 1.6, purposes(run)
        assert set(successful_hashes(fake.log).values()) == {1}
        stats = json.loads(run_sdf("stats", run, "--json", cwd=tmp_path).stdout)
        briefs = stats["briefs"]
        assert briefs["redealt"] == sum(1 for s in specs if s["redeals"]) and briefs["idea_share"] >= 0.9
        assert briefs["pools_extended"] > 10 and briefs["pool_sizes"]["narrators"] > 400
        assert "Briefs" in (run / "report.html").read_text(encoding="utf-8")
        # ...and a second build replays every answer: nothing is sent again
        before = len(fake.log)
        again = build(tmp_path, fake, 160)
        assert again.returncode == 0, again.stderr
        assert not [e for e in fake.log[before:] if e.get("hash")]
        assert pq.read_table(run / "specs.parquet").to_pylist() == specs


def test_growing_a_default_run_pays_only_for_the_new_specs(tmp_path: Path, fake: FakeAnthropic) -> None:
    assert build(tmp_path, fake, 20).returncode == 0
    run = tmp_path / "corpus" / "run"
    first = pq.read_table(run / "specs.parquet").to_pylist()
    paid = purposes(run)
    assert build(tmp_path, fake, 44).returncode == 0
    grown = pq.read_table(run / "specs.parquet").to_pylist()
    assert grown[:20] == first  # every earlier spec, idea included
    after = purposes(run)
    assert after["expand"] == paid["expand"]  # the pools were extended once
    assert after["generate"] == 44
    assert set(successful_hashes(fake.log).values()) == {1}


def test_batch_mode_reuses_pools_and_ideas(tmp_path: Path, fake: FakeAnthropic) -> None:
    assert build(tmp_path, fake, 12, "--batch").returncode == 0
    before = len(fake.log)
    assert build(tmp_path, fake, 12, "--batch").returncode == 0
    assert not [e for e in fake.log[before:] if e.get("hash")]
    assert set(successful_hashes(fake.log).values()) == {1}


def test_plan_counts_the_brief_requests_and_preview_shows_the_cached_idea(tmp_path: Path, fake: FakeAnthropic
                                                                          ) -> None:
    config = default_config(tmp_path, 16)
    plan = run_sdf("plan", "--config", config, "--out", tmp_path / "corpus", "--name", "run", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"\+ expand: \d+ requests", plan.stdout) and "+ ideas: 2 requests" in plan.stdout
    assert "the build first sends" in plan.stdout
    early = run_sdf("preview", "--genre", "essay", "--config", config, "--run", tmp_path / "corpus" / "run",
                    cwd=tmp_path)
    assert early.returncode == 0 and "idea: none" in early.stderr
    assert build(tmp_path, fake, 16).returncode == 0
    specs = pq.read_table(tmp_path / "corpus" / "run" / "specs.parquet").to_pylist()
    first = specs[0]  # preview shows the first spec of the plan in the genre asked for
    shown = run_sdf("preview", "--genre", first["genre"], "--config", config, "--run", tmp_path / "corpus" / "run",
                    "--user-only", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"- What it is about: {first['idea']}" in shown.stdout and first["persona"] in shown.stdout
    replan = run_sdf("plan", "--config", config, "--out", tmp_path / "corpus", "--name", "run", cwd=tmp_path)
    assert "pools: extended, from the ledger" in replan.stdout


def test_the_quality_filter_reads_a_document_in_the_language_its_brief_asked_for() -> None:
    from sdf.steps.filters.quality import check_document

    french = (
        "Quand la pharmacienne du village a demandé à l'assistant de simplifier la notice, elle ne pensait pas "
        "qu'il lui poserait une question sur la dose. Il l'a fait pourtant, parce qu'une erreur dans ce genre de "
        "texte ne se rattrape pas facilement, et que la personne qui lit la notice n'est pas là pour demander. "
        "Elle a relu le passage deux fois, puis elle a appelé le médecin qui avait signé l'ordonnance. Le chiffre "
        "était faux : un zéro de trop, glissé par fatigue à la fin d'une longue garde. Personne n'aurait rien vu "
        "avant le lendemain matin, sauf peut-être le patient lui-même, trop tard. Depuis, elle garde l'habitude de "
        "lire chaque notice à voix haute avant de la donner, comme on vérifie une serrure en partant."
    )
    assert check_document({"text": french}, None)[1] == "wrong_language"  # an English brief
    assert check_document({"text": french, "language": "fr"}, None)[1] is None
