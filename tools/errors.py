"""Errors the `chronodb` command reports as one line and an exit code.

Exit codes (also listed in `chronodb --help`): 0 success, 1 a negative answer
(not found, not healthy), 2 bad usage or configuration, 3 no node reachable
(connection refused), 4 no leader (or no replica) within the deadline,
5 outcome unknown (a write may or may not have committed), 6 a transaction
aborted on every attempt (nothing of it is visible). Every code has exactly
one meaning.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_LEADER = 4
EXIT_OUTCOME_UNKNOWN = 5
EXIT_ABORTED = 6


class CliError(Exception):
    """A failure to report as `chronodb: <message>` with a given exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
