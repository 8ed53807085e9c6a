"""Parse a constitution (markdown or plain text) into sections with stable ids.

A section is the text under one heading, up to the next heading of any level. Its id is the
slug of its heading path (``honesty/calibration``), so editing one section never renames
another. An explicit ``{#id}`` attribute on a heading wins over the slug. Plain text without
headings is split into coherent, size-bounded runs of paragraphs whose ids come from their
opening words.
"""

from __future__ import annotations

import math
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sdf.errors import SdfError

MAX_BYTES = 5 * 1024 * 1024
PLAIN_SECTION_CHARS = 3000  # target size of a plain-text section; paragraphs are never split below it

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HTML_HEADING = re.compile(r"^\s*<h([1-6])[^>]*>(.*?)</h\1>\s*$", re.IGNORECASE)
_ATTRS = re.compile(r"\s*\{([^{}]*)\}\s*$")
_NUMBERING = re.compile(r"^(?:(?:\d+|[IVXLC]+|[A-Z])(?:\.\d+)*[.)]?|§\s*\d+(?:\.\d+)*\.?)\s+(?=\S)")
_LIST_OR_QUOTE = re.compile(r"^ {0,3}(?:[-*+]\s|\d+[.)]\s|>)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Section:
    id: str
    path: tuple[str, ...]
    title: str
    level: int
    text: str
    chars: int
    tokens: int


@dataclass(frozen=True)
class Constitution:
    title: str
    sections: tuple[Section, ...]

    def section(self, section_id: str) -> Section:
        for s in self.sections:
            if s.id == section_id:
                return s
        known = ", ".join(s.id for s in self.sections[:8])
        raise SdfError(f"unknown section id '{section_id}' (known ids include: {known}; see `sdf plan`)")

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


def substitute_variables(text: str, variables: dict[str, str] | None) -> str:
    """Replace ``{name}`` only for configured names; every other brace is left exactly as written."""
    if not variables:
        return text
    return _TEMPLATE_VAR.sub(lambda m: str(variables.get(m.group(1), m.group(0))), text)


BUNDLED = Path(__file__).resolve().parents[1] / "constitutions"  # shipped as package data


def resolve_constitution(path: Path | None) -> Path:
    """The file to read: `path` itself, or a bundled constitution by name ("claude", "claude.md"),
    or the bundled claude.md when no path is given."""
    if path is None:
        return BUNDLED / "claude.md"
    if not path.exists() and path.parent == Path("."):
        for name in (path.name, f"{path.name}.md"):
            if (BUNDLED / name).is_file():
                return BUNDLED / name
    return path


def read_constitution_text(path: Path) -> str:
    """Read and validate a constitution file: a regular file, not too big, UTF-8 text, not empty."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SdfError(f"constitution not found: {path}") from None
    except OSError as e:  # a symlink loop, a name too long, no permission on a parent
        raise SdfError(f"cannot open the constitution {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise SdfError(f"constitution {path} is a directory; give the markdown or text file inside it")
    if not stat.S_ISREG(mode):
        raise SdfError(f"constitution {path} is not a regular file (a pipe or device?); save it to a file first")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SdfError(f"constitution {path} is {size / 1e6:.1f} MB; the limit is 5 MB")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SdfError(f"cannot read the constitution {path}: {e.strerror or e}") from None
    if _looks_utf16(data):
        raise SdfError(f"constitution {path} is UTF-16 text; convert it to UTF-8 first, e.g. "
                       f"`iconv -f UTF-16 -t UTF-8 {path} > {path.stem}.utf8{path.suffix}`")
    if b"\x00" in data:
        raise SdfError(f"constitution {path} looks binary (it contains NUL bytes); give a markdown or text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SdfError(f"constitution {path} is not valid UTF-8 (byte {e.start}); re-save it as UTF-8") from None
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    if controls > max(8, len(text) // 100):
        raise SdfError(f"constitution {path} looks binary ({controls} control characters)")
    if not text.strip():
        raise SdfError(f"constitution {path} is empty")
    return text


def _looks_utf16(data: bytes) -> bool:
    """A UTF-16 byte-order mark, or NUL-laden bytes that decode as UTF-16 into printable text."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    if b"\x00" not in data or len(data) % 2:
        return False
    for codec in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if sum(ch.isprintable() or ch in "\n\r\t" for ch in text) >= 0.95 * len(text):
            return True
    return False


def load_constitution(path: Path, variables: dict[str, str] | None = None) -> Constitution:
    return parse_constitution(read_constitution_text(path), variables, source=str(path))


def parse_constitution(text: str, variables: dict[str, str] | None = None, source: str = "input") -> Constitution:
    text = substitute_variables(text.replace("\r\n", "\n").replace("\r", "\n"), variables)
    lines = _strip_front_matter(text.split("\n"))
    blocks = list(_heading_blocks(lines))
    if not any(level for level, _, _, _ in blocks):
        sections = _plain_sections("\n".join(lines))
        title = ""
    else:
        title, sections = _markdown_sections(blocks)
    if not sections:
        raise SdfError(f"constitution {source} has headings but no section text to write about")
    return Constitution(title=title, sections=tuple(sections))


def _strip_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() in ("---", "+++"):
        fence = lines[0].strip()
        for i in range(1, len(lines)):
            if lines[i].strip() in (fence, "...") and i > 0:
                return lines[i + 1 :]
    return lines


def _heading_blocks(lines: list[str]) -> Iterable[tuple[int, str, str | None, list[str]]]:
    """Yield (level, title, explicit_id, body_lines); level 0 is text before the first heading."""
    level, title, anchor, body = 0, "", None, []
    fence: str | None = None
    for line in lines:
        if fence is not None:
            body.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)[0] * 3
            body.append(line)
            continue
        heading = _match_heading(line)
        if heading is None:
            setext = _SETEXT.match(line)
            prev = body[-1] if body else ""
            if setext and prev.strip() and not _LIST_OR_QUOTE.match(prev) and not prev.lstrip().startswith("<"):
                body.pop()
                heading = (1 if setext.group(1)[0] == "=" else 2, prev.strip())
        if heading is None:
            body.append(line)
            continue
        yield level, title, anchor, body
        level, raw = heading
        title, anchor = _clean_title(raw)
        body = []
    yield level, title, anchor, body


def _match_heading(line: str) -> tuple[int, str] | None:
    m = _ATX.match(line)
    if m:
        return len(m.group(1)), m.group(2) or ""
    m = _HTML_HEADING.match(line)
    if m:
        return int(m.group(1)), re.sub(r"<[^>]+>", "", m.group(2))
    return None


def _clean_title(raw: str) -> tuple[str, str | None]:
    anchor = None
    m = _ATTRS.search(raw)
    if m and ("#" in m.group(1) or "=" in m.group(1) or m.group(1).startswith(".")):
        for token in m.group(1).split():
            if token.startswith("#") and len(token) > 1:
                anchor = token[1:]
        raw = raw[: m.start()]
    title = _NUMBERING.sub("", raw.strip()).strip().strip("*_ ").strip()
    return title, anchor


def _clean_body(body: list[str]) -> str:
    text = _HTML_COMMENT.sub("", "\n".join(body))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _markdown_sections(blocks: list[tuple[int, str, str | None, list[str]]]) -> tuple[str, list[Section]]:
    levels = [level for level, _, _, _ in blocks if level]
    # A single top-level heading that opens the document is its title, not a path element.
    doc_title = ""
    if levels.count(min(levels)) == 1 and next(lv for lv in levels) == min(levels) and len(levels) > 1:
        doc_title = next(t for lv, t, _, _ in blocks if lv)
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    seen: set[str] = set()
    for level, title, anchor, body in blocks:
        if level == 0:
            text = _clean_body(body)
            if text:
                sections.append(_section(["Preamble"], 1, text, anchor, seen))
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title or "Untitled"))
        path = [t for _, t in stack]
        if doc_title and path[0] == doc_title and len(path) > 1:
            path = path[1:]
        text = _clean_body(body)
        if text:
            sections.append(_section(path, level, text, anchor, seen))
    return doc_title, sections


def _section(path: list[str], level: int, text: str, anchor: str | None, seen: set[str]) -> Section:
    base = slugify(anchor) if anchor else "/".join(slugify(p) for p in path)
    sid, n = base, 2
    while sid in seen:
        sid, n = f"{base}-{n}", n + 1
    seen.add(sid)
    return Section(sid, tuple(path), path[-1], level, text, len(text), estimate_tokens(text))


def _plain_sections(text: str) -> list[Section]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", _HTML_COMMENT.sub("", text)) if p.strip()]
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
    sections = []
    for group in groups:
        body = "\n\n".join(group)
        words = re.findall(r"\w+", group[0])
        title = " ".join(words[:8]) + ("…" if len(words) > 8 else "")
        sections.append(_section([title or "Part"], 1, body, slugify(" ".join(words[:6])), seen))
    return sections


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
