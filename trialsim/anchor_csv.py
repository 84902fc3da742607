"""Read the seed project's protocol CSV and render it as given.

Format: ``,patient_id,date,block,day,treatment,AcneSeverity`` (an unnamed index
column is allowed), one row per patient and day, severity continuous on 0–3. The
CSV's severities become the latent truth as they are (the CSV does not separate
noise from effect, so ``severity_noisefree`` equals ``severity_latent``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import cell_text

from .dataset import SCHEDULE_COLUMNS
from .dynamics import severity_grade, target_lesion_count
from .errors import BadInput
from .protocol import BASELINE_LABEL, MAX_STUDY_DAYS, Protocol, protocol_from_dict
from .render.base import PatientJob
from .simulate import patient_truth

REQUIRED = SCHEDULE_COLUMNS


def _refuse(path: Path, df: pd.DataFrame, bad: pd.Series, col: str, why: str, allowed: str):
    """:class:`BadInput` for the first row where ``bad`` holds, naming the file, its row (1 = header) and column."""
    i = int(np.flatnonzero(bad.to_numpy())[0])
    raw = df[col].iloc[i]
    what = cell_text(raw)
    if isinstance(raw, str) and raw.strip().lower() in ("nan", "-nan", "+nan"):
        why = "not a number"
    raise BadInput(f"row {i + 2} holds {what}: {why}", file=str(path), field=col, allowed=allowed)


def _integers(path: Path, df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` as whole numbers from 1 to the longest study (a day or block), else :class:`BadInput`."""
    v = pd.to_numeric(df[col], errors="coerce")
    allowed = f"whole numbers from 1 to {MAX_STUDY_DAYS}"
    if v.isna().any():
        _refuse(path, df, v.isna(), col, "not a number", allowed)
    infinite = pd.Series(~np.isfinite(v.to_numpy(dtype=float)), index=v.index)
    if infinite.any():
        _refuse(path, df, infinite, col, "not a finite number", allowed)
    if (v > MAX_STUDY_DAYS).any():  # also keeps the cast below from overflowing
        _refuse(path, df, v > MAX_STUDY_DAYS, col, "past the longest study", allowed)
    if ((v < 1) | (v != np.floor(v))).any():
        _refuse(path, df, (v < 1) | (v != np.floor(v)), col, "not a whole number from 1 up", allowed)
    return v.astype(int)


def _severities(path: Path, df: pd.DataFrame) -> pd.Series:
    sev = pd.to_numeric(df["AcneSeverity"], errors="coerce")
    if sev.isna().any():
        _refuse(path, df, sev.isna(), "AcneSeverity", "not a number", "numbers in [0, 3]")
    if ((sev < 0) | (sev > 3)).any():
        _refuse(path, df, (sev < 0) | (sev > 3), "AcneSeverity", "outside the scale", "numbers in [0, 3]")
    return sev.astype(float)


def _labels(path: Path, df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` as text, refusing empty cells (a patient id or a treatment must be named)."""
    empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
    if empty.any():
        _refuse(path, df, empty, col, "every row needs one", "a non-empty name")
    return df[col].astype(str)


def read_anchor_csv(path: str | Path) -> pd.DataFrame:
    """Load and validate the CSV; raise :class:`BadInput` naming the file, row and column."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise BadInput("file not found", file=str(path)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise BadInput(f"not a readable CSV ({e.__class__.__name__})", file=str(path)) from None
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BadInput(
            f"missing column(s) {missing}", file=str(path), field=missing[0], allowed="columns " + ",".join(REQUIRED)
        )
    if df.empty:
        raise BadInput("the CSV has no rows", file=str(path))
    raw = df.copy()
    for col in ("day", "block"):
        df[col] = _integers(path, raw, col)
    df["AcneSeverity"] = _severities(path, raw)
    dates = pd.to_datetime(raw["date"], errors="coerce")
    if dates.isna().any():
        _refuse(path, raw, dates.isna(), "date", "not a calendar date", "ISO dates such as 2018-01-01")
    df["date"] = dates.dt.strftime("%Y-%m-%d")
    df["patient_id"] = _labels(path, raw, "patient_id")
    df["treatment"] = _labels(path, raw, "treatment")
    twice = df.duplicated(["patient_id", "day"])
    if twice.any():
        _refuse(path, raw, twice, "day", "this patient has this day already", "one row per patient and day")
    order = {p: i for i, p in enumerate(dict.fromkeys(df["patient_id"]))}
    df["_order"] = df["patient_id"].map(order)
    return df.sort_values(["_order", "day"], kind="stable").drop(columns="_order").reset_index(drop=True)


def protocol_for_csv(df: pd.DataFrame, seed: int, rendering: dict | None = None, name: str = "from_csv") -> Protocol:
    """A protocol describing the CSV's design; nominal effects are the arms' mean change from Baseline."""
    labels = [t for t in dict.fromkeys(df["treatment"]) if t != BASELINE_LABEL]
    base = df.loc[df["treatment"] == BASELINE_LABEL, "AcneSeverity"]
    ref = float(base.mean()) if len(base) else float(df["AcneSeverity"].max())
    treatments = [
        {"label": l, "effect": round(float(df.loc[df["treatment"] == l, "AcneSeverity"].mean()) - ref, 4)}
        for l in labels
    ]
    if not treatments:
        treatments = [{"label": "Treatment", "effect": 0.0}]
    run_in = df[df["treatment"] == BASELINE_LABEL].groupby("patient_id").size()
    n_days = int(df.groupby("patient_id")["day"].max().max())
    data = {
        "name": name,
        "seed": seed,
        "patients": {
            "n": df["patient_id"].nunique(),
            "ids": list(dict.fromkeys(df["patient_id"])),
            "baseline_severity": {"mean": round(min(max(ref, 0.0), 3.0), 4), "sd": 0.0},
        },
        "treatments": treatments,
        "schedule": {
            "design": "fixed",
            "blocks": 1,
            "period_days": max(1, n_days - int(run_in.max() if len(run_in) else 0)),
            "run_in_days": int(run_in.max()) if len(run_in) else 0,
            "sequence": "A",
        },
        "observation": {"start_date": df["date"].iloc[0]},
        "rendering": rendering or {},
    }
    return protocol_from_dict(data, source="<from-csv>")


def jobs_from_csv(df: pd.DataFrame, protocol: Protocol) -> list[PatientJob]:
    """Patient jobs whose truth is the CSV's severities (photos as the protocol's observation says)."""
    jobs = []
    for i, pid in enumerate(protocol.patients.patient_ids):
        g = df[df["patient_id"] == pid].sort_values("day")
        sev = g["AcneSeverity"].to_numpy()
        days = pd.DataFrame(
            {
                "patient_id": pid,
                "day": g["day"].to_numpy(),
                "date": g["date"].to_numpy(),
                "block": g["block"].to_numpy(),
                "period": g["block"].to_numpy(),
                "treatment": g["treatment"].to_numpy(),
                "severity_noisefree": sev,
                "severity_latent": sev,
                "severity_grade": severity_grade(sev),
                "lesion_target": target_lesion_count(sev),
            }
        )
        photos = patient_truth(protocol, i, pid).images  # photo times and seeds per (patient, day)
        photos = photos[photos["day"].isin(days["day"])].reset_index(drop=True)
        days["baseline_severity"] = (
            float(sev[g["treatment"].to_numpy() == BASELINE_LABEL].mean())
            if (g["treatment"] == BASELINE_LABEL).any()
            else float(sev.max())
        )
        jobs.append(PatientJob(protocol, pid, i, days, photos))
    return jobs
