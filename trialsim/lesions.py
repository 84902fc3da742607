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
the same truth onto its own canonical frame with :func:`to_pixels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .dataset import LESION_COLUMNS

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
_FACE_SCALE = 0.45  # lesions are smaller relative to the frame in the whole-face view

# --- view geometry -------------------------------------------------------------------------
# Face view, in height units (v down from the top in [0, 1], u across, centre at half
# the frame width). Each feature is (u offset from centre, v, semi-axis u, semi-axis v).
FACE: dict[str, Any] = {
    "face": (0.0, 0.53, 0.30, 0.40),
    "eyes": [(-0.115, 0.45, 0.060, 0.026), (0.115, 0.45, 0.060, 0.026)],
    "brows": [(-0.115, 0.395, 0.072, 0.016), (0.115, 0.395, 0.072, 0.016)],
    "nose": (0.0, 0.555, 0.045, 0.085),
    "lips": (0.0, 0.715, 0.085, 0.028),
    "hairline_v": 0.22,
}
# lesion-free margins around the features (eye and brow merged into one eye region)
_FACE_EXCLUDE = [
    (-0.115, 0.425, 0.095, 0.070),
    (0.115, 0.425, 0.095, 0.070),
    (0.0, 0.545, 0.060, 0.110),
    (0.0, 0.715, 0.105, 0.048),
]


def _in_ellipse(u, v, e, cu) -> np.ndarray:
    du, dv, au, av = e
    return ((u - (cu + du)) / au) ** 2 + ((v - dv) / av) ** 2 <= 1.0


def allowed_region(x, y, view: str, aspect: float) -> np.ndarray:
    """True where a lesion may sit; ``x``, ``y`` normalised, ``aspect`` = height / width."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if view == "cheek":
        m = 0.03
        return (x > m) & (x < 1 - m) & (y > m) & (y < 1 - m)
    cu = 0.5 / aspect
    u, v = x / aspect, y
    face = FACE["face"]
    ok = _in_ellipse(u, v, (face[0], face[1], face[2] * 0.92, face[3] * 0.94), cu) & (v > FACE["hairline_v"] + 0.03)
    for e in _FACE_EXCLUDE:
        ok &= ~_in_ellipse(u, v, e, cu)
    return ok


def feature_mask(x, y, aspect: float, features=("eyes", "brows", "lips")) -> np.ndarray:
    """True where a face-view point lies on one of ``features`` (their drawn ellipses)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    cu, u = 0.5 / aspect, x / aspect
    hit = np.zeros(np.broadcast(x, y).shape, bool)
    for f in features:
        es = FACE[f] if isinstance(FACE[f], list) else [FACE[f]]
        for e in es:
            hit |= _in_ellipse(u, y, e, cu)
    return hit


def sample_positions(
    rng: np.random.Generator,
    n: int,
    view: str,
    aspect: float,
    hotspots: np.ndarray,
    occupied: np.ndarray | list[tuple[float, float, float]],
    radius: float,
) -> tuple[float, float]:
    """One free position (normalised x, y) for a lesion of ``radius`` (height units).

    Half the births fall near the patient's ``hotspots`` (acne clusters), the rest
    anywhere allowed; candidates closer than the two radii (plus a gap) to an
    ``occupied`` lesion (x, y, radius: rows of an array, or tuples) are rejected. ``n``
    candidates are drawn at once (a fixed number, so the stream of draws does not depend
    on the outcome).
    """
    near = rng.random(n) < 0.5
    which = rng.integers(0, len(hotspots), n)
    cand = np.where(near[:, None], hotspots[which] + rng.normal(0, 0.13, (n, 2)), rng.random((n, 2)))
    if view == "cheek":  # allowed_region's cheek test on both columns at once (the same comparisons)
        allowed = ((cand > 0.03) & (cand < 1 - 0.03)).all(axis=1)
    else:
        allowed = allowed_region(cand[:, 0], cand[:, 1], view, aspect)
    ok = allowed
    if len(occupied):
        occ = np.asarray(occupied)
        du = cand[:, 0, None] - occ[:, 0]
        if aspect != 1.0:  # dividing by 1.0 changes no bit
            du = du / aspect
        dv = cand[:, 1, None] - occ[:, 1]
        gap = 1.15 * (radius + occ[:, 2]) + 0.004
        d2 = du**2 + dv**2
        ok = allowed & (d2 >= gap**2).all(axis=1)
    idx = np.flatnonzero(ok)
    if len(idx):
        return float(cand[idx[0], 0]), float(cand[idx[0], 1])
    # crowded skin: accept the allowed candidate farthest from its neighbours
    kept = np.flatnonzero(allowed)
    if not len(kept):
        return 0.5, 0.5 if view == "cheek" else FACE["face"][1] + 0.15
    if not len(occupied):
        return float(cand[kept[0], 0]), float(cand[kept[0], 1])
    d = d2.min(axis=1)[kept]
    j = kept[int(np.argmax(d))]
    return float(cand[j, 0]), float(cand[j, 1])


def _hotspots(rng: np.random.Generator, view: str, aspect: float) -> np.ndarray:
    pts: list[np.ndarray] = []
    while len(pts) < 3:
        p = rng.random(2)
        if allowed_region(p[0], p[1], view, aspect):
            pts.append(p)
    return np.array(pts)


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


def lesion_population(
    days: pd.DataFrame, rng: np.random.Generator, view: str = "cheek", aspect: float = 1.0
) -> pd.DataFrame:
    """Every lesion's state on every observed day of one patient.

    ``days``: one row per study day (``day`` sorted, ``lesion_target``, ``severity_latent``).
    Returns one row per lesion and day: ``day``, ``lesion_n`` (stable per patient),
    ``type`` (an active type or ``mark``), ``x``, ``y`` (normalised), ``radius``
    (fraction of the frame height), ``stage`` (grow, peak, resolve, mark) and
    ``intensity`` (0–1). The number of non-mark rows on a day equals its target.
    """
    scale = _FACE_SCALE if view == "face" else 1.0
    hotspots = _hotspots(rng, view, aspect)
    lesions: list[_Lesion] = []
    active: list[_Lesion] = []
    day_list = days["day"].to_numpy(int)
    targets = days["lesion_target"].to_numpy(int)
    sev = days["severity_latent"].to_numpy(float) if "severity_latent" in days else np.full(len(days), 1.5)
    born_by = np.zeros(len(day_list), np.int64)  # lesions born up to and including each day
    marks: list[_Lesion] = []  # ended lesions whose mark may still show, in order of ending
    for i, (day, target) in enumerate(zip(day_list, targets)):
        if i == 0:
            # the patient arrives with acne already under way: lesions at random ages
            occupied = np.empty((target, 3))  # (x, y, radius) rows, filled as lesions are born
            for m in range(target):
                le = _new_lesion(rng, len(lesions), day, sev[i], view, aspect, hotspots, occupied[:m], scale)
                le.birth = day - int(rng.integers(0, le.grow + le.peak + le.resolve))
                lesions.append(le)
                active.append(le)
                occupied[m] = le.x, le.y, le.radius
        else:
            # lesions keep living on unobserved days: those whose course ended by today stop
            # on the day it ended
            for le in active:
                if le.active_end() <= day:
                    le.end = le.active_end()
                    if le.leaves_mark:
                        marks.append(le)
            active = [le for le in active if le.end is None]
        # fewer lesions asked for: those closest to their natural end resolve now
        if len(active) > target:
            order = sorted(active, key=lambda le: (le.active_end(), le.n))
            for le in order[: len(active) - target]:
                le.end = day
                if le.leaves_mark:
                    marks.append(le)
            active = [le for le in active if le.end is None]
        if len(active) < target:
            # the skin taken: active lesions and the marks still showing. The order of the
            # rows does not matter to sample_positions (it only takes all() and min() over them)
            marks = [o for o in marks if day - o.end < o.mark_days]
            taken = active + marks
            m = len(taken)
            occupied = np.empty((m + target - len(active), 3))  # room for today's births
            if m:
                occupied[:m] = [(o.x, o.y, o.radius) for o in taken]
            while len(active) < target:
                le = _new_lesion(rng, len(lesions), day, sev[i], view, aspect, hotspots, occupied[:m], scale)
                lesions.append(le)
                active.append(le)
                occupied[m] = le.x, le.y, le.radius
                m += 1
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


def canonical_size(image_size: int, aspect: float) -> tuple[int, int]:
    """(height, width) of the canonical frame: height = image_size, width = round(height / aspect)."""
    return int(image_size), int(round(image_size / aspect))


def to_pixels(population: pd.DataFrame, height: int, width: int) -> pd.DataFrame:
    """Normalised positions and radii → pixels of a ``height`` × ``width`` frame (new columns x, y, radius)."""
    out = population.copy()
    out["x"] = population["x"] * width
    out["y"] = population["y"] * height
    out["radius"] = population["radius"] * height
    return out


def lesion_truth(
    job, height: int, width: int, rng: np.random.Generator, view: str, aspect: float
) -> tuple[pd.DataFrame, dict[int, dict[str, np.ndarray]]]:
    """The population in pixels, and per day its columns as arrays (``x``, ``y``, ``radius``
    rounded to 0.01 px as written to ``lesions.csv``), for a
    :class:`~trialsim.render.base.PatientJob`."""
    pop = to_pixels(lesion_population(job.days, rng, view, aspect), height, width)
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
