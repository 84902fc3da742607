"""Fitting the model: NUTS on the hyper-parameters, then each patient's exact conditional.

The model is linear-Gaussian given its seven hyper-parameters, so NUTS (NumPyro) samples
only those (:func:`~.model.nof1_model`: patient intercepts and effects integrated out), and
each patient's intercept and effect are drawn, per posterior draw, from their exact Gaussian
conditional (Rao-Blackwellised draws). Randomness comes only from the seed passed in (a
JAX ``PRNGKey``): the same seed gives the same numbers. Compiled samplers are kept per
settings and reused for data of the same shape, so a power study's trials compile once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .model import HYPER, SAMPLED, nof1_model, patient_conditional, pooled

# conditional draws are made this many posterior draws at a time (bounds memory on long trials)
CONDITIONAL_BATCH = 250


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

    # double precision: covariances with a large intercept variance beside small photo noise
    jax.config.update("jax_enable_x64", True)
    return jax


def _potential(data):
    """The potential energy (−log posterior, unconstrained hyper-parameters) given ``data``."""
    from numpyro.infer.util import potential_energy

    return lambda z: potential_energy(nof1_model, (data,), {}, z)


@lru_cache(maxsize=1)
def _sampler():
    """NumPyro's NUTS kernel driven by one jitted function: compiled once per data shape and settings.

    (``numpyro.infer.MCMC`` recompiles its loop on every run: seconds per fit, most of a power
    study's time.) Each chain starts at a uniform draw in (−2, 2) on the unconstrained scale
    (NumPyro's ``init_to_uniform``), adapts its step size and diagonal mass matrix over the
    warm-up, and keeps ``draws`` states; chains run one after the other.
    """
    jax = _jax()
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import constrain_fn

    def run(key, data, chains, warmup, draws, target, dense=False):
        init_kernel, sample_kernel = hmc(potential_fn_gen=_potential, algo="NUTS")

        def chain(k):
            k_init, k_run = jax.random.split(k)
            names = SAMPLED if pooled(data) else tuple(n for n in SAMPLED if n not in ("sigma_alpha", "tau"))
            ks = jax.random.split(k_init, len(names))
            z0 = {n: jax.random.uniform(kn, (), minval=-2.0, maxval=2.0) for n, kn in zip(names, ks)}
            state = init_kernel(
                z0, num_warmup=warmup, target_accept_prob=target, dense_mass=dense, model_args=(data,), rng_key=k_run
            )

            def step(s, _):
                s = sample_kernel(s, model_args=(data,))
                return s, (s.z, s.diverging)

            _, (z, div) = jax.lax.scan(step, state, None, length=warmup + draws)
            z = jax.tree.map(lambda a: a[warmup:], z)
            post = jax.vmap(lambda v: constrain_fn(nof1_model, (data,), {}, v, return_deterministic=True))(z)
            return post, div[warmup:]

        return jax.lax.map(chain, jax.random.split(key, chains))

    return jax.jit(run, static_argnames=("chains", "warmup", "draws", "target", "dense"))


@lru_cache(maxsize=1)
def _conditional_draws_fn():
    """One batch of draws: each posterior draw's hyper-parameters and key → (patients × 2) draws.

    A plain ``vmap`` over a batch of fixed size (the caller pads the last batch), so it
    compiles once per data shape. (``lax.map(..., batch_size=)`` here hung, intermittently
    and then every time, in processes that had loaded PyTorch before JAX.)
    """
    jax = _jax()

    def one(hyper, data, key):
        mean, chol = patient_conditional(data, hyper)
        eps = jax.random.normal(key, mean.shape)
        return mean + jax.numpy.einsum("gkl,gl->gk", chol, eps)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


def _conditional_draws(flat: dict[str, np.ndarray], data: dict, key) -> np.ndarray:
    """(draws × patients × 2) draws of (α_p, θ_p), CONDITIONAL_BATCH posterior draws at a time.

    Draw ``i`` uses the ``i``-th key split from ``key``, whatever the batching: same seed,
    same numbers.
    """
    jax = _jax()
    n = next(iter(flat.values())).shape[0]
    keys = np.asarray(jax.random.split(key, n))
    fn, out = _conditional_draws_fn(), []
    for start in range(0, n, CONDITIONAL_BATCH):
        idx = np.minimum(np.arange(start, start + CONDITIONAL_BATCH), n - 1)  # the last batch padded
        hyper = {k: v[idx] for k, v in flat.items()}
        out.append(np.asarray(fn(hyper, data, keys[idx]), dtype=float)[: n - start])
    return np.concatenate(out)


def fit_nuts(arrays: dict, seed: int | tuple, settings: SamplerSettings = SamplerSettings()) -> tuple[dict, dict]:
    """Draws ``(chains × draws …)`` of the hyper-parameters and of ``alpha``, ``theta`` (× patients); sampler stats."""
    jax = _jax()
    import jax.numpy as jnp

    data = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in arrays.items()}
    key_nuts, key_patients = jax.random.split(_key(jax, seed))
    s = settings
    samples, diverging = _sampler()(key_nuts, data, s.chains, s.warmup, s.draws, s.target_accept)
    shape = (s.chains, s.draws)
    draws: dict[str, np.ndarray] = {k: np.asarray(v, dtype=float).reshape(shape) for k, v in samples.items()}
    if pooled(data):
        flat = {k: draws[k].reshape(-1) for k in HYPER}  # numpy, as drawn
        both = _conditional_draws(flat, data, key_patients)
    else:  # one patient: its intercept and effect are the population's
        both = np.stack([draws["mu_alpha"].reshape(-1, 1), draws["mu_theta"].reshape(-1, 1)], axis=-1)
    draws["alpha"] = both[..., 0].reshape(*shape, -1)
    draws["theta"] = both[..., 1].reshape(*shape, -1)
    diverging = np.asarray(diverging)
    return draws, {"divergences": int(diverging.sum()), "chains": settings.chains, "draws": settings.draws}


def _key(jax, seed):
    parts = seed if isinstance(seed, tuple) else (seed,)
    key = jax.random.PRNGKey(int(parts[0]))
    for p in parts[1:]:
        key = jax.random.fold_in(key, int(p))
    return key


def fit_and_check(arrays: dict, seed: int | tuple, settings: SamplerSettings | None = None) -> tuple[dict, dict]:
    """NUTS draws and their diagnostics (R-hat, ESS, divergences; :func:`~.diagnostics.diagnose`)."""
    from .diagnostics import diagnose

    draws, stats = fit_nuts(arrays, seed, settings or SamplerSettings())
    return draws, diagnose(draws, stats)
