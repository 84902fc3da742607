"""Power studies: identical results on 1 or 2 workers and on a Dask cluster; resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import small_protocol_dict

from trialsim.power import PowerStudy, apply_grid_point, parse_grid, replicate_seed, run_power


def _protocol_file(tmp_path):
    d = small_protocol_dict()
    d["patients"]["n"] = 4
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def _study(f, replicates=3, grid=("effect=0,1.0",)):
    return PowerStudy.from_cli(f, replicates=replicates, grid=list(grid), methods="oracle", seed=5)


def test_grid_changes_the_protocol_and_seeds_do_not_depend_on_order(tmp_path):
    base = small_protocol_dict()
    d = apply_grid_point(base, {"effect": 0.5, "patients": 7, "blocks": 3})
    assert d["treatments"][1]["effect"] == pytest.approx(base["treatments"][0]["effect"] + 0.5)
    assert d["patients"]["n"] == 7 and d["schedule"]["blocks"] == 3
    assert parse_grid(["effect=0,0.25", "blocks=2,4"]) == {"effect": [0, 0.25], "blocks": [2, 4]}
    assert replicate_seed(1, {"a": 1, "b": 2}, 3) == replicate_seed(1, {"b": 2, "a": 1}, 3)
    assert replicate_seed(1, {"a": 1}, 3) != replicate_seed(1, {"a": 1}, 4)


def test_workers_and_dask_cluster_give_identical_replicates(tmp_path):
    f = _protocol_file(tmp_path)
    run_power(_study(f), tmp_path / "w1", workers=1, progress=False)
    run_power(_study(f), tmp_path / "w2", workers=2, progress=False)
    one = (tmp_path / "w1" / "replicates.csv").read_bytes()
    assert one == (tmp_path / "w2" / "replicates.csv").read_bytes()
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_power(_study(f), tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False)
        # `trialsim simulate --scheduler` renders patients on the same cluster, byte for byte
        from trialsim.protocol import protocol_from_dict
        from trialsim.simulate import simulate

        d = small_protocol_dict()
        d["rendering"] = {"renderer": "procedural", "image_size": 64}
        proto = protocol_from_dict(d)
        simulate(proto, tmp_path / "sim_local", workers=1)
        simulate(proto, tmp_path / "sim_dask", scheduler=cluster.scheduler_address)
    assert one == (tmp_path / "dask" / "replicates.csv").read_bytes()
    local = {
        p.relative_to(tmp_path / "sim_local"): p.read_bytes()
        for p in (tmp_path / "sim_local").rglob("*")
        if p.is_file()
    }
    remote = {
        p.relative_to(tmp_path / "sim_dask"): p.read_bytes() for p in (tmp_path / "sim_dask").rglob("*") if p.is_file()
    }
    assert any(str(k).endswith(".jpg") for k in local) and local == remote
    rep = pd.read_csv(tmp_path / "w1" / "replicates.csv")
    lmm = rep[rep["test"] == "lmm"]
    assert len(lmm) == 2 * 3 and lmm["error"].isna().all()
    assert set(rep["effect"]) == {0, 1.0}
    summary = pd.read_csv(tmp_path / "w1" / "summary.csv")
    s = summary[summary["test"] == "lmm"].set_index("effect")
    assert s.loc[1.0, "power"] > s.loc[0, "type1_error"] or s.loc[1.0, "power"] == 1.0
    assert (tmp_path / "w1" / "power.html").read_text().count("<table") == 1


def test_failed_replicates_are_counted_not_dropped(tmp_path):
    f = _protocol_file(tmp_path)
    # one block has one cycle: a declared cycles test cannot give a verdict, so every replicate fails clearly
    study = PowerStudy.from_cli(f, replicates=2, grid=["blocks=1,2"], methods="oracle", seed=1, primary_test="cycles")
    summary = run_power(study, tmp_path / "out", workers=1, progress=False)
    lmm = summary[summary["test"] == "lmm"].set_index("blocks")
    assert lmm.loc[1, "failed"] == 2 and lmm.loc[1, "replicates"] == 2
    assert lmm.loc[2, "failed"] == 0
    rep = pd.read_csv(tmp_path / "out" / "replicates.csv")
    assert rep.loc[rep["blocks"] == 1, "error"].str.contains("two cycles").all()


def test_killed_study_resumes_to_the_same_results(tmp_path):
    f = _protocol_file(tmp_path)
    args = [
        sys.executable,
        "-m",
        "trialsim",
        "power",
        str(f),
        "--replicates",
        "6",
        "--grid",
        "effect=0,1.0",
        "--method",
        "oracle",
        "--seed",
        "5",
        "--quiet",
    ]
    full = subprocess.run(args + ["--out", str(tmp_path / "full")], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    part = tmp_path / "part"
    proc = subprocess.Popen(
        args + ["--out", str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    rep = part / "replicates.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if rep.exists() and rep.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = rep.read_text().count("\n")
    full_lines = (tmp_path / "full" / "replicates.csv").read_text().count("\n")
    assert 1 < lines < full_lines  # killed part-way
    again = subprocess.run(args + ["--out", str(part)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert rep.read_bytes() == (tmp_path / "full" / "replicates.csv").read_bytes()


def test_bad_grid_exits_2_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from trialsim.cli import main

    f = _protocol_file(tmp_path)
    for grid in ["effect=abc", "nosuch.field=3", "patients=0"]:
        r = CliRunner().invoke(
            main,
            [
                "power",
                str(f),
                "--replicates",
                "2",
                "--grid",
                grid,
                "--method",
                "oracle",
                "--out",
                str(tmp_path / "study"),
                "--quiet",
            ],
        )
        assert r.exit_code == 2, (grid, r.output)
        assert "--grid" in r.output or "patients.n" in r.output
        assert not (tmp_path / "study").exists()


def test_every_replicate_failing_raises_study_failed_after_writing_replicates(tmp_path):
    from trialsim.errors import StudyFailed

    f = _protocol_file(tmp_path)
    # one block: a declared cycles test cannot give a verdict, so every replicate fails
    study = PowerStudy.from_cli(f, replicates=2, grid=["blocks=1"], methods="oracle", seed=1, primary_test="cycles")
    with pytest.raises(StudyFailed) as err:
        run_power(study, tmp_path / "out", workers=1, progress=False)
    assert "all 2 replicates failed" in str(err.value) and "two cycles" in str(err.value)
    rep = pd.read_csv(tmp_path / "out" / "replicates.csv")
    assert len(rep) == 2 and rep["error"].str.contains("two cycles").all()


def test_dask_client_is_closed_when_the_study_fails(tmp_path, monkeypatch):
    import trialsim.power as power
    import trialsim.scaleout as scaleout

    class Client:
        closed = False

        def close(self):
            self.closed = True

    client = Client()
    monkeypatch.setattr(scaleout, "connect", lambda address: client)

    def broken(fn, args, client):
        raise RuntimeError("scheduler went away")
        yield  # a generator, like the real one

    monkeypatch.setattr(power, "run_on_cluster", broken)
    with pytest.raises(RuntimeError, match="went away"):
        run_power(_study(_protocol_file(tmp_path)), tmp_path / "out", scheduler="tcp://x:1", progress=False)
    assert client.closed


def test_protocol_name_is_escaped_in_power_html(tmp_path):
    d = small_protocol_dict()
    d["patients"]["n"] = 4
    d["name"] = "<script>alert(1)</script>"
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(d))
    study = PowerStudy.from_cli(f, replicates=2, grid=["effect=0,1.0"], methods="oracle", seed=2)
    run_power(study, tmp_path / "out", workers=1, progress=False)
    html = (tmp_path / "out" / "power.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<table") == 1 and "data:image/png;base64," in html


def test_power_rows_on_the_severity_scale_and_one_per_patient_for_the_primary_test(tmp_path):
    f = _protocol_file(tmp_path)
    run_power(_study(f, replicates=2, grid=("effect=1.0",)), tmp_path / "s", progress=False)
    rep = pd.read_csv(tmp_path / "s" / "replicates.csv")
    sev = rep[rep["test"] == "lmm:severity"]
    # oracle: PC1 is the latent severity, so the severity-scale estimate is the PC1 estimate
    lmm = rep[rep["test"] == "lmm"].set_index("replicate")
    assert len(sev) == 2
    assert sev.set_index("replicate")["estimate"].to_numpy() == pytest.approx(lmm["estimate_raw"].to_numpy())
    assert sev["estimate_raw"].to_numpy() == pytest.approx(1.0)  # relative efficiency of the oracle
    per_patient = rep[rep["test"] == "primary:cycles (per patient)"]
    assert len(per_patient) == 2 * 4 and per_patient["known"].notna().all()
    # the effect on these patients: the mean of the patients' gls estimates, beside the realised effect
    sample = rep[rep["test"] == "sample:severity"].set_index("replicate")
    assert len(sample) == 2
    # the oracle reads the latent severity: its sample-average effect is close to the realised one
    assert sample["estimate"].to_numpy() == pytest.approx(sample["known"].to_numpy(), abs=0.1)
    assert (sample["ci_low"] < sample["estimate"]).all() and (sample["estimate"] < sample["ci_high"]).all()
    assert sample["known"].to_numpy() == pytest.approx(sev.set_index("replicate")["known"].to_numpy())
    summary = pd.read_csv(tmp_path / "s" / "summary.csv").set_index("test")
    assert summary.loc["primary:cycles (per patient)", "replicates"] == 8


def test_summary_gives_the_median_error_beside_a_mean_that_one_wild_ratio_swamps():
    from trialsim.power_table import summarise

    est = [-0.2, -0.25, -0.3, 25.0]  # the last: a slope near zero made the ratio explode
    rep = pd.DataFrame(
        {
            "grid_point": "effect=-0.3",
            "method": "ae",
            "test": "sample:severity",
            "estimate": est,
            "ci_low": [e - 0.1 for e in est],
            "ci_high": [e + 0.1 for e in est],
            "p_value": 0.01,
            "known": -0.25,
            "error": "",
        }
    )
    row = summarise(rep, {"effect": [-0.3]}).iloc[0]
    assert row["bias"] == pytest.approx((0.05 + 0 - 0.05 + 25.25) / 4)
    assert row["bias_median"] == pytest.approx(0.025)
    assert row["coverage"] == pytest.approx(0.75)  # all but the wild one cover -0.25
    assert row["note"] == ""  # an effect was put in: no note on what a rejection means


def test_sample_average_rows_at_effect_zero_say_what_a_rejection_means():
    from trialsim.power_table import SAMPLE_NULL_NOTE, summarise

    rep = pd.DataFrame(
        {
            "grid_point": ["effect=0"] * 2,
            "method": "oracle",
            "test": ["sample:severity", "lmm"],
            "estimate": 0.01,
            "ci_low": -0.1,
            "ci_high": 0.1,
            "p_value": 0.5,
            "known": 0.0,
            "error": "",
        }
    )
    s = summarise(rep, {"effect": [0.0]}).set_index("test")
    assert s.loc["sample:severity", "note"] == SAMPLE_NULL_NOTE
    assert s.loc["lmm", "note"] == ""
