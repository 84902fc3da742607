"""Errors that carry enough context for a one-paragraph message to the user."""

from __future__ import annotations

from analysis.errors import AnalysisInputError


class BadInput(AnalysisInputError):
    """Input the user can fix: names the file, the field and what is allowed.

    The simulator's side of the one bad-input error (the analysis never imports
    trialsim, so the class lives there); the command line turns either into a
    message on stderr and exit code 2.
    """


class StudyFailed(RuntimeError):
    """A run in which every unit of work failed (every replicate of a power study, say).

    Not the user's input at fault as far as the library can tell; the command line prints the
    message (which names how many units failed and the first reason) and exits with code 1.
    """
