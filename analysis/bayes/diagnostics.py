"""Convergence diagnostics of a NUTS fit: split R-hat, bulk effective sample size, divergences.

Thresholds follow Vehtari et al. (2021, "Rank-normalization, folding, and localization"):
R-hat ≤ 1.01 and an effective sample size of at least 100 per chain for every parameter,
and (Stan's rule) no divergent transition, over the effect and noise parameters (the
intercepts' mean and spread are nuisance: reported, not blocking). A fit that misses any of them is flagged and
its decisions are withheld.
"""

from __future__ import annotations

import numpy as np

RHAT_MAX = 1.01
# the parameters a verdict rests on; the intercepts' mean and spread (nuisance) are reported only
BLOCKING = ("mu_theta", "tau", "theta", "sigma", "ar_share", "rho")
ESS_PER_CHAIN_MIN = 100


def diagnose(draws: dict[str, np.ndarray], stats: dict) -> dict:
    """``draws`` (site → chains × draws [× patients]) and sampler ``stats`` → diagnostics.

    Returns ``rhat_max``, ``ess_min`` (bulk), ``divergences``, ``chains``, ``draws``,
    ``converged`` (bool) and ``problems`` (list of str, empty when converged).
    """
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    rhat, ess = {}, {}
    for name, x in draws.items():
        x = np.asarray(x, dtype=float)
        if x.shape[1] < 4:
            rhat[name], ess[name] = float("nan"), float("nan")
            continue
        rhat[name] = float(np.nanmax(split_gelman_rubin(x)))
        ess[name] = float(np.nanmin(effective_sample_size(x)))
    chains = int(stats.get("chains", 1))
    rhat_b = {k: v for k, v in rhat.items() if k in BLOCKING}
    ess_b = {k: v for k, v in ess.items() if k in BLOCKING}
    rhat_max, ess_min, divergences = max(rhat_b.values()), min(ess_b.values()), int(stats.get("divergences", 0))
    out: dict = {
        "rhat_max": rhat_max,
        "ess_min": ess_min,
        "divergences": divergences,
        "chains": chains,
        "draws": int(stats.get("draws", 0)),
        "rhat": rhat,
        "ess": ess,
    }
    problems = []
    if not rhat_max <= RHAT_MAX:  # NaN fails too
        worst = max(rhat_b, key=lambda k: -np.inf if np.isnan(rhat_b[k]) else rhat_b[k])
        problems.append(f"R-hat {rhat_max:.3f} > {RHAT_MAX} ({worst})")
    if not ess_min >= ESS_PER_CHAIN_MIN * chains:
        worst = min(ess_b, key=lambda k: np.inf if np.isnan(ess_b[k]) else ess_b[k])
        problems.append(f"effective sample size {ess_min:.0f} < {ESS_PER_CHAIN_MIN * chains} ({worst})")
    if divergences > 0:
        problems.append(f"{divergences} divergent transitions")
    out["converged"] = not problems
    out["problems"] = problems
    return out
