"""The effect on these patients: each patient's arm difference averaged, with an interval for that average."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.sample_average import add_sample_average, patient_contrast, sample_average
from analysis.stated_noise import StatedNoise

DAYS = np.arange(16)
ON = DAYS // 2 % 2 == 1  # 2 days off, 2 on


def _patient(pid: str, y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": pid, "day": DAYS, "treatment": np.where(ON, "B", "A"), "PC1": y})


def _ramp(effect: float, up: float = 0.76, down: float = 0.24) -> np.ndarray:
    """A noise-free trajectory whose effect builds up and washes out within each period."""
    level, out = 0.0, []
    for on in ON:
        level = level + (1 - level) * up if on else level * down
        out.append(effect * level)
    return np.array(out)


def test_one_patient_is_the_difference_of_daily_arm_means_and_ols_under_white_noise():
    rng = np.random.default_rng(3)
    y = _ramp(-1.0) + rng.normal(0, 0.3, len(DAYS))
    est, var, dof = patient_contrast(_patient("1", y), "PC1", "A", "B", StatedNoise(white_sd=1.0))
    assert est == pytest.approx(y[ON].mean() - y[~ON].mean())
    # white noise stated: the classical OLS variance with n − 2 df
    resid = np.concatenate([y[ON] - y[ON].mean(), y[~ON] - y[~ON].mean()])
    s2 = resid @ resid / (len(y) - 2)
    assert var == pytest.approx(s2 * (1 / ON.sum() + 1 / (~ON).sum()))
    assert dof == pytest.approx(len(y) - 2)


def test_patients_average_with_the_root_sum_of_their_variances():
    rng = np.random.default_rng(4)
    noise = StatedNoise(ar1_rho=0.5, ar1_sd=1.0)
    frames = [_patient(str(i), _ramp(e) + rng.normal(0, 0.2, len(DAYS))) for i, e in enumerate((-1.0, 0.0, 2.0))]
    df = pd.concat(frames, ignore_index=True)
    per = [patient_contrast(f, "PC1", "A", "B", noise) for f in frames]
    sa = sample_average(df, "PC1", "A", "B", noise)
    assert sa["sample_estimate"] == pytest.approx(np.mean([p[0] for p in per]))
    assert sa["sample_se"] == pytest.approx(math.sqrt(sum(p[1] for p in per)) / 3)
    assert min(p[2] for p in per) <= sa["sample_df"] <= sum(p[2] for p in per)
    assert sa["sample_ci_low"] < sa["sample_estimate"] < sa["sample_ci_high"]
    assert sa["sample_n_patients"] == 3
    # no stated noise, or a single patient: no entry
    assert sample_average(df, "PC1", "A", "B", None) is None
    assert sample_average(frames[0], "PC1", "A", "B", noise) is None


def test_severity_figures_divide_by_the_measurement_slope():
    rng = np.random.default_rng(5)
    df = pd.concat([_patient(str(i), _ramp(2.0) + rng.normal(0, 0.2, len(DAYS))) for i in range(3)])
    pop = [{"method": "ae", "contrast": "B − A"}]
    add_sample_average(pop, df, [("A", "B")], StatedNoise(ar1_rho=0.5, ar1_sd=1.0), {"slope": 2.0, "slope_se": 0.0})
    assert pop[0]["sample_estimate_severity"] == pytest.approx(pop[0]["sample_estimate"] / 2)
    assert pop[0]["sample_se_severity"] == pytest.approx(pop[0]["sample_se"] / 2)


def test_interval_covers_the_patients_realised_effect_near_the_nominal_rate():
    """Effects that ramp within periods and differ between patients (SD 1), AR(1) daily errors as stated."""
    rng = np.random.default_rng(11)
    noise = StatedNoise(ar1_rho=0.5, ar1_sd=1.0)
    chol = np.linalg.cholesky(noise.covariance(DAYS.astype(float)))
    covered, covered_population = [], []
    for _ in range(500):
        effects = rng.normal(-0.5, 1.0, 5)
        truth = [_ramp(e) for e in effects]
        realised = np.mean([t[ON].mean() - t[~ON].mean() for t in truth])
        frames = [_patient(str(i), 1.0 + t + chol @ rng.standard_normal(len(DAYS))) for i, t in enumerate(truth)]
        sa = sample_average(pd.concat(frames, ignore_index=True), "PC1", "A", "B", noise)
        covered.append(sa["sample_ci_low"] <= realised <= sa["sample_ci_high"])
        est = np.array([f["PC1"][ON].mean() - f["PC1"][~ON].mean() for f in frames])
        half = 2.776 * est.std(ddof=1) / math.sqrt(5)  # the summary-measures interval (t, 4 df)
        covered_population.append(abs(est.mean() - realised) <= half)
    assert 0.92 <= np.mean(covered) <= 0.98  # 500 trials: MC SE 0.01
    # an interval for the population's mean covers these patients' effect too often when effects spread
    assert np.mean(covered_population) > 0.99
