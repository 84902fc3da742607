"""The realism test (``analysis.realism``, ``trialsim realism``) on small synthetic photo folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis.errors import AnalysisInputError
from analysis.realism import compare
from analysis.realism.c2st import bootstrap_auc, grouped_folds, roc_auc
from analysis.realism.cnn import cnn_scores
from trialsim.cli import main


def textured(rng, severity: float, size: int = 96) -> np.ndarray:
    """A skin-like photo: pinkish tone, fine grain and ``severity`` × 4 faint red spots (RGB uint8)."""
    base = np.array([200, 160, 140], np.float32) * rng.uniform(0.85, 1.1)
    grain = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0) * 12
    img = base + grain[..., None]
    for _ in range(int(round(4 * severity))):
        x, y = rng.integers(8, size - 8, 2)
        cv2.circle(img, (int(x), int(y)), 3, (215, 120, 115), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth(rng, severity: float, size: int = 96) -> np.ndarray:
    """A clearly different photo: a flat grey-blue gradient with bright dots, no grain."""
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = np.array([90, 110, 170], np.float32) * (0.7 + 0.3 * yy) * np.ones((1, size, 1), np.float32)
    for _ in range(int(round(4 * severity))):
        x, y = rng.integers(8, size - 8, 2)
        cv2.circle(img, (int(x), int(y)), 2, (255, 255, 255), -1)
    return img.astype(np.uint8)


def make_folder(path, make, seed: int, patients: int = 4, per: int = 8) -> None:
    rng = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True)
    rows = []
    for p in range(patients):
        for k in range(per):
            sev = float(rng.uniform(0, 3))
            name = f"images/{p}_{k}.jpg"
            cv2.imwrite(str(path / name), make(rng, sev)[..., ::-1])
            rows.append({"image": name, "patient_id": str(p + 1), "severity_latent": sev, "score": sev / 3})
    pd.DataFrame(rows).to_csv(path / "manifest.csv", index=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    make_folder(root / "a", textured, 1)
    make_folder(root / "b", textured, 2)
    make_folder(root / "c", smooth, 3)
    return root


def test_same_kind_of_photos_cannot_be_told_apart(folders, tmp_path):
    res = compare(folders / "a", folders / "b", tmp_path / "out", cnn=False)
    auc = res["classifiers"][0]["auc"]
    assert 0.25 <= auc <= 0.75, auc
    assert res["classifiers"][0]["ci_low"] <= 0.5 <= res["classifiers"][0]["ci_high"]


def test_a_folder_against_itself_gives_auc_near_half(folders, tmp_path):
    res = compare(folders / "a", folders / "a", tmp_path / "out", cnn=False)
    assert 0.3 <= res["classifiers"][0]["auc"] <= 0.7


def test_clearly_different_photos_are_told_apart_by_both_classifiers(folders, tmp_path):
    res = compare(folders / "a", folders / "c", tmp_path / "out", cnn=False)
    assert res["classifiers"][0]["auc"] >= 0.95
    from analysis.realism.data import load_folder

    a, c = load_folder(folders / "a", 96), load_folder(folders / "c", 96)
    images = np.concatenate([a.images, c.images])
    y = np.r_[np.zeros(len(a.images), int), np.ones(len(c.images), int)]
    groups = np.r_[["r" + g for g in a.groups], ["s" + g for g in c.groups]]
    score = cnn_scores(images, y, grouped_folds(y, groups), crop=64, epochs=4)
    assert bootstrap_auc(y, score, groups, n_boot=50)[0] >= 0.9


def test_rank_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # rounded: many ties
    assert abs(roc_auc(y, s) - roc_auc_score(y, s)) < 1e-12


@pytest.mark.slow
def test_cli_writes_json_html_and_difficulty(folders, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["realism", str(folders / "a"), str(folders / "b"), "--out", str(out), "--real-severity", "score",
               "--no-cnn", "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((out / "realism.json").read_text())
    assert res["headline_auc"] == res["classifiers"][0]["auc"]
    d = res["difficulty"]
    assert set(d["real"]["spearman_per_patient"]) == {"1", "2", "3", "4"}
    assert d["real"]["severity_column"] == "score" and d["sim"]["severity_column"] == "severity_latent"
    assert abs(d["median_gap"] - (d["sim"]["spearman_median"] - d["real"]["spearman_median"])) < 1e-12
    html = (out / "realism.html").read_text()
    assert "data:image/png;base64," in html and "Analysis difficulty" in html
    assert len(pd.read_csv(out / "scores.csv")) == 64


def _corrupt(folder, how: str) -> None:
    m = pd.read_csv(folder / "manifest.csv")
    if how == "column":
        m.drop(columns=["patient_id"]).to_csv(folder / "manifest.csv", index=False)
    elif how == "one patient":
        m.assign(patient_id="1").to_csv(folder / "manifest.csv", index=False)
    elif how == "manifest":
        (folder / "manifest.csv").unlink()
    elif how == "photo":
        (folder / m["image"].iloc[3]).write_bytes(b"not a jpeg")


@pytest.mark.parametrize(
    "how, needle",
    [("column", "patient_id"), ("one patient", "at least two patients"), ("manifest", "manifest.csv"),
     ("photo", "unreadable image"), ("folder", "not found"), ("severity", "expert")],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(folders, tmp_path, how, needle):
    import shutil

    real = tmp_path / "real"
    shutil.copytree(folders / "a", real)
    if how == "folder":
        shutil.rmtree(real)
    elif how != "severity":
        _corrupt(real, how)
    out = tmp_path / "out"
    args = ["realism", str(real), str(folders / "b"), "--out", str(out), "--no-cnn", "--quiet"]
    r = CliRunner().invoke(main, args + (["--real-severity", "expert"] if how == "severity" else []))
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not out.exists()


def test_difficulty_tracks_severity_when_the_photos_show_it(folders, tmp_path):
    from analysis.realism.difficulty import difficulty

    # photos at 192 px, so that a spot is lesion-sized at the scale the skin-patch analysis reads
    make_folder(tmp_path / "a", lambda rng, sev: textured(rng, sev, size=192), 1)
    d = difficulty(str(tmp_path / "a"), "severity_latent")
    assert d["spearman_median"] > 0.5, d
    assert d["n_photos_used"] == d["n_photos"] == 32
    with pytest.raises(AnalysisInputError, match="no_such_column"):
        difficulty(str(folders / "c"), "no_such_column")
