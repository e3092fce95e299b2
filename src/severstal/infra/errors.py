"""Errors a user can fix, and the one formatter for long lists of problems.

A :class:`UserError` reaches the command line as one paragraph on stderr and a non-zero exit code,
never as a traceback (``infra.commands.run_main``).
"""

from __future__ import annotations

from collections.abc import Sequence

PROBLEMS_SHOWN = 20  # problems listed before "... and N more"


class UserError(Exception):
    """A problem the user can fix: printed as one clear message, no traceback, exit code 1 (or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """A config file, an override, or an artifact made with another config: the message says what and what to do."""


def format_problems(problems: Sequence[str], limit: int | None = PROBLEMS_SHOWN, more_hint: str = "") -> str:
    """Problems one per line, indented; after ``limit`` of them a line ``... and N more``.

    Args:
        problems: the messages, in order.
        limit: how many to list (None: all).
        more_hint: appended to the ``... and N more`` line, e.g. ``" (--all lists them)"``.

    Returns:
        The lines joined by newlines, each starting with two spaces.
    """
    shown = list(problems) if limit is None else list(problems[:limit])
    lines = [f"  {problem}" for problem in shown]
    if len(shown) < len(problems):
        lines.append(f"  ... and {len(problems) - len(shown):,} more{more_hint}")
    return "\n".join(lines)
