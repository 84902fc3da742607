"""Known versus recovered effects (simulated data; functions that need truth say so).

Known effects of a contrast ``b − a`` (docs/contracts.md, Contract 2):

- nominal: the protocol's effect difference (``protocol.yaml``);
- realised: on each patient's noise-free trajectory (manifest ``severity_noisefree``),
  averaged over the observation days of each arm, per patient, then over patients;
- latent model: the population model fitted to ``severity_latent``.

Recovered effects are on PC1, whose sign is arbitrary: where truth exists it is
aligned so that PC1 rises with severity (recorded as ``sign_aligned``). PC1 has
no unit, so the recovered effect is compared standardised (÷ the model's
residual SD on the two contrasted arms) with the standardised known effect
(realised effect ÷ the latent model's residual SD, computed the same way), and in severity units through an "oracle calibration" (the within-patient
regression of severity_latent on PC1; it reads the truth, so it is labelled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .models import arm_difference, contrast_name, fit_population
from .reduce import centre_by


def within_spearman(x, y, groups) -> float:
    """Spearman correlation of ``x`` and ``y``, both centred per patient."""
    xc, yc = centre_by(x, groups), centre_by(y, groups)
    if np.std(xc) == 0 or np.std(yc) == 0:
        return float("nan")
    return float(stats.spearmanr(xc, yc).statistic)


def align_sign(pc1: np.ndarray, manifest: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Flip PC1 so that it rises with severity_latent within patients (truth needed).

    Returns the (possibly flipped) scores and whether alignment with truth was done.
    """
    if "severity_latent" not in manifest.columns or manifest["severity_latent"].isna().any():
        return pc1, False
    rho = within_spearman(pc1, manifest["severity_latent"], manifest["patient_id"])
    return (-pc1 if np.isfinite(rho) and rho < 0 else pc1), True


def realised_by_patient(df: pd.DataFrame, a: str, b: str, column: str = "severity_noisefree") -> pd.Series:
    """Per patient: mean of ``column`` over arm b's observation days minus arm a's (truth needed)."""
    daily = df.groupby(["patient_id", "day", "treatment"], as_index=False)[column].mean()
    return arm_difference(daily, column, a, b)


def realised_effect(df: pd.DataFrame, a: str, b: str, column: str = "severity_noisefree") -> float:
    """The realised effect of ``b − a``: per-patient noise-free contrast averaged over patients."""
    per = realised_by_patient(df, a, b, column)
    return float(per.mean()) if len(per) else float("nan")


def oracle_calibration(pc1: np.ndarray, manifest: pd.DataFrame) -> float:
    """Severity units per PC1 unit: within-patient OLS slope of severity_latent on PC1 (truth needed)."""
    g = manifest["patient_id"].to_numpy()
    x = centre_by(pc1, g)
    y = centre_by(manifest["severity_latent"].to_numpy(float), g)
    sxx = float(x @ x)
    return float(x @ y / sxx) if sxx > 0 else float("nan")


def standardise(fit: dict) -> dict:
    """Estimate and CI of a population fit divided by its residual SD."""
    sd = fit["resid_sd"]
    return {k + "_std": (fit[k] / sd if sd > 0 else float("nan")) for k in ("estimate", "ci_low", "ci_high")}


def _arm_sd(m, a: str, b: str) -> float:
    """SD of ``severity_latent`` around its arm's mean on arms ``a`` and ``b`` (one patient's unit)."""
    d = m[m["treatment"].isin([a, b])]
    r = d["severity_latent"] - d.groupby("treatment")["severity_latent"].transform("mean")
    return float(np.sqrt(np.mean(r**2))) if len(r) > 1 else float("nan")


def truth_entries(data, pairs, time_terms: bool = False) -> list[dict]:
    """Known effects of every contrast ``(a, b)`` of ``pairs`` in ``data`` (a TrialData with truth): the ``truth`` of results.json."""
    m = data.manifest
    out = []
    for a, b in pairs:
        lf = fit_population(m, "severity_latent", a, b, time_terms) if m["patient_id"].nunique() > 1 else None
        if lf is None:  # one patient: no population model; the unit is the SD around the arms' means
            lf = {"estimate": arm_difference(m, "severity_latent", a, b).mean(), "resid_sd": _arm_sd(m, a, b)}
        realised = realised_effect(m, a, b) if data.has_noisefree else None
        effects = data.nominal_effects
        nominal = effects[b] - effects[a] if a in effects and b in effects else None
        keys = ("estimate", "se", "ci_low", "ci_high", "p_value", "df", "resid_sd", "model", "warnings")
        out.append(
            {
                "contrast": contrast_name(a, b),
                "nominal": nominal,
                "realised": realised,
                "realised_std": (realised / lf["resid_sd"] if realised is not None else None),
                "nominal_std": (nominal / lf["resid_sd"] if nominal is not None else None),
                "latent_model": {k: lf[k] for k in keys if k in lf},
                "latent_model_std": lf["estimate"] / lf["resid_sd"],
            }
        )
    return out


def add_known(population: list[dict], truth: list[dict]) -> None:
    """Recovered vs known side by side, in standardised units (in place)."""
    known = {t["contrast"]: t for t in truth}
    for e in population:
        k = known[e["contrast"]]
        e["known_realised_std"] = k["realised_std"]
        e["known_realised"] = k["realised"]
        if k["realised_std"]:
            e["relative_error_std"] = (e["estimate_std"] - k["realised_std"]) / abs(k["realised_std"])
