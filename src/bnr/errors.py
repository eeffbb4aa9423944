"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class BnrError(Exception):
    """A problem with the user's input (config, data, adapters, runs) that the user can fix.

    The message names the problem and, where possible, the fix, in one line.
    """


class TrainingDivergedError(BnrError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
