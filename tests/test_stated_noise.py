"""The gls per-patient test: regression of daily means with the error correlation the design states."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from click.testing import CliRunner
from scipy import stats

from analysis.errors import AnalysisInputError
from analysis.stated_noise import StatedNoise, assumed_rho, gls_test, noise_from_protocol, stated_noise
from trialsim.cli import main


def _block(n):
    return np.c_[np.ones(n), np.r_[np.zeros(n // 2), np.ones(n // 2)]]


def test_white_noise_stated_is_the_pooled_t_test():
    rng = np.random.default_rng(0)
    y = rng.normal(size=12) + np.r_[np.zeros(6), np.full(6, 0.8)]
    r = gls_test(y, np.arange(1.0, 13), _block(12), 1, StatedNoise(white_sd=2.0, source="test"))
    t = stats.ttest_ind(y[6:], y[:6], equal_var=True)
    assert r["p_value"] == pytest.approx(t.pvalue, rel=1e-9)
    assert r["estimate"] == pytest.approx(y[6:].mean() - y[:6].mean())
    assert r["df"] == 10


def test_stated_ar1_with_gaps_matches_statsmodels_gls_with_that_covariance():
    rng = np.random.default_rng(1)
    days = np.array([1, 2, 3, 5, 6, 9, 10, 11, 14, 15], float)  # gaps: ρ^gap
    X = _block(10)
    y = rng.normal(size=10) + X[:, 1]
    noise = StatedNoise(ar1_rho=0.6, ar1_sd=1.0, white_sd=0.5, drift_sd=0.1, source="test")
    r = gls_test(y, days, X, 1, noise)
    fit = sm.GLS(y, X, sigma=noise.covariance(days)).fit()
    assert r["estimate"] == pytest.approx(fit.params[1], rel=1e-9)
    assert r["p_value"] == pytest.approx(fit.pvalues[1], rel=1e-7)
    lo, hi = fit.conf_int()[1]
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))


def test_level_is_exact_when_the_stated_rho_is_true_and_not_when_it_is_wrong():
    rng = np.random.default_rng(2)
    n, reps = 10, 3000
    e = rng.standard_normal((reps, n))
    u = np.empty_like(e)
    u[:, 0] = e[:, 0]
    for t in range(1, n):
        u[:, t] = 0.5 * u[:, t - 1] + np.sqrt(0.75) * e[:, t]
    days, X = np.arange(1.0, n + 1), _block(n)

    def rate(rho):
        return np.mean([gls_test(y, days, X, 1, assumed_rho(rho))["p_value"] < 0.05 for y in u])

    assert 0.035 <= rate(0.5) <= 0.065  # MC SE 0.004
    assert rate(0.0) > 0.12  # independence stated for correlated days: far too liberal


def test_noise_from_protocol_and_assume_rho():
    assert noise_from_protocol({"dynamics": {"sd_obs": 0.0}}) is None  # nothing stated
    assert noise_from_protocol(None) is None
    n = noise_from_protocol({"dynamics": {"ar1_rho": 0.3, "ar1_sd": 0.2, "sd_obs": 0.1}})
    assert (n.ar1_rho, n.ar1_sd, n.white_sd, n.drift_sd) == (0.3, 0.2, 0.1, 0.0)
    assert stated_noise(0.4, {"dynamics": {"sd_obs": 1.0}}).ar1_rho == 0.4  # the option wins
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(AnalysisInputError):
            assumed_rho(bad)


def _real_like_folder(tmp_path):
    """One patient, one AB block of 10 days each, no protocol.yaml (as real photos)."""
    rng = np.random.default_rng(5)
    d = tmp_path / "ds"
    d.mkdir()
    days = np.arange(1, 21)
    pd.DataFrame(
        {
            "image": [f"{i}.png" for i in days],
            "patient_id": "p1",
            "day": days,
            "treatment": np.where(days <= 10, "A", "B"),
            "severity_latent": rng.normal(1.5, 0.3, 20),
        }
    ).to_csv(d / "manifest.csv", index=False)
    return d


def test_cli_gls_needs_a_stated_noise_and_assume_rho_states_one(tmp_path):
    d = _real_like_folder(tmp_path)
    run = CliRunner().invoke
    r = run(main, ["analyze", str(d), "--out", str(tmp_path / "a0"), "--method", "oracle", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a0" / "results.json").read_text())["primary_test"] == "welch"
    r = run(main, ["analyze", str(d), "--out", str(tmp_path / "a1"), "--method", "oracle", "--primary-test", "gls"])
    assert r.exit_code == 2 and "--assume-rho" in r.output and not (tmp_path / "a1" / "results.json").exists()
    r = run(main, ["analyze", str(d), "--out", str(tmp_path / "a2"), "--method", "oracle", "--assume-rho", "1"])
    assert r.exit_code == 2 and "--assume-rho" in r.output
    args = ["--method", "oracle", "--assume-rho", "0.5", "--quiet"]
    r = run(main, ["analyze", str(d), "--out", str(tmp_path / "a3"), *args])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "a3" / "results.json").read_text())
    assert res["primary_test"] == "gls" and res["verdicts"][0]["primary_test"] == "gls"
    assert res["formulas"]["per_patient"]["stated_noise"]["source"] == "--assume-rho"
    assert "AR(1) rho 0.5" in (tmp_path / "a3" / "report.html").read_text()


def test_gls_power_matches_simulation_and_the_design_reports_it():
    from analysis.stated_noise import gls_power
    from trialsim.design import design_diagnostics
    from trialsim.protocol import protocol_from_dict

    rng = np.random.default_rng(7)
    n, reps, rho, effect = 20, 2000, 0.5, 1.0
    days, X = np.arange(1.0, n + 1), _block(n)
    e = rng.standard_normal((reps, n))
    u = np.empty_like(e)
    u[:, 0] = e[:, 0]
    for t in range(1, n):
        u[:, t] = rho * u[:, t - 1] + np.sqrt(1 - rho**2) * e[:, t]
    noise = StatedNoise(ar1_rho=rho, ar1_sd=1.0, source="test")
    sim = np.mean([gls_test(y + effect * X[:, 1], days, X, 1, noise)["p_value"] < 0.05 for y in u])
    analytic = gls_power(effect, noise, days, X, 1)
    assert abs(sim - analytic) < 3 * np.sqrt(analytic * (1 - analytic) / reps)
    imm = {"onset_days": 0.01, "washout_days": 0.01}
    d = {
        "name": "one",
        "seed": 1,
        "patients": {"n": 1, "baseline_severity": {"mean": 1.5, "sd": 0.0}},
        "treatments": [{"label": "A", "effect": 0.0, **imm}, {"label": "B", "effect": 1.0, **imm}],
        "schedule": {"design": "randomized_blocks", "blocks": 1, "period_days": 10},
        "dynamics": {"sd_obs": 1.0, "floor": None, "ceiling": None},
        "rendering": {"renderer": "none"},
    }
    white = design_diagnostics(protocol_from_dict(d))
    assert white["power_gls"] == pytest.approx(white["power_t"], rel=1e-9)  # independent days: the same test
    d["dynamics"] = {"sd_obs": 0.0, "ar1_sd": 1.0, "ar1_rho": 0.5, "floor": None, "ceiling": None}
    ar = design_diagnostics(protocol_from_dict(d))
    assert ar["power_gls"] < ar["power_t"] - 0.1  # correlated days carry less information
