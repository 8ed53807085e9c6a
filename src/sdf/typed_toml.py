"""Typed TOML tables: check a table's values against a dataclass's fields, and write settings back.

Errors name the offending key (`[plan].docz`, `[llm].concurrency must be a whole number`), so a
new setting needs only a dataclass field, never loader code.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from typing import Any

from sdf.errors import SdfError


def build_table(cls: type, values: Any, table: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise SdfError(f"{source}: [{table}] must be a table")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(hints)
            raise SdfError(f"{source}: unknown key [{table}].{key}; known keys: {known}")
        problem = _type_problem(value, hints[key])
        if problem:
            raise SdfError(f"{source}: [{table}].{key} {problem}")
    coerced = {k: (float(v) if hints[k] is float and isinstance(v, int) else v) for k, v in values.items()}
    try:
        return cls(**coerced)
    except (ValueError, TypeError) as e:
        raise SdfError(f"{source}: [{table}].{e}") from None


def _type_problem(value: Any, hint: Any) -> str | None:
    """Describe why `value` does not fit the annotation `hint`, or None if it fits."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = [_type_problem(value, o) for o in options if o is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if hint is Any:
        return None
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be a whole number, not {value!r}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):  # TOML and the CLI accept nan and inf; no setting means them
            return f"must be a finite number, not {value!r}"
        return None if ok else f"must be a number, not {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, not {value!r}"
    if origin is list:
        if not isinstance(value, list):
            return f"must be a list, not {value!r}"
        (item,) = typing.get_args(hint) or (Any,)
        for v in value:
            problem = _type_problem(v, item)
            if problem:
                return f"item {v!r} {problem}"
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"must be a table, not {value!r}"
        _, item = typing.get_args(hint) or (str, Any)
        for k, v in value.items():
            problem = _type_problem(v, item)
            if problem:
                return f"entry '{k}' {problem}"
        return None
    return None


def dump_toml(data: dict[str, Any]) -> str:
    """Write nested dicts as TOML: top-level dicts and dicts of dicts become tables, the rest inline."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        if prefix:
            lines.append(f"\n[{prefix}]")
        nested = {k: v for k, v in table.items() if _is_table(v) or (not prefix and isinstance(v, dict))}
        for k, v in table.items():
            if k not in nested and v is not None:  # TOML has no null: an absent key means "unset"
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in nested.items():
            emit(f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), v)

    emit("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))
