"""The hierarchical N-of-1 model of one contrast ``b − a`` and the arrays it reads.

Per photo ``i`` of patient ``p`` on study day ``d_i`` (outcome standardised: ``(y − ȳ) / s``)::

    y_i   = α_p + θ_p · x_i + u_p(d_i) + e_i          x_i = 1 on arm b's photos, 0 on arm a's
    α_p   ~ Normal(μ_α, σ_α)                           patient p's intercept
    θ_p   ~ Normal(μ_θ, τ)                             patient p's effect
    u_p   : stationary AR(1) over days, SD σ_u, lag-one correlation ρ; days apart by g have
            correlation ρ^g, so irregular days and gaps are exact
    e_i   ~ Normal(0, σ_e)                             photo-level noise

Photos on the same day share the day's ``u`` and differ by their own ``e``: several photos a
day enter exactly, as their day's mean (variance σ_u² + σ_e²/n) and their spread around it
(σ_e). When a day's photos all carry the same value (a day-level score such as the oracle's)
each day is one observation and σ_e is day-level white noise.

Collapsed: given the seven hyper-parameters (μ_α, σ_α, μ_θ, τ, σ_u, σ_e, ρ) each patient's
day means are ``MVN(μ_α + μ_θ x, σ_α² 11' + τ² x x' + Σ_p)`` with
``Σ_p = σ_u² R(ρ) + diag(σ_e²/n)``, ``R[j, k] = ρ^|day_j − day_k|``, and patients are
independent: the likelihood is a sum of small dense MVN densities and NUTS samples the seven
hyper-parameters only. Each patient's (α_p, θ_p) is then drawn from its exact Gaussian
conditional per posterior draw (:func:`patient_conditional`). Only the two contrasted arms'
photos enter; run-in (Baseline) and other arms' days count only as gaps. With one patient the
same model holds: the population parameters are then only their priors (no pooling is
possible), and θ_1's prior is the population prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import AnalysisInputError
from .priors import Priors

# the sampled sites (NUTS sees only these) and, with the patients' draws, the parameters checked
SAMPLED = ("mu_alpha", "sigma_alpha", "mu_theta", "tau", "rho", "sigma", "ar_share")
HYPER = ("mu_alpha", "sigma_alpha", "mu_theta", "tau", "sigma_day", "sigma_photo", "rho")
PARAMETERS = (*SAMPLED, "sigma_day", "sigma_photo", "alpha", "theta")


@dataclass
class ContrastData:
    """One contrast's photos as padded day-level arrays (patients × days), and the scales used.

    ``y`` each day's mean photo outcome (standardised), ``n`` its number of photos, ``x`` 1
    on arm b's days, ``day`` the study day, ``mask`` True on real days (False on padding);
    ``ss_within`` and ``df_within`` the photos' squared deviations from their day's mean
    (standardised) and their degrees of freedom; ``s`` (within-patient residual SD) and
    ``s_total`` (SD of all photos) in outcome units; ``centre`` the mean subtracted.
    """

    patients: list[str]
    y: np.ndarray
    n: np.ndarray
    x: np.ndarray
    day: np.ndarray
    mask: np.ndarray
    ss_within: float
    df_within: int
    s: float
    s_total: float
    centre: float
    n_obs: int

    def arrays(self, priors: Priors) -> dict[str, np.ndarray]:
        """The model's input (data and prior scales, standardised units) as float arrays."""
        h = {
            "effect_mean": priors.effect_mean,
            "effect_sd": priors.effect_sd,
            "heterogeneity_sd": priors.heterogeneity_sd,
            "intercept_sd": priors.intercept_sd * self.s_total / self.s,
            "noise_sd": priors.noise_sd,
            "share_a": priors.share_a,
            "share_b": priors.share_b,
            "rho_a": priors.rho_a,
            "rho_b": priors.rho_b,
            "ss_within": self.ss_within,
            "df_within": self.df_within,
        }
        return {
            "y": self.y,
            "n": np.where(self.mask, self.n, 1.0),
            "x": self.x,
            "day": self.day,
            "mask": self.mask.astype(float),
            **{k: np.asarray(v, dtype=float) for k, v in h.items()},
        }


def within_sd(d: pd.DataFrame) -> float:
    """Pooled SD of ``y`` around each patient × arm mean (the unit ``s``)."""
    r = d["y"] - d.groupby(["patient_id", "treatment"])["y"].transform("mean")
    k = d.groupby(["patient_id", "treatment"]).ngroups
    dof = len(d) - k
    return float(np.sqrt((r**2).sum() / dof)) if dof > 0 else float("nan")


def contrast_data(df: pd.DataFrame, outcome: str, a: str, b: str) -> ContrastData:
    """The arrays of contrast ``b − a`` from ``df`` (``patient_id, treatment, day`` and ``outcome``).

    One patient is allowed. Raises :class:`AnalysisInputError` when an arm has no photo or
    the outcome does not vary within patients.
    """
    d = pd.DataFrame(
        {
            "y": pd.to_numeric(df[outcome], errors="coerce").to_numpy(dtype=float),
            "patient_id": df["patient_id"].astype(str).to_numpy(),
            "treatment": df["treatment"].astype(str).to_numpy(),
            "day": pd.to_numeric(df["day"], errors="coerce").to_numpy(dtype=float),
        }
    )
    d = d[np.isfinite(d["y"]) & np.isfinite(d["day"]) & d["treatment"].isin([a, b])]
    for arm in (a, b):
        if not (d["treatment"] == arm).any():
            raise AnalysisInputError(f"no photos of treatment {arm!r} to contrast", field="treatment")
    d = d.sort_values(["patient_id", "day"], kind="stable").reset_index(drop=True)
    s, s_total, centre = within_sd(d), float(d["y"].std(ddof=1)), float(d["y"].mean())
    if not (np.isfinite(s) and s > 0):
        raise AnalysisInputError(f"{outcome} does not vary within patients and arms", field=outcome)
    d["y"] = (d["y"] - centre) / s
    daily = d.groupby(["patient_id", "day"], sort=True).agg(
        y=("y", "mean"), n=("y", "size"), x=("treatment", lambda t: float((t == b).mean()))
    )
    dev = d["y"] - d.groupby(["patient_id", "day"])["y"].transform("mean")
    patients = sorted(d["patient_id"].unique())
    n_max = int(daily.groupby(level="patient_id").size().max())
    shape = (len(patients), n_max)
    y, n, x, day, mask = np.zeros(shape), np.ones(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape, bool)
    for i, pid in enumerate(patients):
        p = daily.loc[pid]
        k = len(p)
        y[i, :k], n[i, :k], x[i, :k] = p["y"].to_numpy(), p["n"].to_numpy(), p["x"].to_numpy()
        day[i, :k], mask[i, :k] = p.index.to_numpy(dtype=float), True
    df_within, ss_within = int(len(d) - len(daily)), float((dev**2).sum())
    if ss_within <= 1e-12 * float((d["y"] ** 2).sum()):
        # a day's photos carry one value (a day-level score, e.g. the oracle's): each day is one
        # observation, else σ_e → 0 would have unbounded density
        n[mask], df_within, ss_within = 1.0, 0, 0.0
    return ContrastData(
        patients, y, n, x, day, mask, ss_within, df_within, s, s_total if s_total > 0 else s, centre, len(d)
    )


def day_covariance(day, n, mask, rho, sigma_day, sigma_photo):
    """Σ_p of each patient's day means (patients × days × days): AR(1) days plus the photos' noise.

    ``σ_u² ρ^|day_j − day_k| + δ_jk σ_e² / n_j``: exact on irregular days. Padding days
    (``mask`` 0) get an identity block, so they add a constant and nothing else.
    """
    import jax.numpy as jnp

    lag = jnp.abs(day[:, :, None] - day[:, None, :])
    both = mask[:, :, None] * mask[:, None, :]
    ar = sigma_day**2 * jnp.exp(lag * jnp.log(rho)) * both
    diag = sigma_photo**2 / n * mask + (1.0 - mask)
    return ar + diag[:, :, None] * jnp.eye(day.shape[1])


def marginal_loglik(data: dict, hyper: dict):
    """log p(day means | hyper-parameters), patient intercepts and effects integrated out exactly.

    Per patient ``y_p ~ MVN(μ_α + μ_θ x_p, σ_α² 11' + τ² x_p x_p' + Σ_p)``: a dense Cholesky
    each (at most ~100 days), all patients at once on padded arrays.
    """
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    y, x, mask = data["y"], data["x"], data["mask"]
    cov = day_covariance(data["day"], data["n"], mask, hyper["rho"], hyper["sigma_day"], hyper["sigma_photo"])
    one = mask[:, :, None] * mask[:, None, :]
    cov = cov + hyper["sigma_alpha"] ** 2 * one + hyper["tau"] ** 2 * x[:, :, None] * x[:, None, :]
    r = (y - hyper["mu_alpha"] - hyper["mu_theta"] * x) * mask
    chol = jnp.linalg.cholesky(cov)
    z = solve_triangular(chol, r[..., None], lower=True)[..., 0]
    logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)) * mask)
    return -0.5 * jnp.sum(z**2) - logdet - 0.5 * jnp.sum(mask) * jnp.log(2 * jnp.pi)


def pooled(data: dict) -> bool:
    """More than one patient (a static shape: known when the model is traced)."""
    return data["y"].shape[0] > 1


def nof1_model(data: dict):
    """The collapsed numpyro model: the seven hyper-parameters of :data:`SAMPLED` only.

    ``data`` from :meth:`ContrastData.arrays` (jax arrays). The photos around their day's
    mean add an exact factor in σ_e (several photos a day). With one patient σ_α and τ are
    not sampled: the patient's intercept and effect are μ_α and μ_θ (five parameters).
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    hyper = {
        "mu_alpha": numpyro.sample("mu_alpha", dist.Normal(0.0, data["intercept_sd"])),
        "mu_theta": numpyro.sample("mu_theta", dist.Normal(data["effect_mean"], data["effect_sd"])),
        "rho": numpyro.sample("rho", dist.Beta(data["rho_a"], data["rho_b"])),
    }
    if pooled(data):
        hyper["sigma_alpha"] = numpyro.sample("sigma_alpha", dist.HalfNormal(data["intercept_sd"]))
        hyper["tau"] = numpyro.sample("tau", dist.HalfNormal(data["heterogeneity_sd"]))
    else:  # one patient: its intercept and effect are the population's (no spread to learn; no funnel)
        hyper["sigma_alpha"] = hyper["tau"] = jnp.zeros(())
    # the noise as its total SD and the AR(1) part's share of its variance: σ_u, σ_e and ρ
    # trade off on short trials, and this pair is what the data pin down (no funnel as σ_u → 0)
    sigma = numpyro.sample("sigma", dist.HalfNormal(data["noise_sd"]))
    share = numpyro.sample("ar_share", dist.Beta(data["share_a"], data["share_b"]))
    hyper["sigma_day"] = numpyro.deterministic("sigma_day", sigma * jnp.sqrt(share))
    hyper["sigma_photo"] = numpyro.deterministic("sigma_photo", sigma * jnp.sqrt(1.0 - share))
    numpyro.factor("day_means", marginal_loglik(data, hyper))
    sp2 = hyper["sigma_photo"] ** 2
    numpyro.factor(
        "photos_within_days", -0.5 * (data["df_within"] * jnp.log(2 * jnp.pi * sp2) + data["ss_within"] / sp2)
    )


def patient_conditional(data: dict, hyper: dict):
    """Mean (patients × 2) and Cholesky factor (patients × 2 × 2) of p(α_p, θ_p | y_p, hyper-parameters).

    Exact Gaussian: prior N((μ_α, μ_θ), diag(σ_α², τ²)), likelihood ``y_p = X_p (α_p, θ_p) + ε``,
    ``ε ~ MVN(0, Σ_p)``, ``X_p = [1, x_p]`` on real days.
    """
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    y, x, mask = data["y"], data["x"], data["mask"]
    cov = day_covariance(data["day"], data["n"], mask, hyper["rho"], hyper["sigma_day"], hyper["sigma_photo"])
    chol = jnp.linalg.cholesky(cov)
    X = jnp.stack([mask, x * mask], axis=-1)
    A = solve_triangular(chol, X, lower=True)
    w = solve_triangular(chol, (y * mask)[..., None], lower=True)
    prior_prec = jnp.stack([1.0 / hyper["sigma_alpha"] ** 2, 1.0 / hyper["tau"] ** 2])
    prec = jnp.einsum("gnk,gnl->gkl", A, A) + jnp.diag(prior_prec)
    h = jnp.einsum("gnk,gn->gk", A, w[..., 0]) + prior_prec * jnp.stack([hyper["mu_alpha"], hyper["mu_theta"]])
    post_cov = jnp.linalg.inv(prec)
    post_cov = 0.5 * (post_cov + jnp.swapaxes(post_cov, -1, -2))
    return jnp.einsum("gkl,gl->gk", post_cov, h), jnp.linalg.cholesky(post_cov)
