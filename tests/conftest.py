"""Shared fixtures: a local fake Anthropic server, and `sdf` run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_anthropic import FakeAnthropic  # noqa: E402

FIXTURE_CONSTITUTION = ROOT / "tests" / "data" / "fixture_constitution.md"
TEST_KEY = "fake-test-key-0123456789abcdefghijklmnopqrstuvwxyz"

# Fast, small settings for end-to-end runs against the fake server. The plan sends one document request
# per spec (no pool extensions, no ideas requests) so that tests can count requests; tests/test_briefs.py
# builds with the default plan.
FAST_TOML = """
[run]
seed = 7
variables = {{model_name = "Orin"}}
[plan]
docs = {docs}
brainstorm = false
expand_pools = false
[llm]
model = "claude-haiku-4-5"
concurrency = 4
max_tokens = {max_tokens}
truncation_retry_max_tokens = 16384
backoff_base_s = 0.01
backoff_max_s = 0.05
poll_interval_s = 0.02
poll_max_interval_s = 0.1
timeout_s = 5
{llm_extra}
[pack]
tokenizer = "{tokenizer}"
seq_len = 256
"""


def fast_config(tmp_path: Path, docs: int = 12, extra: str = "", max_tokens: int = 8192, llm_extra: str = "") -> Path:
    """Settings for quick runs; `extra` adds whole TOML tables (e.g. "[judge]\nenabled = true\n"),
    `llm_extra` adds lines to [llm]."""
    path = tmp_path / "sdf.toml"
    tokenizer = ROOT / "tests" / "data" / "tokenizer.json"
    text = FAST_TOML.format(docs=docs, tokenizer=tokenizer, max_tokens=max_tokens, llm_extra=llm_extra) + extra
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


def sdf_env(base_url: str | None = None, key: str | None = TEST_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["TQDM_DISABLE"] = "1"
    if base_url:
        env["ANTHROPIC_BASE_URL"] = base_url
    if key:
        env["ANTHROPIC_API_KEY"] = key
    return env


def run_sdf(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdf", *map(str, args)],
        cwd=cwd, env=env or sdf_env(), capture_output=True, text=True, timeout=timeout,
    )


def start_sdf(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sdf", *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="session")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `sdf build` (see report_build.py), shared by the report, inspect and notebook tests: treat it as
    read-only, and copy it before changing anything."""
    from report_build import build_run

    return build_run(tmp_path_factory.mktemp("built"))


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `sdf build --dry-run` of the same settings: planned, nothing generated (read-only, like built_run)."""
    from report_build import dry_run

    return dry_run(tmp_path_factory.mktemp("dry"))


@pytest.fixture(scope="module")
def spec():
    """A Model Spec-shaped document of our own: attrs, example fences with labels, footnotes, admonitions."""
    from sdf.source.constitution import load_constitution

    return load_constitution(ROOT / "tests" / "data" / "spec_fixture.md")


@pytest.fixture(scope="module")
def charter():
    """A constitution-shaped document of our own: a preface, 'A final word', acknowledgements, a bibliography."""
    from sdf.source.constitution import load_constitution

    return load_constitution(ROOT / "tests" / "data" / "charter_fixture.md")


@pytest.fixture(scope="session")
def advice_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `sdf build --product advice` with the judge on, shared by the report and notebook tests
    (read-only, like built_run)."""
    base = tmp_path_factory.mktemp("advice")
    config = fast_config(base, docs=8, extra="[judge]\nenabled = true\n")
    with FakeAnthropic() as server:
        result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out",
                         base / "corpus", "--name", "adv", "--product", "advice", "--no-progress", cwd=base,
                         env=sdf_env(server.base_url))
    assert result.returncode == 0, result.stderr
    return base / "corpus" / "adv"
