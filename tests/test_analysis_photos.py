"""Real-photo path: any size, EXIF rotation, greyscale/RGBA, several photos a day, a corrupt file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from analysis.dataset import load_dataset, load_images
from analysis.errors import AnalysisInputError
from analysis.pipeline import AnalysisConfig, analyze


def _photo(rng, n_spots: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    light = rng.uniform(0.7, 1.1)
    img = np.zeros((h, w, 3), np.float32)
    img[:] = np.array([190, 140, 120], np.float32) * light
    for _ in range(n_spots):
        cx, cy, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, 0.03 * min(w, h)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = [170, 30, 40]
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return im.convert(mode) if mode != "RGB" else im


def make_photo_folder(root, corrupt: bool = True):
    """4 patients × 12 days, 2 photos a day on some days; spots follow a hidden severity."""
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    rows = []
    sizes = [(96, 128), (160, 120), (200, 200), (90, 160)]
    for p in range(4):
        for day in range(1, 13):
            treat = ["Baseline", "A", "B", "A", "B", "A"][min((day - 1) // 2, 5)]
            sev = {"Baseline": 14, "A": 4, "B": 9}[treat] + int(rng.integers(-1, 2))
            for k in range(2 if day % 3 == 0 else 1):
                name = f"photos/p{p}_day{day}_{k}.jpg"
                mode = "L" if (p == 1 and day == 5) else "RGB"
                im = _photo(rng, sev, sizes[p], mode)
                if p == 2 and day == 7:  # stored sideways with an EXIF orientation tag
                    im = im.transpose(Image.Transpose.ROTATE_90)
                    exif = Image.Exif()
                    exif[0x0112] = 6
                    im.save(root / name, exif=exif.tobytes())
                elif p == 3 and day == 2:  # RGBA PNG
                    name = name.replace(".jpg", ".png")
                    im.convert("RGBA").save(root / name)
                else:
                    im.save(root / name, quality=90)
                ts = f"2023-03-{day + p:02d}T{9 + 5 * k:02d}:00:00"
                rows.append({"image": name, "patient_id": f"P{p}", "timestamp": ts, "treatment": treat})
    if corrupt:
        (root / "photos" / "p0_day11_0.jpg").write_bytes(b"this is not a jpeg")
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def test_loader_applies_exif_orientation_and_any_size_to_square_rgb(tmp_path):
    root = make_photo_folder(tmp_path / "ds", corrupt=False)
    data = load_dataset(root)
    assert data.treatments == ["A", "B"]  # Baseline is not a treatment to contrast
    assert data.manifest["day"].min() == 1 and data.manifest["day"].max() == 12  # from timestamp
    data, X = load_images(data, 64)
    assert X.shape == (len(data.manifest), 3, 64, 64) and X.dtype == np.uint8


def test_exif_rotated_photo_is_loaded_upright(tmp_path):
    from analysis.dataset import _open_image

    upright = np.zeros((120, 80, 3), np.uint8)  # portrait, red top half, blue bottom half
    upright[:60] = [255, 0, 0]
    upright[60:] = [0, 0, 255]
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # sideways pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    x = _open_image(tmp_path / "rot.jpg", 40)
    assert x.shape == (40, 40, 3)
    assert x[2, 20, 0] > 200 and x[2, 20, 2] < 60  # top is red
    assert x[37, 20, 2] > 200 and x[37, 20, 0] < 60  # bottom is blue


def test_corrupt_photo_raises_error_naming_the_file(tmp_path):
    root = make_photo_folder(tmp_path / "ds")
    with pytest.raises(AnalysisInputError, match=r"p0_day11_0\.jpg"):
        analyze(root, tmp_path / "out", AnalysisConfig(method="pixel-pca", image_size=64))


def test_real_photos_end_to_end_with_skip_bad_reports_one_skipped(tmp_path):
    root = make_photo_folder(tmp_path / "ds")
    out = tmp_path / "out"
    res = analyze(root, out, AnalysisConfig(method="ae,pixel-pca", image_size=64, epochs=3, skip_bad=True, n_perm=200))
    # the corrupt file, and the greyscale photo: no skin colour, so nothing the skin path can read
    assert res["skipped_images"] == 2
    assert set(res["skipped_image_paths"]) == {"photos/p0_day11_0.jpg", "photos/p1_day5_0.jpg"}
    assert res["truth"] is None
    assert res["embedding"]["spearman_pc1_latent"] is None and res["embedding"]["sign_aligned"] is False
    assert "red contrast" in res["embedding"]["sign_note"]
    assert 0.8 < res["skin"]["share_median"] <= 1.0  # all skin but the margin the mask keeps off the frame edge
    assert {p["method"] for p in res["population"]} == {"ae", "pixel-pca"}
    assert all(p["contrast"] == "B − A" and p["df"] == 3 for p in res["population"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["n_images"] == res["n_images"] == 4 * 12 + 4 * 4 - 2
    emb = pd.read_csv(out / "embeddings.csv")
    assert len(emb) == 2 * res["n_images"] and {"image", "PC1", "e0"} <= set(emb.columns)
    rec = np.load(out / "reconstructions.npz")
    assert rec["originals"].shape == rec["reconstructions"].shape == (8, 24, 24, 3)  # one skin patch each
    assert rec["mse"][0] < rec["mse"][1]  # the autoencoder beats the mean patch
    with pytest.raises(AnalysisInputError, match="severity_latent"):
        analyze(root, tmp_path / "out2", AnalysisConfig(method="oracle", skip_bad=True))


def test_photo_without_skin_stops_the_skin_path_naming_it_and_exits_2(tmp_path):
    from trialsim.cli import main

    root = make_photo_folder(tmp_path / "ds", corrupt=False)
    with pytest.raises(AnalysisInputError, match=r"too little skin.*p1_day5_0\.jpg.*--skip-bad"):
        analyze(root, tmp_path / "out", AnalysisConfig(method="ae", image_size=64, epochs=1))
    r = CliRunner().invoke(main, ["analyze", str(root), "--out", str(tmp_path / "out"), "--epochs", "1", "--quiet"])
    assert r.exit_code == 2 and "p1_day5_0.jpg" in r.output
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_analyze_exits_2_naming_the_corrupt_file(tmp_path):
    from trialsim.cli import main

    root = make_photo_folder(tmp_path / "ds")
    r = CliRunner().invoke(
        main,
        [
            "analyze",
            str(root),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "pixel-pca",
            "--image-size",
            "64",
            "--quiet",
        ],
    )
    assert r.exit_code == 2
    assert "p0_day11_0.jpg" in r.output
    assert "Traceback" not in r.output


def test_missing_manifest_column_names_the_field(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    pd.DataFrame({"image": ["a.jpg"], "patient_id": ["1"], "day": [1]}).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(AnalysisInputError, match="treatment"):
        load_dataset(root)
