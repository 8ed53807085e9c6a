from __future__ import annotations

from pathlib import Path

import pytest

from sdf.config import Settings, load_settings, settings_from_dict
from sdf.errors import SdfError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sdf.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[plan]\ndocs = 40\n[llm]\nconcurrency = 4\n")
    s = load_settings(path, {"plan.docs": 7, "llm.model": "m"})
    assert s.plan.docs == 7 and s.llm.concurrency == 4 and s.llm.model == "m"
    assert load_settings(None).plan.docs == Settings().plan.docs


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[plan]\ndocz = 3\n", r"unknown key \[plan\]\.docz"),
        ("[plann]\ndocs = 3\n", r"unknown table \[plann\]"),
        ("[plan]\ndocs = 'many'\n", r"\[plan\]\.docs must be a whole number"),
        ("[llm]\ntemperature = 3.0\n", r"\[llm\]\.temperature: must be between 0 and 1"),
        ("[llm]\nprovider = 'openai'\n", r"\[llm\]\.provider"),
        ("[plan]\ngenre_weights = {essay = -1}\n", r"\[plan\]\.genre_weights"),
        ("[plan]\ngenre_weights = {essay = 'x'}\n", r"entry 'essay' must be a number"),
        ("[llm]\nbatch = 1\n", r"\[llm\]\.batch must be true or false"),
        ("[plan\ndocs = 3\n", "not valid TOML"),
        ("[pricing.'my-model']\ninput = 1.0\n", r"pricing"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(SdfError, match=message) as err:
        load_settings(write(tmp_path, toml))
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SdfError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_resolved_config_round_trips_without_secrets(tmp_path: Path) -> None:
    s = settings_from_dict(
        {
            "llm": {"provider": "langchain", "langchain_class": "m:C", "langchain_kwargs": {"api_key": "sk-secret",
                                                                                          "base_url": "http://x"}},
            "plan": {"genre_weights": {"essay": 2.0}},
            "pricing": {"my-model": {"input": 1.0, "output": 2.0}},
            "run": {"variables": {"model_name": "Claude"}},
        }
    )
    text = s.to_toml()
    assert "sk-secret" not in text and "<redacted>" in text
    path = write(tmp_path, text)
    again = load_settings(path)
    assert again.plan.genre_weights == {"essay": 2.0}
    assert again.price("my-model").output == 2.0
    assert again.run.variables == {"model_name": "Claude"}
    assert again.llm.langchain_kwargs["base_url"] == "http://x"
    assert again.to_dict() == s.to_dict()
    assert again.config_hash() == s.config_hash()


def test_price_multipliers() -> None:
    price = Settings().price("claude-sonnet-4-5")
    assert price is not None
    assert price.cost(1_000_000, 0) == pytest.approx(3.0)
    assert price.cost(0, 0, cache_write=1_000_000) == pytest.approx(3.75)
    assert price.cost(0, 0, cache_read=1_000_000) == pytest.approx(0.3)
    assert price.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(9.0)
