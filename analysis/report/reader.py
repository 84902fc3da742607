"""The report's sim-reader section: what the reader counts on a few photos, and how well it did on
held-out simulated photos (from its training log). Empty unless ``--method sim-reader`` ran."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .inputs import read_npz
from .thumbnails import array_uri


def _views(path: Path) -> dict | None:
    v = read_npz(path)
    if v is None:
        return None
    ok = "photos" in v and "overlays" in v and v["photos"].shape == v["overlays"].shape and v["photos"].ndim == 4
    return v if ok else None


def reader_context(results_dir: Path, summary: dict | None) -> dict | None:
    """Template data: ``views`` (photo and overlay URIs, name, severity, counts), ``groups``,
    ``held_out`` (per group precision, recall, F1, count error), ``trained_on``; None without a reader."""
    if summary is None:
        return None
    v = _views(Path(results_dir) / "reader_views.npz")
    groups = list(summary.get("groups") or [])
    views = []
    if v is not None:
        names = [str(x) for x in v.get("images", [])]
        outs = v.get("outputs", np.zeros((len(v["photos"]), 1 + len(groups))))
        for i, (p, o) in enumerate(zip(v["photos"], v["overlays"])):
            views.append(
                {
                    "photo": array_uri(p, 160),
                    "overlay": array_uri(o, 160),
                    "name": names[i] if i < len(names) else "",
                    "severity": float(outs[i][0]),
                    "counts": {g: float(c) for g, c in zip(groups, outs[i][1:])},
                }
            )
    held = summary.get("held_out") or {}
    return {
        "views": views,
        "groups": groups,
        "held_out": held.get("by_group") or [],
        "held_out_severity": {k: held.get(k) for k in ("photos", "severity_rmse", "severity_spearman")},
        "trained_on": summary.get("trained_on") or {},
        "folder": summary.get("folder"),
    }
