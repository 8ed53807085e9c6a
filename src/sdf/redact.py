"""Secrets never leave the process: credentials in URLs, header values and API keys are redacted from
every setting written to disk, every ledger error and every error line.

A leaf module (standard library only), so config, the ledger, the backends and the CLI all share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

MASK = "<redacted>"
SECRET_KEY = re.compile(r"(api[_-]?key|secret|token$|password|passwd|authorization|credential|cookie)", re.I)
HEADERS_KEY = re.compile(r"headers?$", re.I)  # every value under such a key is a secret: we cannot tell which
# user:password@ in any URL, and query parameters whose name says they carry a credential
URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@", re.I)
URL_SECRET_PARAM = re.compile(r"(?P<name>[?&](?:[\w.-]*(?:key|token|secret|sig|signature|password|auth)[\w.-]*))="
                              r"(?P<value>[^&#\s\"']+)", re.I)
BEARER = re.compile(r"(?P<name>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.I)
KEY_SHAPES = re.compile(r"\bsk-ant-[\w-]{20,}|\bsk-(?:proj-)?[A-Za-z0-9]{32,}")  # Anthropic and OpenAI keys
ENV_SECRETS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """`text` with URL credentials, bearer tokens, key-shaped strings and the `known` values (plus the API keys
    in the environment) masked."""
    values = [v for v in (*known, *(os.environ.get(name, "") for name in ENV_SECRETS)) if v and len(v) >= 6]
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = URL_SECRET_PARAM.sub(lambda m: f"{m['name']}={MASK}", text)
    text = BEARER.sub(lambda m: f"{m['name']}{MASK}", text)
    return KEY_SHAPES.sub(MASK, text)


def redact_settings(data: Any, key: str = "") -> Any:
    """Settings as they may be written: secret-named keys and every header value masked, URLs cleaned."""
    if isinstance(data, dict):
        if key and HEADERS_KEY.search(key):
            return {k: MASK for k in data}
        return {k: redact_settings(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_settings(v) for v in data]
    if isinstance(data, str) and data:
        return MASK if key and SECRET_KEY.search(key) else redact_text(data)
    return data
