"""The Bayesian N-of-1 model (``--model bayes``): recovery, seeds, convergence reporting, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import small_protocol_dict

from analysis.bayes import SamplerSettings, analyse_contrast, parse_priors
from analysis.errors import AnalysisInputError
from trialsim.cli import main

SMALL = SamplerSettings(chains=2, warmup=200, draws=200)


def trial(effects, days: int = 12, photos: int = 1, seed: int = 0) -> pd.DataFrame:
    """Photos of patients on arms A/B in 2-day periods; B − A = ``effects[p]``; AR(1) day noise 0.3, photo noise 0.1."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, eff in enumerate(effects):
        u = 0.0
        for day in range(days):
            u = 0.5 * u + 0.3 * rng.normal()
            arm = "B" if (day // 2) % 2 else "A"
            for _ in range(photos):
                y = 1.0 + 0.5 * p + eff * (arm == "B") + u + 0.1 * rng.normal()
                rows.append({"patient_id": f"p{p}", "day": day, "treatment": arm, "y": y})
    return pd.DataFrame(rows)


def test_recovers_a_large_effect_with_confidence():
    df = trial([-2.0, -2.2, -1.8], photos=2)
    fit = analyse_contrast(df, "y", ("A", "B"), seed=1, settings=SMALL)
    assert fit["population"]["p_benefit"] > 0.99
    assert all(p["p_benefit"] > 0.99 for p in fit["patients"])
    assert fit["diagnostics"]["rhat_max"] < 1.05
    assert fit["population"]["ci_low"] < -2.0 < fit["population"]["ci_high"]
    assert fit["population"]["statement"].startswith("Population mean: P(B better than A) = 1.00")


def test_same_seed_same_numbers_and_another_seed_differs():
    df = trial([-0.5, 0.0], seed=3)
    tiny = SamplerSettings(chains=2, warmup=50, draws=50)
    one = analyse_contrast(df, "y", ("A", "B"), seed=7, settings=tiny)
    two = analyse_contrast(df, "y", ("A", "B"), seed=7, settings=tiny)
    other = analyse_contrast(df, "y", ("A", "B"), seed=8, settings=tiny)
    assert one["patients"] == two["patients"] and one["population"] == two["population"]
    assert one["population"]["estimate"] != other["population"]["estimate"]


def test_failed_convergence_is_reported_and_blocks_the_decision():
    df = trial([-1.0, -1.0, -1.0], seed=4)
    fit = analyse_contrast(df, "y", ("A", "B"), seed=0, settings=SamplerSettings(chains=2, warmup=5, draws=20))
    assert not fit["diagnostics"]["converged"]
    assert fit["diagnostics"]["problems"]
    assert any(w.startswith("convergence failed") for w in fit["warnings"])
    assert {p["decision"] for p in fit["patients"]} == {"withheld"}
    assert fit["population"]["decision"] == "withheld"


def test_one_patient_uses_the_population_prior_alone():
    fit = analyse_contrast(trial([-1.5], days=16, photos=3), "y", ("A", "B"), seed=0, settings=SMALL)
    assert fit["n_patients"] == 1 and len(fit["patients"]) == 1
    assert fit["population"]["decision"] == "not estimable (one patient)"
    assert any("no pooling" in w for w in fit["warnings"])
    assert fit["patients"][0]["p_benefit"] > 0.95


def test_priors_and_mid_parse_or_fail_naming_the_field(tmp_path):
    assert parse_priors(["effect_sd=1.5"]).effect_sd == 1.5
    f = tmp_path / "p.yaml"
    f.write_text("rho_a: 2\nrho_b: 3\n")
    assert parse_priors([str(f)]).rho_b == 3
    for bad, field in ((["effect_sd=-1"], "effect_sd"), (["nope=1"], "nope"), (["tau=x"], "tau")):
        with pytest.raises(AnalysisInputError, match=field):
            parse_priors(bad)
    with pytest.raises(AnalysisInputError, match="--mid"):
        analyse_contrast(trial([-1.0, -1.0]), "y", ("A", "B"), seed=0, mid=-0.1, settings=SMALL)


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--prior", "effect_sd=0"], "--prior effect_sd"),
        (["--prior", "rho_a=nan"], "--prior rho_a"),
        (["--prior", "missing.yaml"], "--prior"),
        (["--mid", "-1"], "--mid"),
        (["--mid", "inf"], "--mid"),
    ],
)
def test_bad_priors_or_mid_exit_2(tmp_path, extra, field):
    r = CliRunner().invoke(
        main, ["analyze", str(tmp_path / "none"), "--out", str(tmp_path / "a"), "--model", "bayes", *extra]
    )
    assert r.exit_code == 2, r.output
    assert field in r.output
    assert not (tmp_path / "a" / "results.json").exists()


def test_pipeline_writes_the_bayes_section_and_report(tmp_path):
    from analysis.pipeline import AnalysisConfig, analyze
    from trialsim.protocol import protocol_from_dict
    from trialsim.simulate import simulate

    simulate(protocol_from_dict(small_protocol_dict()), tmp_path / "ds", renderer="none", progress=False)
    cfg = AnalysisConfig(method="oracle", model="bayes", bayes_draws=200, progress=False)
    res = analyze(tmp_path / "ds", tmp_path / "a", cfg)
    on_disk = json.loads((tmp_path / "a" / "results.json").read_text())
    assert on_disk["population"] and on_disk["patients"]  # the existing keys stay
    fit = on_disk["bayes"]["fits"][0]
    assert fit["contrast"] == "B − A" and len(fit["patients"]) == 3 and "_draws" not in fit
    assert fit["population"]["estimate"] < 0 and "estimate_severity" in fit["population"]
    assert all("known_realised" in p for p in fit["patients"])
    assert on_disk["bayes"]["priors"]["effect_sd"] == 2.5 and res["bayes"]["mid"] == 0.5
    html = (tmp_path / "a" / "report.html").read_text()
    assert 'id="bayes"' in html and "P(B better than A" in html
    assert "±δ = ±0." in html and "±+" not in html  # δ is a size: no sign
    with np.load(tmp_path / "a" / "bayes_draws.npz") as z:
        assert z["fit0_theta"].shape[0] == 3


def test_collapsed_likelihood_and_conditionals_match_the_photo_level_gaussian():
    """Day means + within-day spread, patients integrated out, equal the dense photo-level MVN."""
    from scipy.stats import multivariate_normal

    from analysis.bayes.fit import _jax
    from analysis.bayes.model import contrast_data, marginal_loglik, patient_conditional

    jnp = _jax().numpy
    df = trial([-1.0, 0.5], days=7, photos=2, seed=5)
    df = df[~((df["patient_id"] == "p1") & (df["day"].isin([2, 5])))]  # irregular days, unequal lengths
    df = pd.concat([df, df.iloc[[0]].assign(y=df["y"].iloc[0] + 0.3)])  # a day with three photos
    cd = contrast_data(df, "y", "A", "B")
    h = {"mu_alpha": 0.2, "sigma_alpha": 0.7, "mu_theta": -0.4, "tau": 0.6, "rho": 0.55}
    h |= {"sigma_day": 0.8, "sigma_photo": 0.35}
    arrays = {k: jnp.asarray(v, dtype=float) for k, v in cd.arrays(parse_priors([])).items()}
    sp2 = h["sigma_photo"] ** 2
    within = -0.5 * (cd.df_within * np.log(2 * np.pi * sp2) + cd.ss_within / sp2)
    got = float(marginal_loglik(arrays, {k: jnp.asarray(v) for k, v in h.items()})) + within
    mean, chol = patient_conditional(arrays, {k: jnp.asarray(v) for k, v in h.items()})
    want = 0.0
    for i, (_, g) in enumerate(df.sort_values(["patient_id", "day"]).groupby("patient_id")):
        y = (g["y"].to_numpy() - cd.centre) / cd.s
        x, d = (g["treatment"] == "B").to_numpy(float), g["day"].to_numpy(float)
        noise = h["sigma_day"] ** 2 * h["rho"] ** np.abs(d[:, None] - d[None, :]) + sp2 * np.eye(len(y))
        X = np.stack([np.ones_like(x), x], axis=1)
        prior = np.diag([h["sigma_alpha"] ** 2, h["tau"] ** 2])
        m0 = np.array([h["mu_alpha"], h["mu_theta"]])
        want += multivariate_normal(X @ m0, X @ prior @ X.T + noise).logpdf(y)
        prec = np.linalg.inv(prior) + X.T @ np.linalg.solve(noise, X)
        post_mean = np.linalg.solve(prec, np.linalg.solve(prior, m0) + X.T @ np.linalg.solve(noise, y))
        np.testing.assert_allclose(np.asarray(mean[i]), post_mean, rtol=1e-8, atol=1e-10)
        c = np.asarray(chol[i])
        np.testing.assert_allclose(c @ c.T, np.linalg.inv(prec), rtol=1e-8, atol=1e-12)
    # photos → (day means, orthonormal within-day contrasts): the day mean's Jacobian is √n a day
    jacobian = 0.5 * float(np.log(cd.n[cd.mask]).sum())
    assert got == pytest.approx(want + jacobian, rel=1e-10)


def test_power_decisions_count_confident_and_right_per_patient_trial():
    from trialsim.power_bayes import BAYES_TEST, add_bayes_decisions

    # five patient-trials: confident right, confident wrong, uncertain, confident on a null effect, not converged
    rep = pd.DataFrame(
        {
            "grid_point": "base",
            "method": "oracle",
            "test": BAYES_TEST,
            "estimate": [-0.5, 0.3, -0.1, -0.2, np.nan],
            "ci_low": [-0.7, 0.1, -0.3, -0.4, np.nan],
            "ci_high": [-0.3, 0.5, 0.1, 0.0, np.nan],
            "known": [-0.5, -0.4, -0.1, 0.0, -0.5],
            "estimate_raw": [0.99, 0.02, 0.6, 0.95, np.nan],
            "known_raw": [-0.5, -0.4, -0.1, 0.0, -0.5],
        }
    )
    summary = pd.DataFrame({"grid_point": ["base"], "method": ["oracle"], "test": [BAYES_TEST], "unit": ["trial"]})
    row = add_bayes_decisions(summary, rep).iloc[0]
    assert row["patient_trials"] == 4
    assert row["decision_rate"] == pytest.approx(3 / 4)
    assert row["decision_right"] == pytest.approx(1 / 3)
    assert row["coverage"] == pytest.approx(3 / 4) and row["unit"] == "patient-trial"
    assert row["bias"] == pytest.approx(np.mean([0.0, 0.7, 0.0, -0.2]))


def test_fit_finishes_with_pytorch_loaded_first_and_batches_do_not_change_draws():
    """PyTorch imported before JAX (as in ``trialsim analyze``), posterior draws not a multiple of
    the conditional batch: the fit ends (a subprocess, so a hang fails here instead of stalling the
    suite), and the draws are those of one unbatched pass, key for key."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import torch\n"
        "import numpy as np, pandas as pd\n"
        "from analysis.bayes import SamplerSettings, analyse_contrast\n"
        "from analysis.bayes import fit\n"
        "rng = np.random.default_rng(0)\n"
        "rows = [{'patient_id': f'p{p}', 'day': d, 'treatment': 'AB'[(d // 2) % 2],\n"
        "         'y': p - ((d // 2) % 2) + 0.3 * rng.normal()} for p in range(3) for d in range(16)]\n"
        "s = SamplerSettings(chains=2, warmup=100, draws=200)\n"
        "one = analyse_contrast(pd.DataFrame(rows), 'y', ('A', 'B'), seed=2, settings=s)\n"
        "fit.CONDITIONAL_BATCH = 1000\n"
        "two = analyse_contrast(pd.DataFrame(rows), 'y', ('A', 'B'), seed=2, settings=s)\n"
        "assert one['patients'] == two['patients'], 'batching changed the draws'\n"
        "print('theta', [round(p['estimate'], 2) for p in one['patients']])\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "theta [-" in done.stdout
