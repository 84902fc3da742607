"""Skin finding, skin patches and the patch autoencoder, on small synthetic photos."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.patch_ae import PatchAutoencoderEmbedder, haemoglobin_contrast, redness_contrast
from analysis.patches import extract_patches
from analysis.skin import skin_mask

SKIN = (224, 172, 150)
TILE = (205, 210, 212)
HAIR = (60, 45, 35)


def _photo(size=96, spots=(), gain=(1.0, 1.0, 1.0), glare=False, hair=True, seed=0) -> np.ndarray:
    """A face-like photo: skin disc on grey tiles, a dark hair band, optional red spots and glare.

    ``spots``: (y, x) centres as fractions of the side. Returns uint8 (3, size, size).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.empty((size, size, 3), np.float64)
    img[:] = TILE
    img[(yy - 0.55) ** 2 + (xx - 0.55) ** 2 < 0.4**2] = SKIN
    if hair:
        img[(yy < 0.22) & (xx < 0.7)] = HAIR
        img[(yy < 0.22) & (xx < 0.7) & ((xx * size).astype(int) % 3 == 0)] = (110, 90, 70)  # strands
    for sy, sx in spots:
        r2 = (yy - sy) ** 2 + (xx - sx) ** 2
        img += np.exp(-r2 / (2 * 0.015**2))[..., None] * np.array([2.0, -30.0, -20.0])
    if glare:
        img[(yy - 0.6) ** 2 + (xx - 0.45) ** 2 < 0.07**2] = (252, 252, 252)
    img = img * np.array(gain) + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8).transpose(2, 0, 1)


def _regions(size=96):
    yy, xx = np.mgrid[:size, :size] / size
    near_glare = (yy - 0.6) ** 2 + (xx - 0.45) ** 2 < 0.1**2
    # the disc's inside, away from its edge, the hair and the glare
    disc = ((yy - 0.55) ** 2 + (xx - 0.55) ** 2 < 0.35**2) & (yy > 0.28) & ~near_glare
    background = ((yy - 0.55) ** 2 + (xx - 0.55) ** 2 > 0.45**2) & (yy > 0.25)
    hair = (yy < 0.2) & (xx < 0.68)
    glare = (yy - 0.6) ** 2 + (xx - 0.45) ** 2 < 0.06**2
    return disc, background, hair, glare


def test_skin_mask_keeps_skin_and_leaves_out_background_hair_and_glare():
    m = skin_mask(_photo(glare=True, spots=[(0.5, 0.7)]))
    disc, background, hair, glare = _regions()
    assert m[disc].mean() > 0.97
    assert m[background].mean() < 0.02
    assert m[hair].mean() < 0.02
    assert m[glare].mean() < 0.1


def test_skin_mask_keeps_a_red_lesion_inside_the_skin():
    yy, xx = np.mgrid[:96, :96] / 96
    spot = (yy - 0.5) ** 2 + (xx - 0.7) ** 2 < 0.03**2
    assert skin_mask(_photo(spots=[(0.5, 0.7)]))[spot].all()


def test_skin_mask_follows_white_balance_and_exposure():
    disc, background, _, _ = _regions()
    for gain in [(0.7, 0.7, 0.7), (1.0, 0.92, 0.8), (0.9, 0.95, 1.1)]:
        m = skin_mask(_photo(gain=gain))
        assert m[disc].mean() > 0.97 and m[background].mean() < 0.02, gain


def test_no_skin_gives_an_empty_mask():
    grey = np.full((3, 64, 64), 128, np.uint8)
    assert not skin_mask(grey).any()


def test_redness_contrast_marks_a_red_spot_and_ignores_light_and_white_balance():
    a = _photo(spots=[(0.5, 0.7)], hair=False)
    b = _photo(spots=[(0.5, 0.7)], hair=False, gain=(0.75, 0.7, 0.6))
    ra, rb = (redness_contrast(x, skin_mask(x))[0] for x in (a, b))
    iy, ix = np.unravel_index(np.argmax(ra), ra.shape)
    assert abs(iy / 96 - 0.5) < 0.05 and abs(ix / 96 - 0.7) < 0.05
    assert ra.max() > 0.3
    # the same spot under dimmer, warmer light: the same contrast within 25 %
    assert rb.max() == pytest.approx(ra.max(), rel=0.25)


def _spotted(multiplier, gain=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The skin disc with one small spot whose colour is the skin's times ``multiplier`` (R, G, B)."""
    x = _photo(hair=False, gain=gain).astype(np.float64).transpose(1, 2, 0)
    yy, xx = np.mgrid[:96, :96] / 96
    g = np.exp(-((yy - 0.5) ** 2 + (xx - 0.7) ** 2) / (2 * 0.015**2))[..., None]
    x = x * (1 - g + g * np.array(multiplier))
    return np.clip(x, 0, 255).round().astype(np.uint8).transpose(2, 0, 1)


def test_haemoglobin_contrast_marks_blood_not_shadow_or_brown_pigment():
    def at_spot(x):
        return float(haemoglobin_contrast(x, skin_mask(x))[0][48, 67])

    red = at_spot(_spotted((1.0, 0.8, 0.85)))  # less green and blue: blood
    brown = at_spot(_spotted((0.9, 0.8, 0.7)))  # a pigmented mark
    shadow = at_spot(_spotted((0.85, 0.85, 0.85)))  # the same loss in every channel
    assert red > 0.3
    assert abs(brown) < 0.25 * red and abs(shadow) < 0.1 * red
    # in CIELAB a* the brown mark reads as a larger share of the red spot
    a_red, a_brown = (
        float(redness_contrast(x, skin_mask(x))[0][48, 67])
        for x in (_spotted((1.0, 0.8, 0.85)), _spotted((0.9, 0.8, 0.7)))
    )
    assert a_brown / a_red > brown / red
    # the red spot under dimmer, warmer light: the same contrast within 15 %
    assert at_spot(_spotted((1.0, 0.8, 0.85), gain=(0.75, 0.7, 0.6))) == pytest.approx(red, rel=0.15)


def test_most_inflamed_pools_the_reddest_patches_in_their_order():
    est = PatchAutoencoderEmbedder(pool_share=0.25, min_patches=2)
    load = np.array([0.1, 0.9, -0.5, 0.3, 0.0, 0.8, 0.2, 0.05])
    patches = np.broadcast_to(load[:, None, None, None], (8, 1, 4, 4)).astype(np.float32)
    picked = est.most_inflamed(patches)[:, 0, 0, 0]
    assert picked.tolist() == pytest.approx([0.9, 0.8])  # the top quarter, in their original order
    assert len(PatchAutoencoderEmbedder(pool_share=0.1, min_patches=3).most_inflamed(patches)) == 3
    assert len(PatchAutoencoderEmbedder(pool_share=1.0).most_inflamed(patches)) == 8


def test_patches_have_a_fixed_scale_relative_to_the_frame_and_lie_on_skin():
    norm = np.random.default_rng(0).normal(size=(1, 96, 96)).astype(np.float32)
    big = np.repeat(np.repeat(norm, 2, axis=1), 2, axis=2)
    mask = np.zeros((96, 96), bool)
    mask[:, 48:] = True
    p_small = extract_patches(norm, mask, patch_frac=1 / 8, patch_px=12)
    p_big = extract_patches(big, np.repeat(np.repeat(mask, 2, 0), 2, 1), patch_frac=1 / 8, patch_px=12)
    assert p_small.shape[1:] == (1, 12, 12) and len(p_small) == len(p_big) > 0
    # only the skin half gives patches: 15 grid positions down, 7 across
    assert len(p_small) == 15 * 7
    capped = extract_patches(norm, mask, 1 / 8, 12, max_patches=10, rng=np.random.default_rng(1))
    assert capped.shape == (10, 1, 12, 12)


def _trial(n=24, seed=0):
    """Photos with 0-5 red spots; returns (uint8 (n, 3, 64, 64), spot counts)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    photos = []
    for i, k in enumerate(counts):
        spots = [(rng.uniform(0.4, 0.75), rng.uniform(0.35, 0.75)) for _ in range(k)]
        photos.append(_photo(64, spots=spots, gain=rng.uniform(0.8, 1.05, 3), hair=False, seed=i))
    return np.stack(photos), counts


FAST = dict(patch_frac=1 / 12, patch_px=16, code_size=4, widths=(8, 16), epochs=25, batch_size=32, max_patches=32)


def test_patch_autoencoder_learns_and_its_first_component_counts_spots():
    from scipy import stats

    X, counts = _trial()
    est = PatchAutoencoderEmbedder(**FAST, random_state=0).fit(X)
    emb = est.transform(X)
    assert emb.shape == (len(X), 2 * FAST["code_size"]) and np.isfinite(emb).all()
    assert est.mse_ < 0.8 * est.mse_mean_patch_  # better than the mean patch
    assert est.loss_history_[-1] < est.loss_history_[0]
    ec = emb - emb.mean(0)
    pc1 = ec @ np.linalg.svd(ec, full_matrices=False)[2][0]
    assert abs(stats.spearmanr(pc1, counts).statistic) > 0.6
    orig, rec = est.reconstruct(X[:3])
    assert orig.shape == rec.shape == (3, 16, 16, 3) and orig.dtype == np.uint8


def test_patch_autoencoder_same_seed_same_bytes_and_generator_seed():
    X, _ = _trial(12)
    a = PatchAutoencoderEmbedder(**FAST, random_state=3).fit_transform(X)
    b = PatchAutoencoderEmbedder(**FAST, random_state=3).fit_transform(X)
    c = PatchAutoencoderEmbedder(**FAST, random_state=np.random.default_rng(3)).fit_transform(X)
    d = PatchAutoencoderEmbedder(**FAST, random_state=4).fit_transform(X)
    assert a.tobytes() == b.tobytes()
    assert c.shape == a.shape and not np.array_equal(a, d)


def test_patch_autoencoder_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    est = PatchAutoencoderEmbedder(**FAST)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.transform(_trial(2)[0])
    with pytest.raises(ValueError, match="uint8"):
        est.fit(np.zeros((2, 3, 8, 8), np.float32))


def test_photo_without_skin_is_unusable_and_embeds_as_nan():
    X, _ = _trial(8)
    grey = np.full((1, 3, 64, 64), 128, np.uint8)
    est = PatchAutoencoderEmbedder(**FAST).fit(X)
    both = np.concatenate([X[:2], grey])
    assert est.usable(both).tolist() == [True, True, False]
    d = est.describe(both)
    assert d["skin_share"].iloc[2] == 0 and d["n_patches"].iloc[2] == 0
    assert (d["skin_share"].iloc[:2] > 0.3).all() and (d["n_patches"].iloc[:2] >= 4).all()
    emb = est.transform(both)
    assert np.isfinite(emb[:2]).all() and np.isnan(emb[2]).all()


def test_an_unknown_colour_is_a_named_input_error():
    from analysis.errors import AnalysisInputError

    X, _ = _trial(4)
    with pytest.raises(AnalysisInputError) as err:
        PatchAutoencoderEmbedder(**FAST, colour="blue").fit(X)
    assert err.value.field == "colour" and "haemoglobin" in str(err.value)


def _closeup(gain, size=96, seed=0) -> np.ndarray:
    """A skin close-up (the frame all skin, as the cheek view) with three red spots and a patch of shine."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.empty((size, size, 3), np.float64)
    img[:] = SKIN
    for sy, sx in [(0.3, 0.3), (0.6, 0.7), (0.75, 0.25)]:
        img += np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * 0.015**2))[..., None] * np.array([2.0, -30.0, -20.0])
    img[(yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.05**2] = (252, 252, 252)  # shine: the light's colour
    img = img * np.array(gain) + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8).transpose(2, 0, 1)


def test_skin_mask_finds_a_close_up_under_a_strong_warm_cast():
    # warm evening light: the skin's blue falls so low that the generic YCrCb box seeds nothing
    from analysis.skin import _seed

    for gain in [(1.1, 0.62, 0.3), (1.0, 0.55, 0.28)]:
        warm = _closeup(gain)
        assert _seed(warm).mean() < 0.01, gain
        assert skin_mask(warm).mean() > 0.95, gain
    # a frame of one warm colour (a wall in that light) is still no skin
    wall = np.empty((3, 64, 64), np.uint8)
    wall[:] = warm.reshape(3, -1).mean(axis=1).astype(np.uint8)[:, None, None]
    assert not skin_mask(wall).any()
