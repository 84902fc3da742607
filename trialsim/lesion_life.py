"""One lesion's life: its type and size drawn at birth, then growth, peak, resolution and mark.

:func:`_new_lesion` draws a fixed block of numbers per birth (so the stream of draws does
not depend on the type) and places the lesion with
:func:`~trialsim.lesion_geometry.sample_positions`; :func:`_state` gives its stage,
intensity (0–1) and radius (fraction of the frame height) on any day.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .lesion_geometry import sample_positions

ACTIVE_TYPES = ("open_comedone", "closed_comedone", "papule", "pustule", "nodule")
MARK = "mark"

# birth weights at severity 0 and 3 (linear in between). The Hayashi grading behind the
# ACNE04 thresholds counts mostly inflammatory eruptions, so papules and pustules dominate;
# comedones make a share that shrinks with severity, and nodules appear in severe acne.
_TYPE_WEIGHTS_S0 = np.array([0.10, 0.15, 0.50, 0.22, 0.03])
_TYPE_WEIGHTS_S3 = np.array([0.06, 0.09, 0.45, 0.28, 0.12])

# per type: peak radius range (fraction of frame height, cheek close-up; 0.006 ≈ 3 px at
# 512 px), days of growth, of peak, of resolution, and the chance of leaving a mark
_TYPE_SPEC: dict[str, dict[str, Any]] = {
    "open_comedone": dict(radius=(0.0032, 0.0055), grow=(2, 4), peak=(10, 24), resolve=(3, 6), mark=0.0),
    "closed_comedone": dict(radius=(0.0038, 0.0065), grow=(2, 4), peak=(8, 20), resolve=(3, 6), mark=0.05),
    "papule": dict(radius=(0.0050, 0.0110), grow=(1, 3), peak=(5, 12), resolve=(3, 6), mark=0.6),
    "pustule": dict(radius=(0.0060, 0.0120), grow=(1, 2), peak=(4, 8), resolve=(2, 5), mark=0.6),
    "nodule": dict(radius=(0.0120, 0.0200), grow=(3, 6), peak=(10, 20), resolve=(6, 12), mark=0.9),
}
MARK_DAYS = (14, 56)  # post-inflammatory marks fade over two to eight weeks


class _Lesion:
    __slots__ = (
        "birth",
        "end",
        "grow",
        "leaves_mark",
        "mark_days",
        "n",
        "peak",
        "radius",
        "resolve",
        "strength",
        "type",
        "x",
        "y",
    )
    birth: int
    end: int | None  # day the lesion stopped being active (became a mark or vanished)
    grow: int
    leaves_mark: bool
    mark_days: int
    n: int
    peak: int
    radius: float
    resolve: int
    strength: float
    type: str
    x: float
    y: float

    def active_end(self) -> int:
        return self.birth + self.grow + self.peak + self.resolve


_cum_weight_cache: dict[float, np.ndarray] = {}


def _cum_type_weights(severity: float) -> np.ndarray:
    """Cumulative birth probabilities over ACTIVE_TYPES at ``severity`` (cached: a day's births share it)."""
    cw = _cum_weight_cache.get(severity)
    if cw is None:
        if len(_cum_weight_cache) > 4096:
            _cum_weight_cache.clear()
        w = _TYPE_WEIGHTS_S0 + (_TYPE_WEIGHTS_S3 - _TYPE_WEIGHTS_S0) * np.clip(severity, 0, 3) / 3
        cw = _cum_weight_cache[severity] = np.cumsum(w / w.sum())
    return cw


def _new_lesion(rng, n, day, severity, view, aspect, hotspots, occupied, scale) -> _Lesion:
    # a fixed block of draws per birth, whatever the type
    u = rng.random(8).tolist()  # Python floats: the same arithmetic as numpy's, less overhead
    t = ACTIVE_TYPES[min(int(np.searchsorted(_cum_type_weights(float(severity)), u[0], side="right")), 4)]
    spec = _TYPE_SPEC[t]
    le = _Lesion()
    le.n, le.type, le.birth = n, t, day
    lo, hi = spec["radius"]
    le.radius = (lo + (hi - lo) * u[1]) * scale * (0.85 + 0.1 * min(max(float(severity), 0.0), 3.0))
    le.strength = 0.75 + 0.25 * u[2]
    le.grow = int(spec["grow"][0] + round((spec["grow"][1] - spec["grow"][0]) * u[3]))
    le.peak = int(spec["peak"][0] + round((spec["peak"][1] - spec["peak"][0]) * u[4]))
    le.resolve = int(spec["resolve"][0] + round((spec["resolve"][1] - spec["resolve"][0]) * u[5]))
    le.leaves_mark = bool(u[6] < spec["mark"])
    le.mark_days = int(MARK_DAYS[0] + round((MARK_DAYS[1] - MARK_DAYS[0]) * u[7]))
    le.end = None  # day the lesion stopped being active (became a mark or vanished)
    le.x, le.y = sample_positions(rng, 24, view, aspect, hotspots, occupied, le.radius)
    return le


def _state(le: _Lesion, day: int) -> tuple[str, float, float] | None:
    """(stage, intensity 0–1, radius) of a lesion on ``day``, None when gone."""
    if le.end is None or day < le.end:
        a = day - le.birth
        if a < le.grow:
            f = 0.35 + 0.65 * (a + 1) / le.grow
            return "grow", f * le.strength, le.radius * (0.55 + 0.45 * f)
        if a < le.grow + le.peak:
            return "peak", le.strength, le.radius
        f = 1.0 - 0.65 * (a - le.grow - le.peak + 1) / (le.resolve + 1)
        return "resolve", f * le.strength, le.radius * (0.55 + 0.45 * f)
    if not le.leaves_mark:
        return None
    a = day - le.end
    if a >= le.mark_days:
        return None
    return MARK, 0.6 * le.strength * (1.0 - a / le.mark_days), le.radius * 0.9
