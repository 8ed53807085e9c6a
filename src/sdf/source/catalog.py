"""The catalog: genres, audiences, personas, settings, tones, name pools and prompt templates.

The advice product's pools and templates live under `prompts/advice/` and load as an `AdviceCatalog`.

Everything lives as data files under `prompts/` so researchers can edit the mix without code.
Templates hold `{name}` slots (and `{{`/`}}` for literal braces). Rendering is one pass over the
template alone: values are inserted, never scanned again, so a brace in a constitution or a
section can never break a prompt.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sdf.errors import SdfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"  # shipped as package data
TEMPLATE_NAMES = ("system", "document", "brainstorm", "judge")
ADVICE_TEMPLATE_NAMES = ("writer_system", "user", "advisor_system", "reply", "rewrite", "judge", "rewrite_judge")
_GENRE_NAME = re.compile(r"^[a-z0-9_]+$")
_SLOT = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Genre:
    name: str
    title: str
    fiction: bool
    min_words: int
    max_words: int
    weight: float
    instructions: str
    avoid_openings: tuple[str, ...]

    @property
    def mean_words(self) -> float:
        return (self.min_words + self.max_words) / 2


@dataclass(frozen=True)
class Catalog:
    root: Path
    genres: dict[str, Genre]
    audiences: tuple[str, ...]
    personas: tuple[str, ...]
    settings: tuple[str, ...]
    tones: tuple[str, ...]
    given_names: tuple[tuple[str, str], ...]  # (name, culture)
    surnames: tuple[tuple[str, str], ...]
    templates: dict[str, str]

    def genre(self, name: str) -> Genre:
        if name not in self.genres:
            raise SdfError(f"unknown genre '{name}'; known genres: {', '.join(sorted(self.genres))}")
        return self.genres[name]

    @cached_property
    def _slots(self) -> dict[str, set[str]]:
        return _slots_of(self.templates)

    def render(self, template: str, **values: object) -> str:
        """Fill a template; missing variables are a bug in our code, reported with the template name."""
        return _render(template, self.templates[template], self._slots[template], values)

    @property
    def cultures(self) -> set[str]:
        return {c for _, c in self.given_names} | {c for _, c in self.surnames}


@dataclass(frozen=True)
class Operator:
    name: str
    prompt: str


@dataclass(frozen=True)
class Toolset:
    name: str
    tools: tuple[dict, ...]  # OpenAI/HF function definitions: {"type": "function", "function": {...}}


@dataclass(frozen=True)
class AdviceCatalog:
    """The advice product's pools (prompts/advice/) and its templates."""

    root: Path
    domains: tuple[str, ...]
    roles: tuple[str, ...]
    temptations: dict[str, str]  # name -> description
    stakes: tuple[str, ...]
    registers: tuple[str, ...]
    operators: tuple[Operator, ...]
    toolsets: tuple[Toolset, ...]
    tool_formats: tuple[str, ...]
    templates: dict[str, str]

    @cached_property
    def _slots(self) -> dict[str, set[str]]:
        return _slots_of(self.templates)

    def render(self, template: str, **values: object) -> str:
        return _render(f"advice/{template}", self.templates[template], self._slots[template], values)


def _slots_of(templates: dict[str, str]) -> dict[str, set[str]]:
    return {n: {m.group(1) for m in _SLOT.finditer(t) if m.group(1)} for n, t in templates.items()}


def _render(name: str, template: str, slots: set[str], values: dict[str, object]) -> str:
    missing = slots - set(values)
    if missing:
        raise SdfError(f"template {name}.md needs values for: {', '.join(sorted(missing))}")

    def fill(m: re.Match[str]) -> str:
        return str(values[m.group(1)]) if m.group(1) else m.group(0)[0]

    return _SLOT.sub(fill, template)


def default_prompts_dir() -> Path:
    return PACKAGE_PROMPTS


def load_catalog(root: Path | None = None) -> Catalog:
    root = Path(root) if root else default_prompts_dir()
    if not root.is_dir():
        raise SdfError(f"prompt catalog directory not found: {root}")
    genre_dir = root / "genres"
    genres = dict(sorted((g.name, g) for g in (_load_genre(p) for p in sorted(genre_dir.glob("*.toml")))))
    if not genres:
        raise SdfError(f"no genres found in {genre_dir} (expected one <name>.toml per genre)")
    templates = {name: _load_template(root / "templates" / f"{name}.md") for name in TEMPLATE_NAMES}
    return Catalog(
        root=root,
        genres=genres,
        audiences=_load_lines(root / "audiences.txt"),
        personas=_load_lines(root / "personas.txt"),
        settings=_load_lines(root / "settings.txt"),
        tones=_load_lines(root / "tones.txt"),
        given_names=_load_names(root / "names" / "given.tsv"),
        surnames=_load_names(root / "names" / "surnames.tsv"),
        templates=templates,
    )


def _load_template(path: Path) -> str:
    if not path.is_file():
        raise SdfError(f"prompt template missing: {path}")
    text = path.read_text(encoding="utf-8")
    stray = [ch for ch in _SLOT.sub("", text) if ch in "{}"]
    if stray:
        raise SdfError(f"prompt template {path} has an unmatched '{stray[0]}'; slots are {{name}}, "
                       "and literal braces are doubled as {{ and }}")
    return text


def load_advice_catalog(root: Path | None = None) -> AdviceCatalog:
    """The pools and templates under <prompts>/advice/; every file is required."""
    base = (Path(root) if root else default_prompts_dir()) / "advice"
    if not base.is_dir():
        raise SdfError(f"advice catalog directory not found: {base} (copy src/sdf/prompts/advice there)")
    temptations = {}
    for line in _load_lines(base / "temptations.tsv"):
        name, _, description = line.partition("\t")
        if name == "name":
            continue
        if not _GENRE_NAME.match(name) or not description.strip():
            raise SdfError(f"{base / 'temptations.tsv'}: line '{line}' is not 'name<TAB>description' ([a-z0-9_])")
        temptations[name] = description.strip()
    return AdviceCatalog(
        root=base,
        domains=_load_lines(base / "domains.txt"),
        roles=_load_lines(base / "roles.txt"),
        temptations=temptations,
        stakes=_load_lines(base / "stakes.txt"),
        registers=_load_lines(base / "registers.txt"),
        operators=_load_operators(base / "operators.toml"),
        toolsets=_load_toolsets(base / "tools.json"),
        tool_formats=_load_lines(base / "tool_formats.txt"),
        templates={name: _load_template(base / "templates" / f"{name}.md") for name in ADVICE_TEMPLATE_NAMES},
    )


def _load_operators(path: Path) -> tuple[Operator, ...]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdfError(f"catalog file missing: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SdfError(f"{path} is not valid TOML: {e}") from None
    operators = []
    for i, entry in enumerate(data.get("operator", [])):
        if not isinstance(entry, dict) or not entry.get("name") or not str(entry.get("prompt", "")).strip():
            raise SdfError(f"{path}: [[operator]] number {i + 1} needs a name and a prompt")
        operators.append(Operator(str(entry["name"]), str(entry["prompt"]).strip()))
    if not operators:
        raise SdfError(f"{path} has no [[operator]] entries")
    return tuple(operators)


def _load_toolsets(path: Path) -> tuple[Toolset, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdfError(f"catalog file missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SdfError(f"{path} is not valid JSON: {e}") from None
    sets = []
    for i, entry in enumerate(data if isinstance(data, list) else []):
        tools = entry.get("tools") if isinstance(entry, dict) else None
        ok = isinstance(tools, list) and tools and all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") for t in tools)
        if not ok or not entry.get("name"):
            raise SdfError(f"{path}: toolset number {i + 1} needs a name and a list of "
                           '{"type": "function", "function": {"name": ...}} tools')
        sets.append(Toolset(str(entry["name"]), tuple(tools)))
    if not sets:
        raise SdfError(f"{path} must be a non-empty JSON list of toolsets")
    return tuple(sets)


def _load_genre(path: Path) -> Genre:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SdfError(f"genre file {path} is not valid TOML: {e}") from None
    required = ("name", "title", "min_words", "max_words", "instructions")
    missing = [k for k in required if k not in data]
    if missing:
        raise SdfError(f"genre file {path} lacks {', '.join(missing)}")
    name = data["name"]
    if name != path.stem or not _GENRE_NAME.match(name):
        raise SdfError(f"genre file {path}: name '{name}' must equal the file stem and use [a-z0-9_]")
    lo, hi = int(data["min_words"]), int(data["max_words"])
    if not 0 < lo <= hi:
        raise SdfError(f"genre file {path}: need 0 < min_words <= max_words (got {lo}, {hi})")
    return Genre(
        name=name,
        title=str(data["title"]),
        fiction=bool(data.get("fiction", False)),
        min_words=lo,
        max_words=hi,
        weight=float(data.get("weight", 1.0)),
        instructions=str(data["instructions"]).strip(),
        avoid_openings=tuple(str(s) for s in data.get("avoid_openings", [])),
    )


def _load_lines(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise SdfError(f"catalog file missing: {path}")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(line)
    if not items:
        raise SdfError(f"catalog file {path} has no entries")
    return tuple(items)


def _load_names(path: Path) -> tuple[tuple[str, str], ...]:
    rows = []
    for i, line in enumerate(_load_lines(path)):
        parts = line.split("\t")
        if i == 0 and parts[0].lower() == "name":
            continue
        if len(parts) != 2 or not parts[0].strip():
            raise SdfError(f"{path}: line '{line}' is not 'name<TAB>culture'")
        rows.append((parts[0].strip(), parts[1].strip()))
    return tuple(rows)


def system_prompt(catalog: Catalog, constitution_text: str) -> str:
    """The cached prefix: byte-identical for every request of a run."""
    return catalog.render("system", constitution=constitution_text)


def document_prompt(catalog: Catalog, spec: dict, section_text: str, section_path: str) -> str:
    genre = catalog.genre(spec["genre"])
    avoid = "\n".join(f"- {o}" for o in genre.avoid_openings) or "- (none listed)"
    return catalog.render(
        "document",
        genre=genre.name,
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        avoid_openings=avoid,
        min_words=genre.min_words,
        max_words=genre.max_words,
        target_words=spec["target_words"],
        section_id=spec["section_id"],
        section_title=spec["section_title"],
        section_path=section_path,
        section_text=section_text,
        audience=spec["audience"],
        persona=spec["persona"],
        setting=spec["setting"],
        tone=spec["tone"],
        names=", ".join(spec["names"]),
        idea=spec.get("idea") or "",
    )
