"""The lesion population: which lesions a patient has on each study day, where, and how far along.

A per-patient birth–death process whose active size equals the day's target count
(``lesion_target``, from the ACNE04 thresholds in :mod:`trialsim.dynamics`). Lesions
are born at a free place on the allowed skin, grow, peak and resolve; inflammatory
ones leave a post-inflammatory mark that fades over weeks. When the target falls,
the lesions nearest their end resolve early into marks; when it rises, new ones are
born. A lesion never moves: positions are drawn once, at birth.

Everything here is pure: a ``numpy.random.Generator`` in, tables out. Positions are
normalised (``x`` as a fraction of the frame width, ``y`` of the height) and radii
are fractions of the frame height, so every renderer (and ``--renderer none``) maps
the same truth onto its own canonical frame with :func:`to_pixels` (the view geometry:
:mod:`trialsim.lesion_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from .dataset import LESION_COLUMNS
from .lesion_geometry import (
    FACE,
    _hotspots,
    allowed_region,
    canonical_size,
    feature_mask,
    sample_positions,
    to_pixels,
)
from .lesion_life import ACTIVE_TYPES, MARK, MARK_DAYS, _Lesion, _new_lesion
from .lesion_life import _state as _state
from .views import SIDE_SCALE, patient_view

# the view geometry lives in lesion_geometry, a lesion's life in lesion_life; these names
# stay importable from here
__all__ = [
    "ACTIVE_TYPES",
    "FACE",
    "MARK",
    "MARK_DAYS",
    "active_count",
    "allowed_region",
    "canonical_size",
    "feature_mask",
    "image_truth",
    "lesion_population",
    "lesion_truth",
    "sample_positions",
    "to_pixels",
    "truth_rows",
]

_FACE_SCALE = 0.45  # lesions are smaller relative to the frame in the whole-face view


@dataclass(frozen=True)
class _Birthplace:
    """What a birth draws from besides the day: the patient's generator, view and hotspots."""

    rng: np.random.Generator
    view: str
    aspect: float
    hotspots: np.ndarray
    scale: float  # radius multiplier for the view and the style's field of view

    def born(self, n: int, day: int, severity: float, occupied: np.ndarray) -> _Lesion:
        return _new_lesion(self.rng, n, day, severity, self.view, self.aspect, self.hotspots, occupied, self.scale)


def _view_scale(view: str, size_scale: float) -> float:
    scale = {"face": _FACE_SCALE, "side": SIDE_SCALE}.get(view, 1.0)
    if size_scale != 1.0 and view != "face":  # the whole face is framed from afar whatever the style
        scale = scale * size_scale
    return scale


def _first_day(place: _Birthplace, lesions: list[_Lesion], day: int, target: int, severity: float) -> list[_Lesion]:
    """The lesions a patient arrives with: acne already under way, lesions at random ages."""
    active: list[_Lesion] = []
    occupied = np.empty((target, 3))  # (x, y, radius) rows, filled as lesions are born
    for m in range(target):
        le = place.born(len(lesions), day, severity, occupied[:m])
        le.birth = day - int(place.rng.integers(0, le.grow + le.peak + le.resolve))
        lesions.append(le)
        active.append(le)
        occupied[m] = le.x, le.y, le.radius
    return active


def _end_courses(active: list[_Lesion], day: int, marks: list[_Lesion]) -> list[_Lesion]:
    """The lesions still active on ``day``; those whose course ended since stop on the day it
    ended (lesions keep living on unobserved days) and join ``marks`` if they leave one."""
    for le in active:
        if le.active_end() <= day:
            le.end = le.active_end()
            if le.leaves_mark:
                marks.append(le)
    return [le for le in active if le.end is None]


def _resolve_early(active: list[_Lesion], target: int, day: int, marks: list[_Lesion]) -> list[_Lesion]:
    """Fewer lesions asked for: those closest to their natural end resolve on ``day``."""
    if len(active) <= target:
        return active
    order = sorted(active, key=lambda le: (le.active_end(), le.n))
    for le in order[: len(active) - target]:
        le.end = day
        if le.leaves_mark:
            marks.append(le)
    return [le for le in active if le.end is None]


def _births(
    place: _Birthplace,
    lesions: list[_Lesion],
    active: list[_Lesion],
    marks: list[_Lesion],
    day: int,
    target: int,
    severity: float,
) -> list[_Lesion]:
    """New lesions until ``active`` (extended in place) holds ``target``; returns the marks
    still showing on ``day``."""
    # the skin taken: active lesions and the marks still showing. The order of the rows does
    # not matter to sample_positions (it only takes all() and min() over them)
    marks = [o for o in marks if day - cast(int, o.end) < o.mark_days]
    taken = active + marks
    m = len(taken)
    occupied = np.empty((m + target - len(active), 3))  # room for today's births
    if m:
        occupied[:m] = [(o.x, o.y, o.radius) for o in taken]
    while len(active) < target:
        le = place.born(len(lesions), day, severity, occupied[:m])
        lesions.append(le)
        active.append(le)
        occupied[m] = le.x, le.y, le.radius
        m += 1
    return marks


def lesion_population(
    days: pd.DataFrame, rng: np.random.Generator, view: str = "cheek", aspect: float = 1.0, size_scale: float = 1.0
) -> pd.DataFrame:
    """Every lesion's state on every observed day of one patient.

    ``days``: one row per study day (``day`` sorted, ``lesion_target``, ``severity_latent``).
    Returns one row per lesion and day: ``day``, ``lesion_n`` (stable per patient),
    ``type`` (an active type or ``mark``), ``x``, ``y`` (normalised), ``radius``
    (fraction of the frame height), ``stage`` (grow, peak, resolve, mark) and
    ``intensity`` (0–1). The number of non-mark rows on a day equals its target.
    ``size_scale`` multiplies every radius in the cheek and side views (how close the camera
    is: a style's field of view).
    """
    scale = _view_scale(view, size_scale)
    place = _Birthplace(rng, view, aspect, _hotspots(rng, view, aspect), scale)
    lesions: list[_Lesion] = []
    active: list[_Lesion] = []
    day_list = days["day"].to_numpy(int)
    targets = days["lesion_target"].to_numpy(int)
    sev = days["severity_latent"].to_numpy(float) if "severity_latent" in days else np.full(len(days), 1.5)
    born_by = np.zeros(len(day_list), np.int64)  # lesions born up to and including each day
    marks: list[_Lesion] = []  # ended lesions whose mark may still show, in order of ending
    for i, (day, target) in enumerate(zip(day_list, targets)):
        if i == 0:
            active = _first_day(place, lesions, day, target, sev[i])
        else:
            active = _end_courses(active, day, marks)
        active = _resolve_early(active, target, day, marks)
        if len(active) < target:
            marks = _births(place, lesions, active, marks, day, target, sev[i])
        born_by[i] = len(lesions)
    return _population_rows(lesions, day_list, born_by)


def _population_rows(lesions: list[_Lesion], day_list: np.ndarray, born_by: np.ndarray) -> pd.DataFrame:
    """The rows of :func:`lesion_population`: :func:`_state` of every lesion born by each day,
    in order of day then lesion, skipping those gone (None).

    Vectorised over (day, lesion) pairs with the same float64 operations, in the same
    order, as :func:`_state`, so every value is bit-identical; intensities are rounded
    as Python's ``round(v, 4)`` does (:func:`_round4`). A lesion's final
    ``end`` gives its state on every earlier day too: ``end`` is only ever set to a day
    after the last day the lesion was seen active.
    """
    cols = ["day", "lesion_n", "type", "x", "y", "radius", "stage", "intensity"]
    if not lesions:
        return pd.DataFrame([], columns=cols)
    L = {
        f: np.array([getattr(le, f) for le in lesions])
        for f in ("birth", "grow", "peak", "resolve", "mark_days", "strength", "radius", "x", "y", "leaves_mark")
    }
    end = np.array([np.iinfo(np.int64).max if le.end is None else le.end for le in lesions], np.int64)
    n_les = len(lesions)
    d = day_list.astype(np.int64)[:, None]  # (days, 1) against (lesions,)
    a = d - L["birth"]
    live = d < end
    in_mark = ~live & L["leaves_mark"] & (d - end < L["mark_days"])
    exists = np.arange(n_les)[None, :] < born_by[:, None]
    di, li = np.nonzero(exists & (live | in_mark))  # row-major: by day, then by lesion
    if not len(di):
        return pd.DataFrame([], columns=cols)  # as the row-by-row build made it (object columns)
    a, e = a[di, li], end[li]
    grow, peak, resolve, strength, radius = (L[f][li] for f in ("grow", "peak", "resolve", "strength", "radius"))
    is_mark = ~live[di, li]
    is_grow = ~is_mark & (a < grow)
    is_peak = ~is_mark & ~is_grow & (a < grow + peak)
    is_res = ~is_mark & ~is_grow & ~is_peak
    with np.errstate(divide="ignore", invalid="ignore"):  # only the selected branch's values are kept
        f_grow = 0.35 + 0.65 * (a + 1) / grow
        f_res = 1.0 - 0.65 * (a - grow - peak + 1) / (resolve + 1)
        am = d[di, 0] - e
        inten_mark = 0.6 * strength * (1.0 - am / L["mark_days"][li])
    f = np.where(is_grow, f_grow, f_res)
    inten = np.where(is_mark, inten_mark, np.where(is_peak, strength, f * strength))
    rad = np.where(is_mark, radius * 0.9, np.where(is_peak, radius, radius * (0.55 + 0.45 * f)))
    stage = np.select([is_grow, is_peak, is_res], ["grow", "peak", "resolve"], MARK).astype(object)
    types = np.array([le.type for le in lesions], dtype=object)[li]
    types[is_mark] = MARK
    return pd.DataFrame(
        {
            "day": d[di, 0],
            "lesion_n": li.astype(np.int64),
            "type": types,
            "x": L["x"][li].astype(float),
            "y": L["y"][li].astype(float),
            "radius": rad,
            "stage": stage,
            "intensity": _round4(inten),
        },
        columns=cols,
    )


def _round4(x: np.ndarray) -> np.ndarray:
    """``round(v, 4)`` (Python's, correctly rounded, ties to even) of every value, vectorised.

    ``rint(x·10⁴) / 10⁴`` gives the same double unless x·10⁴ lies within its rounding
    error (about 1e-12 here) of a half: those few values go through Python's ``round``.
    """
    p = x * 1e4
    out = np.rint(p) / 1e4
    for i in np.flatnonzero(np.abs(p - np.floor(p) - 0.5) < 1e-6).tolist():
        out[i] = round(float(x[i]), 4)
    return out


def lesion_truth(
    job, height: int, width: int, rng: np.random.Generator, view: str, aspect: float, size_scale: float = 1.0
) -> tuple[pd.DataFrame, dict[int, dict[str, np.ndarray]]]:
    """The population in pixels, and per day its columns as arrays (``x``, ``y``, ``radius``
    rounded to 0.01 px as written to ``lesions.csv``), for a
    :class:`~trialsim.render.base.PatientJob`; ``view`` may be ``mixed`` (the patient's own
    view is then :func:`~trialsim.views.patient_view`)."""
    view = patient_view(view, job.patient_index)
    pop = to_pixels(lesion_population(job.days, rng, view, aspect, size_scale), height, width)
    pop["lesion_id"] = [f"{job.patient_id}-{n}" for n in pop["lesion_n"]]
    for c in ("x", "y", "radius"):
        pop[c] = pop[c].round(2)
    cols = {c: pop[c].to_numpy() for c in LESION_COLUMNS[1:]}
    days = pop["day"].to_numpy()
    by_day = {}
    if len(days):
        cut = np.flatnonzero(np.diff(days)) + 1  # rows are sorted by day
        for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(days)]):
            by_day[int(days[lo])] = {c: v[lo:hi] for c, v in cols.items()}
    return pop, by_day


def truth_rows(day_cols: dict[str, np.ndarray] | None, image: str) -> pd.DataFrame:
    """LESION_COLUMNS rows for one image from its day's columns (see :func:`lesion_truth`)."""
    if day_cols is None:
        return pd.DataFrame(columns=LESION_COLUMNS)
    n = len(day_cols["x"])
    return pd.DataFrame({"image": np.full(n, image, dtype=object), **day_cols}, columns=LESION_COLUMNS)


def image_truth(by_day: dict[int, dict[str, np.ndarray]], images: list[str], days: list[int]) -> list[pd.DataFrame]:
    """Per image, the frame :func:`truth_rows` gives for it (same columns, dtypes and values).

    ``images`` and ``days`` are parallel lists (one entry per photo). One table is built for
    all of a patient's photos and each photo gets a slice of it: a pandas frame costs about
    0.1 ms to build, a slice about a tenth of that. The slices' index runs 0…n-1, as in
    :func:`truth_rows`.
    """
    parts = [(i, by_day[d]) for i, d in enumerate(days) if by_day.get(d) is not None]
    out: list[pd.DataFrame | None] = [None] * len(images)
    if parts:
        sizes = [len(cols["x"]) for _, cols in parts]
        table = pd.DataFrame(
            {
                "image": np.repeat(np.array([images[i] for i, _ in parts], dtype=object), sizes),
                **{c: np.concatenate([cols[c] for _, cols in parts]) for c in LESION_COLUMNS[1:]},
            },
            columns=LESION_COLUMNS,
            index=np.concatenate([np.arange(n) for n in sizes]),
        )
        ends = np.cumsum(sizes).tolist()
        for (i, _), lo, hi in zip(parts, [0] + ends[:-1], ends):
            out[i] = table.iloc[lo:hi]
    return [truth_rows(None, img) if df is None else df for img, df in zip(images, out)]


def active_count(day_cols: dict[str, np.ndarray] | None) -> int:
    """Active (non-mark) lesions in a day's columns."""
    return 0 if day_cols is None else int((day_cols["stage"] != MARK).sum())
