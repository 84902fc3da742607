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

from .dataset import SCHEDULE_COLUMNS
from .dynamics import severity_grade, target_lesion_count
from .errors import BadInput
from .protocol import BASELINE_LABEL, MAX_STUDY_DAYS, Protocol, protocol_from_dict
from .render.base import PatientJob
from .simulate import patient_truth

REQUIRED = SCHEDULE_COLUMNS


def _plain(value):
    """A numpy scalar as the Python number it holds (messages show ``1.5``, not ``np.float64(1.5)``)."""
    return value.item() if hasattr(value, "item") else value


def read_anchor_csv(path: str | Path) -> pd.DataFrame:
    """Load and validate the CSV; raise :class:`BadInput` naming the file and column."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
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
    for col in ("day", "block"):
        v = pd.to_numeric(df[col], errors="coerce")
        if v.isna().any() or (v < 1).any() or (v != np.floor(v)).any():
            bad = df.loc[v.isna() | (v < 1) | (v != np.floor(v)), col].iloc[0]
            raise BadInput(
                f"non-integer or non-positive value {_plain(bad)!r}", file=str(path), field=col, allowed="integers ≥ 1"
            )
        if v.max() > MAX_STUDY_DAYS:  # also keeps the cast below from overflowing
            raise BadInput(
                f"{col} {df.loc[v.idxmax(), col]} is past the longest study",
                file=str(path),
                field=col,
                allowed=f"integers from 1 to {MAX_STUDY_DAYS}",
            )
        df[col] = v.astype(int)
    sev = pd.to_numeric(df["AcneSeverity"], errors="coerce")
    if sev.isna().any():
        bad = df.loc[sev.isna(), "AcneSeverity"].iloc[0]
        raise BadInput(
            f"non-numeric severity {_plain(bad)!r}", file=str(path), field="AcneSeverity", allowed="numbers in [0, 3]"
        )
    if ((sev < 0) | (sev > 3)).any():
        bad = sev[(sev < 0) | (sev > 3)].iloc[0]
        raise BadInput(
            f"severity {bad} out of range", file=str(path), field="AcneSeverity", allowed="numbers in [0, 3]"
        )
    df["AcneSeverity"] = sev.astype(float)
    dates = pd.to_datetime(df["date"], errors="coerce")
    if dates.isna().any():
        raise BadInput(
            f"unreadable date {df.loc[dates.isna(), 'date'].iloc[0]!r}",
            file=str(path),
            field="date",
            allowed="ISO dates such as 2018-01-01",
        )
    df["date"] = dates.dt.strftime("%Y-%m-%d")
    df["patient_id"] = df["patient_id"].astype(str)
    df["treatment"] = df["treatment"].astype(str)
    if df.duplicated(["patient_id", "day"]).any():
        raise BadInput("a patient has the same day twice", file=str(path), field="day")
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
