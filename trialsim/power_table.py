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
    text = path.read_text(encoding="utf-8")
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


def append_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    block = pd.DataFrame(rows, columns=columns).to_csv(
        index=False, header=False, lineterminator="\n", float_format="%.10g"
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(block)
        f.flush()


def _mcse_prop(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n > 0 else float("nan")


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
        row["power"] = reject if not null else float("nan")
        row["type1_error"] = reject if null else float("nan")
        err = (ok["estimate"] - ok["known"]).astype(float)
        err = err[np.isfinite(err)]
        if len(err):
            row["bias"] = float(err.mean())
            row["bias_mcse"] = float(err.std(ddof=1) / math.sqrt(len(err))) if len(err) > 1 else float("nan")
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
        out.append(row)
    cols = list(grid) + [
        "grid_point",
        "method",
        "test",
        "replicates",
        "failed",
        "power",
        "type1_error",
        "rejection_rate",
        "rejection_mcse",
        "bias",
        "bias_mcse",
        "rmse",
        "rmse_mcse",
        "coverage",
        "coverage_mcse",
    ]
    df = pd.DataFrame(out)
    return df.reindex(columns=[c for c in cols if c in df.columns or c in grid])


def primary_rows(res) -> list[dict]:
    """One row per patient for the primary per-patient test: its error rate is per patient, not per trial."""
    primary = res.primary_test
    rows = []
    for p in res.patients:
        if p.test != primary:
            continue
        rows.append(
            {
                "method": p.method,
                "test": f"primary:{primary} (per patient)",
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
            }
        )
    return rows


def severity_row(pop, tr) -> dict:
    """The population effect in severity units (measurement model); ``estimate_raw`` holds the relative efficiency."""
    return {
        "method": pop.method,
        "test": "lmm:severity",
        "contrast": pop.contrast,
        "estimate": pop.get("estimate_severity"),
        "ci_low": pop.get("ci_low_severity"),
        "ci_high": pop.get("ci_high_severity"),
        "p_value": pop.p_value,
        "known": tr.realised if tr else None,
        "estimate_raw": pop.get("relative_efficiency"),
        "known_raw": None,
        "error": pop.get("error") or "",
    }


BAYES_TEST = "bayes (per patient)"


def bayes_rows(res) -> list[dict]:
    """One row per patient of each Bayesian fit: posterior mean and 95% CrI (PC1 units); P(benefit) in ``estimate_raw``.

    ``known`` is the realised effect for the oracle (its PC1 is severity); ``known_raw``
    the realised effect's value for every method, to judge a decision's direction.
    """
    rows = []
    for fit in (res.bayes or {}).get("fits", []):
        converged = fit["diagnostics"]["converged"]
        for p in fit["patients"]:
            rows.append(
                {
                    "method": fit["method"],
                    "test": BAYES_TEST,
                    "contrast": fit["contrast"],
                    "estimate": p["estimate"],
                    "ci_low": p["ci_low"],
                    "ci_high": p["ci_high"],
                    "p_value": np.nan,
                    "known": p.get("known_realised") if fit["method"] == "oracle" else None,
                    "estimate_raw": p["p_benefit"] if converged else np.nan,
                    "known_raw": p.get("known_realised"),
                    "error": "" if converged else "; ".join(fit["warnings"])[:300],
                }
            )
    return rows


def bayes_decisions(rep: pd.DataFrame, confident: float = 0.9) -> pd.DataFrame:
    """Per grid point and method: how often a patient reaches a confident decision, and how often it is right.

    Confident: P(benefit) > ``confident`` or < 1 − ``confident``. Right: in the direction
    of the patient's realised effect; a confident decision where the realised effect is
    below the null tolerance counts as wrong. Columns ``decision_rate``, ``decision_right``
    (share of confident decisions that are right) and ``coverage`` (oracle: the CrI holds
    the realised effect), with ``patient_trials``.
    """
    from analysis.results import NULL_TOLERANCE

    b = rep[(rep["test"] == BAYES_TEST)].copy()
    out = []
    for (gp, method), g in b.groupby(["grid_point", "method"], sort=False):
        pb, known = g["estimate_raw"].astype(float), g["known_raw"].astype(float)
        ok = pb.notna()
        conf = ok & ((pb > confident) | (pb < 1 - confident))
        right = conf & (known.abs() >= NULL_TOLERANCE) & (np.sign(0.5 - pb) == np.sign(known))
        row = {"grid_point": gp, "method": method, "test": BAYES_TEST, "patient_trials": int(ok.sum())}
        row["decision_rate"] = float(conf[ok].mean()) if ok.any() else np.nan
        row["decision_right"] = float(right[conf].mean()) if conf.any() else np.nan
        has = g[np.isfinite(g["known"].astype(float))]
        if len(has):
            row["coverage"] = float(((has["ci_low"] <= has["known"]) & (has["known"] <= has["ci_high"])).mean())
        out.append(row)
    return pd.DataFrame(out)


def add_bayes_decisions(summary: pd.DataFrame, rep: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with :func:`bayes_decisions`'s columns on the Bayesian rows (unchanged without them)."""
    dec = bayes_decisions(rep)
    if dec.empty:
        return summary
    keys = ["grid_point", "method", "test"]
    merged = summary.merge(dec, on=keys, how="left", suffixes=("", "_bayes"))
    if "coverage_bayes" in merged.columns:
        merged["coverage"] = merged["coverage"].where(merged["coverage_bayes"].isna(), merged["coverage_bayes"])
        merged = merged.drop(columns="coverage_bayes")
    return merged
