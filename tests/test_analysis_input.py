"""Bad dataset and results files are refused with the file and field named (exit 2), before any analysis."""

from __future__ import annotations

import json
import shutil

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


@pytest.fixture(scope="module")
def analysis_folder(tmp_path_factory):
    """One small oracle analysis (results.json and embeddings.csv); each test breaks a copy of it."""
    import yaml
    from conftest import small_protocol_dict

    root = tmp_path_factory.mktemp("an")
    (root / "p.yaml").write_text(yaml.safe_dump(small_protocol_dict()))
    run = CliRunner().invoke
    assert run(main, ["simulate", str(root / "p.yaml"), "--out", str(root / "ds"), "--renderer", "none"]).exit_code == 0
    res = run(main, ["analyze", str(root / "ds"), "--out", str(root / "an"), "--method", "oracle", "--quiet"])
    assert res.exit_code == 0, res.output
    return root / "an"


def _broken_copy(src, dst, name: str, data: bytes):
    shutil.copytree(src, dst)
    (dst / "report.html").unlink()
    (dst / name).write_bytes(data)
    return dst


def _cut(path, n: int) -> bytes:
    return path.read_bytes()[:n]


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        ("results.json", lambda f: b"not json", "not JSON (Expecting value at line 1, column 1)"),
        ("results.json", lambda f: _cut(f, 200), "not JSON"),
        ("results.json", lambda f: b"[1, 2]", "does not match Contract 2"),
        ("results.json", lambda f: b'{"population": [{"method": "oracle"}]}', "field 'population.0.contrast'"),
        ("embeddings.csv", lambda f: b"", "empty file"),
        ("embeddings.csv", lambda f: b"\xff\xfe\xfa", "unreadable"),
        ("embeddings.csv", lambda f: b"garbage,,\n\x00\x01\n", "field 'image': column missing"),
        ("embeddings.csv", lambda f: _cut(f, len(f.read_text().splitlines()[0]) + 30), "cut short"),
        ("embeddings.csv", lambda f: b"image,patient_id,day,treatment,method,PC1\na,1,1,A,,2\n", "field 'method'"),
        ("embeddings.csv", lambda f: b"image,patient_id,day,treatment,method,PC1\na,1,x,A,m,2\n", "field 'day'"),
        ("embeddings.csv", lambda f: b"image,patient_id,day,treatment,method,PC1\na,1,1,A,m,nan?\n", "'nan?', not a"),
    ],
)
def test_report_on_a_damaged_analysis_file_exits_2_naming_it(analysis_folder, tmp_path, name, damage, says):
    folder = _broken_copy(analysis_folder, tmp_path / "an", name, damage(analysis_folder / name))
    before = sorted(p.name for p in folder.iterdir())
    res = CliRunner().invoke(main, ["report", str(folder)])
    assert res.exit_code == 2, res.output
    assert f"in {folder / name}" in res.output and says in res.output, res.output
    assert "internal error" not in res.output and "np." not in res.output
    assert sorted(p.name for p in folder.iterdir()) == before  # no report, no temporary file


def test_report_reads_the_undamaged_copy(analysis_folder, tmp_path):
    folder = _broken_copy(
        analysis_folder, tmp_path / "an", "embeddings.csv", (analysis_folder / "embeddings.csv").read_bytes()
    )
    res = CliRunner().invoke(main, ["report", str(folder)])
    assert res.exit_code == 0, res.output
    assert (folder / "report.html").stat().st_size > 1000
