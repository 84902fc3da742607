"""Severity → adapter weights, and which photos share a pipeline call."""

from __future__ import annotations

from collections.abc import Iterable

from ...protocol import SEVERITY_MAX, SEVERITY_MIN


def quantise_severity(severity: float, step: float) -> float:
    """``severity`` clipped to 0–3 and rounded to a multiple of ``step`` (6 decimals)."""
    s = min(max(float(severity), SEVERITY_MIN), SEVERITY_MAX)
    if step > 0:
        s = round(s / step) * step
    return round(min(max(s, SEVERITY_MIN), SEVERITY_MAX), 6)


def grade_blend(severity: float, grades: list[int]) -> dict[int, float]:
    """Weights of the two grades around ``severity`` (continuous, no rounding).

    ``grade_blend(1.5, [0, 1, 2, 3]) == {1: 0.5, 2: 0.5}``; an exact grade gets weight 1;
    outside the available grades the nearest one gets weight 1.
    """
    gs = sorted(grades)
    s = min(max(float(severity), gs[0]), gs[-1])
    lower = max(g for g in gs if g <= s)
    upper = min(g for g in gs if g >= s)
    if lower == upper:
        return {lower: 1.0}
    f = round((s - lower) / (upper - lower), 6)
    out = {lower: round(1.0 - f, 6), upper: f}
    return {g: w for g, w in out.items() if w > 0}


def plan_batches(severities: Iterable[float], batch_size: int) -> list[tuple[float, list[int]]]:
    """Pipeline calls for photos with these (quantised) severities: ``[(severity, [indices])]``.

    Photos of equal severity share a call, at most ``batch_size`` at a time, in order of
    severity then position.
    """
    groups: dict[float, list[int]] = {}
    for i, s in enumerate(severities):
        groups.setdefault(float(s), []).append(i)
    return [
        (s, idx[k : k + batch_size])
        for s in sorted(groups)
        for idx in [groups[s]]
        for k in range(0, len(idx), batch_size)
    ]


def plan_mixed(count: int, batch_size: int) -> list[list[int]]:
    """Pipeline calls for ``count`` photos whatever their severities: ``batch_size`` at a time, in order.

    Every call is full but the last: ``ceil(count / batch_size)`` calls.
    """
    return [list(range(k, min(k + batch_size, count))) for k in range(0, count, batch_size)]
