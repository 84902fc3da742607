"""Command line: exit codes, messages naming file and field, nothing half-written; property-based."""

from __future__ import annotations

import string

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import small_protocol_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialsim.cli import main


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_simulate_none_writes_the_dataset_folder(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(small_protocol_dict()))
    r = run(["simulate", f, "--out", tmp_path / "ds", "--renderer", "none", "--seed", 5, "--quiet"])
    assert r.exit_code == 0, r.output
    for name in ["manifest.csv", "schedule.csv", "protocol.yaml", "lesions.csv"]:
        assert (tmp_path / "ds" / name).exists()
    assert yaml.safe_load((tmp_path / "ds" / "protocol.yaml").read_text())["seed"] == 5
    man = pd.read_csv(tmp_path / "ds" / "manifest.csv")
    assert man["image"].str.endswith(".jpg").all()
    assert not any((tmp_path / "ds").rglob("*.jpg"))  # renderer none: names only
    again = run(["simulate", f, "--out", tmp_path / "ds", "--renderer", "none", "--quiet"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_bad_yaml_exits_2_without_traceback_or_output(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("treatments: [\n")
    r = run(["simulate", f, "--out", tmp_path / "ds", "--renderer", "none"])
    assert r.exit_code == 2
    assert "broken.yaml" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ds").exists()


def test_unknown_treatment_in_sequence_names_field_and_allowed(tmp_path):
    d = small_protocol_dict()
    d["schedule"]["sequence"] = "ABC"
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(d))
    r = run(["simulate", f, "--out", tmp_path / "ds", "--renderer", "none"])
    assert r.exit_code == 2
    assert "p.yaml" in r.output and "sequence" in r.output and "A=A" in r.output


def test_from_csv_bad_columns_and_values(tmp_path, anchor_csv):
    a = pd.read_csv(anchor_csv, index_col=0)
    f = tmp_path / "nocol.csv"
    a.drop(columns=["AcneSeverity"]).to_csv(f)
    r = run(["simulate", "--from-csv", f, "--out", tmp_path / "o1"])
    assert r.exit_code == 2 and "nocol.csv" in r.output and "AcneSeverity" in r.output
    b = a.astype({"AcneSeverity": object})
    b.loc[5, "AcneSeverity"] = "high"
    f2 = tmp_path / "text.csv"
    b.to_csv(f2)
    r = run(["simulate", "--from-csv", f2, "--out", tmp_path / "o2"])
    assert r.exit_code == 2 and "text.csv" in r.output and "'high'" in r.output
    c = a.copy()
    c.loc[7, "AcneSeverity"] = 4.2
    f3 = tmp_path / "range.csv"
    c.to_csv(f3)
    r = run(["simulate", "--from-csv", f3, "--out", tmp_path / "o3"])
    assert r.exit_code == 2 and "[0, 3]" in r.output
    assert not any((tmp_path / n).exists() for n in ["o1", "o2", "o3"])


def test_from_csv_anchor_loads_as_is(tmp_path, anchor_csv):
    r = run(["simulate", "--from-csv", anchor_csv, "--out", tmp_path / "ds", "--renderer", "none", "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "ds" / "manifest.csv")) == 1400


# --- property-based: random and malformed protocols never crash -------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 50),
    st.floats(-5, 50),
    st.just(float("nan")),
    st.text(string.ascii_letters + " :-[]{}", max_size=6),
)


@st.composite
def protocols(draw):
    d = small_protocol_dict()
    d["patients"]["n"] = draw(st.integers(1, 3))
    d["schedule"]["period_days"] = draw(st.integers(1, 4))
    d["schedule"]["run_in_days"] = draw(st.integers(0, 3))
    d["schedule"]["blocks"] = draw(st.integers(1, 2))
    d["schedule"]["design"] = draw(st.sampled_from(["fixed", "randomized_blocks"]))
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from(["patients", "schedule", "dynamics", "observation", "treatments", "top"]))
        key = draw(
            st.sampled_from(
                [
                    "n",
                    "period_days",
                    "sequence",
                    "ar1_rho",
                    "sd_obs",
                    "effect",
                    "label",
                    "onset_days",
                    "photos_per_day",
                    "missing_photo_prob",
                    "seed",
                    "bogus",
                    "floor",
                    "ceiling",
                    "blocks",
                    "design",
                ]
            )
        )
        value = draw(_scalars)
        if section == "top":
            d[key] = value
        elif section == "treatments":
            d["treatments"][draw(st.integers(0, 1))][key] = value
        else:
            d.setdefault(section, {})[key] = value
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(protocols())
def test_random_protocols_exit_0_or_2_never_crash(tmp_path_factory, d):
    tmp = tmp_path_factory.mktemp("p")
    f = tmp / "p.yaml"
    f.write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(main, ["simulate", str(f), "--out", str(tmp / "ds"), "--renderer", "none", "--quiet"])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 2), r.output
    if r.exit_code == 2:
        assert "p.yaml" in r.output and "Traceback" not in r.output
        assert not (tmp / "ds").exists()
    else:
        assert (tmp / "ds" / "manifest.csv").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_garbage_files_exit_2(tmp_path_factory, text):
    tmp = tmp_path_factory.mktemp("g")
    f = tmp / "g.yaml"
    f.write_text(text, encoding="utf-8")
    r = CliRunner().invoke(main, ["simulate", str(f), "--out", str(tmp / "ds"), "--renderer", "none", "--quiet"])
    assert r.exit_code == 2, (text, r.output)
    assert "g.yaml" in r.output


def _protocol_file(tmp_path, **overrides):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(small_protocol_dict(**overrides)))
    return f


def test_sdxl_options_with_another_renderer_exit_2_naming_them(tmp_path):
    f = _protocol_file(tmp_path)
    r = run(["simulate", f, "--out", tmp_path / "ds", "--renderer", "procedural", "--sdxl-batch-size", 4, "--vae", "x"])
    assert r.exit_code == 2
    assert "--sdxl-batch-size" in r.output and "--vae" in r.output and "--renderer sdxl" in r.output
    assert not (tmp_path / "ds").exists()


def test_sdxl_options_with_the_procedural_renderer_are_refused_by_the_library():
    from trialsim.errors import BadInput
    from trialsim.protocol import protocol_from_dict
    from trialsim.render.sdxl import SDXLOptions
    from trialsim.simulate import make_renderer

    proto = protocol_from_dict(small_protocol_dict())
    with pytest.raises(BadInput, match="--sdxl-mode"):
        make_renderer(proto, "procedural", SDXLOptions(mode="anchor"))
    assert make_renderer(proto, "procedural", SDXLOptions()).name == "procedural"  # nothing set: nothing ignored


def test_simulate_options_name_the_option_on_bad_values(tmp_path):
    from trialsim.errors import BadInput, validated
    from trialsim.simulate import SimulateOptions

    with pytest.raises(BadInput, match="--workers"):
        validated(SimulateOptions, {"out": tmp_path, "workers": 0})
    with pytest.raises(BadInput, match="--view"):
        validated(SimulateOptions, {"out": tmp_path, "view": "back"})


def test_a_power_study_whose_replicates_all_failed_exits_1_with_its_message(tmp_path, monkeypatch):
    import trialsim.power as power
    from trialsim.errors import StudyFailed

    def fail(*args, **kwargs):
        raise StudyFailed("all 2 replicates failed; first: ValueError: singular matrix")

    monkeypatch.setattr(power, "run_power", fail)
    f = _protocol_file(tmp_path)
    r = CliRunner().invoke(main, ["power", str(f), "--replicates", "2", "--out", str(tmp_path / "pw"), "--quiet"])
    assert r.exit_code == 1
    assert "all 2 replicates failed; first: ValueError: singular matrix" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.output


def test_gallery_checks_skin_types_naming_the_option_and_writes_the_grid(tmp_path):
    bad = run(["gallery", "--fitzpatrick", "2,9", "--out", tmp_path / "g.png"])
    assert bad.exit_code == 2 and "--fitzpatrick" in bad.output and not (tmp_path / "g.png").exists()
    ok = run(["gallery", "--fitzpatrick", "1,5", "--image-size", 48, "--out", tmp_path / "g.png"])
    assert ok.exit_code == 0, ok.output
    import cv2

    grid = cv2.imread(str(tmp_path / "g.png"))
    assert grid is not None and grid.shape[0] > 2 * 48  # two rows of tiles with labels
