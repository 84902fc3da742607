"""analysis.pipeline end to end on simulated datasets (Contract 2)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import small_protocol_dict

from analysis.pipeline import AnalysisConfig, analyze
from trialsim.protocol import protocol_from_dict
from trialsim.simulate import simulate


def _small(tmp_path, renderer: str, **kw):
    d = small_protocol_dict(**kw)
    d["rendering"] = dict(d["rendering"], renderer=renderer)
    ds = tmp_path / f"ds_{renderer}"
    simulate(protocol_from_dict(d), ds, renderer=renderer)
    return ds


def test_oracle_on_truth_only_dataset_writes_contract_2_and_recovers_the_sign(tmp_path):
    ds = _small(tmp_path, "none", patients={"n": 4, "baseline_severity": {"mean": 2.5, "sd": 0.2}})
    res = analyze(ds, tmp_path / "out", AnalysisConfig(method="oracle", n_perm=200))
    pop = res["population"][0]
    assert pop["contrast"] == "B − A" and pop["df"] == 3
    truth = res["truth"][0]
    assert truth["nominal"] == pytest.approx(-1.0)
    assert truth["realised"] < -0.5  # B is the better arm
    assert pop["estimate"] == pytest.approx(truth["latent_model"]["estimate"], abs=1e-9)
    assert abs(pop["estimate_severity"] - truth["realised"]) < 0.3
    assert res["embedding"]["spearman_pc1_latent"] == pytest.approx(1.0)
    assert res["embedding"]["sign_aligned"] is True
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for key in (
        "population",
        "patients",
        "embedding",
        "truth",
        "formulas",
        "timings_s",
        "config",
        "versions",
        "seed",
        "protocol",
        "n_images",
        "n_patients",
        "skipped_images",
    ):
        assert key in saved
    tests = {p["test"] for p in saved["patients"]}
    # gls too: the folder's protocol states the noise of the daily errors
    assert tests == {"cycles", "gls", "welch", "ar1", "permutation", "randomization"}
    assert saved["formulas"]["per_patient"]["stated_noise"]["source"] == "protocol.yaml dynamics"
    primary = {p["test"] for p in saved["patients"] if p["primary"]}
    assert primary == {"cycles"} and saved["primary_test"] == "cycles"
    assert {v["n_patients_tested"] for v in saved["verdicts"]} == {saved["n_patients"]}
    assert all("known_realised" in p for p in saved["patients"])


def test_method_all_reports_three_methods_side_by_side_and_is_deterministic(tmp_path):
    ds = _small(tmp_path, "procedural")
    cfg = AnalysisConfig(method="all", image_size=64, epochs=2, n_perm=100)
    a = analyze(ds, tmp_path / "a", cfg)
    b = analyze(ds, tmp_path / "b", cfg)
    assert [p["method"] for p in a["population"]] == ["ae", "pixel-pca", "oracle"]
    assert set(a["embedding"]["by_method"]) == {"ae", "pixel-pca", "oracle"}
    assert [p["estimate"] for p in a["population"]] == [p["estimate"] for p in b["population"]]
    emb = pd.read_csv(tmp_path / "a" / "embeddings.csv")
    assert set(emb["method"]) == {"ae", "pixel-pca", "oracle"}
    assert (tmp_path / "a" / "reconstructions.npz").exists()


def test_unknown_method_is_bad_input(tmp_path):
    from analysis.errors import AnalysisInputError

    ds = _small(tmp_path, "none")
    with pytest.raises(AnalysisInputError, match="method"):
        analyze(ds, tmp_path / "out", AnalysisConfig(method="vae"))
