"""Treatment schedules: who gets what, on which study day.

A schedule is a DataFrame with one row per patient and study day:
``patient_id, day, date, block, period, treatment``. ``day`` is 1-based;
``block`` is the randomisation block (0 for the run-in); ``period`` numbers the
consecutive treatment periods from 1 (the run-in, when present, is period 1,
as in the anchor's CSV).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from .protocol import BASELINE_LABEL, Protocol

_MAX_REDRAWS = 10_000


def _longest_run(seq: list[str]) -> int:
    best = run = 0
    prev = None
    for s in seq:
        run = run + 1 if s == prev else 1
        prev = s
        best = max(best, run)
    return best


def period_sequence(protocol: Protocol, rng: np.random.Generator) -> list[list[str]]:
    """Treatment labels per block, e.g. ``[["Antibiotics", "Cream"], ["Antibiotics", "Cream"]]``.

    For ``randomized_blocks`` the order inside each block is drawn from ``rng``
    and redrawn until no treatment runs longer than ``max_consecutive_periods``.
    """
    by_code = {c: l for l, c in protocol.treatment_codes.items()}
    block = [by_code[c] for c in protocol.block_sequence]
    sch = protocol.schedule
    if sch.design == "fixed":
        return [list(block) for _ in range(sch.blocks)]
    cap = sch.max_consecutive_periods
    for _ in range(_MAX_REDRAWS):
        blocks = [list(rng.permutation(block)) for _ in range(sch.blocks)]
        if cap is None or _longest_run([t for b in blocks for t in b]) <= cap:
            return blocks
    raise ValueError("schedule.max_consecutive_periods cannot be met by randomized blocks")


def patient_schedule(protocol: Protocol, patient_id: str, rng: np.random.Generator) -> pd.DataFrame:
    """One patient's day-by-day schedule (all planned days up to ``observation.days``)."""
    sch = protocol.schedule
    rows: list[tuple[int, int, str]] = []  # (block, period, treatment) per day
    period = 0
    if sch.run_in_days > 0:
        period += 1
        rows += [(0, period, BASELINE_LABEL)] * sch.run_in_days
    for b, labels in enumerate(period_sequence(protocol, rng), start=1):
        for label in labels:
            period += 1
            rows += [(b, period, label)] * sch.period_days
    rows = rows[: protocol.n_days]
    days = np.arange(1, len(rows) + 1)
    start = protocol.observation.start_date
    return pd.DataFrame(
        {
            "patient_id": str(patient_id),
            "day": days,
            "date": [(start + _dt.timedelta(days=int(d) - 1)).isoformat() for d in days],
            "block": [r[0] for r in rows],
            "period": [r[1] for r in rows],
            "treatment": [r[2] for r in rows],
        }
    )
