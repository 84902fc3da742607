"""Statistical behaviour of analysis.models and analysis.evaluate on latent truth (no images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.evaluate import realised_effect, within_spearman
from analysis.models import fit_population, patient_tests, randomization_test
from trialsim.protocol import load_protocol
from trialsim.simulate import simulate_truth

ROOT = Path(__file__).resolve().parents[1]


def _days(protocol) -> pd.DataFrame:
    return pd.concat([j.days for j in simulate_truth(protocol)], ignore_index=True)


def test_latent_mixed_model_recovers_anchor_contrast_within_0_1_of_realised():
    days = _days(load_protocol(ROOT / "protocols" / "anchor_sim_acne.yaml"))
    fit = fit_population(days, "severity_latent", "Antibiotics", "Cream")
    realised = realised_effect(days, "Antibiotics", "Cream")
    assert realised == pytest.approx(0.7, abs=0.3)  # nominal 0.7, shrunk by onset/washout and clipping
    assert abs(fit["estimate"] - realised) < 0.1
    assert fit["ci_low"] < fit["estimate"] < fit["ci_high"]
    assert fit["p_value"] < 0.05
    assert fit["df"] == 9
    assert fit["se"] >= fit["se_lmm"] - 1e-12


def test_population_model_fails_clearly_with_one_patient():
    days = _days(load_protocol(ROOT / "protocols" / "demo.yaml"))
    one = days[days["patient_id"] == "1"]
    with pytest.raises(AnalysisInputError, match="at least two patients"):
        fit_population(one, "severity_latent", "Antibiotics", "Cream")


def test_population_model_fails_clearly_when_an_arm_is_missing():
    days = _days(load_protocol(ROOT / "protocols" / "demo.yaml"))
    with pytest.raises(AnalysisInputError, match="Cream"):
        fit_population(days[days["treatment"] != "Cream"], "severity_latent", "Antibiotics", "Cream")


def test_pure_noise_outcome_is_not_detected_and_ci_covers_zero():
    days = _days(load_protocol(ROOT / "protocols" / "demo.yaml"))
    rng = np.random.default_rng(3)
    days = days.assign(noise=rng.normal(size=len(days)))
    fit = fit_population(days, "noise", "Antibiotics", "Cream")
    assert fit["ci_low"] < 0 < fit["ci_high"]
    assert fit["p_value"] > 0.05


def test_randomization_test_of_fixed_AB_design_has_four_assignments_and_min_p_one_half():
    # one patient, AB AB, 3 photos per period, big effect: exact p hits the design's floor
    period = np.repeat([1, 2, 3, 4], 3)
    block = np.repeat([1, 1, 2, 2], 3)
    arm_b = np.repeat([False, True, False, True], 3)
    y = np.where(arm_b, 5.0, 0.0) + np.linspace(0, 0.1, 12)
    r = randomization_test(y, arm_b, period, block, np.random.default_rng(0))
    assert r["n_assignments"] == 4
    assert r["exact"]
    assert r["min_p"] == pytest.approx(0.5)
    assert r["p_value"] == pytest.approx(0.5)
    assert r["estimate"] == pytest.approx(5.0, abs=0.1)


def test_randomization_test_with_many_blocks_reaches_small_p_for_a_large_effect():
    n_blocks = 8
    period = np.repeat(np.arange(2 * n_blocks), 2)
    block = np.repeat(np.arange(n_blocks), 4)
    arm_b = np.tile([False, False, True, True], n_blocks)
    y = np.where(arm_b, 1.0, 0.0) + np.random.default_rng(1).normal(0, 0.1, len(arm_b))
    r = randomization_test(y, arm_b, period, block, np.random.default_rng(0))
    assert r["n_assignments"] == 2**n_blocks
    assert r["min_p"] == pytest.approx(2 / 2**n_blocks)
    assert r["p_value"] <= 2 / 2**n_blocks + 1e-12


def test_patient_tests_detect_a_large_effect_with_welch_ar1_and_permutation():
    days = _days(load_protocol(ROOT / "protocols" / "anchor_sim_acne.yaml"))
    p = days[days["patient_id"] == "1"].sort_values("day")
    res = {r["test"]: r for r in patient_tests(p, "severity_latent", "Antibiotics", "Cream", np.random.default_rng(0))}
    assert set(res) == {"welch", "ar1", "permutation", "randomization"}
    assert res["welch"]["p_value"] < 0.01
    assert res["permutation"]["p_value"] < 0.01
    assert res["welch"]["estimate"] > 0  # Cream is worse than Antibiotics in the anchor
    assert res["randomization"]["min_p"] == pytest.approx(0.5)  # fixed ABAB: only 4 assignments


def test_within_spearman_ignores_patient_offsets():
    g = np.repeat(["a", "b", "c"], 20)
    x = np.tile(np.arange(20.0), 3)
    y = x + np.repeat([100.0, -50.0, 7.0], 20)
    assert within_spearman(x, y, g) == pytest.approx(1.0)
    assert within_spearman(-x, y, g) == pytest.approx(-1.0)


def test_null_effect_protocol_oracle_population_test_not_significant_at_fixed_seed():
    days = _days(load_protocol(ROOT / "protocols" / "null_effect.yaml"))
    fit = fit_population(days, "severity_latent", "Antibiotics", "Cream")
    assert fit["p_value"] >= 0.05
