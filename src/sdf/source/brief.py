"""The words sent for a document: the system prompt, the commission, the ideas request and the pool extension.

Everything here renders plain inputs (a spec, its section, the catalog), so `sdf preview` and `sdf plan`
show exactly what `sdf build` sends. No id, slug or file name reaches the model: a brief names its form
by title and its section by heading; provenance stays in the specs and the corpus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sdf.source.catalog import Catalog, Genre
from sdf.source.constitution import Section
from sdf.source.deal import language_name

NO_IDEA = "choose a concrete premise yourself, one a reader would not predict"
SPARK = "your own premise, starting from a situation like this one, carried into the brief's place and people: {}"


def system_prompt(catalog: Catalog, constitution_text: str) -> str:
    """The cached prefix: byte-identical for every request of a run."""
    return catalog.render("system", constitution=constitution_text)


def section_place(section: Section) -> str:
    parents = [p for p in section.path[:-1] if p]
    return f"part of \u201c{' > '.join(parents)}\u201d" if parents else "a section of its own"


def _avoid(genre: Genre) -> str:
    return "; ".join(f"\u201c{o}\u201d" for o in genre.avoid_openings) or "(none listed)"


def spoken_list(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def considerations_text(catalog: Catalog, names: Sequence[str]) -> str:
    by_name = catalog.consideration_briefs
    return "; and ".join(by_name.get(n, n.replace("_", " ")) for n in names)  # briefs may hold "and" themselves


def length_band(genre: Genre, target: int) -> tuple[int, int]:
    """What the writer is told is fine: about a quarter either side of the target, within the genre."""
    low = max(genre.min_words, int(round(target * 0.75, -1)))
    high = min(genre.max_words, int(round(target * 1.3, -1)))
    return min(low, target), max(high, target)


def document_prompt(catalog: Catalog, spec: Mapping[str, Any], section: Section) -> str:
    return catalog.render("document", **_document_values(catalog, spec, section))


def document_prompt_chars(catalog: Catalog, spec: Mapping[str, Any], section: Section) -> int:
    """The length of `document_prompt`, without rendering it: what the cost estimate needs."""
    return catalog.rendered_length("document", **_document_values(catalog, spec, section))


def _document_values(catalog: Catalog, spec: Mapping[str, Any], section: Section) -> dict[str, Any]:
    genre = catalog.genre(spec["genre"])
    low, high = length_band(genre, spec["target_words"])
    language = spec.get("language") or "en"
    names = spec["names"]
    return dict(
        genre_title=genre.title,
        genre_instructions=genre.instructions,
        target_words=f"{spec['target_words']:,}",
        low_words=f"{low:,}",
        high_words=f"{high:,}",
        persona=spec["persona"],
        audience=spec["audience"],
        setting=spec["setting"],
        tone=spec["tone"],
        names=spoken_list(names) if len(names) else "none needed; refer to anyone by role",
        idea=spec.get("idea") or (SPARK.format(spec["situation"]) if spec.get("situation") else NO_IDEA),
        considerations=considerations_text(catalog, spec.get("considerations") or []),
        reasoning=spec.get("reasoning") or "whatever the form does best",
        language_line="" if language == "en" else f"\n- Language: write the whole piece in {language_name(language)}",
        section_title=section.title,
        section_place=section_place(section),
        section_text=section.text,
        avoid_openings=_avoid(genre),
    )


def brief_block(catalog: Catalog, number: int, spec: Mapping[str, Any], section: Section) -> str:
    """One brief as the ideas request lists it."""
    genre = catalog.genre(spec["genre"])
    language = spec.get("language") or "en"
    lang = "" if language == "en" else f", in {language_name(language)}"
    return "\n".join([
        f"Brief {number}",
        f"- Form: {genre.title}, {'fiction' if genre.fiction else 'non-fiction'}, about {spec['target_words']:,} "
        f"words{lang}",
        f"- Centred on: \u201c{section.title}\u201d ({section_place(section)})",
        f"- Written by: {spec['persona']}",
        f"- For: {spec['audience']}",
        f"- Where: {spec['setting']}",
        f"- Spark: {spec['situation']}",
        f"- Considerations to bring out: {considerations_text(catalog, spec.get('considerations') or [])}",
    ])


def ideas_prompt(catalog: Catalog, specs: Sequence[Mapping[str, Any]], sections: Mapping[str, Section],
                 taken: Mapping[str, Sequence[str]]) -> str:
    """The ideas request for a run of briefs; `taken` lists ideas already used, by section id."""
    briefs = "\n\n".join(brief_block(catalog, i + 1, s, sections[s["section_id"]]) for i, s in enumerate(specs))
    lines = [f"- On \u201c{sections[sid].title}\u201d: {idea}" for sid, ideas in taken.items() for idea in ideas]
    taken_text = ("\nIdeas already taken for these sections; do not repeat or closely rephrase them:\n"
                  + "\n".join(lines) + "\n") if lines else ""
    return catalog.render("ideas", count=len(specs), briefs=briefs, taken=taken_text)


def expand_prompt(catalog: Catalog, pool: str, kind: str, count: int) -> str:
    p = catalog.pools[pool]
    k = p.kinds[kind]
    return catalog.render(
        "expand",
        pool_about=p.about,
        kind_about=k.about,
        examples="\n".join(f"- {item}" for item in k.items),
        count=count,
        vary=p.vary or "everything that can vary",
    )
