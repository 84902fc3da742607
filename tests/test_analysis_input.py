"""Bad dataset and results files are refused with the file and field named (exit 2), before any analysis."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from analysis.dataset import load_dataset
from analysis.errors import AnalysisInputError
from trialsim.cli import main


def _folder(root, rows: int = 8):
    """A minimal real-photo folder: two patients, two treatments, grey photos."""
    (root / "images").mkdir(parents=True)
    recs = []
    for i in range(rows):
        name = f"images/{i}.jpg"
        Image.new("RGB", (32, 32), (180, 140, 120)).save(root / name)
        recs.append({"image": name, "patient_id": str(i % 2), "day": i // 2 + 1, "treatment": "AB"[(i // 2) % 2]})
    pd.DataFrame(recs).to_csv(root / "manifest.csv", index=False)
    return root


def test_a_protocol_effect_that_is_not_a_number_names_the_protocol_and_field(tmp_path):
    root = _folder(tmp_path / "ds")
    (root / "protocol.yaml").write_text("treatments:\n  - {label: A, effect: 0}\n  - {label: B, effect: banana}\n")
    with pytest.raises(AnalysisInputError) as err:
        load_dataset(root)
    assert err.value.field == "treatments.effect"
    assert err.value.file.endswith("protocol.yaml")
    assert "banana" in str(err.value)


def test_a_day_beyond_a_hundred_years_is_bad_input_not_an_overflow(tmp_path):
    root = _folder(tmp_path / "ds")
    m = pd.read_csv(root / "manifest.csv", dtype=str)
    m.loc[3, "day"] = "99999999999999999999"
    m.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(AnalysisInputError, match="row 5") as err:
        load_dataset(root)
    assert err.value.field == "day"


def test_a_photo_listed_twice_is_refused_with_both_rows(tmp_path):
    root = _folder(tmp_path / "ds")
    m = pd.read_csv(root / "manifest.csv")
    pd.concat([m, m]).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(AnalysisInputError, match=r"rows 2 and 10") as err:
        load_dataset(root)
    assert err.value.field == "image"
    # the unduplicated folder loads
    m.to_csv(root / "manifest.csv", index=False)
    assert len(load_dataset(root).manifest) == 8


def test_report_on_an_empty_results_file_exits_2_naming_population(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({}))
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "population" in res.output
    assert not (tmp_path / "report.html").exists()
