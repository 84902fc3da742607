"""The primary per-patient test (treatment cycles) and effects on the severity scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.primary import (
    check_can_be_primary,
    check_primary_test,
    cycle_test,
    patient_verdicts,
    resolve_primary,
)
from analysis.severity import effect_on_severity, measurement_model, relative_efficiency


def _patient(arms: str, values: list[float], photos_per_day: int = 3) -> pd.DataFrame:
    """One patient: day d on treatment arms[d] with outcome values[d] for each of its photos."""
    rows = [
        {"day": d + 1, "treatment": arm, "y": v + 0.01 * k}
        for d, (arm, v) in enumerate(zip(arms, values))
        for k in range(photos_per_day)
    ]
    return pd.DataFrame(rows)


def test_cycle_test_pairs_adjacent_periods_and_t_tests_their_differences():
    # four cycles of 2 days off (A) then 2 days on (B); B − A per cycle: 1, 2, 3, 2
    arms = "AABB" * 4
    vals = [0, 0, 1, 1, 5, 5, 7, 7, 2, 2, 5, 5, 3, 3, 5, 5]
    t = cycle_test(_patient(arms, vals), "y", "A", "B")
    d = np.array([1.0, 2.0, 3.0, 2.0])
    ref = stats.ttest_1samp(d, 0.0)
    assert t["n_cycles"] == 4
    assert t["estimate"] == pytest.approx(d.mean())
    assert t["p_value"] == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((lo, hi))


def test_cycle_test_orients_ba_cycles_and_ignores_other_arms():
    # B first in the second cycle; a Baseline run-in is not part of any cycle
    arms = "XXAABBBBAAAABB"
    vals = [9, 9, 0, 0, 1, 1, 3, 3, 2, 2, 5, 5, 7, 7]
    t = cycle_test(_patient(arms, vals, 1), "y", "A", "B")
    # runs: A(0) B(1,3 → 2) A(2,5 → 3.5) B(7): cycles (A, B) = +2, then (A, B) = 7 − 3.5
    assert t["n_cycles"] == 2
    assert t["estimate"] == pytest.approx(np.mean([2.0, 3.5]))


def test_cycle_test_splits_two_periods_on_one_treatment_by_the_manifests_period():
    # randomised blocks A B | B A: without the period column the two B periods merge into one
    # run and only one cycle is left; with it, each block is a cycle (B − A: +1, then 4 − 1 = +3)
    arms = "AABBBBAA"
    vals = [0, 0, 1, 1, 4, 4, 1, 1]
    p = _patient(arms, vals, 1)
    assert cycle_test(p, "y", "A", "B")["n_cycles"] == 1
    p["period"] = [1, 1, 2, 2, 3, 3, 4, 4]
    t = cycle_test(p, "y", "A", "B")
    assert t["n_cycles"] == 2
    assert t["estimate"] == pytest.approx(2.0)
    p.loc[0, "period"] = np.nan  # a column with gaps is not trusted: runs of one treatment again
    assert cycle_test(p, "y", "A", "B")["n_cycles"] == 1


def test_cycle_test_needs_two_cycles():
    t = cycle_test(_patient("AABB", [0, 0, 1, 1]), "y", "A", "B")
    assert t["n_cycles"] == 1 and np.isnan(t["p_value"])


def test_cycle_test_keeps_its_level_with_serially_correlated_days():
    rng = np.random.default_rng(0)
    arms = "AABB" * 4
    rejections = 0
    for _ in range(400):
        e = np.zeros(16)
        for d in range(1, 16):  # AR(1) days, rho 0.7: photo-level tests reject far too often here
            e[d] = 0.7 * e[d - 1] + rng.normal()
        rejections += cycle_test(_patient(arms, list(e)), "y", "A", "B")["p_value"] < 0.05
    assert 0.02 <= rejections / 400 <= 0.09


def test_unknown_primary_test_names_the_option():
    with pytest.raises(AnalysisInputError, match="--primary-test"):
        check_primary_test("anova")
    assert check_primary_test("cycles") == "cycles"


def test_auto_primary_test_is_chosen_from_the_design_alone():
    def rows(cycles, days):
        return [{"test": "cycles", "n_cycles": c, "p_value": 0.9} for c in cycles] + [
            {"test": "ar1", "n_days": d, "p_value": 0.01} for d in days
        ]

    assert resolve_primary(rows([4, 2], [16, 16]), "auto") == "cycles"
    assert resolve_primary(rows([1], [40]), "auto") == "ar1"  # one block, 40 daily means
    assert resolve_primary(rows([1, 2], [20, 40]), "auto") == "welch"  # a patient fits neither
    assert resolve_primary(rows([1], [20]), "welch") == "welch" == resolve_primary(rows([1], [20]), "auto")
    assert resolve_primary(rows([1], [20]), "cycles") == "cycles"  # declared: kept (and checked elsewhere)
    assert check_primary_test("auto") == "auto"


def test_randomization_test_cannot_be_primary_when_it_cannot_reach_alpha():
    rows = [{"test": "randomization", "min_p": 0.125, "n_assignments": 16, "p_value": 0.125}]
    with pytest.raises(AnalysisInputError, match="16 assignments"):
        check_can_be_primary(rows, "randomization")
    check_can_be_primary([{"test": "randomization", "min_p": 0.01, "n_assignments": 200}], "randomization")
    check_can_be_primary(rows, "cycles")  # another primary: nothing to check


def test_verdicts_come_from_the_primary_test_only_and_count_patients():
    rows = []
    for pid, (p_cycles, p_welch) in {"1": (0.2, 0.001), "2": (0.01, 0.3)}.items():
        for test, p in (("cycles", p_cycles), ("welch", p_welch)):
            rows.append(
                dict(
                    method="ae",
                    contrast="B vs A",
                    patient_id=pid,
                    test=test,
                    estimate=1.0,
                    ci_low=0,
                    ci_high=2,
                    p_value=p,
                )
            )
    v = {r["patient_id"]: r for r in patient_verdicts(rows, "cycles")}
    assert [v["1"]["detected"], v["2"]["detected"]] == [False, True]
    assert v["1"]["sensitivity"] == {"welch": 0.001}
    assert v["1"]["n_patients_tested"] == 2 and v["1"]["primary_test"] == "cycles"


def _calibration_data(rng, slope=2.0, noise=0.5, n_pat=5, n=40):
    sev = rng.normal(size=(n_pat, n)) + rng.normal(size=(n_pat, 1)) * 3
    pc1 = 10 * rng.normal(size=(n_pat, 1)) + slope * sev + noise * rng.normal(size=(n_pat, n))
    groups = np.repeat(np.arange(n_pat), n)
    return pc1.ravel(), sev.ravel(), groups


def test_measurement_model_recovers_the_slope_despite_patient_levels():
    pc1, sev, g = _calibration_data(np.random.default_rng(1))
    m = measurement_model(pc1, sev, g)
    assert m["slope"] == pytest.approx(2.0, abs=3 * m["slope_se"])
    assert m["resid_sd"] == pytest.approx(0.5, rel=0.15)
    assert m["r2_within"] > 0.9


def test_severity_ci_carries_the_calibration_uncertainty_and_covers():
    rng = np.random.default_rng(2)
    true_effect, covered = -0.3, 0
    for _ in range(300):
        pc1, sev, g = _calibration_data(rng, slope=1.5, noise=3.0, n=12)
        m = measurement_model(pc1, sev, g)
        est_pc1 = true_effect * 1.5 + rng.normal(0, 0.2)
        s = effect_on_severity(est_pc1, 0.2, 30, m)
        covered += s["ci_low_severity"] <= true_effect <= s["ci_high_severity"]
    assert 0.9 <= covered / 300 <= 0.99
    # a slope known less well widens the interval
    tight = effect_on_severity(-1.0, 0.2, 30, {"slope": 2.0, "slope_se": 0.0})
    loose = effect_on_severity(-1.0, 0.2, 30, {"slope": 2.0, "slope_se": 0.5})
    assert loose["se_severity"] > tight["se_severity"] == pytest.approx(0.1)
    assert tight["estimate_severity"] == pytest.approx(-0.5)


def test_relative_efficiency_is_the_ratio_of_z_statistics():
    assert relative_efficiency(-1.0, 0.5, -2.0, 0.5) == pytest.approx(0.5)
    assert np.isnan(relative_efficiency(1.0, 0.0, 1.0, 1.0))
