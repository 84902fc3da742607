"""Posterior summaries of one contrast ``b − a``: per patient and for the population.

Effects are on the outcome's scale (PC1, or the oracle's severity) and, where the analysis
has a severity calibration (the measurement model's slope, simulated data), on the
severity scale (÷ slope; the slope is taken as known). "Better" means lower severity: arm
b is better than arm a when ``b − a < 0``, which holds on PC1 only when its sign is tied
to severity (truth or the skin's redness); otherwise statements speak of "lower PC1".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

CONFIDENT = 0.9  # a decision is "confident" when P(b better) or P(a better) exceeds this


def effect_summary(draws: np.ndarray, delta: float, scale: float = 1.0) -> dict:
    """Mean, 95% CrI and decision probabilities of effect draws (standardised units × ``scale``).

    ``delta`` is δ in the same units as the result. ``p_benefit`` = P(effect < 0),
    ``p_benefit_mid`` = P(effect < −δ), ``p_harm_mid`` = P(effect > δ), ``p_mid`` = P(|effect| > δ).
    """
    v = np.asarray(draws, dtype=float).ravel() * scale
    lo, hi = np.quantile(v, [0.025, 0.975])
    return {
        "estimate": float(v.mean()),
        "sd": float(v.std(ddof=1)),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_benefit": float(np.mean(v < 0)),
        "p_benefit_mid": float(np.mean(v < -delta)),
        "p_harm_mid": float(np.mean(v > delta)),
        "p_mid": float(np.mean(np.abs(v) > delta)),
    }


def on_severity(summary: dict, slope: float | None) -> dict:
    """The effect's mean and CrI ÷ the calibration ``slope`` (PC1 per severity unit), or ``{}``."""
    if slope is None or not math.isfinite(slope) or slope == 0:
        return {}
    lo, hi = sorted((summary["ci_low"] / slope, summary["ci_high"] / slope))
    return {"estimate_severity": summary["estimate"] / slope, "ci_low_severity": lo, "ci_high_severity": hi}


def decision(p_benefit: float, converged: bool) -> str:
    """ "b better", "a better", "uncertain" (P ≤ 0.9 either way) or "withheld" (no convergence)."""
    if not converged:
        return "withheld"
    if p_benefit > CONFIDENT:
        return "b better"
    if p_benefit < 1 - CONFIDENT:
        return "a better"
    return "uncertain"


def statement(who: str, a: str, b: str, s: dict, mid: float, direction_known: bool) -> str:
    """The plain-words decision line of one effect summary ``s`` (``mid``: δ in units of s)."""
    better = "better than" if direction_known else "lower PC1 than"
    return (
        f"{who}: P({b} {better} {a}) = {s['p_benefit']:.2f}; "
        f"P({b} {better} {a} by ≥ δ) = {s['p_benefit_mid']:.2f}; "
        f"P({a} {better} {b} by ≥ δ) = {s['p_harm_mid']:.2f} (δ = {mid:g} s)"
    )


def summarise_contrast(
    draws: dict, cd, raw: pd.Series, mid: float, slope: float | None, converged: bool, direction_known: bool, ab
) -> tuple[dict, list[dict]]:
    """Population and per-patient summaries of one fit (``cd``: its :class:`ContrastData`).

    ``raw``: each patient's own estimate (difference of arm means, outcome units), the
    no-pooling value the shrinkage plot starts from.
    """
    a, b = ab
    delta = mid * cd.s
    pop = effect_summary(draws["mu_theta"], delta, cd.s)
    pop.update(on_severity(pop, slope))
    pop["heterogeneity_sd"] = float(np.mean(draws["tau"]) * cd.s) if "tau" in draws else None
    pooled = len(cd.patients) > 1
    pop["decision"] = decision(pop["p_benefit"], converged) if pooled else "not estimable (one patient)"
    pop["statement"] = statement("Population mean", a, b, pop, mid, direction_known) if pooled else ""
    theta = np.asarray(draws["theta"])
    patients = []
    for i, pid in enumerate(cd.patients):
        s = effect_summary(theta[..., i], delta, cd.s)
        s.update(on_severity(s, slope))
        patients.append(
            {
                "patient_id": pid,
                **s,
                "raw_estimate": float(raw.get(pid, np.nan)),
                "decision": decision(s["p_benefit"], converged),
                "statement": statement(f"Patient {pid}", a, b, s, mid, direction_known),
            }
        )
    return pop, patients
