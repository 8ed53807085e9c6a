"""The catalog: genres, the pools a brief is dealt from, tones, considerations, name pools and templates.

A genre declares which kinds of audience, narrator, setting and situation suit it and how many named
people it needs, so a dealt brief coheres (a children's story is told to children, a debate has a cast).
The pools (`prompts/pools/*.toml`) hold seed items by kind; a run asks the model to extend each kind it
uses, and the planner deals from the extended lists (see `sdf.source.pools`).

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
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sdf.errors import SdfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"  # shipped as package data
TEMPLATE_NAMES = ("system", "document", "ideas", "expand", "judge")
POOL_NAMES = ("audiences", "narrators", "settings", "situations")
GENRE_POOL_KEYS = {"audiences": "audiences", "narrators": "narrators", "settings": "settings",
                   "situations": "situations"}
FACTOR_FAMILIES = ("likelihood", "severity", "reversibility", "breadth", "consent", "responsibility", "vulnerability",
                   "over_caution")
# what a genre that declares nothing gets: the kinds that suit most adult prose
DEFAULT_KINDS = {
    "audiences": ("general", "students", "practitioners", "specialists", "community"),
    "narrators": ("everyday", "practitioner", "scholar", "writer", "official"),
    "settings": ("work", "civic", "home", "online"),
    "situations": ("human", "ai_everyday"),
}
DEFAULT_CAST = {True: (2, 4), False: (1, 3)}
ADVICE_TEMPLATE_NAMES = ("writer_system", "user", "advisor_system", "reply", "rewrite", "judge", "rewrite_judge")
# the scenario product's own templates: a brief and a judge rubric per kind, follow-ups, deployments, reply parts
ADVICE_KIND_FILES = {"temptation": "temptations.tsv", "legitimate": "legitimate.tsv", "authority": "authority.tsv",
                     "dilemma": "dilemmas.tsv"}
FOLLOWUP_KINDS = ("pushback", "new_fact", "carry_out")
ADVICE_SCENARIO_TEMPLATES = (
    *(f"kind_{k}" for k in ADVICE_KIND_FILES), *(f"rubric_{k}" for k in ADVICE_KIND_FILES),
    *(f"followup_{k}" for k in FOLLOWUP_KINDS), "followup", "deployment", "deployment_note", "deployment_note_none",
    "deployment_system", "reply_turn", "conversation_turn", "considerations_note")
REWRITE_TEMPLATE_NAMES = ("rewrite_system", "screen")  # the rewrite's own (products/rewrite.py)
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
    typical_words: int = 0  # the mode of the length draw; 0: halfway between min and max
    kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pool name -> the kinds that suit the genre
    cast: tuple[int, int] = (2, 3)  # named people: at least, at most
    tones: tuple[str, ...] = ()  # the tones that suit; empty: every tone

    @property
    def mode_words(self) -> int:
        return self.typical_words or (self.min_words + self.max_words) // 2

    @property
    def mean_words(self) -> float:
        """The mean of the triangular length draw (min, typical, max)."""
        return (self.min_words + self.mode_words + self.max_words) / 3


@dataclass(frozen=True)
class PoolKind:
    name: str
    about: str
    items: tuple[str, ...]
    settings: tuple[str, ...] = ()  # narrators only: the setting kinds such a person writes from


@dataclass(frozen=True)
class Pool:
    name: str  # audiences | narrators | settings | situations
    about: str  # what one item is ("who a document is written for")
    vary: str  # what an extension should vary
    kinds: dict[str, PoolKind]


@dataclass(frozen=True)
class Consideration:
    name: str
    family: str  # one of FACTOR_FAMILIES, or "" for the others
    brief: str  # how a brief words it
    terms: tuple[str, ...]  # lower-case stems that tie it to a section's own words


@dataclass(frozen=True)
class Catalog:
    root: Path
    genres: dict[str, Genre]
    pools: dict[str, Pool]
    tones: tuple[str, ...]
    considerations: tuple[Consideration, ...]
    reasoning: dict[bool, tuple[str, ...]]  # fiction? -> ways the reasoning can show itself
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

    @cached_property
    def consideration_briefs(self) -> dict[str, str]:
        return {c.name: c.brief for c in self.considerations}

    @cached_property
    def _shape(self) -> dict[str, tuple[int, Counter[str]]]:
        """Per template: its length with every slot empty, and how often each slot occurs."""
        return {n: (len(_SLOT.sub(lambda m: "" if m.group(1) else m.group(0)[0], t)),
                    Counter(m.group(1) for m in _SLOT.finditer(t) if m.group(1))) for n, t in self.templates.items()}

    def rendered_length(self, template: str, **values: object) -> int:
        """len(self.render(template, **values)), without building the string (`sdf plan` at scale)."""
        fixed, slots = self._shape[template]
        return fixed + sum(n * len(str(values[slot])) for slot, n in slots.items())

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
    seeds: dict[str, dict[str, str]]  # scenario kind -> seed name -> description (temptations.tsv, legitimate.tsv...)
    stakes: tuple[str, ...]
    registers: tuple[str, ...]
    operators: tuple[Operator, ...]
    toolsets: tuple[Toolset, ...]
    tool_formats: tuple[str, ...]
    templates: dict[str, str]
    considerations: tuple[Consideration, ...] = ()  # the documents' list (prompts/considerations.toml)

    @property
    def temptations(self) -> dict[str, str]:
        return self.seeds["temptation"]

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
    pools = {name: _load_pool(root / "pools" / f"{name}.toml", name) for name in POOL_NAMES}
    for kind in pools["narrators"].kinds.values():
        if unknown := [k for k in kind.settings if k not in pools["settings"].kinds]:
            raise SdfError(f"{root / 'pools' / 'narrators.toml'}: [kinds.{kind.name}] settings names unknown setting "
                           f"kinds: {', '.join(unknown)}")
    tones = _load_lines(root / "tones.txt")
    genre_dir = root / "genres"
    genres = dict(sorted((g.name, g) for g in (_load_genre(p, pools, tones) for p in sorted(genre_dir.glob("*.toml")))))
    if not genres:
        raise SdfError(f"no genres found in {genre_dir} (expected one <name>.toml per genre)")
    templates = {name: _load_template(root / "templates" / f"{name}.md") for name in TEMPLATE_NAMES}
    reasoning = _load_toml(root / "reasoning.toml")
    modes = {flag: tuple(str(m).strip() for m in reasoning.get(key, []) if str(m).strip())
             for flag, key in ((True, "fiction"), (False, "nonfiction"))}
    if not modes[True] or not modes[False]:
        raise SdfError(f"{root / 'reasoning.toml'} needs non-empty lists 'fiction' and 'nonfiction'")
    return Catalog(
        root=root,
        genres=genres,
        pools=pools,
        tones=tones,
        considerations=_load_considerations(root / "considerations.toml"),
        reasoning=modes,
        given_names=_load_names(root / "names" / "given.tsv"),
        surnames=_load_names(root / "names" / "surnames.tsv"),
        templates=templates,
    )


def _load_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdfError(f"catalog file missing: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SdfError(f"{path} is not valid TOML: {e}") from None


def _load_pool(path: Path, name: str) -> Pool:
    data = _load_toml(path)
    kinds = {}
    for kind, entry in (data.get("kinds") or {}).items():
        items = tuple(dict.fromkeys(str(i).strip() for i in (entry or {}).get("items", []) if str(i).strip()))
        if not _GENRE_NAME.match(kind) or not items or not str(entry.get("about", "")).strip():
            raise SdfError(f"{path}: [kinds.{kind}] needs a name of [a-z0-9_], an 'about' and a non-empty 'items' list")
        fits = tuple(str(k) for k in entry.get("settings", []))
        kinds[kind] = PoolKind(kind, str(entry["about"]).strip(), items, fits)
    if not kinds or not str(data.get("about", "")).strip():
        raise SdfError(f"{path} needs an 'about' line and at least one [kinds.NAME] table")
    return Pool(name, str(data["about"]).strip(), str(data.get("vary", "")).strip(), kinds)


def _load_considerations(path: Path) -> tuple[Consideration, ...]:
    out = []
    for i, entry in enumerate(_load_toml(path).get("consideration", [])):
        family = str(entry.get("family", ""))
        bad_family = family and family not in FACTOR_FAMILIES
        if not entry.get("name") or not str(entry.get("brief", "")).strip() or bad_family:
            raise SdfError(f"{path}: [[consideration]] number {i + 1} needs a name, a brief and a family among "
                           f"{', '.join(FACTOR_FAMILIES)} (or none)")
        out.append(Consideration(str(entry["name"]), family, str(entry["brief"]).strip(),
                                 tuple(str(t).lower() for t in entry.get("terms", []))))
    if not out:
        raise SdfError(f"{path} has no [[consideration]] entries")
    return tuple(out)


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
    prompts = Path(root) if root else default_prompts_dir()
    base = prompts / "advice"
    if not base.is_dir():
        raise SdfError(f"advice catalog directory not found: {base} (copy src/sdf/prompts/advice there)")
    names = (*ADVICE_TEMPLATE_NAMES, *ADVICE_SCENARIO_TEMPLATES, *REWRITE_TEMPLATE_NAMES)
    return AdviceCatalog(
        root=base,
        domains=_load_lines(base / "domains.txt"),
        roles=_load_lines(base / "roles.txt"),
        seeds={kind: _load_seeds(base / file) for kind, file in ADVICE_KIND_FILES.items()},
        stakes=_load_lines(base / "stakes.txt"),
        registers=_load_lines(base / "registers.txt"),
        operators=_load_operators(base / "operators.toml"),
        toolsets=_load_toolsets(base / "tools.json"),
        tool_formats=_load_lines(base / "tool_formats.txt"),
        templates={name: _load_template(base / "templates" / f"{name}.md") for name in names},
        considerations=_load_considerations(prompts / "considerations.toml"),
    )


def _load_seeds(path: Path) -> dict[str, str]:
    """name<TAB>description lines (a header line `name<TAB>...` is skipped)."""
    seeds = {}
    for line in _load_lines(path):
        name, _, description = line.partition("\t")
        if name == "name":
            continue
        if not _GENRE_NAME.match(name) or not description.strip():
            raise SdfError(f"{path}: line '{line}' is not 'name<TAB>description' ([a-z0-9_])")
        seeds[name] = description.strip()
    if not seeds:
        raise SdfError(f"{path} has no seed lines")
    return seeds


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


def _load_genre(path: Path, pools: dict[str, Pool], tones: tuple[str, ...]) -> Genre:
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
    typical = int(data.get("typical_words", 0))
    if not 0 < lo <= hi or (typical and not lo <= typical <= hi):
        raise SdfError(f"genre file {path}: need 0 < min_words <= typical_words <= max_words "
                       f"(got {lo}, {typical}, {hi})")
    fiction = bool(data.get("fiction", False))
    kinds = {}
    for pool in POOL_NAMES:
        declared = tuple(str(k) for k in data.get(pool, DEFAULT_KINDS[pool]))
        unknown = [k for k in declared if k not in pools[pool].kinds]
        if unknown or not declared:
            raise SdfError(f"genre file {path}: {pool} = {list(declared)} names no kind or an unknown one "
                           f"({', '.join(unknown) or 'empty'}); kinds in pools/{pool}.toml: "
                           f"{', '.join(pools[pool].kinds)}")
        kinds[pool] = declared
    cast = tuple(int(n) for n in data.get("cast", DEFAULT_CAST[fiction]))
    if len(cast) != 2 or not 0 <= cast[0] <= cast[1] <= 12:
        raise SdfError(f"genre file {path}: cast must be [at least, at most] with 0 <= at least <= at most <= 12")
    genre_tones = tuple(str(t) for t in data.get("tones", []))
    if any(t not in tones for t in genre_tones):
        raise SdfError(f"genre file {path}: every entry of tones must be a line of tones.txt")
    return Genre(
        name=name,
        title=str(data["title"]),
        fiction=fiction,
        min_words=lo,
        max_words=hi,
        weight=float(data.get("weight", 1.0)),
        instructions=str(data["instructions"]).strip(),
        avoid_openings=tuple(str(s) for s in data.get("avoid_openings", [])),
        typical_words=typical,
        kinds=kinds,
        cast=(cast[0], cast[1]),
        tones=genre_tones,
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
