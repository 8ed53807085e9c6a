"""The one exception type the CLI turns into a clean one-line error."""

from __future__ import annotations


class SdfError(Exception):
    """A problem the user can act on. Exit code 2 for bad input or config, 1 for runtime failures."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
