"""What the embedder sees: the spot map counts red spots whatever the light."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.reduce import normalize_photometric, redness, spots


def _skin_with_spots(k: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = (200, 160, 140)
    img += rng.normal(0, 1, img.shape)  # sensor noise
    for x, y in rng.uniform(8, size - 8, size=(k, 2)):
        cv2.circle(img, (int(x), int(y)), 2, (215, 110, 110), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _n_dots(mapped: np.ndarray) -> int:
    n, _ = cv2.connectedComponents((mapped[0] > 0).astype(np.uint8))
    return n - 1


@pytest.mark.parametrize("k", [0, 4, 12])
def test_spot_map_has_one_dot_per_red_spot_under_any_light(k):
    rng = np.random.default_rng(k)
    img = _skin_with_spots(k, rng)
    darker_warmer = np.clip(img.astype(np.float32) * (0.65, 0.6, 0.5), 0, 255).astype(np.uint8)
    for im in (img, darker_warmer):
        out = spots(im.transpose(2, 0, 1)[None])
        assert out.shape == (1, 3, 128, 128) and out.dtype == np.uint8
        # spots may touch: allow merged neighbours, never invented ones
        assert k - 2 <= _n_dots(out[0]) <= k


def test_redness_map_rises_with_spots_and_ignores_exposure():
    rng = np.random.default_rng(0)
    few, many = _skin_with_spots(2, rng), _skin_with_spots(20, rng)
    r = lambda im: redness(im.transpose(2, 0, 1)[None]).mean()  # noqa: E731
    assert r(many) > 1.2 * r(few)  # over a noise floor that is the same in both
    dim = np.clip(many.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    assert r(dim) == pytest.approx(r(many), rel=0.25)


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        normalize_photometric(np.zeros((1, 3, 8, 8), np.uint8), "sepia")
