"""A run in hand: its directory, settings, parsed constitution and prompt catalog."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from sdf.config import Settings, load_settings
from sdf.errors import SdfError
from sdf.llm.ledger import Ledger, open_ledger
from sdf.run import RunDir
from sdf.source.brief import system_prompt
from sdf.source.catalog import Catalog, load_catalog
from sdf.source.constitution import Constitution, Section, load_constitution
from sdf.source.plan import genre_weights, select_sections


@dataclass
class Run:
    dir: RunDir
    settings: Settings
    constitution: Constitution
    catalog: Catalog

    @cached_property
    def system(self) -> str:
        """The cached prefix shared by every request of the run."""
        return system_prompt(self.catalog, self.constitution.text)

    @cached_property
    def constitution_text(self) -> str:
        """The constitution's text; a reopened run has only its sections, so it reads the file again."""
        if self.constitution.text:
            return self.constitution.text
        return load_constitution(Path(self.settings.run.constitution), self.settings.run.variables).text

    @cached_property
    def sections(self) -> dict[str, Section]:
        return {s.id: s for s in self.constitution.sections}

    def ledger(self) -> Ledger:
        return open_ledger(self.dir.path)

    def send(self, ledger: Ledger, requests: list, desc: str, progress: bool, backend: Any) -> Any:
        """Send what the ledger has not answered, within the run's budget: the one way a product sends."""
        from sdf.llm.engine import run_requests

        s = self.settings
        return run_requests(requests, ledger, backend, s.llm, s.budget.max_cost_usd, s.price, desc=desc,
                            progress=progress)


def run_path(settings: Settings, constitution_path: Path) -> Path:
    return Path(settings.run.out) / (settings.run.name or constitution_path.stem)


def _catalog(settings: Settings) -> Catalog:
    return load_catalog(Path(settings.run.prompts) if settings.run.prompts else None)


def create_run(settings: Settings, constitution_path: Path, run_dir: Path | None = None) -> Run:
    """Parse the constitution and write config.toml and sections.jsonl (validation first, then I/O)."""
    parsed = load_constitution(constitution_path, settings.run.variables)
    constitution = select_sections(parsed, settings.plan).constitution  # exclusions, {.skip}, merged stubs
    catalog = _catalog(settings)
    genre_weights(catalog, settings.plan)  # an unknown genre fails here, before anything is written
    settings = replace(settings, run=replace(settings.run, constitution=str(constitution_path)))
    rd = RunDir(run_dir or run_path(settings, constitution_path))
    make_run_dir(rd.path)
    rd.acquire_lock()
    rd.write_config(settings.to_toml())
    rd.write_sections(asdict(s) for s in constitution.sections)
    return Run(rd, settings, constitution, catalog)


def make_run_dir(path: Path) -> None:
    """Create the run directory, or say in one line why it cannot be (before anything is written)."""
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise SdfError(f"cannot create the run directory {path}: {parent} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"  # one per process: two builds may race here
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SdfError(f"cannot write the run directory {path}: {e.strerror or e}") from None


def open_run(path: Path, overrides: dict | None = None, write: bool = False) -> Run:
    """Reopen an existing run from its config.toml and sections.jsonl; `write` takes the writer lock."""
    rd = RunDir(path)
    rd.require_run()
    if write:
        rd.acquire_lock()
    settings = load_settings(rd.config, overrides)
    sections = tuple(Section(**{**row, "path": tuple(row["path"])}) for row in rd.read_sections())
    return Run(rd, settings, Constitution("", sections), _catalog(settings))
