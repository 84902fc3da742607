"""The effect on these patients: the average of each patient's own estimate.

The population model answers "what is the mean effect in patients like these?": its
interval carries the spread of effects between patients and, with five patients, a t
with 4 degrees of freedom. A simulated trial's known effect is something narrower, the
effect realised in the patients that were simulated (their average noise-free
contrast), and so is a question a trial's own participants ask ("did it work for us?").
Judged against that, the population interval is too wide by design (coverage near 1).

The sample-average effect answers it. For each patient, the difference of the two arms'
mean daily outcome (the least-squares coefficient of the arm on the daily means: the
same contrast as the realised effect, day for day), with a variance that carries the
serial correlation the design states (:mod:`.stated_noise`)::

    Var(β_i) = σ_i² · [(X'X)⁻¹ X'VX (X'X)⁻¹]_jj,   σ_i² = RSS_i / tr(M V),  M = I − X(X'X)⁻¹X'

(V the stated covariance up to a scale; σ_i² unbiased under it), then

    estimate = Σ β_i / n,   SE = √(Σ Var(β_i)) / n,

with Welch–Satterthwaite degrees of freedom from each patient's tr(MV)² / tr((MV)²).
The ``gls`` test would weight days by the stated correlation instead; that estimates
another contrast when the effect ramps up and down within periods (onset, washout),
so the interval would miss the realised effect even with no noise. It needs the
design's stated noise (a simulated folder's protocol, or ``--assume-rho``); without it
there is no such entry. It has no day term (``--time-terms`` adds one to the models, not
here): the realised effect has none. Where a measurement model exists (simulated data), the same
conversion to severity units as the population effect applies
(:func:`.severity.effect_on_severity`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .contract import ALPHA
from .models import contrast_name, daily_design
from .severity import effect_on_severity
from .stated_noise import StatedNoise


def patient_contrast(p: pd.DataFrame, outcome: str, a: str, b: str, noise: StatedNoise) -> tuple[float, float, float]:
    """One patient's arm difference of daily means, its variance under the stated noise, and that variance's df."""
    daily, X, j = daily_design(p, outcome, a, b, time_terms=False)
    nan = (math.nan, math.nan, math.nan)
    if j is None:
        return nan
    y = daily[outcome].to_numpy(float)
    v = noise.covariance(daily["day"].to_numpy(float))
    v = v / np.mean(np.diag(v))
    xtx_inv = np.linalg.inv(X.T @ X)
    beta = xtx_inv @ X.T @ y
    resid = y - X @ beta
    mv = (np.eye(len(y)) - X @ xtx_inv @ X.T) @ v
    tr1, tr2 = float(np.trace(mv)), float(np.trace(mv @ mv))
    if tr1 <= 0 or tr2 <= 0:
        return nan
    c = float((xtx_inv @ X.T @ v @ X @ xtx_inv)[j, j])
    return float(beta[j]), float(resid @ resid) / tr1 * c, tr1**2 / tr2


def sample_average(
    scored: pd.DataFrame, outcome: str, a: str, b: str, noise: StatedNoise | None, alpha: float = ALPHA
) -> dict | None:
    """The sample-average effect of ``b − a`` on ``scored[outcome]`` (None without stated noise or two patients).

    Returns ``sample_estimate``, ``sample_se``, ``sample_df``, ``sample_ci_low``,
    ``sample_ci_high``, ``sample_p_value`` and ``sample_n_patients`` (outcome units).
    """
    if noise is None:
        return None
    per = [patient_contrast(p, outcome, a, b, noise) for _, p in scored.groupby("patient_id", sort=True)]
    est, var, dof = (np.array(x, float) for x in zip(*per)) if per else (np.zeros(0),) * 3
    if len(est) < 2 or not (np.all(np.isfinite(est)) and np.all(np.isfinite(var)) and np.all(var > 0)):
        return None
    n = len(est)
    w = var / n**2
    total = float(w.sum())
    df_sat = float(total**2 / np.sum(w**2 / dof))
    mean, s = float(est.mean()), math.sqrt(total)
    q = float(stats.t.ppf(1 - alpha / 2, df_sat))
    return {
        "sample_estimate": mean,
        "sample_se": s,
        "sample_df": df_sat,
        "sample_ci_low": mean - q * s,
        "sample_ci_high": mean + q * s,
        "sample_p_value": float(2 * stats.t.sf(abs(mean / s), df_sat)),
        "sample_n_patients": n,
    }


def add_sample_average(population: list[dict], scored: pd.DataFrame, pairs, noise, mm: dict | None) -> None:
    """Each population entry's sample-average effect of PC1 (and in severity units with ``mm``), in place."""
    by_name = {contrast_name(a, b): (a, b) for a, b in pairs}
    for e in population:
        sa = sample_average(scored, "PC1", *by_name[e["contrast"]], noise)
        if sa is None:
            continue
        e.update(sa)
        if mm is not None:
            sev = effect_on_severity(sa["sample_estimate"], sa["sample_se"], sa["sample_df"], mm)
            e.update({f"sample_{k}": v for k, v in sev.items() if k != "severity_per_pc1"})
