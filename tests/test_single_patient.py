"""Single-patient trials end to end: simulate → analyze → report, power, whole-protocol grids, design diagnostics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import small_protocol_dict

from analysis.results import DESIGN_CANNOT_SHOW, verdict
from trialsim.cli import main
from trialsim.design import describe, design_diagnostics, t_power
from trialsim.errors import BadInput
from trialsim.power import PowerStudy, apply_grid_point, run_power, study_base
from trialsim.protocol import protocol_from_dict
from trialsim.simulate import simulate_truth


def _single(**dynamics) -> dict:
    """One patient, one AB block in random order, immediate onset/washout, white noise SD 1, no bounds."""
    imm = {"onset_days": 0.01, "washout_days": 0.01}
    return {
        "name": "single",
        "seed": 4,
        "patients": {"n": 1, "baseline_severity": {"mean": 1.5, "sd": 0.0}},
        "treatments": [{"label": "A", "effect": 0.0, **imm}, {"label": "B", "effect": 1.0, **imm}],
        "schedule": {"design": "randomized_blocks", "blocks": 1, "period_days": 10},
        "dynamics": {"sd_obs": 1.0, "floor": None, "ceiling": None, **dynamics},
        "rendering": {"renderer": "none"},
    }


def _write(tmp_path, d, name="p.yaml"):
    f = tmp_path / name
    f.write_text(yaml.safe_dump(d))
    return f


def test_one_patient_simulate_analyze_report(tmp_path):
    f = _write(tmp_path, _single())
    r = CliRunner().invoke(main, ["simulate", str(f), "--out", str(tmp_path / "ds"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "2 assignments, smallest p = 1 (cannot reach α = 0.05)" in r.output
    design = json.loads((tmp_path / "ds" / "design.json").read_text())
    assert design["days_per_arm"] == [10, 10] and design["n_assignments"] == 2
    assert pd.read_csv(tmp_path / "ds" / "lesions.csv").empty  # no photos, no lesions
    # cycles needs two cycles: declared, it is refused with the reason (exit 2) ...
    args0 = ["--method", "oracle", "--primary-test", "cycles"]
    r = CliRunner().invoke(main, ["analyze", str(tmp_path / "ds"), "--out", str(tmp_path / "a0"), *args0])
    assert r.exit_code == 2 and "two cycles" in r.output
    # ... and the default (auto) picks gls from the design: one block, the noise stated by the protocol
    r = CliRunner().invoke(main, ["analyze", str(tmp_path / "ds"), "--out", str(tmp_path / "a1"), "--method", "oracle"])
    assert r.exit_code == 0, r.output
    res1 = json.loads((tmp_path / "a1" / "results.json").read_text())
    assert res1["primary_test"] == "gls" and res1["formulas"]["per_patient"]["stated_noise"]["white_sd"] == 1.0
    args = ["--method", "oracle", "--primary-test", "welch", "--quiet"]
    r = CliRunner().invoke(main, ["analyze", str(tmp_path / "ds"), "--out", str(tmp_path / "an"), *args])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "an" / "results.json").read_text())
    assert res["population"] == [] and "one patient" in res["population_skipped"]
    assert res["design"]["n_assignments"] == 2
    (v,) = res["verdicts"]
    assert v["primary_test"] == "welch" and v["patient_id"] == "1" and 0 <= v["p_value"] <= 1
    assert {p["test"] for p in res["patients"]} == {"cycles", "gls", "welch", "ar1", "permutation", "randomization"}
    html = (tmp_path / "an" / "report.html").read_text()
    assert "No population model" in html and "primary per-patient test (welch)" in html
    assert "mixed model (population)" not in html and "None fitted: " in html  # no model line stands in
    assert "gls power" in html  # the design's power for the test auto would choose
    assert "cannot reach α = 0.05 with 2 assignments" in html


def test_one_patient_power_has_no_failed_replicate_and_labels_per_patient_power(tmp_path):
    f = _write(tmp_path, _single())
    study = PowerStudy.from_cli(f, replicates=4, grid=["effect=0,1.0"], methods="oracle", seed=3, primary_test="welch")
    summary = run_power(study, tmp_path / "out", workers=1, progress=False)
    assert (summary["failed"] == 0).all() and "lmm" not in set(summary["test"])
    head = summary[summary["test"] == "primary:welch (per patient)"]
    assert len(head) == 2 and (head["unit"] == "patient-trial").all() and (head["replicates"] == 4).all()
    rnd = summary[summary["test"] == "per-patient:randomization"]
    assert rnd["note"].str.contains("cannot reach α = 0.05 with 2 assignments").all()
    assert (rnd["rejection_rate"] == 0).all()
    html = (tmp_path / "out" / "power.html").read_text()
    assert "per patient" in html and "cannot reach" in html


def test_several_patients_per_patient_power_is_the_share_of_patient_trials(tmp_path):
    d = small_protocol_dict()
    d["patients"]["n"] = 3
    study = PowerStudy.from_cli(_write(tmp_path, d), replicates=2, grid=["effect=1.0"], methods="oracle", seed=1)
    run_power(study, tmp_path / "out", workers=1, progress=False)
    rep = pd.read_csv(tmp_path / "out" / "replicates.csv")
    rows = rep[rep["test"] == "per-patient:welch"]
    assert len(rows) == 2 * 3  # one row per patient and replicate, its own p
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("test")
    share = float((rows["p_value"] < 0.05).mean())
    assert summary.loc["per-patient:welch", "rejection_rate"] == pytest.approx(share)
    assert summary.loc["lmm", "unit"] == "trial" and summary.loc["per-patient:welch", "unit"] == "patient-trial"


@pytest.mark.parametrize(
    "point", [{"period_days": 3}, {"period_days": 12}, {"blocks": 3}, {"blocks": 1, "period_days": 7}]
)
def test_grid_points_rebuild_whole_protocols(point):
    base = study_base(protocol_from_dict(small_protocol_dict()))  # 4 run-in days + 2 blocks × 2 × 5
    proto = protocol_from_dict(apply_grid_point(base, point))
    s = proto.schedule
    want = s.run_in_days + s.blocks * 2 * s.period_days
    for job in simulate_truth(proto):
        assert len(job.days) == want
        arms = job.days[job.days["treatment"] != "Baseline"]
        assert arms.groupby("period").size().eq(s.period_days).all() and arms["block"].nunique() == s.blocks


def test_grid_point_that_cannot_be_built_is_refused_before_any_replicate(tmp_path):
    d = small_protocol_dict()
    d["observation"] = {"days": 24}  # fixed by the protocol: other schedule lengths would be cut or padded
    f = _write(tmp_path, d)
    with pytest.raises(BadInput, match=r"observation\.days"):
        PowerStudy.from_cli(f, replicates=2, grid=["period_days=5,10"], methods="oracle")
    r = CliRunner().invoke(
        main, ["power", str(f), "--replicates", "2", "--out", str(tmp_path / "o"), "--grid", "blocks=1,2"]
    )
    assert r.exit_code == 2 and not (tmp_path / "o").exists()


def test_power_exits_non_zero_when_every_replicate_failed(tmp_path):
    f = _write(tmp_path, _single())  # one block: a declared cycles test cannot run
    args = ["--replicates", "2", "--out", str(tmp_path / "o"), "--primary-test", "cycles", "--quiet"]
    r = CliRunner().invoke(main, ["power", str(f), *args])
    assert r.exit_code == 1 and "all 2 replicates failed" in r.output and "two cycles" in r.output
    assert (tmp_path / "o" / "replicates.csv").exists()


def test_bounds_switched_off_need_renderer_none(tmp_path):
    d = _single()
    d["rendering"] = {"renderer": "procedural", "image_size": 64}
    r = CliRunner().invoke(main, ["simulate", str(_write(tmp_path, d)), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 2 and "dynamics.floor" in r.output and not (tmp_path / "ds").exists()
    proto = protocol_from_dict(_single(sd_obs=3.0))
    lat = np.concatenate([j.days["severity_latent"].to_numpy() for j in simulate_truth(proto)])
    assert lat.min() < 0 or lat.max() > 3  # not clipped to the 0–3 scale


def test_the_three_day_design_warns_and_is_never_correctly_null():
    d = small_protocol_dict()
    for t, e in zip(d["treatments"], (-2.0, -1.0)):
        t.update(effect=e, onset_days=3.0, washout_days=3.0)
    d["schedule"] = {"design": "fixed", "sequence": "AB", "blocks": 2, "period_days": 3, "run_in_days": 4}
    diag = design_diagnostics(protocol_from_dict(d))
    assert diag["nominal_effect"] == pytest.approx(1.0) and abs(diag["realised_share"]) < 0.5
    assert diag["verdict"] == DESIGN_CANNOT_SHOW
    assert any("WARNING the design cannot show this effect" in line for line in describe(diag))
    truth = {"nominal": 1.0, "realised": -0.04}
    assert verdict({"p_value": 0.6, "estimate": 0.1}, truth) == DESIGN_CANNOT_SHOW
    assert verdict({"p_value": 0.6, "estimate": 0.1}, {"nominal": 0.0, "realised": 0.0}) == "correctly null"
    # long periods realise the whole effect
    d["schedule"]["period_days"] = 30
    long = design_diagnostics(protocol_from_dict(d))
    assert long["realised_share"] > 0.75 and long["verdict"] == "ok"


def test_analytic_t_power_matches_the_classical_figures():
    # two-sample t, α 0.05: 0.5 SD with 20 per arm ≈ 0.34, 1.0 SD with 10 per arm ≈ 0.56
    assert t_power(0.5, 20, 20) == pytest.approx(0.338, abs=0.002)
    assert t_power(1.0, 10, 10) == pytest.approx(0.562, abs=0.002)
    assert t_power(0.0, 10, 10) == pytest.approx(0.05, abs=1e-9)
