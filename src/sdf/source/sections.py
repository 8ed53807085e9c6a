"""What a section is: its text and sizes, and how to tell stubs, examples and non-normative text.

A section is the text under one heading, up to the next heading of any level. Its id is the
slug of its heading path (``honesty/calibration``), so editing one section never renames
another; an explicit ``{#id}`` attribute is the id exactly as written. Fenced blocks count as
examples, everything else as normative text. Parsing is in ``sdf.source.markdown``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from functools import cached_property

from sdf.errors import SdfError

MIN_SECTION_CHARS = 300  # less normative text than this is a stub: it is merged, never planned alone
HUGE_SECTION_CHARS = 12_000  # about 2,000 words; a writer covers only part of a section this long
MOSTLY_EXAMPLES = 0.6  # share of a section's text inside example fences that earns a warning
_NON_NORMATIVE_TITLES = [
    (re.compile(r"\backnowledge?ments?\b|\bthanks\b|\bcredits\b"), "acknowledgements"),
    (re.compile(r"^(?:references?|bibliography|works cited|citations|sources|further reading|reading list|"
                r"endnotes|notes and references|references and notes)$"), "references or bibliography"),
    (re.compile(r"^(?:table of )?contents$|^toc$"), "table of contents"),
    (re.compile(r"\b(?:change ?log|revision history|version history|document history|release notes)\b"),
     "changelog"),
    (re.compile(r"^about (?:this|the) (?:document|constitution|spec|specification|text|guide|paraphrase)\b|"
                r"^(?:about the )?authors?$|^contributors$|^colophon$|^licen[cs]e$|^copyright$|"
                r"^preface$|^foreword$|^editor'?s note$|^a note on (?:the|this) text$"), "about this document"),
    (re.compile(r"\b(?:summary|recap|tl;? ?dr|key takeaways|at a glance)\b"), "a summary of the rest"),
    (re.compile(r"^(?:end ?notes|notes|footnotes|notes on sources)$"), "end notes"),
    (re.compile(r"^how (?:this|the|we) (?:document|constitution|spec|specification|guide)?\s*(?:was|were|came|wrote|"
                r"made|developed)\b|^(?:on |about )?(?:our |the )?(?:drafting|writing|training) (?:process|method)"),
     "how the document was made"),
]
_NOT_PART_OF = re.compile(
    r"\bnot (?:itself |formally )?(?:a )?part of (?:the|this|our) (?:constitution|charter|document|spec|specification|"
    r"text|principles|guidelines)",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\b(?:1[89]|20)\d\d[a-z]?\b")
# sentences about the document itself or its making, and sentences that state or argue a value
_META = re.compile(
    r"\b(?:this|the present|our|earlier|previous|later|first) (?:document|constitution|text|guide|charter|spec|"
    r"specification|draft|drafts|version|versions|revision)\b|\b(?:we|i) (?:wrote|drafted|revised|consulted|began|"
    r"thank|gathered|collected|trained|train)\b|\btrain(?:ed|ing)? (?:process|method|runs?|data|procedure)\b|"
    r"\bfeedback (?:from|on)\b|\bfootnotes?\b|\bcitations?\b",
    re.IGNORECASE,
)
_VALUE = re.compile(
    r"\b(?:should|must|ought|never|always|avoid|avoids|prefer|prefers|refuse|refuses|may not|wants? (?:it|claude|the "
    r"assistant|the model) to|important|wrong|right|good|bad|harm|harms|harmful|honest|honesty|care|cares|respect|"
    r"fair|safe|safety|trust|values?|principles?|duty|duties|responsib\w+|wellbeing|autonomy|deceiv\w+|manipulat\w+)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.DOTALL | re.MULTILINE)
_NOTE_LINE = re.compile(r"^\s*(?:\[\^?[\w-]+\]:|\^?\d{1,3}[.)]|\d{1,3}\s)")
_CITATION_MARK = re.compile(r"https?://|\bdoi\b|arxiv|\bet al\b|journal|proceedings|\bpress\b|\bpp?\.\s*\d",
                            re.IGNORECASE)


@dataclass(frozen=True)
class Section:
    id: str
    path: tuple[str, ...]
    title: str
    level: int
    text: str
    chars: int
    tokens: int
    attrs: dict[str, str] = field(default_factory=dict)  # heading attributes: id, class, key=value
    normative_chars: int = -1  # characters outside headings and example fences (-1: unknown, use chars)
    example_chars: int = 0  # characters inside example (code) fences
    notes: tuple[str, ...] = ()  # what parsing did to this section, e.g. a stub merged into it

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "attrs", dict(self.attrs))
        if self.normative_chars < 0:  # sections.jsonl written before these sizes existed
            object.__setattr__(self, "normative_chars", self.chars)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.attrs.get("class", "").split())

    @property
    def normative_tokens(self) -> int:
        return math.ceil(self.normative_chars / 4)

    @cached_property
    def value_chars(self) -> int:
        """Characters of the sentences, outside example fences, that state or argue a value: what the plan
        shares documents by, so a list of principles gets more than a preamble of the same length."""
        return sum(len(m.group(0)) for m in _SENTENCE.finditer(_FENCE.sub("", self.text)) if _VALUE.search(m.group(0)))

    @property
    def example_share(self) -> float:
        total = self.normative_chars + self.example_chars
        return self.example_chars / total if total else 0.0


@dataclass(frozen=True)
class Constitution:
    title: str
    sections: tuple[Section, ...]

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        for s in self.sections:
            if f"merged stub '{section_id}' " in " ".join(s.notes):
                raise SdfError(f"section '{section_id}' has too little text of its own and was merged into "
                               f"'{s.id}'; use '{s.id}', or lower [plan].min_section_chars")
        known = ", ".join(s.id for s in self.sections[:8])
        raise SdfError(f"unknown section id '{section_id}' (known ids include: {known}; see `sdf sections`)")

    @property
    def text(self) -> str:
        """The whole constitution re-assembled from its sections, as sent to the model."""
        parts = []
        for s in self.sections:
            heading = "#" * min(max(s.level, 2), 6)
            parts.append(f"{heading} {' > '.join(s.path)}\n\n{s.text}")
        return "\n\n".join(parts) + "\n"


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters per token for English prose)."""
    return math.ceil(len(text) / 4)


def slugify(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].rstrip("-") or "section"


# -- what a section is: stubs, examples, non-normative text -----------------------------------------


def non_normative_reason(section: Section) -> str | None:
    """Why a section looks like it is about the document rather than part of it, or None."""
    title = section.title.lower().strip(" .:")
    for pattern, reason in _NON_NORMATIVE_TITLES:
        if pattern.search(title):
            return reason
    if _NOT_PART_OF.search(section.text):
        return "it says it is not part of the document"
    lines = [ln for ln in section.text.split("\n") if ln.strip()]
    cited = sum(1 for ln in lines if _CITATION.search(ln) and _CITATION_MARK.search(ln))
    if len(lines) >= 4 and cited >= 0.5 * len(lines):
        return "it reads like a bibliography"
    notes = [ln for ln in lines if _NOTE_LINE.match(ln)]
    if len(notes) >= 3 and len(notes) >= 0.6 * len(lines) and \
            sum(1 for ln in notes if _CITATION_MARK.search(ln) or _CITATION.search(ln)) >= 0.3 * len(notes):
        return "it reads like end notes"
    sentences = [m.group(0) for m in _SENTENCE.finditer(_FENCE.sub("", section.text)) if len(m.group(0).split()) >= 4]
    meta = sum(1 for t in sentences if _META.search(t))
    values = sum(1 for t in sentences if _VALUE.search(t) and not _META.search(t))
    if len(sentences) >= 3 and meta >= 0.4 * len(sentences) and values <= 0.4 * len(sentences):
        return "it describes the document or how it was made"
    return None


def section_warnings(section: Section, min_chars: int = MIN_SECTION_CHARS) -> list[str]:
    """What a user should know about a section before paying for documents about it."""
    warnings = []
    reason = non_normative_reason(section)
    if reason:
        warnings.append(f"looks non-normative ({reason}); exclude it with --exclude-section '{section.id}' "
                        "or [plan].exclude_sections")
    if section.normative_chars < min_chars:
        warnings.append(f"stub: only {section.normative_chars} characters of normative text "
                        f"(under [plan].min_section_chars = {min_chars}); it is merged, never planned alone")
    elif section.normative_chars > HUGE_SECTION_CHARS:
        warnings.append(f"huge: {section.normative_chars:,} characters of normative text; a document covers only "
                        "part of it, so consider splitting it")
    if section.example_share > MOSTLY_EXAMPLES:
        warnings.append(f"mostly examples ({section.example_share:.0%} of its text); its quota counts only its "
                        f"{section.normative_chars:,} normative characters")
    return warnings


def merge_stubs(constitution: Constitution, min_chars: int = MIN_SECTION_CHARS
                ) -> tuple[Constitution, dict[str, str]]:
    """Merge every section with less normative text than `min_chars` into its parent, else the next section.

    Returns the merged constitution and {stub id: id of the section that took its text}. Nothing is
    dropped: the stub's heading and text travel into the receiving section, which notes the merge.
    """
    sections = list(constitution.sections)
    merged: dict[str, str] = {}
    while len(sections) > 1:
        i = next((i for i, s in enumerate(sections) if s.normative_chars < min_chars), None)
        if i is None:
            break
        stub = sections.pop(i)
        parents = [j for j in range(i) if stub.path[: len(sections[j].path)] == sections[j].path
                   and len(sections[j].path) < len(stub.path)]
        j = parents[-1] if parents else i if i < len(sections) else i - 1
        target = sections[j]
        head, body = _attr_block(target)
        if target.path[: len(stub.path)] == stub.path:
            # The stub introduces the group the target belongs to: its title is already in the target's
            # path, and the target's own attribute lines, not the group's, stay at the top.
            block = _attr_block(stub)[1]
        else:
            block = f"{'#' * min(max(stub.level, 2), 6)} {stub.title}\n\n{stub.text}"
        text = f"{target.text}\n\n{block}" if j < i else "\n\n".join(p for p in (head, block, body) if p)
        note = f"merged stub '{stub.id}' ({stub.normative_chars} characters of normative text) into this section"
        sections[j] = replace(
            target, text=text, chars=len(text), tokens=estimate_tokens(text),
            normative_chars=target.normative_chars + stub.normative_chars,
            example_chars=target.example_chars + stub.example_chars,
            notes=(*target.notes, note, *stub.notes),
        )
        merged = {k: (target.id if v == stub.id else v) for k, v in merged.items()}
        merged[stub.id] = target.id
    return Constitution(constitution.title, tuple(sections)), merged


def _attr_block(section: Section) -> tuple[str, str]:
    """(the attribute lines that open a section's text, the rest); the first is "" when it shows none."""
    if any(k not in ("id", "class") for k in section.attrs) and "\n\n" in section.text:
        head, rest = section.text.split("\n\n", 1)
        return head, rest
    return "", section.text
