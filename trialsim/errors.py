"""Errors that carry enough context for a one-paragraph message to the user."""

from __future__ import annotations

import math
from typing import TypeVar

import click

from analysis.errors import AnalysisInputError

M = TypeVar("M")


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


def validated(model: type[M], values: dict, file: str | None = None) -> M:
    """``model(**values)``, with a validation error as :class:`BadInput` naming the option.

    ``model.OPTION_NAMES`` (when the model has it) maps a field to the command-line option it
    comes from, so the message names what the user typed.
    """
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(x) for x in first["loc"]]
        names = getattr(model, "OPTION_NAMES", {})
        # the option for a field, also for an item of a list field ("--fitzpatrick", not "fitzpatrick.1")
        option = names[loc[0]] if loc and loc[0] in names else ".".join(loc)
        value = first.get("input")
        value = value.item() if hasattr(value, "item") and callable(value.item) else value  # numpy scalar: plain
        got = f" (got {value!r})" if "input" in first and first["type"] != "missing" else ""
        msg = first["msg"]
        if isinstance(value, float) and not math.isfinite(value):  # nan fails every bound: say what it is
            msg = "not a number" if math.isnan(value) else "not a finite number"
        raise BadInput(f"{msg}{got}", file=file, field=option) from None


class FiniteFloatRange(click.FloatRange):
    """A number within a range, refusing ``nan`` and ``inf`` by name (a plain range lets ``nan`` through,
    since it compares false with both bounds)."""

    def convert(self, value, param, ctx):
        v = click.types.FloatParamType.convert(self, value, param, ctx)
        if v != v:
            self.fail(f"{value!r} is not a number", param, ctx)
        if v in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(v, param, ctx)
