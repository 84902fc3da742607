"""``analysis.contract`` keeps its own copy of the dataset names (it never imports trialsim): each must agree
with the simulator's definition, and with what the simulator actually writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import small_protocol_dict

import analysis.contract as contract
import trialsim.dataset as dataset
import trialsim.power as power
from trialsim.protocol import BASELINE_LABEL, protocol_from_dict
from trialsim.simulate import simulate

# every public name of analysis.contract → the simulator's own definition (None: analysis-only)
SIMULATOR = {
    "MANIFEST": dataset.MANIFEST,
    "LESIONS": dataset.LESIONS,
    "SCHEDULE": dataset.SCHEDULE,
    "PROTOCOL": dataset.PROTOCOL,
    "BASELINE_LABEL": BASELINE_LABEL,
    "LESION_COLUMNS": tuple(dataset.LESION_COLUMNS),
    "SCHEDULE_COLUMNS": tuple(dataset.SCHEDULE_COLUMNS),
    "METHODS": tuple(power.METHODS),
    "MANIFEST_REQUIRED": None,  # a subset, checked below
    "TRUTH_COLUMNS": None,  # a subset, checked below
    "IMAGE_METHODS": None,  # a subset of METHODS, checked below
    "ALPHA": None,  # the analysis's default significance level
    "NEEDS_READER": None,  # one of METHODS, checked below
}


def test_the_reader_method_is_a_method_power_studies_run_only_with_a_reader():
    assert contract.NEEDS_READER in contract.METHODS and contract.NEEDS_READER in contract.IMAGE_METHODS
    assert tuple(power.POWER_METHODS) == tuple(contract.METHODS)
    proto = Path(__file__).resolve().parent.parent / "protocols" / "hia_pilot.yaml"
    every = power.PowerStudy.from_cli(proto, replicates=1, grid=[], methods="all")
    assert contract.NEEDS_READER not in every.methods and set(every.methods) == set(contract.METHODS) - {
        contract.NEEDS_READER
    }


def test_every_contract_name_has_a_check_here():
    public = {n for n in vars(contract) if n.isupper() and not n.startswith("_")}
    assert public == set(SIMULATOR), "a name was added to analysis.contract: add its simulator counterpart here"


@pytest.mark.parametrize("name", sorted(n for n, v in SIMULATOR.items() if v is not None))
def test_contract_copy_equals_the_simulators_definition(name):
    value = getattr(contract, name)
    assert (tuple(value) if isinstance(value, (list, tuple)) else value) == SIMULATOR[name]


def test_required_and_truth_columns_are_manifest_columns_the_simulator_writes():
    assert set(contract.MANIFEST_REQUIRED) <= set(dataset.MANIFEST_COLUMNS)
    assert set(contract.TRUTH_COLUMNS) <= set(dataset.MANIFEST_COLUMNS)
    assert set(contract.IMAGE_METHODS) <= set(contract.METHODS)
    assert 0 < contract.ALPHA < 1


def test_the_written_dataset_folder_uses_the_contract_names(tmp_path):
    out = tmp_path / "ds"
    simulate(protocol_from_dict(small_protocol_dict()), out, renderer="procedural")
    manifest = pd.read_csv(out / contract.MANIFEST)
    assert set(contract.MANIFEST_REQUIRED) | set(contract.TRUTH_COLUMNS) <= set(manifest.columns)
    assert tuple(pd.read_csv(out / contract.LESIONS).columns) == contract.LESION_COLUMNS
    schedule = pd.read_csv(out / contract.SCHEDULE, index_col=0)
    assert tuple(schedule.columns) == contract.SCHEDULE_COLUMNS
    assert contract.BASELINE_LABEL in set(manifest["treatment"]) and contract.BASELINE_LABEL in set(
        schedule["treatment"]
    )
    assert yaml.safe_load((out / contract.PROTOCOL).read_text())["seed"] == small_protocol_dict()["seed"]
