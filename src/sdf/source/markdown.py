"""Parse a constitution (markdown or plain text) into clean sections with stable ids.

Headings may be ATX, setext or HTML, numbered or not; ``{#id key=value .class}`` attributes become
the section's ``attrs``. Plain text without headings is split into coherent, size-bounded runs of
paragraphs whose ids come from their opening words.

Section text is what the writer reads, so it is cleaned without losing meaning: labels on
examples (``<!-- BAD: note -->``) become visible (``[BAD: note]``), comments inside code fences
are kept, other comments are dropped, footnotes become notes at the end of the section that
cites them, admonitions become labelled paragraphs, HTML entities are unescaped and stray
rules are dropped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sdf.errors import SdfError
from sdf.source.sections import Constitution, Section, estimate_tokens, slugify

PLAIN_SECTION_CHARS = 3000  # target size of a plain-text section; paragraphs are never split below it
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HTML_HEADING = re.compile(r"^\s*<h([1-6])[^>]*>(.*?)</h\1>\s*$", re.IGNORECASE)
_ATTRS = re.compile(r"\s*\{([^{}]*)\}\s*$")
_ATTR_TOKEN = re.compile(
    r"""#(?P<id>[^\s{}]+)|\.(?P<cls>[^\s{}=.#]+)|(?P<key>[A-Za-z_][\w.:-]*)=(?P<val>"[^"]*"|'[^']*'|[^\s{}"']+)"""
)
_ROMAN = r"M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
# Numbering is stripped only when it is numbering: digits (3, 3.1, 4.), a single letter or a Roman
# numeral followed by . or ), or §. "A final word", "I think" and "CIVIL LIBERTIES" are titles.
_NUMBERING = re.compile(
    r"^(?:\d{1,3}(?:\.\d+)*[.):]?"
    r"|[A-Za-z](?:\.\d+)+[.)]?"
    r"|[A-Za-z][.)]"
    rf"|(?=[IVXLCDM]+[.)]){_ROMAN}[.)]"
    rf"|(?=[ivxlcdm]+[.)]){_ROMAN.lower()}[.)]"
    r"|§+\s*\d+(?:\.\d+)*[.):]?"
    r")\s+(?:[-–—:]\s+)?(?=\S)"
)
_LIST_OR_QUOTE = re.compile(r"^ {0,3}(?:[-*+]\s|\d+[.)]\s|>)")
_HTML_COMMENT = re.compile(r"<!--(.*?)-->", re.DOTALL)
_LABEL = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?::\s*(.*?))?\s*$", re.DOTALL)
# Label words that judge an example; these stay visible wherever they appear.
VERDICTS = frozenset({
    "good", "bad", "better", "worse", "best", "worst", "correct", "incorrect", "right", "wrong", "ok", "okay",
    "avoid", "compliant", "violation", "acceptable", "unacceptable", "preferred", "dispreferred", "pass", "fail",
})
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FOOTNOTE_DEF = re.compile(r"^ {0,3}\[\^([^\]\s]+)\]:[ \t]?(.*)$")
_FOOTNOTE_REF = re.compile(r"[ \t]?\[\^([^\]\s]+)\](?!:)")
_CODE_SPAN = re.compile(r"(`+[^`\n]*`+)")
_ADMONITION = re.compile(r"^( {0,3})(?:!!!|\?\?\?\+?)[ \t]+([\w-]+)(?:[ \t]+\"([^\"]*)\")?[ \t]*$")
_DIV_OPEN = re.compile(r"^ {0,3}:{3,}[ \t]*\{?\.?([A-Za-z][\w-]*)\}?[ \t]*(.*?)[ \t]*$")
_DIV_CLOSE = re.compile(r"^ {0,3}:{3,}[ \t]*$")
_ALERT = re.compile(r"^(\s*>\s*)\[!([A-Za-z]+)\][ \t]*(.*)$")
_RULE = re.compile(r"^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$")
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}[ \t]")


def substitute_variables(text: str, variables: dict[str, str] | None) -> str:
    """Replace ``{name}`` only for configured names; every other brace is left exactly as written."""
    if not variables:
        return text
    return _TEMPLATE_VAR.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)


def parse_constitution(text: str, variables: dict[str, str] | None = None, source: str = "input") -> Constitution:
    text = substitute_variables(text.replace("\r\n", "\n").replace("\r", "\n"), variables)
    lines, footnotes = _take_footnote_definitions(_strip_front_matter(text.split("\n")))
    blocks = list(_heading_blocks(lines))
    if not any(level for level, _, _ in blocks):
        drafts = _plain_drafts("\n".join(lines), footnotes)
        title = ""
    else:
        title, drafts = _markdown_drafts(blocks, footnotes)
    if not drafts:
        raise SdfError(f"constitution {source} has headings but no section text to write about")
    return Constitution(title=title, sections=tuple(_finish(drafts)))


# -- parsing ------------------------------------------------------------------------------------------


@dataclass
class _Draft:
    path: list[str]
    level: int
    sid: str
    attrs: dict[str, str]
    body: str  # cleaned text, without attribute line or notes
    prose: list[str]  # cleaned text outside fences, for definitions of attribute values
    normative_chars: int
    example_chars: int
    notes: list[str]


def _strip_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() in ("---", "+++"):
        fence = lines[0].strip()
        for i in range(1, len(lines)):
            if lines[i].strip() in (fence, "...") and i > 0:
                return lines[i + 1 :]
    return lines


def _fence_flags(lines: Sequence[str]) -> list[bool]:
    """For each line, whether it belongs to a fenced block (its fence lines included)."""
    flags, fence = [], None
    for line in lines:
        if fence is not None:
            flags.append(True)
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.lstrip(fence[0]).strip():
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
        flags.append(bool(m))
    return flags


def _take_footnote_definitions(lines: list[str]) -> tuple[list[str], dict[str, str]]:
    """Remove footnote definitions (outside fences) wherever they are; return them by label."""
    flags = _fence_flags(lines)
    kept: list[str] = []
    notes: dict[str, str] = {}
    current: str | None = None
    for line, fenced in zip(lines, flags, strict=True):
        m = None if fenced else _FOOTNOTE_DEF.match(line)
        if m:
            current = m.group(1)
            notes[current] = m.group(2).strip()
            continue
        if current is not None and not fenced and (line.startswith(("    ", "\t")) or not line.strip()):
            if line.strip():
                notes[current] = f"{notes[current]} {line.strip()}".strip()
            continue
        current = None
        kept.append(line)
    return kept, notes


def _heading_blocks(lines: list[str]) -> Iterable[tuple[int, str, list[str]]]:
    """Yield (level, raw heading, body lines); level 0 is text before the first heading."""
    level, raw, body = 0, "", []
    for line, fenced in zip(lines, _fence_flags(lines), strict=True):
        heading = None if fenced else _match_heading(line)
        if heading is None and not fenced:
            setext = _SETEXT.match(line)
            prev = body[-1] if body else ""
            if (setext and prev.strip() and not _LIST_OR_QUOTE.match(prev) and not prev.lstrip().startswith("<")
                    and not _FENCE.match(prev)):  # `---` right after a closing fence is a rule, not a heading
                body.pop()
                heading = (1 if setext.group(1)[0] == "=" else 2, prev.strip())
        if heading is None:
            body.append(line)
            continue
        yield level, raw, body
        (level, raw), body = heading, []
    yield level, raw, body


def _match_heading(line: str) -> tuple[int, str] | None:
    m = _ATX.match(line)
    if m:
        return len(m.group(1)), m.group(2) or ""
    m = _HTML_HEADING.match(line)
    if m:
        return int(m.group(1)), re.sub(r"<[^>]+>", "", m.group(2))
    return None


def parse_attrs(block: str) -> dict[str, str] | None:
    """`#id .class key=value key="two words"` as a dict (classes joined under "class"); None if not attributes."""
    attrs: dict[str, str] = {}
    classes: list[str] = []
    pos = 0
    block = block.strip()
    if not block:
        return None
    for m in _ATTR_TOKEN.finditer(block):
        if block[pos : m.start()].strip():
            return None
        pos = m.end()
        if m.group("id"):
            attrs["id"] = m.group("id")
        elif m.group("cls"):
            classes.append(m.group("cls"))
        else:
            value = m.group("val")
            value = value[1:-1] if value[:1] in "\"'" else value
            if m.group("key") == "class":
                classes += value.split()
            else:
                attrs[m.group("key")] = value
    if block[pos:].strip():
        return None
    if classes:
        attrs["class"] = " ".join(dict.fromkeys(classes))
    return attrs


def clean_title(raw: str) -> tuple[str, dict[str, str]]:
    """A heading's title without numbering, emphasis or its trailing {attribute block}, and the attributes."""
    attrs: dict[str, str] = {}
    m = _ATTRS.search(raw)
    if m:
        parsed = parse_attrs(m.group(1))
        if parsed is not None:
            attrs, raw = parsed, raw[: m.start()]
    title = html.unescape(raw).replace("\xa0", " ").strip()
    title = _NUMBERING.sub("", title).strip().strip("*_ ").strip()
    return title, attrs


def _markdown_drafts(blocks: list[tuple[int, str, list[str]]], footnotes: dict[str, str]
                     ) -> tuple[str, list[_Draft]]:
    heads = [(level, *clean_title(raw)) for level, raw, _ in blocks]
    levels = [level for level, _, _ in heads if level]
    # A single top-level heading that opens the document is its title, not a path element.
    doc_title = ""
    if levels.count(min(levels)) == 1 and levels[0] == min(levels) and len(levels) > 1:
        doc_title = next(t for lv, t, _ in heads if lv)
    stack: list[tuple[int, str]] = []
    drafts: list[_Draft] = []
    seen: set[str] = set()
    for (level, title, attrs), (_, _, body) in zip(heads, blocks, strict=True):
        if level == 0:
            draft = _draft(["Preamble"], 1, _clean_body(body), {}, None, footnotes, seen)
            if draft:
                drafts.append(draft)
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title or "Untitled"))
        path = [t for _, t in stack]
        if doc_title and path[0] == doc_title and len(path) > 1:
            path = path[1:]
        draft = _draft(path, level, _clean_body(body), attrs, attrs.get("id"), footnotes, seen)
        if draft:
            drafts.append(draft)
    return doc_title, drafts


def _draft(path: list[str], level: int, cleaned: tuple[str, list[str], int, int], attrs: dict[str, str],
           explicit_id: str | None, footnotes: dict[str, str], seen: set[str]) -> _Draft | None:
    text, prose, normative, example = cleaned
    if not text:
        return None
    text, notes = _footnotes(text, footnotes)
    base = explicit_id or "/".join(slugify(p) for p in path)
    sid, n = base, 2
    while sid in seen:
        sid, n = f"{base}-{n}", n + 1
    seen.add(sid)
    parse_notes = [f"id '{base}' is used by an earlier section; this one is '{sid}'"] if sid != base else []
    return _Draft(path, level, sid, attrs, text + notes, prose, normative, example, parse_notes)


def _clean_body(body: list[str]) -> tuple[str, list[str], int, int]:
    """Clean body lines; returns (text, prose parts, normative chars, example chars)."""
    lines = _admonitions(body)
    segments: list[tuple[bool, list[str]]] = []
    for line, fenced in zip(lines, _fence_flags(lines), strict=True):
        if segments and segments[-1][0] == fenced:
            segments[-1][1].append(line)
        else:
            segments.append((fenced, [line]))
    parts: list[tuple[bool, str]] = []
    for i, (fenced, seg) in enumerate(segments):
        text = "\n".join(seg)
        if fenced:
            text = _HTML_COMMENT.sub(lambda m: _label(m.group(1)) or m.group(0), text)
        else:
            before = i > 0 and segments[i - 1][0]
            after = i + 1 < len(segments) and segments[i + 1][0]
            text = _prose_comments(text, before, after)
        parts.append((fenced, html.unescape(text).replace("\xa0", " ")))
    text = "\n".join(t for _, t in parts)
    text = re.sub(r"[ \t]+\n", "\n", re.sub(r"\n{3,}", "\n\n", text)).strip("\n")
    text = _drop_rules(text).strip()
    return (text, *_sizes(text))


def _sizes(text: str) -> tuple[list[str], int, int]:
    """(prose outside fences, normative characters, example characters) of cleaned section text."""
    lines = text.split("\n")
    flags = _fence_flags(lines)
    prose = [ln for ln, fenced in zip(lines, flags, strict=True)
             if not fenced and not _HEADING_LINE.match(ln) and not _RULE.match(ln)]
    example = [ln for ln, fenced in zip(lines, flags, strict=True) if fenced]
    prose_text = re.sub(r"\n{3,}", "\n\n", "\n".join(prose)).strip()
    return [prose_text], len(prose_text), len("\n".join(example).strip())


def _label(comment: str) -> str | None:
    """`<!-- WORD: note -->` -> "[WORD: note]", `<!-- WORD -->` (all capitals) -> "[WORD]"; else None."""
    m = _LABEL.match(comment)
    if not m:
        return None
    word, note = m.group(1), m.group(2)
    if note is None:
        return f"[{word}]" if word.isupper() and len(word) > 1 else None
    note = " ".join(note.split())
    return f"[{word}: {note}]" if note else f"[{word}]"


def _prose_comments(text: str, fence_before: bool, fence_after: bool) -> str:
    """Drop comments outside fences, except labels: verdicts anywhere, other words next to an example."""

    def keep(m: re.Match[str]) -> str:
        label = _label(m.group(1))
        if label is None:
            return ""
        word = label[1:].split(":")[0].rstrip("]").lower()
        attached = (fence_before and not _HTML_COMMENT.sub("", text[: m.start()]).strip()) or (
            fence_after and not _HTML_COMMENT.sub("", text[m.end() :]).strip()
        )
        return label if word in VERDICTS or attached else ""

    return _HTML_COMMENT.sub(keep, text)


def _drop_rules(text: str) -> str:
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or _RULE.match(lines[-1])):
        lines.pop()
    while lines and (not lines[0].strip() or _RULE.match(lines[0])):
        lines.pop(0)
    return "\n".join(lines)


def _admonitions(body: list[str]) -> list[str]:
    """`!!! kind "Title"` blocks, `::: kind` divs and `> [!NOTE]` alerts become labelled paragraphs."""
    out: list[str] = []
    flags = _fence_flags(body)
    i = 0
    while i < len(body):
        line, fenced = body[i], flags[i]
        m = None if fenced else _ADMONITION.match(line)
        if m:
            label = (m.group(3) or m.group(2).replace("_", " ").replace("-", " ").capitalize()).strip()
            content: list[str] = []
            i += 1
            while i < len(body) and (body[i].startswith(("    ", "\t")) or not body[i].strip()):
                content.append(body[i][4:] if body[i].startswith("    ") else body[i].lstrip("\t"))
                i += 1
            while content and not content[-1].strip():
                content.pop()
            i -= 1
            first = next((k for k, c in enumerate(content) if c.strip()), None)
            if first is None:
                out.append(f"**{label}.**" if label else "")
            else:
                out += [*content[:first], f"**{label}:** {content[first].lstrip()}" if label else content[first],
                        *content[first + 1 :]]
            out.append("")  # the blank line that ended the block still separates it from what follows
        elif not fenced and _DIV_CLOSE.match(line):
            pass
        elif not fenced and (d := _DIV_OPEN.match(line)):
            label = d.group(2).strip().strip('"') or d.group(1).replace("_", " ").capitalize()
            out.append(f"**{label}:**")
        elif not fenced and (a := _ALERT.match(line)):
            rest = f" {a.group(3)}" if a.group(3) else ""
            out.append(f"{a.group(1)}**{a.group(2).capitalize()}:**{rest}")
        else:
            out.append(line)
        i += 1
    return out


def _footnotes(text: str, footnotes: dict[str, str]) -> tuple[str, str]:
    """Number defined footnote references in this section and list them as notes; drop undefined ones."""
    lines = text.split("\n")
    order: list[str] = []

    def ref(m: re.Match[str]) -> str:
        label = m.group(1)
        if label not in footnotes:
            return ""
        if label not in order:
            order.append(label)
        space = m.group(0)[0] if m.group(0)[0] in " \t" else ""
        return f"{space}[{order.index(label) + 1}]"

    def outside_code(line: str) -> str:  # `[^a-z]` in an inline code span is code, not a footnote
        parts = _CODE_SPAN.split(line)
        return "".join(p if i % 2 else _FOOTNOTE_REF.sub(ref, p) for i, p in enumerate(parts))

    flags = _fence_flags(lines)
    text = "\n".join(line if fenced else outside_code(line) for line, fenced in zip(lines, flags, strict=True))
    if not order:
        return text, ""
    notes = "\n".join(f"[{n}] {html.unescape(footnotes[label])}" for n, label in enumerate(order, 1))
    return text, f"\n\nNotes:\n{notes}"


def attr_definitions(drafts_prose: Iterable[str], values: Iterable[str]) -> dict[str, str]:
    """Where the document defines an attribute value (`- **Root**: rules that ...`), its first sentence."""
    found: dict[str, str] = {}
    wanted = {v for v in values if len(v) > 1 and re.search(r"[A-Za-z]", v)}
    if not wanted:
        return found
    patterns = {
        v: re.compile(rf"^\s*(?:[-+>]|\d+[.)])?\s*{'[ _-]'.join(map(re.escape, re.split(r'[_-]', v)))}"
                      r"\s*(?::|—|–|\s-\s)\s*(.+)$", re.IGNORECASE)
        for v in wanted
    }
    for prose in drafts_prose:
        for line in prose.split("\n"):
            plain = re.sub(r"\*\*|__|(?<!\w)[*_]|[*_](?!\w)", "", line)
            for value, pattern in patterns.items():
                m = pattern.match(plain)
                if value not in found and m:
                    found[value] = _first_sentence(m.group(1))
    return found


def _first_sentence(text: str, limit: int = 160) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0].rstrip(".").strip()
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + "…"
    if len(sentence) > 1 and sentence[0].isupper() and sentence[1].islower():
        sentence = sentence[0].lower() + sentence[1:]
    return sentence


def attr_lines(attrs: dict[str, str], definitions: dict[str, str]) -> list[str]:
    """The attributes a writer should see, e.g. "Authority: root (cannot be overridden by users)"."""
    lines = []
    for key, value in attrs.items():
        if key in ("id", "class"):
            continue
        name = key.replace("_", " ").replace("-", " ").strip().capitalize()
        meaning = definitions.get(value)
        lines.append(f"{name}: {value}" + (f" ({meaning})" if meaning else ""))
    return lines


def _finish(drafts: list[_Draft]) -> list[Section]:
    values = {v for d in drafts for k, v in d.attrs.items() if k not in ("id", "class")}
    definitions = attr_definitions((p for d in drafts for p in d.prose), values)
    sections = []
    for d in drafts:
        shown = attr_lines(d.attrs, definitions)
        text = "\n".join(shown) + "\n\n" + d.body if shown else d.body
        sections.append(Section(d.sid, tuple(d.path), d.path[-1], d.level, text, len(text), estimate_tokens(text),
                                d.attrs, d.normative_chars, d.example_chars, tuple(d.notes)))
    return sections


def _plain_drafts(text: str, footnotes: dict[str, str]) -> list[_Draft]:
    cleaned, _, _, _ = _clean_body(text.split("\n"))
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", cleaned) if p.strip()]
    groups: list[list[str]] = []
    size = 0
    for para in _split_long(paragraphs):
        if groups and size + len(para) <= PLAIN_SECTION_CHARS:
            groups[-1].append(para)
            size += len(para)
        else:
            groups.append([para])
            size = len(para)
    seen: set[str] = set()
    drafts = []
    for group in groups:
        words = re.findall(r"\w+", group[0])
        title = " ".join(words[:8]) + ("…" if len(words) > 8 else "")
        body = "\n\n".join(group)
        cleaned = (body, *_sizes(body))
        draft = _draft([title or "Part"], 1, cleaned, {}, slugify(" ".join(words[:6])), footnotes, seen)
        if draft:
            drafts.append(draft)
    return drafts


def _split_long(paragraphs: list[str]) -> Iterable[str]:
    """Cut paragraphs longer than a section at sentence ends so no section grows unbounded."""
    for para in paragraphs:
        if len(para) <= PLAIN_SECTION_CHARS:
            yield para
            continue
        chunk = ""
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            if chunk and len(chunk) + len(sentence) > PLAIN_SECTION_CHARS:
                yield chunk
                chunk = ""
            chunk = f"{chunk} {sentence}".strip()
        if chunk:
            yield chunk
