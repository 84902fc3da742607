"""Fitting the model: NUTS (the analysis) or a Laplace approximation (power studies).

Both return posterior draws of the model's parameters in standardised units, keyed by
site name, each an array (chains × draws [× patients]). Randomness comes only from the
seed passed in (a JAX ``PRNGKey``): the same seed gives the same numbers. The Laplace
approximation's compiled functions are kept per data shape, so the trials of a power study
compile once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .model import PARAMETERS, nof1_model

INFERENCES = ("nuts", "laplace")


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings: chains run one after the other (one core), ``warmup`` + ``draws`` each."""

    chains: int = 2
    warmup: int = 500
    draws: int = 1000
    target_accept: float = 0.9


def _jax():
    # JAX on the CPU, quiet, one device; set before jax is first imported
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    # double precision: the filter's covariance update loses positive-definiteness in float32
    # when the intercept variance dwarfs the photo noise
    jax.config.update("jax_enable_x64", True)
    return jax


def _mcmc(settings: SamplerSettings):
    """A fresh MCMC object (re-running one on new data was far slower than compiling anew)."""
    _jax()
    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(nof1_model, target_accept_prob=settings.target_accept)
    return MCMC(
        kernel,
        num_warmup=settings.warmup,
        num_samples=settings.draws,
        num_chains=settings.chains,
        chain_method="sequential",
        progress_bar=False,
    )


def fit_nuts(arrays: dict, seed: int | tuple, settings: SamplerSettings = SamplerSettings()) -> tuple[dict, dict]:
    """NUTS draws of :data:`PARAMETERS` ``(chains × draws …)`` and sampler stats (``divergences``)."""
    jax = _jax()
    import jax.numpy as jnp

    mcmc = _mcmc(settings)
    data = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}
    mcmc.run(_key(jax, seed), data, extra_fields=("diverging",))
    samples = mcmc.get_samples(group_by_chain=True)
    draws = {k: np.asarray(samples[k], dtype=float) for k in PARAMETERS}
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return draws, {"divergences": int(diverging.sum()), "chains": settings.chains, "draws": settings.draws}


def _key(jax, seed):
    parts = seed if isinstance(seed, tuple) else (seed,)
    key = jax.random.PRNGKey(int(parts[0]))
    for p in parts[1:]:
        key = jax.random.fold_in(key, int(p))
    return key


@lru_cache(maxsize=8)
def _laplace_fns(n_patients: int, n_draws: int):
    """Jitted pieces of the Laplace approximation for ``n_patients`` (compiled once per data shape).

    ``value_and_grad(u, data)`` and ``hessian(u, data)`` of the potential energy (minus
    the log posterior, unconstrained scale), and ``draw(mode, cov_factor, data, key)``
    → constrained draws of :data:`PARAMETERS`.
    """
    jax = _jax()
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, potential_energy

    proto = {
        k: jnp.zeros(()) for k in ("mu_alpha", "sigma_alpha", "mu_theta", "tau", "sigma_day", "sigma_photo", "rho")
    }
    proto["z_theta"] = jnp.zeros(n_patients)
    u0, unravel = ravel_pytree(proto)

    def energy(u, data):
        return potential_energy(nof1_model, (data,), {}, unravel(u))

    def draw(mode, factor, data, key):
        u = mode + jax.random.normal(key, (n_draws, mode.shape[0])) @ factor.T
        post = jax.vmap(lambda v: constrain_fn(nof1_model, (data,), {}, unravel(v), return_deterministic=True))(u)
        return {k: post[k] for k in PARAMETERS}

    return np.asarray(u0), jax.jit(jax.value_and_grad(energy)), jax.jit(jax.hessian(energy)), jax.jit(draw)


def fit_laplace(arrays: dict, seed: int | tuple, n_draws: int = 2000) -> tuple[dict, dict]:
    """Laplace approximation: a Gaussian at the posterior mode (unconstrained scale), ``n_draws`` draws.

    The mode is found by L-BFGS (scipy) on JAX's gradient. Draws are shaped
    ``(1 × n_draws …)`` like one chain; stats hold ``converged`` (the optimiser converged
    and the Hessian is positive definite).
    """
    jax = _jax()
    import jax.numpy as jnp
    from scipy.optimize import minimize

    data = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}
    u0, value_and_grad, hessian, draw = _laplace_fns(arrays["y"].shape[0], n_draws)

    def fun(u):
        v, g = value_and_grad(jnp.asarray(u, dtype=jnp.float64), data)
        return float(v), np.asarray(g, dtype=float)

    res = minimize(fun, u0, jac=True, method="L-BFGS-B")
    H = np.asarray(hessian(jnp.asarray(res.x, dtype=jnp.float64), data), dtype=float)
    H = 0.5 * (H + H.T)
    try:
        factor = np.linalg.cholesky(np.linalg.inv(H))
        # L-BFGS-B may stop on its line search at the mode: a small gradient is enough
        ok = bool(res.success or np.max(np.abs(res.jac)) < 1e-2) and bool(np.all(np.linalg.eigvalsh(H) > 0))
    except np.linalg.LinAlgError:
        factor, ok = np.full_like(H, np.nan), False
    post = draw(jnp.asarray(res.x, jnp.float64), jnp.asarray(factor, jnp.float64), data, _key(jax, seed))
    draws = {k: np.asarray(v, dtype=float)[None] for k, v in post.items()}
    return draws, {"converged": ok, "draws": n_draws}


def fit_and_check(
    arrays: dict, seed: int | tuple, inference: str, settings: SamplerSettings | None
) -> tuple[dict, dict]:
    """Draws and diagnostics by ``inference`` (``nuts``: R-hat, ESS, divergences; ``laplace``: the mode was found)."""
    from .diagnostics import diagnose

    if inference == "nuts":
        draws, stats = fit_nuts(arrays, seed, settings or SamplerSettings())
        return draws, diagnose(draws, stats)
    draws, stats = fit_laplace(arrays, seed)
    ok = stats["converged"]
    return draws, {
        "converged": ok,
        "problems": [] if ok else ["the posterior mode was not found"],
        "draws": stats["draws"],
    }
