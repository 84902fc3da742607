"""Latent severity dynamics: the truth every image and every analysis is measured against.

Per patient i and study day t::

    s_it = clip(b_i + drift_it + Σ_k e_ik · L_ik(t) + u_it + v_it, floor, ceiling)

(``clip`` to ``dynamics.floor``/``ceiling``; a null bound is off) ``b_i`` baseline severity, ``e_ik`` the patient's full-onset effect of treatment
k, ``L_ik(t)`` in [0, 1] its first-order exposure level (rises with time constant
``onset_days`` while k is given, decays with ``washout_days`` after; slow washout
carries over into the next period), ``drift`` a random walk plus trend, ``u`` AR(1)
process noise and ``v`` white day-level observation noise. The noise-free
trajectory ``clip(b_i + Σ_k e_ik L_ik(t))`` defines the realised effect.

Severity is on the 0–3 scale of the anchor's protocol CSV. The target lesion count
follows the ACNE04 (Hayashi) thresholds: grade 0 mild 1–5 lesions, grade 1 moderate
6–20, grade 2 severe 21–50, grade 3 very severe > 50, with grade boundaries at
severity 0.5, 1.5 and 2.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .protocol import Dynamics, Protocol

# severity -> lesion count, piecewise linear; grade boundaries sit on ACNE04 thresholds
_SEVERITY_KNOTS = np.array([0.0, 0.5, 1.5, 2.5, 3.0])
_COUNT_KNOTS = np.array([0.0, 5.5, 20.5, 50.5, 80.0])
GRADE_UPPER_COUNTS = (5, 20, 50)  # inclusive upper counts of grades 0, 1, 2
GRADE_NAMES = ("mild", "moderate", "severe", "very severe")


def target_lesion_count(severity) -> np.ndarray:
    """Lesion count (on one side of the face) for a latent severity on the 0–3 scale."""
    s = np.clip(np.asarray(severity, dtype=float), 0.0, 3.0)
    return np.rint(np.interp(s, _SEVERITY_KNOTS, _COUNT_KNOTS)).astype(int)


def grade_from_count(count) -> np.ndarray:
    """ACNE04 grade 0–3 from a lesion count."""
    return np.searchsorted(np.array(GRADE_UPPER_COUNTS), np.asarray(count), side="left").astype(int)


def severity_grade(severity) -> np.ndarray:
    """Grade 0–3 of a latent severity (through its target lesion count)."""
    return grade_from_count(target_lesion_count(severity))


def bounded(x, dyn: Dynamics):
    """``x`` within ``dyn``'s floor and ceiling, each only when switched on (not null)."""
    if dyn.floor is not None:
        x = np.maximum(x, dyn.floor)
    if dyn.ceiling is not None:
        x = np.minimum(x, dyn.ceiling)
    return x


def exposure_levels(treatment_per_day: np.ndarray, labels: list[str], onset_days, washout_days) -> np.ndarray:
    """First-order exposure level per day and treatment, shape (days, len(labels)), in [0, 1].

    Day t's level is the state after t days of the schedule: while a treatment is
    given the level moves toward 1 by ``1 - exp(-1/onset_days)`` of the gap each day;
    when it is not, the level decays by ``exp(-1/washout_days)`` per day.
    """
    n = len(treatment_per_day)
    out = np.zeros((n, len(labels)))
    up = 1.0 - np.exp(-1.0 / np.asarray(onset_days, dtype=float))
    down = np.exp(-1.0 / np.asarray(washout_days, dtype=float))
    level = np.zeros(len(labels))
    tp = np.asarray(treatment_per_day)
    for t in range(n):
        on = np.array([tp[t] == lab for lab in labels])
        level = np.where(on, level + (1.0 - level) * up, level * down)
        out[t] = level
    return out


def draw_patient_parameters(protocol: Protocol, patient_id: str, rng: np.random.Generator) -> dict:
    """Per-patient random effects: baseline severity and each treatment's full-onset effect."""
    dist = protocol.patients.baseline_severity
    dyn = protocol.dynamics
    baseline = float(bounded(rng.normal(dist.mean, dist.sd), dyn))
    effects = {t.label: float(rng.normal(t.effect, t.effect_sd)) for t in protocol.treatments}
    for o in protocol.patients.overrides:
        if o.patient_id == str(patient_id) and o.baseline_severity is not None:
            baseline = float(o.baseline_severity)
    return {"baseline": baseline, "effects": effects}


def patient_trajectory(
    protocol: Protocol, schedule: pd.DataFrame, params: dict, rng: np.random.Generator
) -> pd.DataFrame:
    """Add the truth columns to one patient's schedule.

    Adds ``severity_noisefree`` (clipped baseline + treatment effects),
    ``severity_latent`` (with drift, AR(1) and observation noise), ``severity_grade``
    and ``lesion_target``. Noise is drawn from ``rng``.
    """
    dyn = protocol.dynamics
    n = len(schedule)
    labels = [t.label for t in protocol.treatments]
    levels = exposure_levels(
        schedule["treatment"].to_numpy(),
        labels,
        [t.onset_days for t in protocol.treatments],
        [t.washout_days for t in protocol.treatments],
    )
    effect = levels @ np.array([params["effects"][l] for l in labels])
    mean = params["baseline"] + effect

    steps = rng.normal(dyn.trend_per_day, dyn.drift_sd_per_day, size=n) if n else np.zeros(0)
    if n:
        steps[0] = 0.0
    drift = np.cumsum(steps)
    u = np.zeros(n)
    if n and dyn.ar1_sd > 0:
        innov = rng.normal(0.0, dyn.ar1_sd * np.sqrt(1.0 - dyn.ar1_rho**2), size=n)
        u[0] = rng.normal(0.0, dyn.ar1_sd)
        for t in range(1, n):
            u[t] = dyn.ar1_rho * u[t - 1] + innov[t]
    v = rng.normal(0.0, dyn.sd_obs, size=n) if dyn.sd_obs > 0 else np.zeros(n)

    out = schedule.copy()
    out["severity_noisefree"] = bounded(mean, dyn)
    out["severity_latent"] = bounded(mean + drift + u + v, dyn)
    out["severity_grade"] = severity_grade(out["severity_latent"].to_numpy())
    out["lesion_target"] = target_lesion_count(out["severity_latent"].to_numpy())
    return out
