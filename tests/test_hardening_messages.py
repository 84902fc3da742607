"""Messages for bad input: the file, row and field the user wrote, values as typed, no numpy reprs (exit 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import small_protocol_dict

from analysis.dataset import load_dataset
from analysis.errors import AnalysisInputError, cell_text
from trialsim.cli import main
from trialsim.errors import BadInput, validated
from trialsim.simulate import SimulateOptions


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("day", "100000000", "'100000000': past the longest study"),
        ("day", "99999999999999999999", "'99999999999999999999': past the longest study"),
        ("day", "nan", "'nan': not a number"),
        ("day", None, "an empty cell: not a number"),
        ("day", "inf", "'inf': not a finite number"),
        ("day", "1.5", "'1.5': not a whole number"),
        ("block", "-3", "'-3': not a whole number"),
        ("AcneSeverity", "nan", "'nan': not a number"),
        ("AcneSeverity", "3.5", "'3.5': outside the scale"),
        ("date", "2018-13-45", "'2018-13-45': not a calendar date"),
        ("patient_id", None, "an empty cell: every row needs one"),
        ("treatment", " ", "' ': every row needs one"),
        ("day", "2", "'2': this patient has this day already"),
    ],
)
def test_a_bad_csv_cell_is_named_by_file_row_and_column(tmp_path, anchor_csv, column, value, says):
    df = pd.read_csv(anchor_csv, dtype=str)
    df.loc[2, column] = value  # the fourth line of the file: the header is row 1
    df.to_csv(tmp_path / "a.csv", index=False)
    r = run("simulate", "--from-csv", tmp_path / "a.csv", "--out", tmp_path / "ds", "--renderer", "none")
    assert r.exit_code == 2, r.output
    assert f"in {tmp_path / 'a.csv'} field '{column}': row 4 holds {says}" in r.output, r.output
    assert "np." not in r.output and "schedule." not in r.output and "<from-csv>" not in r.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(("value", "says"), [("nan", "'nan' is not a number"), ("-inf", "'-inf' is not a finite")])
def test_a_number_option_of_nan_is_called_not_a_number(tmp_path, value, says):
    proto = tmp_path / "p.yaml"
    proto.write_text(yaml.safe_dump(small_protocol_dict()))
    r = run("simulate", proto, "--out", tmp_path / "ds", "--renderer", "none", "--nuisance", value)
    assert r.exit_code == 2 and says in r.output and "range" not in r.output, r.output
    assert not (tmp_path / "ds").exists()


def test_validated_calls_nan_not_a_number_rather_than_out_of_range():
    with pytest.raises(BadInput) as err:
        validated(SimulateOptions, {"out": "x", "nuisance": float("nan")})
    assert err.value.field == "--nuisance" and "not a number (got nan)" in str(err.value)
    assert "less than" not in str(err.value)


def test_cells_read_as_typed():
    assert cell_text(np.float64(1.5)) == "1.5" and cell_text(np.int64(7)) == "7"
    assert cell_text(np.float64("nan")) == "an empty cell" and cell_text(None) == "an empty cell"
    assert cell_text("abc") == "'abc'"


def test_an_empty_timestamp_is_named_without_a_numpy_repr(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (32, 32), (180, 140, 120)).save(tmp_path / f"images/{i}.jpg")
        rows.append({"image": f"images/{i}.jpg", "patient_id": "1", "timestamp": None, "treatment": "AB"[i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(AnalysisInputError) as err:
        load_dataset(tmp_path)
    assert err.value.field == "timestamp" and "an empty cell (row 2)" in str(err.value)
    assert "np." not in str(err.value)


def test_a_fractional_finetune_grade_is_shown_as_typed(tmp_path):
    from trialsim.finetune.photos import _from_manifest

    pd.DataFrame({"image": ["a.jpg", "b.jpg"], "grade": [1, 1.5]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(BadInput) as err:
        _from_manifest(tmp_path, "grade")
    assert "row 3 has grade 1.5" in str(err.value) and "np." not in str(err.value)
