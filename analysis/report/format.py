"""Numbers as the report prints them (also the Jinja filters ``num``, ``p`` and ``pct``)."""

from __future__ import annotations

from ..results import finite


def fmt(x, digits: int = 2, signed: bool = True) -> str:
    """``x`` with ``digits`` decimals (a sign when ``signed``, a true minus), "—" when missing."""
    v = finite(x)
    if v is None:
        return "—"
    s = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return s.replace("-", "−")


def fmt_p(p) -> str:
    """A p-value: "< 0.001", three decimals below 0.1, two above; "—" when missing."""
    v = finite(p)
    if v is None:
        return "—"
    if v < 0.001:
        return "< 0.001"
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def pct(x) -> str:
    """A share as a whole percentage; "—" when missing."""
    v = finite(x)
    return "—" if v is None else f"{100 * v:.0f}%"
