"""Errors of the analysis that the user can fix (a bad dataset folder)."""

from __future__ import annotations


class AnalysisInputError(ValueError):
    """Bad input to the analysis: names the file, the field and what is allowed.

    The command line maps it to exit code 2 with this message (no traceback).
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None, allowed: str | None = None):
        self.file = file
        self.field = field
        self.allowed = allowed
        self.reason = message
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.file:
            parts.append(f"in {self.file}")
        if self.field:
            parts.append(f"field '{self.field}'")
        where = (" ".join(parts) + ": ") if parts else ""
        reason = self.reason.rstrip()
        text = f"{where}{reason}" + ("" if reason.endswith((".", "!", "?")) else ".")
        if self.allowed:
            text += f" Allowed: {self.allowed}."
        return text


def cell_text(value) -> str:
    """A table cell as the user typed it, for messages: ``'abc'``, ``1.5`` (never ``np.float64(1.5)``), or
    ``an empty cell``."""
    if value is None or (isinstance(value, float) and value != value):  # nan: what pandas reads for ""
        return "an empty cell"
    value = value.item() if hasattr(value, "item") else value
    return repr(value) if isinstance(value, str) else str(value)
