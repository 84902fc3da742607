"""The photos a patient's trial takes (no pixels): one row per photo, built for all days at once.

A per-photo Python loop (a datetime, an f-string and a seed hash per photo) cost about 30 s for a
100-year study at 24 photos a day; here the per-photo work is a few vectorised columns.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from .seeding import image_seeds

PHOTO_COLUMNS = ["image", "day", "photo", "hour", "timestamp", "seed"]


def photo_table(
    days: pd.DataFrame,
    missing: np.ndarray,
    jitter_min: np.ndarray,
    hours: list[float],
    width: int,
    folder: str,
    images_dir: str,
    seed: int,
    patient_index: int,
) -> pd.DataFrame:
    """``image`` (``{images_dir}/{folder}/{folder}_d{day}_p{photo}``, day zero-padded to ``width``),
    ``day``, ``photo``, ``hour`` (of day, 3 decimals), ``timestamp`` (ISO, seconds) and ``seed`` of every
    photo not ``missing[day - 1, photo]``; ``jitter_min`` (minutes) is added to each photo's ``hours``."""
    ppd = len(hours)
    day = np.repeat(days["day"].to_numpy(dtype=np.int64), ppd)
    photo = np.tile(np.arange(ppd), len(days))
    keep = ~missing[day - 1, photo]
    day, photo = day[keep], photo[keep]
    hour = np.asarray(hours, dtype=float)[photo] + jitter_min[day - 1, photo] / 60.0
    dates = np.repeat(days["date"].to_numpy(), ppd)[keep]
    start = {d: _dt.datetime.fromisoformat(d) for d in dict.fromkeys(dates)}
    hour_list = hour.tolist()
    stamps = [(start[d] + _dt.timedelta(hours=h)).replace(microsecond=0).isoformat() for d, h in zip(dates, hour_list)]
    return pd.DataFrame(
        {
            "image": [
                f"{images_dir}/{folder}/{folder}_d{d:0{width}d}_p{p}" for d, p in zip(day.tolist(), photo.tolist())
            ],
            "day": day,
            "photo": photo,
            "hour": [round(h, 3) for h in hour_list],
            "timestamp": stamps,
            "seed": image_seeds(seed, patient_index, day, photo),
        },
        columns=PHOTO_COLUMNS,
    )
