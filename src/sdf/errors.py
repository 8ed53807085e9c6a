"""The exceptions the CLI turns into a clean one-line error and a meaningful exit code."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class SdfError(Exception):
    """A problem the user can act on. Exit code 2 for bad input or config, 1 for runtime failures."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(SdfError):
    """Ctrl-C or SIGTERM, with what was and was not recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_INTERRUPTED)


class Incomplete(SdfError):
    """The run stopped before its work was done (budget, API outage, disk full); a rerun resumes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_INCOMPLETE)
