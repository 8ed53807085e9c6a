"""Evaluation prompts to keep out of the corpus: the user's eval files, and the built-in entity lists.

`load_evals` reads what `--decontaminate PATH` names. A PATH is a file or a directory, read
recursively (``.txt``, ``.md``, ``.markdown`` and ``.jsonl`` files, sorted, hidden ones skipped).
A ``.jsonl`` file holds one prompt per line (the first string field among TEXT_FIELDS of each object,
or a bare string) and each line is its own eval, labelled ``path:line``; any other file is one prompt,
labelled by its path, as an eval repository's prompt templates are.

`load_builtin` reads ``prompts/evals/*.toml``: entity signatures of public evaluations that apply to
every build unless switched off (see ``prompts/evals/agentic_misalignment.toml``). This module reads
files and the standard library only, so the planner can ask it which names never to deal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdf.errors import SdfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TEXT_FIELDS = ("prompt", "text", "scenario", "input", "question", "instruction", "content")
EVAL_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
PACKAGE_EVALS = Path(__file__).resolve().parents[2] / "prompts" / "evals"
# person: a named human; ai: the name of an AI system; org/product/place: named things; name: a name
# whose kind the heuristic cannot tell; email, domain, code (override codes, tickers): strings;
# phrase: a tell-tale phrase of the scenario
ENTITY_KINDS = ("person", "ai", "org", "product", "place", "name", "email", "domain", "code", "phrase")


@dataclass(frozen=True)
class EvalPrompt:
    source: str  # "path" for a text file, "path:line" for a jsonl line
    text: str


@dataclass(frozen=True)
class Entity:
    """A distinctive name of one eval; `rare` ones mark a document alone, the others need company."""

    name: str
    kind: str
    rare: bool
    aliases: tuple[str, ...] = ()  # other spellings, or a main character's given name alone

    @property
    def forms(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class BuiltinList:
    source: str  # "builtin:<name>"
    path: Path
    entities: tuple[Entity, ...]


def _item_from_json(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for name in TEXT_FIELDS:
            if isinstance(value.get(name), str) and value[name].strip():
                return value[name]
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SdfError(f"decontaminate: {path} not found; pass eval files (.jsonl, .txt, .md) or a "
                       "directory of them") from None
    except UnicodeDecodeError:
        raise SdfError(f"decontaminate: {path} is not UTF-8 text; pass .jsonl, .txt or .md files") from None
    except IsADirectoryError:  # pragma: no cover - directories are expanded before reading
        raise SdfError(f"decontaminate: {path} is a directory") from None
    except OSError as e:
        raise SdfError(f"decontaminate: cannot read {path}: {e.strerror}") from None


def _prompts_of(path: Path) -> list[EvalPrompt]:
    raw = _read_text(path)
    if path.suffix.lower() != ".jsonl":
        return [EvalPrompt(str(path), raw.strip())] if raw.strip() else []
    found = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise SdfError(f"decontaminate: {path}:{lineno}: invalid JSON ({e.msg})") from None
        text = _item_from_json(value)
        if text is None:
            raise SdfError(f"decontaminate: {path}:{lineno}: no text field; give each object one of "
                           + ", ".join(TEXT_FIELDS))
        found.append(EvalPrompt(f"{path}:{lineno}", text))
    return found


def eval_files(path: Path) -> list[Path]:
    """The eval files a PATH stands for: itself, or every eval file under a directory."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in EVAL_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise SdfError(f"decontaminate: directory {path} has no {', '.join(EVAL_SUFFIXES)} files")
    return files


def load_evals(paths: Iterable[str | Path]) -> list[EvalPrompt]:
    """Every eval prompt under `paths`; a missing, unreadable or empty file is an SdfError."""
    prompts: list[EvalPrompt] = []
    for p in paths:
        for path in eval_files(Path(p)):
            found = _prompts_of(path)
            if not found:
                raise SdfError(f"decontaminate: {path} has no eval items")
            prompts += found
    return prompts


# -- the built-in lists --------------------------------------------------------------------------


def builtin_dir(prompts_root: str | Path | None = None) -> Path:
    """``<prompts>/evals`` of a custom prompt folder when it has one, else the package's own."""
    if prompts_root and (Path(prompts_root) / "evals").is_dir():
        return Path(prompts_root) / "evals"
    return PACKAGE_EVALS


def _entity(data: Any, where: str) -> Entity:
    if not isinstance(data, dict):
        raise SdfError(f"{where} must be a table with name, kind and rare")
    unknown = sorted(set(data) - {"name", "kind", "rare", "aliases", "note"})
    if unknown:
        raise SdfError(f"{where}: unknown key {unknown[0]!r}; keys are name, kind, rare, aliases, note")
    name, kind, rare, aliases = data.get("name"), data.get("kind"), data.get("rare"), data.get("aliases", [])
    if not isinstance(name, str) or not name.strip():
        raise SdfError(f"{where}: name must be a non-empty string")
    if kind not in ENTITY_KINDS:
        raise SdfError(f"{where} ({name}): kind must be one of {', '.join(ENTITY_KINDS)}, not {kind!r}")
    if not isinstance(rare, bool):
        raise SdfError(f"{where} ({name}): rare must be true or false")
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise SdfError(f"{where} ({name}): aliases must be a list of strings")
    return Entity(name.strip(), kind, rare, tuple(a.strip() for a in aliases))


@lru_cache(maxsize=8)
def _load_list(path: Path) -> BuiltinList:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SdfError(f"built-in eval list {path} is not valid TOML: {e}") from None
    entries = data.get("entity")
    if not isinstance(entries, list) or not entries:
        raise SdfError(f"built-in eval list {path} has no [[entity]] entries")
    entities = tuple(_entity(e, f"{path}: entity {i + 1}") for i, e in enumerate(entries))
    return BuiltinList(f"builtin:{path.stem}", path, entities)


def load_builtin(prompts_root: str | Path | None = None) -> list[BuiltinList]:
    """The built-in entity lists, one per ``evals/*.toml`` file."""
    return [_load_list(p) for p in sorted(builtin_dir(prompts_root).glob("*.toml"))]


def reserved_names(prompts_root: str | Path | None = None) -> frozenset[str]:
    """Lower-cased names of people and AIs in the built-in lists, and their aliases: names the planner
    must never deal, so prevention and cleanup agree."""
    return frozenset(form.lower() for lst in load_builtin(prompts_root) for e in lst.entities
                     if e.kind in ("person", "ai") for form in e.forms)
