"""Schedules and latent dynamics: onset/washout, carry-over, noise, clipping, grading."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_protocol_dict

from trialsim.dynamics import exposure_levels, grade_from_count, patient_trajectory, severity_grade, target_lesion_count
from trialsim.protocol import protocol_from_dict
from trialsim.schedule import patient_schedule


def test_acne04_thresholds_map_counts_to_grades():
    assert list(grade_from_count([1, 5, 6, 20, 21, 50, 51, 90])) == [0, 0, 1, 1, 2, 2, 3, 3]
    # severity grade boundaries sit on the count thresholds
    assert list(severity_grade([0.0, 0.49, 0.51, 1.49, 1.51, 2.49, 2.51, 3.0])) == [0, 0, 1, 1, 2, 2, 3, 3]
    counts = target_lesion_count(np.linspace(0, 3, 301))
    assert np.all(np.diff(counts) >= 0) and counts[0] == 0 and counts[-1] > 50


def test_first_order_onset_and_washout_time_constants():
    days = np.array(["A"] * 30 + ["B"] * 30)
    lv = exposure_levels(days, ["A", "B"], onset_days=[5.0, 5.0], washout_days=[2.0, 10.0])
    # after one time constant of onset the level is 1 - exp(-1)
    assert lv[4, 0] == pytest.approx(1 - np.exp(-1), abs=1e-9)
    # slow washout carries over: B's washout of 10 days vs A's 2 days
    assert lv[29 + 2, 0] == pytest.approx(lv[29, 0] * np.exp(-2 / 2.0), rel=1e-9)
    slow = exposure_levels(np.array(["B"] * 30 + ["A"] * 30), ["A", "B"], [5.0, 5.0], [2.0, 10.0])
    assert slow[29 + 10, 1] == pytest.approx(slow[29, 1] * np.exp(-1), rel=1e-9)
    assert slow[29 + 10, 1] > 0.3  # still a third of the effect 10 days after stopping


def test_randomized_blocks_respect_cap_and_differ_between_patients():
    d = small_protocol_dict(
        schedule={"design": "randomized_blocks", "blocks": 6, "period_days": 2, "max_consecutive_periods": 2}
    )
    p = protocol_from_dict(d)
    orders = set()
    for i in range(20):
        s = patient_schedule(p, str(i), np.random.default_rng(i))
        per_period = s.drop_duplicates("period")["treatment"].tolist()
        runs = max(len(list(g)) for _, g in __import__("itertools").groupby(per_period))
        assert runs <= 2
        # every block holds one period of each treatment
        assert all(sorted(b["treatment"].unique()) == ["A", "B"] for _, b in s.groupby("block"))
        orders.add(tuple(per_period))
    assert len(orders) > 3


def test_noise_free_trajectory_reaches_baseline_plus_effect_and_noise_is_clipped():
    d = small_protocol_dict(
        schedule={"sequence": "A", "blocks": 1, "period_days": 40, "run_in_days": 5},
        dynamics={"ar1_rho": 0.8, "ar1_sd": 2.0},
    )
    p = protocol_from_dict(d)
    s = patient_schedule(p, "1", np.random.default_rng(0))
    traj = patient_trajectory(p, s, {"baseline": 2.5, "effects": {"A": -1.0, "B": -2.0}}, np.random.default_rng(1))
    assert traj["severity_noisefree"].iloc[4] == pytest.approx(2.5)
    assert traj["severity_noisefree"].iloc[-1] == pytest.approx(1.5, abs=1e-3)
    lat = traj["severity_latent"]
    assert lat.min() >= 0.0 and lat.max() <= 3.0
    assert (lat == 0.0).any() and (lat == 3.0).any()  # large noise hits both bounds


def test_ar1_noise_has_the_requested_autocorrelation():
    d = small_protocol_dict(
        schedule={"sequence": "A", "blocks": 1, "period_days": 3000, "run_in_days": 0},
        treatments=[{"label": "A", "effect": 0.0}],
        patients={"n": 1, "baseline_severity": {"mean": 1.5, "sd": 0}},
        dynamics={"ar1_rho": 0.7, "ar1_sd": 0.1},
    )
    p = protocol_from_dict(d)
    s = patient_schedule(p, "1", np.random.default_rng(0))
    y = (
        patient_trajectory(p, s, {"baseline": 1.5, "effects": {"A": 0.0}}, np.random.default_rng(2))[
            "severity_latent"
        ].to_numpy()
        - 1.5
    )
    assert np.std(y) == pytest.approx(0.1, rel=0.1)
    assert np.corrcoef(y[:-1], y[1:])[0, 1] == pytest.approx(0.7, abs=0.05)
