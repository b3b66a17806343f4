"""Errors the `chronodb` command reports as one line and an exit code.

Exit codes (also listed in `chronodb --help`): 0 success, 1 a negative answer
(not found, not healthy), 2 bad usage or configuration. Later commands add
their own codes here so that every code has exactly one meaning.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as `chronodb: <message>` with a given exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
