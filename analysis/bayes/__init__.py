"""Bayesian N-of-1 analysis: per-patient posteriors with partial pooling (``--model bayes``).

A hierarchical model of one outcome per photo (:mod:`.model`), fitted by NUTS on its
hyper-parameters with each patient's effect drawn from its exact conditional (:mod:`.fit`,
NumPyro on JAX's CPU backend), summarised per patient
and for the population (:mod:`.summaries`) with convergence checks (:mod:`.diagnostics`)
under weakly informative priors scaled to the outcome (:mod:`.priors`).

NumPyro and JAX are imported only when a model is fitted, so the rest of the project does
not pay their import time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..models import arm_difference, contrast_name
from .fit import SamplerSettings
from .priors import Priors, check_mid, parse_priors

DEFAULT_MID = 0.5  # δ in units of s: half a within-patient SD (Norman, Sloan & Wyrwich 2003)
INFERENCE = "nuts (hyper-parameters) + exact conditional draws per patient"
PLOT_DRAWS = 400  # posterior draws per patient kept for the report's plot

MODEL_TEXT = (
    "y_i = α_p + θ_p·x_i + u_p(day_i) + e_i; α_p ~ N(μ_α, σ_α); θ_p ~ N(μ_θ, τ); "
    "u_p stationary AR(1) over days (SD σ_u = σ·√w, correlation ρ^|Δday|); e_i ~ N(0, σ_e = σ·√(1 − w)); "
    "x_i = 1 on arm b; the two contrasted arms' photos only; α_p and θ_p integrated out for NUTS and drawn "
    "from their exact conditional"
)

__all__ = [
    "DEFAULT_MID",
    "Priors",
    "SamplerSettings",
    "analyse_contrast",
    "check_mid",
    "decision_lines",
    "parse_priors",
]


def analyse_contrast(
    df: pd.DataFrame,
    outcome: str,
    ab: tuple[str, str],
    seed: int | tuple,
    priors: Priors | None = None,
    mid: float = DEFAULT_MID,
    settings: SamplerSettings | None = None,
    slope: float | None = None,
    direction_known: bool = True,
) -> dict:
    """Fit the model to contrast ``b − a`` of ``df[outcome]`` and summarise it.

    ``df`` needs ``patient_id``, ``treatment``, ``day``; one patient is allowed (no
    pooling: the population prior alone). ``slope``: PC1 per severity unit, for effects on
    the severity scale. Returns the ``bayes.fits`` entry of results.json (outcome units)
    with a private ``_draws`` (patients × :data:`PLOT_DRAWS` effect draws) for the report.
    """
    from .fit import fit_and_check
    from .model import contrast_data
    from .summaries import summarise_contrast

    a, b = ab
    mid = check_mid(mid)
    cd = contrast_data(df, outcome, a, b)
    draws, diag = fit_and_check(cd.arrays(priors or Priors()), seed, settings)
    raw = arm_difference(df.assign(_y=pd.to_numeric(df[outcome], errors="coerce")), "_y", a, b)
    raw.index = raw.index.astype(str)
    pop, patients = summarise_contrast(draws, cd, raw, mid, slope, diag["converged"], direction_known, ab)
    warnings = (
        [] if diag["converged"] else ["convergence failed: " + "; ".join(diag["problems"]) + "; verdict withheld"]
    )
    if len(cd.patients) == 1:
        warnings.append(
            "one patient: no pooling possible; the patient's effect has the population mean's prior as its prior"
        )
    theta = np.asarray(draws["theta"]).reshape(-1, len(cd.patients)) * cd.s
    keep = np.linspace(0, len(theta) - 1, min(PLOT_DRAWS, len(theta))).astype(int)
    return {
        "contrast": contrast_name(a, b),
        "a": a,
        "b": b,
        "inference": INFERENCE,
        "s": cd.s,
        "s_total": cd.s_total,
        "delta": mid * cd.s,
        "delta_severity": mid * cd.s / abs(slope) if slope else None,
        "n_patients": len(cd.patients),
        "n_obs": cd.n_obs,
        "direction_known": direction_known,
        "population": pop,
        "patients": patients,
        "diagnostics": diag,
        "warnings": warnings,
        "_draws": {"patients": cd.patients, "theta": theta[keep].T},
    }


def decision_lines(bayes: dict | None) -> list[str]:
    """The command line's summary of a ``bayes`` section: warnings, then each decision statement."""
    lines = []
    for fit in (bayes or {}).get("fits", []):
        lines += [f"{fit['method']:>10}  {fit['contrast']}: WARNING {w}" for w in fit["warnings"]]
        statements = [fit["population"]["statement"]] + [p["statement"] for p in fit["patients"]]
        lines += [f"{fit['method']:>10}  {s}" for s in statements if s]
    return lines
