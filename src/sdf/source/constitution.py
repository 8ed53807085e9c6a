"""Read a constitution file: find it (a path, or a bundled one by name), check it is text, parse it.

The model of a parsed constitution is in ``sdf.source.sections`` and the parser in
``sdf.source.markdown``; their public names are importable from here too.
"""

from __future__ import annotations

import stat
import unicodedata
from pathlib import Path

from sdf.errors import SdfError
from sdf.source.markdown import clean_title, parse_attrs, parse_constitution, substitute_variables
from sdf.source.sections import (
    HUGE_SECTION_CHARS,
    MIN_SECTION_CHARS,
    MOSTLY_EXAMPLES,
    Constitution,
    Section,
    estimate_tokens,
    merge_stubs,
    non_normative_reason,
    section_warnings,
    slugify,
)

__all__ = [
    "HUGE_SECTION_CHARS", "MIN_SECTION_CHARS", "MOSTLY_EXAMPLES", "Constitution", "Section", "clean_title",
    "estimate_tokens", "load_constitution", "merge_stubs", "non_normative_reason", "parse_attrs",
    "parse_constitution", "read_constitution_text", "resolve_constitution", "section_warnings", "slugify",
    "substitute_variables",
]

MAX_BYTES = 5 * 1024 * 1024

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
