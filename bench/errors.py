"""The one root error of ``bench`` and its user-facing subclasses.

Every error a user can cause (a bad suite, a missing device, a missing run) is a :class:`BenchError`;
the CLI prints its message and exits with its ``exit_code``, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Root of every error ``bench`` reports to a user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(BenchError):
    """Bad input: a suite, a flag or a file the user named. Exits with code 2."""

    exit_code = 2


class SuiteError(UsageError):
    """A suite file is invalid; the message names the file, line, field and what was expected."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file, self.line, self.field, self.detail = file, line, field, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class DeviceUnavailableError(BenchError):
    """A device, driver or package the run needs is missing; the message says what to install or set."""

    exit_code = 3


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"did you mean 'x'? "`` for the closest of ``choices`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'? " if close else ""
