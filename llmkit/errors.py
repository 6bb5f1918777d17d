"""User-facing errors: the CLI prints these as plain sentences, never as tracebacks.

Anything else that escapes is a bug in llmkit and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmkitError(Exception):
    """A problem the user can fix: a bad recipe, bad data, a missing file."""

    exit_code = 1


class RecipeError(LlmkitError):
    """One or more problems with a recipe, reported together so the user fixes them in one pass."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._render())

    def __reduce__(self) -> tuple:  # rebuilt from its parts when it crosses processes (Dataset.map workers)
        return (type(self), (self.problems, self.source))

    def _render(self) -> str:
        where = f" in {self.source}" if self.source else ""
        if len(self.problems) == 1:
            if self.source and self.problems[0].startswith(f"{self.source}:"):
                where = ""  # the problem names the file (and line) itself
            return f"recipe error{where}: {self.problems[0]}"
        lines = [f"{len(self.problems)} recipe errors{where}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class DataError(LlmkitError):
    """A bad data file or row; the message names the file and the row so the user can open it there."""

    exit_code = 3

    def __init__(self, message: str, where: str | None = None):
        self.message, self.where = message, where
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self) -> tuple:  # rebuilt from its parts when it crosses processes (Dataset.map workers)
        return (type(self), (self.message, self.where))


def first_line(exc: BaseException) -> str:
    """The first line of an upstream exception: the sentence that matters, without its stack or hub noise."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
