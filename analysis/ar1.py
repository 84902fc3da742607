"""Regression with AR(1) errors for one patient's daily means, with a p-value that holds at N-of-1 sizes.

The model is ``y_t = X_t β + u_t``, ``u_t = ρ u_{t−1} + e_t`` (days in order, gaps
ignored). It is fitted by Prais–Winsten feasible GLS: OLS, then ρ from the lag-1
autocorrelation of the residuals, then GLS on the transformed series, three rounds.

The usual t with n − k df is far too liberal on short series: ρ̂ is biased toward 0
and noisy, so the GLS standard error is too small (type-I 0.21 at 10 days and ρ = 0.5).
The p-value here is a parametric bootstrap of the whole procedure under the null:
ρ̂ is first bias-corrected by a bootstrap (ρ̃ = 2ρ̂ − mean ρ̂*, kept in [0, 0.95]), then
``n_boot`` series of pure AR(1)(ρ̃) noise are fitted in the same way, and p is the share
of their |t| at or above the observed |t|. The t statistic is scale-free and the
design matrix fixed, so the null distribution depends on ρ alone.

Measured (``bench/bench_single_patient.py``, one AB block, 1000 series per cell): type-I
0.044/0.064/0.044 at 10/20/40 days with ρ = 0, but 0.093/0.088/0.052 with ρ = 0.5 (and
0.065-0.068 in three more runs of 1500 series at 20 days): the bias correction is not
enough below 40 days, so below :data:`AR1_MIN_DAYS` daily means the test is a sensitivity
analysis only. Its power under white noise is below the t-test's (0.82 against 0.87 at
1 SD with 20 days per arm): the price of not assuming independent days.
All draws come from the generator passed in; everything is vectorised over draws.
"""

from __future__ import annotations

import numpy as np

# below this many daily means the bootstrap cannot correct enough for ρ's estimation (measured)
AR1_MIN_DAYS = 40
_ROUNDS = 3
_RHO_MAX = 0.95


def prais_winsten(Y: np.ndarray, X: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feasible GLS with AR(1) errors for each row of ``Y`` (series × days) on ``X`` (days × k).

    Returns ``(beta_j, se_j, t_j, rho)`` per series for column ``j`` of ``X``.
    """
    n, k = X.shape
    beta = Y @ np.linalg.pinv(X).T
    rho = np.zeros(len(Y))
    xs = np.broadcast_to(X, (len(Y), n, k))
    ys = Y
    for _ in range(_ROUNDS):
        e = Y - beta @ X.T
        ss = np.sum(e * e, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(ss > 0, np.sum(e[:, 1:] * e[:, :-1], axis=1) / ss, 0.0)
        rho = np.clip(rho, -_RHO_MAX, _RHO_MAX)
        s = np.sqrt(1.0 - rho**2)
        ys = np.concatenate([(s * Y[:, 0])[:, None], Y[:, 1:] - rho[:, None] * Y[:, :-1]], axis=1)
        xs = np.concatenate(
            [s[:, None, None] * X[None, :1, :], X[None, 1:, :] - rho[:, None, None] * X[None, :-1, :]], 1
        )
        xtx = np.einsum("bnk,bnl->bkl", xs, xs)
        beta = np.linalg.solve(xtx, np.einsum("bnk,bn->bk", xs, ys)[..., None])[..., 0]
    r = ys - np.einsum("bnk,bk->bn", xs, beta)
    s2 = np.sum(r * r, axis=1) / (n - k)
    se = np.sqrt(s2 * np.linalg.inv(np.einsum("bnk,bnl->bkl", xs, xs))[:, j, j])
    with np.errstate(invalid="ignore", divide="ignore"):
        t = beta[:, j] / se
    return beta[:, j], se, t, rho


def ar1_noise(rng: np.random.Generator, n_series: int, n: int, rho: float) -> np.ndarray:
    """``n_series`` stationary AR(1) series of length ``n`` with unit variance."""
    e = rng.standard_normal((n_series, n))
    u = np.empty_like(e)
    u[:, 0] = e[:, 0]
    c = np.sqrt(1.0 - rho**2)
    for t in range(1, n):
        u[:, t] = rho * u[:, t - 1] + c * e[:, t]
    return u


def ar1_test(
    y: np.ndarray, X: np.ndarray, j: int, rng: np.random.Generator, n_boot: int = 399, n_bias: int = 100
) -> dict:
    """AR(1) regression of ``y`` (daily means, in day order) on ``X``; inference on column ``j``.

    Returns ``estimate`` (β_j, outcome units), ``ci_low``/``ci_high`` (95%, ± the bootstrap's
    0.95 quantile of |t| times the SE), ``p_value`` (bootstrap, two-sided), ``rho`` (ρ̂),
    ``rho_corrected`` (ρ̃, the null model's) and ``n_days``.
    """
    y = np.asarray(y, float)
    n = len(y)
    est, se, t, rho = (float(v[0]) for v in prais_winsten(y[None, :], X, j))
    _, _, _, rho_b = prais_winsten(ar1_noise(rng, n_bias, n, rho), X, j)
    rho_c = float(np.clip(2 * rho - float(np.mean(rho_b)), 0.0, _RHO_MAX))
    _, _, t_b, _ = prais_winsten(ar1_noise(rng, n_boot, n, rho_c), X, j)
    t_b = np.abs(t_b[np.isfinite(t_b)])
    if not (np.isfinite(t) and len(t_b)):
        nan = float("nan")
        return {"estimate": est, "ci_low": nan, "ci_high": nan, "p_value": nan, "rho": rho, "n_days": n}
    p = float((1 + np.sum(t_b >= abs(t))) / (1 + len(t_b)))
    q = float(np.quantile(t_b, 0.95))
    return {
        "estimate": est,
        "ci_low": est - q * se,
        "ci_high": est + q * se,
        "p_value": p,
        "rho": rho,
        "rho_corrected": rho_c,
        "n_days": n,
    }
