"""Effects on the severity scale, through a measurement model fitted on the truth (simulated data).

PC1 has no unit. Where the truth is known (``severity_latent``), the photo outcome is
read as a measurement of severity::

    PC1 = a_patient + b · severity_latent + noise

fitted by ordinary least squares with one intercept per patient (:func:`measurement_model`).
An effect on PC1 then converts to severity units as ``effect / b``
(:func:`effect_on_severity`), with a standard error that carries the uncertainty of both
the effect and the slope ``b`` (delta method; the two are estimated from different
contrasts of the data and treated as independent). Regressing severity on PC1 instead
(the inverse regression) would shrink the effect towards zero by PC1's reliability.

:func:`relative_efficiency` compares a method's test statistic with the oracle's (the
latent truth analysed by the same model): 1 means the photos lose nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def measurement_model(pc1, severity, groups) -> dict:
    """OLS of PC1 on severity with one intercept per patient.

    Returns ``slope`` (PC1 units per severity unit), ``slope_se``, ``resid_sd`` (PC1 units),
    ``r2_within`` and ``n``. NaN slope when severity does not vary within patients.
    """
    df = pd.DataFrame({"y": np.asarray(pc1, float), "x": np.asarray(severity, float), "g": np.asarray(groups)})
    y = df["y"] - df.groupby("g")["y"].transform("mean")
    x = df["x"] - df.groupby("g")["x"].transform("mean")
    sxx, n, k = float(x @ x), len(df), df["g"].nunique()
    dof = n - k - 1
    if sxx <= 0 or dof < 1:
        return {"slope": math.nan, "slope_se": math.nan, "resid_sd": math.nan, "r2_within": math.nan, "n": n}
    slope = float(x @ y / sxx)
    resid = y - slope * x
    s2 = float(resid @ resid) / dof
    syy = float(y @ y)
    return {
        "slope": slope,
        "slope_se": math.sqrt(s2 / sxx),
        "resid_sd": math.sqrt(s2),
        "r2_within": 1 - float(resid @ resid) / syy if syy > 0 else math.nan,
        "n": n,
    }


def effect_on_severity(estimate: float, se: float, df: float, model: dict, alpha: float = 0.05) -> dict:
    """An effect on PC1 (``estimate`` ± ``se``, ``df`` degrees of freedom) in severity units.

    Returns ``estimate_severity``, ``se_severity``, ``ci_low_severity``, ``ci_high_severity``
    (two-sided 1 − ``alpha``, t with ``df``), ``severity_per_pc1`` (1 / slope).
    """
    b, sb = model["slope"], model["slope_se"]
    if not (np.isfinite(b) and b != 0 and np.isfinite(estimate) and np.isfinite(se)):
        nan = math.nan
        return dict(
            estimate_severity=nan, se_severity=nan, ci_low_severity=nan, ci_high_severity=nan, severity_per_pc1=nan
        )
    theta = estimate / b
    se_theta = math.sqrt(se**2 / b**2 + estimate**2 * sb**2 / b**4)
    q = (
        float(stats.t.ppf(1 - alpha / 2, df))
        if df and np.isfinite(df) and df > 0
        else float(stats.norm.ppf(1 - alpha / 2))
    )
    return {
        "estimate_severity": theta,
        "se_severity": se_theta,
        "ci_low_severity": theta - q * se_theta,
        "ci_high_severity": theta + q * se_theta,
        "severity_per_pc1": 1 / b,
    }


def relative_efficiency(estimate: float, se: float, oracle_estimate: float, oracle_se: float) -> float:
    """Ratio of z-statistics, method / oracle (same contrast, same model). NaN when undefined."""
    if not all(np.isfinite(v) for v in (estimate, se, oracle_estimate, oracle_se)) or se <= 0 or oracle_se <= 0:
        return math.nan
    z_oracle = oracle_estimate / oracle_se
    return (estimate / se) / z_oracle if z_oracle != 0 else math.nan


def add_relative_efficiency(population: list[dict], truth: list[dict]) -> None:
    """Each population entry's ``relative_efficiency``: its z over the latent model's (in place)."""
    latent = {t["contrast"]: t["latent_model"] for t in truth}
    for e in population:
        lm = latent.get(e["contrast"])
        if lm is not None:
            e["relative_efficiency"] = relative_efficiency(e["estimate"], e["se"], lm["estimate"], lm["se"])
