"""The hierarchical N-of-1 model of one contrast ``b − a`` and the arrays it reads.

Per photo ``i`` of patient ``p`` on study day ``d_i`` (outcome standardised: ``(y − ȳ) / s``)::

    y_i   = α_p + θ_p · x_i + u_p(d_i) + e_i          x_i = 1 on arm b's photos, 0 on arm a's
    α_p   ~ Normal(μ_α, σ_α)                           (integrated out exactly)
    θ_p   = μ_θ + τ · z_θ,p                            (non-centred; θ_p is patient p's effect)
    u_p   : stationary AR(1) over days, SD σ_u, lag-one correlation ρ; days apart by g have
            correlation ρ^g, so irregular days and gaps are exact
    e_i   ~ Normal(0, σ_e)                             photo-level noise

Photos on the same day share the day's ``u`` and differ by their own ``e``: several photos a
day enter exactly, as their day's mean (variance σ_u² + σ_e²/n) and their spread around it
(σ_e). ``u`` and ``α_p`` are integrated out exactly by a Kalman filter over each patient's
days, so the sampler sees only G + 7 parameters. Only the two contrasted arms' photos enter; run-in (Baseline) and other
arms' days count only as gaps. With one patient the same model holds: the population
parameters are then only their priors (no pooling is possible), and θ_1's prior is the
population prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import AnalysisInputError
from .priors import Priors

# the sampled sites whose convergence is checked (the z's are their non-centred parts)
PARAMETERS = ("mu_theta", "tau", "theta", "mu_alpha", "sigma_alpha", "sigma_day", "sigma_photo", "rho")


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
            "day_sd": priors.day_sd,
            "photo_sd": priors.photo_sd,
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
    df_within = int(len(d) - len(daily))
    return ContrastData(
        patients, y, n, x, day, mask, float((dev**2).sum()), df_within, s, s_total if s_total > 0 else s, centre, len(d)
    )


def kalman_loglik(r, day, n, mask, sigma_alpha, rho, sigma_day, sigma_photo):
    """Log-likelihood of day-mean residuals ``r`` (patients × days, mean μ_α + θ_p·x removed).

    Exact for the model: a Kalman filter over each patient's days (``lax.scan``, all
    patients at once) whose state is the patient's intercept deviation (constant, prior
    variance σ_α²) and the day's AR(1) value (carried across a gap of g days by ρ^g); a
    day mean of n photos adds noise σ_e²/n. Padding days (``mask`` 0) add nothing.
    A scan, not a dense covariance: JAX's Cholesky gradient is slow on the CPU.
    """
    import jax
    import jax.numpy as jnp

    gap = jnp.concatenate([jnp.zeros_like(day[:, :1]), jnp.diff(day, axis=1)], axis=1)
    first = jnp.zeros_like(day).at[:, 0].set(1.0)

    def step(carry, inp):
        ma, mu, paa, pau, puu = carry
        r_t, g_t, f_t, n_t, k_t = inp
        phi = jnp.where(f_t > 0, 0.0, rho ** jnp.maximum(g_t, 0.0))
        mu_p, pau_p = phi * mu, phi * pau
        puu_p = phi**2 * puu + sigma_day**2 * (1.0 - phi**2)
        S = paa + 2 * pau_p + puu_p + sigma_photo**2 / n_t
        v = r_t - ma - mu_p
        ll = -0.5 * (jnp.log(2 * jnp.pi * S) + v**2 / S)
        ka, ku = (paa + pau_p) / S, (pau_p + puu_p) / S
        new = (ma + ka * v, mu_p + ku * v, paa - ka**2 * S, pau_p - ka * ku * S, puu_p - ku**2 * S)
        keep = k_t > 0
        out = tuple(jnp.where(keep, a, b) for a, b in zip(new, (ma, mu, paa, pau, puu)))
        return out, jnp.where(keep, ll, 0.0)

    G = r.shape[0]
    z = jnp.zeros(G)
    init = (z, z, z + sigma_alpha**2, z, z + sigma_day**2)
    _, ll = jax.lax.scan(step, init, (r.T, gap.T, first.T, n.T, mask.T))
    return ll.sum()


def nof1_model(data: dict):
    """The numpyro model (``data`` from :meth:`ContrastData.arrays`, as jax arrays)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    G = data["y"].shape[0]
    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, data["intercept_sd"]))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(data["intercept_sd"]))
    mu_theta = numpyro.sample("mu_theta", dist.Normal(data["effect_mean"], data["effect_sd"]))
    tau = numpyro.sample("tau", dist.HalfNormal(data["heterogeneity_sd"]))
    sigma_day = numpyro.sample("sigma_day", dist.HalfNormal(data["day_sd"]))
    sigma_photo = numpyro.sample("sigma_photo", dist.HalfNormal(data["photo_sd"]))
    rho = numpyro.sample("rho", dist.Beta(data["rho_a"], data["rho_b"]))
    with numpyro.plate("patient", G):
        z_theta = numpyro.sample("z_theta", dist.Normal(0.0, 1.0))
    theta = numpyro.deterministic("theta", mu_theta + tau * z_theta)
    # the patient intercepts α_p ~ Normal(μ_α, σ_α) are integrated out in the filter's state
    # (exact; removes G parameters and their funnel)
    r = data["y"] - mu_alpha - theta[:, None] * data["x"]
    numpyro.factor(
        "day_means", kalman_loglik(r, data["day"], data["n"], data["mask"], sigma_alpha, rho, sigma_day, sigma_photo)
    )
    # photos around their day's mean: independent, variance σ_e² (several photos a day)
    numpyro.factor(
        "photos_within_days",
        -0.5 * (data["df_within"] * jnp.log(2 * jnp.pi * sigma_photo**2) + data["ss_within"] / sigma_photo**2),
    )
