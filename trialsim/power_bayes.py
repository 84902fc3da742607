"""Power studies with the Bayesian model (``trialsim power --model bayes``).

Each replicate's analysis also fits the Bayesian model, exactly as ``analyze --model bayes``
does (NUTS, 2 chains × 1000 draws after 500 warm-up; about two seconds a hia_pilot trial once
compiled, and a fit that fails its convergence checks counts as failed: fewer draws failed
R-hat ≤ 1.01 on one replicate in six); ``replicates.csv`` gets one row per patient and
``summary.csv`` how often a patient reaches a confident decision and how often it is right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def with_bayes(cfg):
    """A replicate's analysis options with the Bayesian model added (the analysis' own sampler settings)."""
    cfg.model = "bayes"
    return cfg


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
    (share of confident decisions that are right), with ``patient_trials`` (converged fits'
    patients), and for the oracle ``bias``, ``rmse`` and ``coverage`` (the CrI holds the
    realised effect) with MC SEs.
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
        row.update(_against_truth(g[ok]))
        out.append(row)
    return pd.DataFrame(out)


def _against_truth(g: pd.DataFrame) -> dict:
    """Bias, RMSE and CrI coverage of the posterior means against the realised effect (oracle), with MC SEs."""
    has = g[np.isfinite(g["known"].astype(float))]
    if not len(has):
        return {}
    err = (has["estimate"] - has["known"]).astype(float)
    inside = ((has["ci_low"] <= has["known"]) & (has["known"] <= has["ci_high"])).astype(float)
    n = len(has)
    return {
        "bias": float(err.mean()),
        "bias_mcse": float(err.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan,
        "rmse": float(np.sqrt((err**2).mean())),
        "coverage": float(inside.mean()),
        "coverage_mcse": float(np.sqrt(inside.mean() * (1 - inside.mean()) / n)),
    }


def add_bayes_decisions(summary: pd.DataFrame, rep: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with :func:`bayes_decisions`'s columns on the Bayesian rows (unchanged without them)."""
    dec = bayes_decisions(rep)
    if dec.empty:
        return summary
    keys = ["grid_point", "method", "test"]
    merged = summary.merge(dec, on=keys, how="left", suffixes=("", "_bayes"))
    for col in ("bias", "bias_mcse", "rmse", "coverage", "coverage_mcse"):
        if f"{col}_bayes" in merged.columns:
            merged[col] = merged[f"{col}_bayes"].where(merged[f"{col}_bayes"].notna(), merged.get(col))
            merged = merged.drop(columns=f"{col}_bayes")
    if "unit" in merged.columns:  # one row per patient: the unit is the patient-trial
        merged.loc[merged["test"] == BAYES_TEST, "unit"] = "patient-trial"
    return merged
