"""Steps: plain functions and small classes over batches of records; see sdf.executor."""

from __future__ import annotations

from typing import Protocol


class GenreLike(Protocol):
    """What steps need to know about a genre (catalog.Genre satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def fiction(self) -> bool: ...
    @property
    def min_words(self) -> int: ...
    @property
    def max_words(self) -> int: ...
