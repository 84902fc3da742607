"""Embedders as scikit-learn estimators: parameters, fitted state, seeds, and clear errors for bad sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from analysis.embed import AutoencoderEmbedder, OracleEmbedder, PixelPCAEmbedder
from analysis.errors import AnalysisInputError

torch.set_num_threads(1)


def _images(n=6, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _ae(**kw) -> AutoencoderEmbedder:
    params = dict(image_size=32, code_size=4, channels=(4, 8), epochs=2, batch_size=4)
    return AutoencoderEmbedder(**(params | kw))


def test_init_only_stores_parameters_and_clone_round_trips():
    gen = np.random.default_rng(1)
    est = _ae(random_state=gen, channels=[4, 8])
    assert est.get_params()["channels"] == [4, 8] and est.get_params()["random_state"] is gen
    assert clone(_ae(random_state=3)).get_params() == _ae(random_state=3).get_params()
    assert not hasattr(est, "encoder_")


@pytest.mark.parametrize("est", [_ae(), PixelPCAEmbedder(pixel_size=8, n_components=3), OracleEmbedder()])
def test_transform_before_fit_raises_not_fitted(est):
    with pytest.raises(NotFittedError):
        est.transform(_images())


def test_same_int_seed_same_embedding_and_generator_seeds_are_reproducible():
    X = _images()
    a, b = _ae(random_state=5).fit_transform(X), _ae(random_state=5).fit_transform(X)
    assert np.array_equal(a, b) and a.shape == (6, 4)
    assert not np.array_equal(a, _ae(random_state=6).fit_transform(X))
    g1 = _ae(random_state=np.random.default_rng(9)).fit_transform(X)
    g2 = _ae(random_state=np.random.default_rng(9)).fit_transform(X)
    assert np.array_equal(g1, g2)
    p1 = PixelPCAEmbedder(pixel_size=8, n_components=3, random_state=np.random.default_rng(2)).fit_transform(X)
    assert p1.shape == (6, 3)


def test_torch_global_rng_is_left_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _ae(random_state=1).fit(_images())
    assert torch.equal(torch.rand(3), expected)


def test_odd_image_size_is_bad_input_naming_the_option():
    with pytest.raises(AnalysisInputError, match="--image-size") as err:
        AutoencoderEmbedder(image_size=100).fit(_images(size=100))
    assert "multiple of 16" in str(err.value) and "Allowed" in str(err.value)


def test_oracle_without_truth_is_bad_input():
    with pytest.raises(AnalysisInputError, match="severity_latent"):
        OracleEmbedder().fit(pd.DataFrame({"image": ["a"]}))


def _photo_folder(root) -> str:
    """Two patients, eight days each, arms A and B alternating: small PNG photos and a manifest."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for pid in ("P1", "P2"):
        for day in range(1, 9):
            name = f"{pid}_{day}.png"
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / name)
            rows.append({"image": name, "patient_id": pid, "day": day, "treatment": "AB"[(day - 1) // 2 % 2]})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root)


def test_pipeline_with_image_size_100_is_bad_input(tmp_path):
    from analysis.pipeline import AnalysisConfig, run

    with pytest.raises(AnalysisInputError, match="--image-size"):
        run(_photo_folder(tmp_path), AnalysisConfig(method="ae", normalize="spots", image_size=100, epochs=1))


def test_cli_analyze_with_image_size_100_exits_2(tmp_path):
    from trialsim.cli import main

    ds = _photo_folder(tmp_path)
    args = ["analyze", ds, "--out", str(tmp_path / "out"), "--normalize", "spots", "--image-size", "100"]
    args += ["--epochs", "1", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "--image-size" in result.output and "multiple of 16" in result.output
    assert not (tmp_path / "out" / "results.json").exists()


def test_schneider2023_preset_and_other_normalisations_use_the_whole_photo_autoencoder(tmp_path):
    from analysis.pipeline import AnalysisConfig, run

    ds = _photo_folder(tmp_path)
    ref = run(ds, AnalysisConfig(method="ae", preset="schneider2023", image_size=64, epochs=1, n_perm=50))
    assert ref.config["normalize"] == "spots" and ref.skin is None
    assert ref._reconstructions["originals"].shape[1:] == (64, 64, 3)  # whole photos, not patches
    grey = run(ds, AnalysisConfig(method="ae", normalize="grey-world", image_size=64, epochs=1, n_perm=50))
    assert grey.config["normalize"] == "grey-world" and grey._reconstructions["originals"].shape[1:] == (64, 64, 3)
