"""The tables of a power study: ``replicates.csv`` (one row per replicate, method and test) and ``summary.csv``.

Rows are appended as replicates finish; a line cut short by a kill is recognised
by its leading ``grid_point`` and ``replicate`` and dropped, so its replicate is rerun.
"""

from __future__ import annotations

import math
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.contract import ALPHA

from .errors import BadInput

REPLICATE_COLUMNS = [
    "grid_point",
    "replicate",
    "seed",
    "method",
    "test",
    "contrast",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "known",
    "estimate_raw",
    "known_raw",
    "error",
    "min_p",
]


def parse_value(text: str):
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text else v


def read_done(path: Path) -> pd.DataFrame:
    """Rows already recorded; a line cut short by a kill is dropped (and rewritten later)."""
    if not path.exists():
        return pd.DataFrame(columns=REPLICATE_COLUMNS)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput("the replicates table is not text trialsim wrote (undecodable bytes)", file=str(path)) from None
    cut = None
    if text and not text.endswith("\n"):
        # the last block was cut by a kill: drop its replicate entirely (it is rerun)
        last = text[text.rfind("\n") + 1 :]
        text = text[: text.rfind("\n") + 1]
        parts = last.split(",")
        if len(parts) > 1:
            cut = (parts[0], parts[1])
    if not text.strip():
        return pd.DataFrame(columns=REPLICATE_COLUMNS)
    try:
        df = pd.read_csv(StringIO(text), keep_default_na=False, na_values=[""], dtype={"grid_point": str})
    except (pd.errors.ParserError, ValueError) as e:
        raise BadInput(f"unreadable replicates table ({e.__class__.__name__})", file=str(path)) from None
    lacking = [c for c in ("grid_point", "replicate", "method") if c not in df.columns]
    if lacking or pd.to_numeric(df["replicate"], errors="coerce").isna().any():
        raise BadInput(
            f"not a replicates table trialsim wrote (column {(lacking or ['replicate'])[0]} missing or not a number)",
            file=str(path),
            allowed="delete the file to rerun every replicate, or use another --out",
        )
    if cut is not None:
        df = df[~((df["grid_point"] == cut[0]) & (df["replicate"].astype(str) == cut[1]))]
    return df.reset_index(drop=True)


NUMERIC_COLUMNS = ("estimate", "ci_low", "ci_high", "p_value", "known", "estimate_raw", "known_raw")


def check_done(done: pd.DataFrame, keys: set[str], path: Path) -> None:
    """Refuse recorded rows trialsim could not have written for this study: an unknown ``grid_point``,
    or text in a numeric column (exit 2 naming the file and field)."""
    unknown = sorted(set(done["grid_point"].astype(str)) - keys)
    if unknown:
        raise BadInput(
            f"the replicates table holds grid point {unknown[0]!r}, which this study does not have",
            file=str(path),
            field="grid_point",
            allowed="delete the file to rerun every replicate, or use another --out",
        )
    for c in NUMERIC_COLUMNS:
        if c in done.columns:
            v = done[c]
            bad = v.notna() & pd.to_numeric(v, errors="coerce").isna()
            if bad.any():
                raise BadInput(
                    f"row {int(bad.to_numpy().argmax()) + 2} holds {str(v[bad].iloc[0])!r} where a number belongs",
                    file=str(path),
                    field=c,
                )


def append_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    block = pd.DataFrame(rows, columns=columns).to_csv(
        index=False, header=False, lineterminator="\n", float_format="%.10g"
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(block)
        f.flush()


SAMPLE_NULL_NOTE = (
    "tests these patients' own effect: a type-I error only where every patient's effect is 0 (effect_sd 0)"
)
# tests whose rows are one per patient: their rejection rate is per-patient power
PER_PATIENT_PREFIXES = ("primary:", "per-patient:")
DESIGN_COLUMNS = (
    "realised_share",
    "design_power_t",
    "design_power_gls",
    "n_assignments",
    "design_min_p",
    "design_verdict",
)


def _unreachable_note(ok: pd.DataFrame, alpha: float = ALPHA) -> str:
    """ "cannot reach α with N assignments (smallest p = …)" when every row's smallest attainable p is above α."""
    if "min_p" not in ok.columns:
        return ""
    m = pd.to_numeric(ok["min_p"], errors="coerce").dropna()
    if not len(m) or m.min() <= alpha:
        return ""
    n = round(2 / m.max()) if m.max() > 0 else 0  # two-sided: the observed and the mirrored assignment
    return f"cannot reach α = {alpha:g} with {n} assignments (smallest p = {m.max():.3g})"


def add_design(summary: pd.DataFrame, designs: dict[str, dict]) -> pd.DataFrame:
    """The grid points' design diagnostics beside their rows (``DESIGN_COLUMNS``)."""
    keys = ("realised_share", "power_t", "power_gls", "n_assignments", "min_p", "verdict")
    extra = pd.DataFrame(
        [[designs.get(str(gp), {}).get(k) for k in keys] for gp in summary["grid_point"]],
        columns=list(DESIGN_COLUMNS),
        index=summary.index,
    )
    return pd.concat([summary, extra], axis=1)


def _mcse_prop(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n > 0 else float("nan")


def _error_stats(ok: pd.DataFrame) -> dict:
    """Bias, RMSE and coverage of the estimate against the known effect, with MC SEs (where known)."""
    row: dict = {}
    err = (ok["estimate"] - ok["known"]).astype(float)
    err = err[np.isfinite(err)]
    if len(err):
        row["bias"] = float(err.mean())
        row["bias_mcse"] = float(err.std(ddof=1) / math.sqrt(len(err))) if len(err) > 1 else float("nan")
        # a ratio estimate (severity units: effect ÷ a fitted slope) has heavy tails: the median beside the mean
        row["bias_median"] = float(np.median(err))
        rmse = float(np.sqrt((err**2).mean()))
        row["rmse"] = rmse
        row["rmse_mcse"] = (
            float((err**2).std(ddof=1) / (2 * rmse * math.sqrt(len(err))))
            if len(err) > 1 and rmse > 0
            else float("nan")
        )
        has_ci = ok[np.isfinite(ok["ci_low"].astype(float)) & np.isfinite(ok["known"].astype(float))]
        if len(has_ci):
            cov = float(((has_ci["ci_low"] <= has_ci["known"]) & (has_ci["known"] <= has_ci["ci_high"])).mean())
            row["coverage"] = cov
            row["coverage_mcse"] = _mcse_prop(cov, len(has_ci))
    return row


def summarise(rep: pd.DataFrame, grid: dict[str, list]) -> pd.DataFrame:
    """Power, type-I error, bias, RMSE and coverage per grid point, method and test, with MC SEs."""
    out = []
    for (gp, method, test), g in rep.groupby(["grid_point", "method", "test"], sort=False):
        failed = g["error"].notna() & (g["error"].astype(str).str.len() > 0)
        ok = g[~failed & g["p_value"].notna()]
        n = len(ok)
        point = dict(kv.split("=", 1) for kv in str(gp).split(";")) if gp != "base" else {}
        null = "effect" in point and float(point["effect"]) == 0.0
        reject = float((ok["p_value"] < ALPHA).mean()) if n else float("nan")
        row = {
            **{k: parse_value(v) for k, v in point.items()},
            "grid_point": gp,
            "method": method,
            "test": test,
            "replicates": len(g),
            "failed": int(failed.sum()),
            "rejection_rate": reject,
            "rejection_mcse": _mcse_prop(reject, n),
        }
        row["unit"] = "patient-trial" if test.startswith(PER_PATIENT_PREFIXES) else "trial"
        row["note"] = _unreachable_note(ok) or (SAMPLE_NULL_NOTE if null and test.startswith("sample:") else "")
        row["power"] = reject if not null else float("nan")
        row["type1_error"] = reject if null else float("nan")
        row.update(_error_stats(ok))
        out.append(row)
    cols = list(grid) + [
        "grid_point",
        "method",
        "test",
        "unit",
        "replicates",
        "failed",
        "power",
        "type1_error",
        "rejection_rate",
        "rejection_mcse",
        "bias",
        "bias_mcse",
        "bias_median",
        "rmse",
        "rmse_mcse",
        "coverage",
        "coverage_mcse",
        "note",
    ]
    df = pd.DataFrame(out)
    return df.reindex(columns=[c for c in cols if c in df.columns or c in grid])


def patient_row(p, test: str) -> dict:
    """A replicate row of one per-patient result ``p`` under the label ``test``."""
    return {
        "method": p.method,
        "test": test,
        "contrast": p.contrast,
        "estimate": p.estimate,
        "ci_low": p.get("ci_low"),
        "ci_high": p.get("ci_high"),
        "p_value": p.p_value,
        # PC1 units: comparable with the realised effect for the oracle only
        "known": p.get("known_realised") if p.method == "oracle" else None,
        "estimate_raw": np.nan,
        "known_raw": np.nan,
        "error": "",
        "min_p": p.min_p,
    }


def primary_rows(res) -> list[dict]:
    """One row per patient for the primary per-patient test: its error rate is per patient, not per trial."""
    primary = res.primary_test
    return [patient_row(p, f"primary:{primary} (per patient)") for p in res.patients if p.test == primary]


def severity_rows(pop, tr) -> list[dict]:
    """A population entry's effects in severity units against the realised effect, where each exists.

    ``lmm:severity``: the mixed model's effect through the measurement model (``estimate_raw``
    holds the relative efficiency); ``sample:severity``: the effect on these patients
    (:mod:`analysis.sample_average`).
    """
    rows = []
    for test, prefix, p_value, raw in (
        ("lmm:severity", "", pop.p_value, pop.get("relative_efficiency")),
        ("sample:severity", "sample_", pop.get("sample_p_value"), None),
    ):
        if pop.get(f"{prefix}estimate_severity") is None:
            continue
        rows.append(
            {
                "method": pop.method,
                "test": test,
                "contrast": pop.contrast,
                "estimate": pop.get(f"{prefix}estimate_severity"),
                "ci_low": pop.get(f"{prefix}ci_low_severity"),
                "ci_high": pop.get(f"{prefix}ci_high_severity"),
                "p_value": p_value,
                "known": tr.realised if tr else None,
                "estimate_raw": raw,
                "known_raw": None,
                "error": pop.get("error") or "",
            }
        )
    return rows
