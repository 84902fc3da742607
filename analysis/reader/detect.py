"""Lesion detections from the reader's density maps, scored against the per-lesion truth.

A detection is a local maximum of a group's density map (3×3 cells) above ``threshold``;
it matches a true lesion of the same group whose centre lies within ``max(radius, 2 cells)``
of it, each lesion matched at most once, nearest first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .network import GROUPS, STRIDE, group_of

THRESHOLD = 0.05  # density per cell of a lesion's peak is about 0.16 (a unit spread with SD 1 cell)


def detections(maps: np.ndarray, threshold: float | dict = THRESHOLD) -> pd.DataFrame:
    """Local maxima of one photo's density maps (groups, h, w) → ``group``, ``x``, ``y`` (input px), ``score``.

    ``threshold``: one value, or one per group (a reader's ``config["thresholds"]``)."""
    from scipy.ndimage import maximum_filter

    rows = []
    for g, m in zip(GROUPS, maps):
        t = threshold.get(g, THRESHOLD) if isinstance(threshold, dict) else threshold
        peak = (m == maximum_filter(m, size=3, mode="constant")) & (m >= t)
        ys, xs = np.nonzero(peak)
        for y, x in zip(ys, xs):
            rows.append((g, (x + 0.5) * STRIDE, (y + 0.5) * STRIDE, float(m[y, x])))
    return pd.DataFrame(rows, columns=["group", "x", "y", "score"])


def visible(lesions: pd.DataFrame, min_intensity: float = 0.3) -> pd.DataFrame:
    """The lesions a reader is asked to count: intensity ≥ ``min_intensity``, with their ``group``."""
    out = lesions[lesions["intensity"] >= min_intensity]
    return out.assign(group=[group_of(k, s) for k, s in zip(out["type"], out["stage"])])


def match(dets: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per group: true positives, detections, true lesions. ``truth`` has ``group``, ``x``, ``y``, ``radius``
    in the same px as ``dets``."""
    rows = []
    for g in GROUPS:
        d = dets[dets["group"] == g][["x", "y"]].to_numpy(float)
        t = truth[truth["group"] == g]
        txy, tr = t[["x", "y"]].to_numpy(float), np.maximum(t["radius"].to_numpy(float), 2 * STRIDE)
        tp = 0
        if len(d) and len(txy):
            dist = np.hypot(d[:, None, 0] - txy[None, :, 0], d[:, None, 1] - txy[None, :, 1])
            ok = dist <= tr[None, :]
            used_d, used_t = set(), set()
            for i, j in zip(*np.unravel_index(np.argsort(dist, axis=None), dist.shape)):
                if ok[i, j] and i not in used_d and j not in used_t:
                    used_d.add(i)
                    used_t.add(j)
            tp = len(used_d)
        rows.append({"group": g, "tp": tp, "detected": len(d), "true": len(txy)})
    return pd.DataFrame(rows)


def scores(counts: pd.DataFrame) -> pd.DataFrame:
    """Summed ``match`` rows (and ``count_error`` = mean predicted − true count per photo, if present) →
    precision, recall, F1 per group."""
    agg = counts.groupby("group", sort=False)[["tp", "detected", "true"]].sum()
    p = agg["tp"] / agg["detected"].where(agg["detected"] > 0)
    r = agg["tp"] / agg["true"].where(agg["true"] > 0)
    out = agg.assign(precision=p, recall=r, f1=2 * p * r / (p + r))
    if "count_error" in counts:
        g = counts.groupby("group", sort=False)["count_error"]
        out = out.assign(count_error_mean=g.mean(), count_error_abs=g.apply(lambda v: float(np.abs(v).mean())))
    return out.reset_index()
