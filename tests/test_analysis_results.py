"""The typed results.json: run writes nothing, write/read round-trips the contract's keys, old files load."""

from __future__ import annotations

import json
import math

import pytest
from conftest import small_protocol_dict

from analysis.errors import AnalysisInputError
from analysis.pipeline import AnalysisConfig, run, write
from analysis.results import SCHEMA_VERSION, PopulationEntry, Results, detected, verdict
from trialsim.protocol import protocol_from_dict
from trialsim.simulate import simulate


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    d = small_protocol_dict(patients={"n": 4})
    d["rendering"] = dict(d["rendering"], renderer="none")
    simulate(protocol_from_dict(d), root / "dataset", renderer="none")
    before = sorted(p.name for p in (root / "dataset").rglob("*"))
    results = run(root / "dataset", AnalysisConfig(method="oracle", n_perm=100))
    # run is pure: the dataset is untouched and nothing else appears
    assert sorted(p.name for p in (root / "dataset").rglob("*")) == before
    assert sorted(p.name for p in root.iterdir()) == ["dataset"]
    return root, results


def test_run_writes_nothing_and_returns_typed_results(oracle_run):
    _, results = oracle_run
    assert isinstance(results.population[0], PopulationEntry)
    assert results.population[0].contrast == "B − A" and results.population[0].df == 3
    assert results.truth and results.truth[0].latent_model.resid_sd > 0
    tests = {p.test for p in results.patients}
    assert tests == {"cycles", "gls", "welch", "ar1", "permutation", "randomization"}


def test_write_then_read_round_trips_every_key(oracle_run):
    root, results = oracle_run
    path = write(results, root / "out", report=False)
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert next(iter(on_disk)) == "schema_version" and on_disk["schema_version"] == SCHEMA_VERSION
    assert (root / "out" / "embeddings.csv").is_file() and not (root / "out" / "report.html").exists()
    again = Results.from_json(path)
    assert again.to_dict() == on_disk
    assert Results.from_json(path.read_text(encoding="utf-8")).to_dict() == on_disk
    # keys an entry lacks stay absent: min_p only on the randomisation test
    rand = [p for p in on_disk["patients"] if p["test"] == "randomization"]
    welch = [p for p in on_disk["patients"] if p["test"] == "welch"]
    assert all("min_p" in p for p in rand) and not any("min_p" in p for p in welch)


def test_a_file_written_before_schema_version_still_loads(oracle_run):
    root, results = oracle_run
    old = results.to_dict()
    del old["schema_version"]
    loaded = Results.from_json(json.dumps(old))
    assert loaded.schema_version == SCHEMA_VERSION
    assert {k: v for k, v in loaded.to_dict().items() if k != "schema_version"} == old


def test_non_finite_numbers_become_null_and_unknown_keys_are_kept():
    r = Results.model_validate(
        {"population": [{"method": "ae", "contrast": "B − A", "estimate": math.nan, "p_value": 0.2, "extra": 7}]}
    )
    entry = r.to_dict()["population"][0]
    assert entry == {"method": "ae", "contrast": "B − A", "estimate": None, "p_value": 0.2, "extra": 7}
    assert r.population[0].get("extra") == 7


def test_alpha_is_a_parameter_of_the_verdict_rule():
    entry = {"p_value": 0.03, "estimate_std": 1.0}
    assert detected(0.03) and not detected(0.03, alpha=0.01) and not detected(None)
    assert verdict(entry, None) == "detected"
    assert verdict(entry, None, alpha=0.01) == "not detected"
    assert verdict(entry, {"realised": 0.5}, alpha=0.01) == "missed"


def test_report_names_the_field_of_a_malformed_results_json(tmp_path):
    from analysis.report import build_report

    (tmp_path / "results.json").write_text(json.dumps({"population": "none"}))
    with pytest.raises(AnalysisInputError) as err:
        build_report(tmp_path)
    assert "results.json" in str(err.value) and "population" in str(err.value)
