"""Protocol files: validation with field names, ready protocols load, resolution is complete."""

from __future__ import annotations

import pytest
import yaml
from conftest import PROTOCOLS, small_protocol_dict

from trialsim.errors import BadInput
from trialsim.protocol import load_protocol, protocol_from_dict


@pytest.mark.parametrize("name", ["anchor_sim_acne", "hia_pilot", "null_effect", "demo"])
def test_ready_protocols_load_and_resolve(name):
    p = load_protocol(PROTOCOLS / f"{name}.yaml")
    d = yaml.safe_load(p.to_yaml())
    assert d["seed"] == p.seed
    assert d["observation"]["days"] == p.n_days > 0
    # the resolved form is itself a valid protocol that resolves to the same text
    assert protocol_from_dict(d).to_yaml() == p.to_yaml()


def test_ready_protocol_designs_match_their_descriptions():
    anchor = load_protocol(PROTOCOLS / "anchor_sim_acne.yaml")
    assert (anchor.patients.n, anchor.n_days, anchor.schedule.run_in_days, anchor.schedule.period_days) == (
        10,
        140,
        28,
        28,
    )
    hia = load_protocol(PROTOCOLS / "hia_pilot.yaml")
    assert (hia.patients.n, hia.n_days, hia.observation.photos_per_day, hia.schedule.blocks) == (5, 16, 3, 4)
    null = load_protocol(PROTOCOLS / "null_effect.yaml")
    effects = {t.label: t.effect for t in null.treatments}
    assert effects["Cream"] == effects["Antibiotics"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["schedule"].update(period_days=0), "schedule.period_days"),
        (lambda d: d["schedule"].update(period_days=-3), "schedule.period_days"),
        (lambda d: d["treatments"][0].update(onset_days=0), "treatments.0.onset_days"),
        (lambda d: d["patients"]["baseline_severity"].update(mean=3.5), "patients.baseline_severity.mean"),
        (lambda d: d["schedule"].update(sequence="AXB"), "schedule.sequence"),
        (lambda d: d["treatments"][1].update(label="A"), "treatments"),
        (lambda d: d.pop("treatments"), "treatments"),
        (lambda d: d["dynamics"].update(ar1_rho=1.0), "dynamics.ar1_rho"),
        (lambda d: d["treatments"][0].update(wash_out_days=3), "treatments.0.wash_out_days"),
    ],
)
def test_invalid_protocols_name_the_field(mutate, field):
    d = small_protocol_dict()
    mutate(d)
    with pytest.raises(BadInput) as exc:
        protocol_from_dict(d, source="my.yaml")
    msg = str(exc.value)
    assert "my.yaml" in msg
    assert field in msg or field.split(".")[-1] in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\ntreatments: [\n  - label: A\n")
    with pytest.raises(BadInput) as exc:
        load_protocol(f)
    assert "bad.yaml" in str(exc.value) and "line" in str(exc.value)


def test_seed_argument_replaces_file_seed():
    p = load_protocol(PROTOCOLS / "demo.yaml", seed=999)
    assert p.seed == 999


def test_patient_ids_and_a_disagreeing_n_are_refused_naming_both():
    with pytest.raises(BadInput, match="n = 5 but ids lists 2"):
        protocol_from_dict(small_protocol_dict(patients={"n": 5, "ids": ["a", "b"]}))
    p = protocol_from_dict(small_protocol_dict(patients={"ids": ["a", "b"]}))
    assert p.patients.n == 2 and p.patients.patient_ids == ["a", "b"]
    # the resolved form (n and ids both written) loads again
    assert protocol_from_dict(yaml.safe_load(p.to_yaml())).patients.patient_ids == ["a", "b"]
    assert protocol_from_dict(small_protocol_dict(patients={"n": 2, "ids": ["a", "b"]})).patients.n == 2
