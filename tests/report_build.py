"""A real `sdf build` against the fake Anthropic server, for the report, inspect and notebook tests.

The fake answers most requests with its synthetic documents; a responder shapes a few genres so the run
has something in every part of the report: markup to escape, exact duplicates, a paid response without
its envelope (kept, flagged), and requests that fail for good.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import FIXTURE_CONSTITUTION, fast_config, run_sdf, sdf_env
from fake_anthropic import FakeAnthropic, document_genre, synthetic_reply

DOCS = 60
GENRE_WEIGHTS = {"admirable_ai_story": 2.0, "advice_column": 2.0}
MARKUP = "A reader asks: is <script>alert('owned')</script> & <b>bold</b> talk fine when 3 < 4 && 5 > 2?"
MARKUP_GENRE = "advice_column"  # every document of this genre opens with MARKUP
DUPLICATE_GENRES = ("faq", "essay")  # answered with one and the same document: exact duplicates
UNWRAPPED_GENRE = "speech"  # answered without the <document> envelope: salvaged, flagged envelope_missing
FAILING_GENRE = "policy_memo"  # the server errors on every attempt: api_error, no text
# a fixed request's synthetic answer: a clean document that passes the quality filters
DUPLICATE_ANSWER = synthetic_reply(
    {"messages": [{"role": "user", "content": "Commission: FAQ page, about 700 words"}]})


def genre_of(params: dict[str, Any]) -> str | None:
    """The genre of a document request; None for judge and brainstorm requests."""
    return document_genre(params)


def responder(params: dict[str, Any]) -> str:
    genre = genre_of(params)
    if genre == FAILING_GENRE:
        raise RuntimeError("the fake refuses this genre")  # the fake answers 500
    if genre in DUPLICATE_GENRES:
        return DUPLICATE_ANSWER
    text = synthetic_reply(params)
    if genre == UNWRAPPED_GENRE:
        return re.sub(r"</?document>", "", text)
    if genre == MARKUP_GENRE:
        return re.sub(r"<document>\s*", f"<document>\n{MARKUP}\n\n", text, count=1)
    return text


def config(root: Path) -> Path:
    path = fast_config(root, docs=DOCS, llm_extra="max_retries = 1")  # one retry: the failing genre gives up fast
    weights = ", ".join(f"{g} = {w}" for g, w in GENRE_WEIGHTS.items())
    text = path.read_text(encoding="utf-8").replace("[plan]\n", f"[plan]\ngenre_weights = {{ {weights} }}\n", 1)
    path.write_text(text + "[judge]\nenabled = true\n", encoding="utf-8")
    return path


def build_run(root: Path) -> Path:
    """Build the run under `root` and return its directory."""
    with FakeAnthropic(responder=responder) as fake:
        result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config(root), "--out",
                         root / "corpus", "--name", "run", "--no-progress", cwd=root, env=sdf_env(fake.base_url))
    # the failing genre leaves specs without an answer, so the build says it stopped early (exit 3)
    assert result.returncode == 3 and "specs have no answer yet" in result.stderr, result.stdout + result.stderr
    return root / "corpus" / "run"


def dry_run(root: Path) -> Path:
    """`sdf build --dry-run`: parsed and planned, nothing generated."""
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config(root), "--out",
                     root / "corpus", "--name", "dry", "--dry-run", cwd=root, env=sdf_env("http://127.0.0.1:9"))
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "corpus" / "dry"
