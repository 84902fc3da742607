"""The per-patient ``gls`` test: daily means regressed on treatment, errors correlated as the design states.

A single-patient trial of one block has 10-40 daily observations, too few to estimate
the day-to-day correlation of its errors: a test that estimates it (``ar1``) or ignores
it (``welch``) does not hold its level at ρ = 0.5 (type-I 0.09-0.27, measured in
``bench/bench_single_patient.py``). Planning an N-of-1 trial states that correlation
anyway (as a sample size calculation states an SD), so this test takes it as given: with
the error covariance known up to a scale, GLS gives an exact t with n − k degrees of
freedom for Gaussian errors, at any length.

The stated covariance of the daily errors (days ``d``, up to one scale factor) is

    ar1_sd² · ρ^|d_i − d_j|  +  white_sd² · [i = j]  +  drift_sd² · (min(d_i, d_j) − d_1 + 1)

the noise model of a protocol's ``dynamics`` (AR(1) process noise, day-level white
noise, a random-walk drift; gaps between observed days are exact), read from a
simulated folder's ``protocol.yaml``, or stated with ``--assume-rho`` (pure AR(1)).

When the stated correlation is wrong the level moves: stating ρ = 0 when it is 0.5 gives
0.20-0.25 at 10-40 days; stating 0.5 when it is 0 gives 0.001-0.011, with less power.
Photos add independent noise to a day's reading, so for an image method the stated
correlation is an upper bound and the test errs on the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .contract import ALPHA
from .errors import AnalysisInputError


@dataclass(frozen=True)
class StatedNoise:
    """A design's noise model of daily errors (SDs in any one unit: only their ratios matter)."""

    ar1_rho: float = 0.0
    ar1_sd: float = 0.0
    white_sd: float = 0.0
    drift_sd: float = 0.0
    source: str = ""  # where it was stated: "protocol.yaml dynamics" or "--assume-rho"

    def covariance(self, days: np.ndarray) -> np.ndarray:
        """The stated covariance of the errors on ``days`` (study days, ascending), up to a scale."""
        d = np.asarray(days, float)
        lag = np.abs(d[:, None] - d[None, :])
        v = self.ar1_sd**2 * self.ar1_rho**lag + self.white_sd**2 * np.eye(len(d))
        if self.drift_sd > 0:
            v = v + self.drift_sd**2 * (np.minimum(d[:, None], d[None, :]) - d.min() + 1.0)
        return v

    def describe(self) -> str:
        """One line for reports and results.json."""
        parts = []
        if self.ar1_sd > 0:
            parts.append(f"AR(1) rho {self.ar1_rho:g} (SD {self.ar1_sd:g})")
        if self.white_sd > 0:
            parts.append(f"white noise SD {self.white_sd:g}")
        if self.drift_sd > 0:
            parts.append(f"random-walk drift SD {self.drift_sd:g}/day")
        return ", ".join(parts) + f" (stated by {self.source})"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("ar1_rho", "ar1_sd", "white_sd", "drift_sd", "source")} | {
            "text": self.describe()
        }


def assumed_rho(rho: float) -> StatedNoise:
    """The noise model of ``--assume-rho``: daily errors follow an AR(1) with coefficient ``rho``."""
    if not (isinstance(rho, (int, float)) and np.isfinite(rho) and 0.0 <= rho < 1.0):
        raise AnalysisInputError(f"the stated autocorrelation must be in [0, 1), got {rho!r}", field="--assume-rho")
    return StatedNoise(ar1_rho=float(rho), ar1_sd=1.0, source="--assume-rho")


def _number(dyn: dict, key: str) -> float:
    try:
        v = float(dyn.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return v if np.isfinite(v) and v >= 0 else 0.0


def noise_from_protocol(protocol: dict | None) -> StatedNoise | None:
    """The noise model a simulated folder's protocol states (``dynamics``), or None when it states none."""
    dyn = (protocol or {}).get("dynamics")
    if not isinstance(dyn, dict):
        return None
    rho = min(_number(dyn, "ar1_rho"), 0.999)
    noise = StatedNoise(
        ar1_rho=rho,
        ar1_sd=_number(dyn, "ar1_sd"),
        white_sd=_number(dyn, "sd_obs"),
        drift_sd=_number(dyn, "drift_sd_per_day"),
        source="protocol.yaml dynamics",
    )
    return noise if noise.ar1_sd + noise.white_sd + noise.drift_sd > 0 else None


def gls_test(y: np.ndarray, days: np.ndarray, X: np.ndarray, j: int, noise: StatedNoise, alpha: float = ALPHA) -> dict:
    """GLS of ``y`` (daily means on ``days``) on ``X`` (days × k) with the stated error covariance.

    Returns ``estimate`` (β_j, outcome units), ``ci_low``/``ci_high`` (1 − ``alpha``),
    ``p_value`` (t with n − k df: exact for Gaussian errors of the stated correlation),
    ``n_days`` and ``df``; NaN when the fit is not possible.
    """
    y = np.asarray(y, float)
    n, k = X.shape
    nan = float("nan")
    out = {"estimate": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n_days": int(n), "df": int(n - k)}
    v = noise.covariance(days)
    try:
        chol = np.linalg.cholesky(v / np.mean(np.diag(v)))
    except np.linalg.LinAlgError:
        return out
    xs = np.linalg.solve(chol, X)
    ys = np.linalg.solve(chol, y)
    if n <= k or np.linalg.matrix_rank(xs) < k:
        return out
    xtx_inv = np.linalg.inv(xs.T @ xs)
    beta = xtx_inv @ xs.T @ ys
    resid = ys - xs @ beta
    se = float(np.sqrt(resid @ resid / (n - k) * xtx_inv[j, j]))
    est = float(beta[j])
    q = float(stats.t.ppf(1 - alpha / 2, n - k))
    p = float(2 * stats.t.sf(abs(est / se), n - k)) if se > 0 else nan
    return out | {"estimate": est, "ci_low": est - q * se, "ci_high": est + q * se, "p_value": p}


def stated_noise(assume_rho: float | None, protocol: dict | None) -> StatedNoise | None:
    """The noise model the analysis takes as given: ``--assume-rho`` first, else the folder's protocol."""
    if assume_rho is not None:
        return assumed_rho(assume_rho)
    return noise_from_protocol(protocol)


def gls_power(
    effect: float, noise: StatedNoise, days: np.ndarray, X: np.ndarray, j: int, alpha: float = ALPHA
) -> float:
    """Power of :func:`gls_test` for ``effect`` (outcome units) when the noise is as stated (SDs in those units)."""
    n, k = X.shape
    v = noise.covariance(days)
    if n <= k or not np.isfinite(effect) or not np.all(np.isfinite(v)):
        return float("nan")
    try:
        var = float(np.linalg.inv(X.T @ np.linalg.solve(v, X))[j, j])
    except np.linalg.LinAlgError:
        return float("nan")
    nc, df = effect / np.sqrt(var), n - k
    q = stats.t.ppf(1 - alpha / 2, df)
    # the far tail as sf at −nc: scipy's nct.cdf gives NaN there for large |nc|
    near, far = stats.nct.sf(q, df, abs(nc)), stats.nct.sf(q, df, -abs(nc))
    return float(np.nan_to_num(near, nan=1.0) + np.nan_to_num(far, nan=0.0))
