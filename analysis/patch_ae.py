"""A patch autoencoder: skin patches at a fixed scale in, one embedding per photo out.

:class:`PatchAutoencoderEmbedder` is a scikit-learn estimator. For each photo it

1. finds the skin (:func:`analysis.skin.skin_mask`),
2. maps it to its haemoglobin contrast (:func:`haemoglobin_contrast`, the default
   ``colour``): the skin's optical density (-log of linear RGB) projected on the one colour
   direction that neither light nor melanin moves, band-passed at the scale of a lesion
   against the skin around it. Light's strength and smooth shading add the same density to
   every channel and melanin (tan, brown marks, hair) absorbs along its own spectrum; both
   project to zero, and an inflamed lesion, which holds more blood than the skin around it,
   stays. ``colour="a_star"`` reads CIELAB a* instead (:func:`redness_contrast`),
3. cuts skin patches of ``patch_frac`` of the side, resampled to ``patch_px``
   (:func:`analysis.patches.extract_patches`), with ``inner_only`` (the default) only from
   the skin at least the band-pass's outer SD inside the skin's edge (nearer it the surround
   is half background, hair or shadow),
4. trains a small convolutional autoencoder on patches of all photos (``fit``),
5. pools the codes of each photo's most inflamed patches (the share ``pool_share`` of them
   with the most positive contrast, at least ``min_patches``; a fifth by default) to their
   mean and SD (``transform``): what its worst skin looks like and how unevenly. Acne covers
   a small part of the skin; pooled over all patches (``pool_share=1``), the clear skin's
   texture, pores and focus outweigh the lesions.

``colour="a_star", inner_only=False, pool_share=1`` is the earlier redness reading over every
patch (the README's analysis section compares the two on real and simulated photos).

Photos with fewer than ``min_patches`` skin patches cannot be embedded: ``usable``
says which, ``transform`` gives NaN rows for them.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .contrast import (  # noqa: F401  (the contrast maps stay importable from here)
    AB_SCALE,
    BAND,
    COLOURS,
    HB_SCALE,
    contrast_map,
    haemoglobin_contrast,
    inner_skin,
    redness_contrast,
)
from .patches import extract_patches
from .skin import skin_mask


@contextmanager
def _one_thread():
    """Run torch on one thread, then restore: the network and its patches are so small that
    more threads only contend (fit 3x slower with two threads on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _network(patch_px: int, code_size: int, widths, gen_seed: int):
    import torch
    import torch.nn as nn

    with torch.random.fork_rng(devices=[]):  # weights from our seed, global RNG untouched
        torch.manual_seed(gen_seed)
        enc, c_in = [], 1
        for c in widths:
            enc += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ELU()]
            c_in = c
        side = patch_px // 2 ** len(widths)
        flat = c_in * side * side
        encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, code_size))
        dec = [nn.Linear(code_size, flat), nn.ELU(), nn.Unflatten(1, (c_in, side, side))]
        rev = list(widths[::-1][1:]) + [1]
        for i, c in enumerate(rev):
            dec.append(nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1))
            if i < len(rev) - 1:
                dec.append(nn.ELU())
            c_in = c
        return encoder, nn.Sequential(*dec)


class PatchAutoencoderEmbedder(TransformerMixin, BaseEstimator):
    """Convolutional autoencoder on skin patches; embedding = mean and SD of the codes of a photo's most inflamed patches.

    Parameters: ``patch_frac`` (patch side / photo side), ``patch_px`` (patch side after
    resizing, px; a multiple of ``2 ** len(widths)``), ``code_size`` (code dims; the
    embedding has twice as many), ``widths`` (encoder conv widths, stride 2 each),
    ``epochs``, ``lr`` (Adam), ``batch_size`` (patches), ``max_patches`` (per photo in
    training), ``max_train_patches`` (in all: a large trial trains as long as a small one),
    ``min_skin`` (share of a patch that must be skin), ``min_patches`` (fewer → the photo
    is unusable), ``colour`` (``"haemoglobin"`` or ``"a_star"``: the contrast the network
    reads), ``pool_share`` (share of a photo's patches pooled, the most inflamed first),
    ``inner_only`` (patches only from the skin away from its edge),
    ``random_state`` (int or ``numpy.random.Generator``: weights, patch
    draws, shuffling), ``progress`` (tqdm bars).
    Learned: ``encoder_``, ``decoder_``, ``code_mean_`` and ``code_scale_`` (each code
    dimension's mean and SD over the training patches; codes are reported standardised),
    ``embedding_mean_`` and ``embedding_scale_`` (each pooled feature's mean and SD over the
    training photos; embeddings are reported standardised),
    ``loss_history_`` (mean squared error per epoch),
    ``mse_`` (final reconstruction error on the training patches) and ``mse_mean_patch_``
    (the error of predicting every patch by the mean patch: the bar ``mse_`` must beat).
    """

    def __init__(
        self,
        patch_frac=1 / 12,
        patch_px=24,
        code_size=16,
        widths=(16, 32, 32),
        epochs=6,
        lr=1e-3,
        batch_size=128,
        max_patches=128,
        max_train_patches=20_000,
        min_skin=0.9,
        min_patches=4,
        colour="haemoglobin",
        pool_share=0.2,
        inner_only=True,
        random_state=0,
        progress=False,
    ):
        self.patch_frac = patch_frac
        self.patch_px = patch_px
        self.code_size = code_size
        self.widths = widths
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.max_patches = max_patches
        self.max_train_patches = max_train_patches
        self.min_skin = min_skin
        self.min_patches = min_patches
        self.colour = colour
        self.pool_share = pool_share
        self.inner_only = inner_only
        self.random_state = random_state
        self.progress = progress

    def _rng(self) -> np.random.Generator:
        rs = self.random_state
        return rs if isinstance(rs, np.random.Generator) else np.random.default_rng(rs)

    def _check(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[1] != 3 or X.dtype != np.uint8:
            raise ValueError("expected photos as a uint8 array (N, 3, H, W)")
        return X

    def patches(self, X, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """Per photo: its skin patches (contrast of the colour reading), float32 (k, 1, patch_px, patch_px).

        With ``rng``, at most ``max_patches`` drawn per photo (training); without, all of them.
        """
        X = self._check(X)
        it = range(len(X))
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="skin patches", unit="img")
        out, cap = [], self.max_patches if rng is not None else None
        for i in it:
            mask = skin_mask(X[i])
            out.append(
                extract_patches(
                    contrast_map(X[i], mask, self.colour),
                    self._patch_skin(mask),
                    self.patch_frac,
                    self.patch_px,
                    self.min_skin,
                    cap,
                    rng,
                )
            )
        return out

    def usable(self, X) -> np.ndarray:
        """Bool (N,): photos with at least ``min_patches`` skin patches."""
        return self.describe(X)["usable"].to_numpy()

    def describe(self, X):
        """Per photo (a DataFrame, row-aligned): ``skin_share`` (of the frame), ``n_patches``,
        ``usable`` and ``red_contrast`` (mean positive contrast of the network's input over
        the skin, in network units: a reference for PC1's sign that reads no score)."""
        import pandas as pd

        X = self._check(X)
        rows = []
        for x in X:
            mask = skin_mask(x)
            red = contrast_map(x, mask, self.colour)
            n = len(extract_patches(red, self._patch_skin(mask), self.patch_frac, self.patch_px, self.min_skin))
            share = float(mask.mean())
            rows.append(
                {
                    "skin_share": share,
                    "n_patches": n,
                    "usable": n >= self.min_patches,
                    "red_contrast": float(np.clip(red[0], 0, None)[mask].mean()) if share > 0 else 0.0,
                }
            )
        return pd.DataFrame(rows, columns=["skin_share", "n_patches", "usable", "red_contrast"])

    def fit(self, X, y=None):
        with _one_thread():
            return self._fit(X)

    def _fit(self, X):
        import torch

        self.check_params()
        rng = self._rng()
        per_photo = [p for p in self.patches(X, rng) if len(p) >= self.min_patches]
        if not per_photo:
            raise ValueError("no photo has enough skin patches to train on")
        pool = np.concatenate(per_photo)
        if len(pool) > self.max_train_patches:
            pool = pool[np.sort(rng.choice(len(pool), self.max_train_patches, replace=False))]
        data = torch.from_numpy(pool)
        self.encoder_, self.decoder_ = _network(
            self.patch_px, self.code_size, tuple(self.widths), int(rng.integers(2**31))
        )
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        opt = torch.optim.Adam([*self.encoder_.parameters(), *self.decoder_.parameters()], lr=self.lr)
        self.loss_history_ = []
        from tqdm.auto import tqdm

        bar = tqdm(range(self.epochs), desc="patch autoencoder", unit="epoch", disable=not self.progress)
        for _ in bar:
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for start in range(0, len(data), self.batch_size):
                xb = data[order[start : start + self.batch_size]]
                loss = torch.nn.functional.mse_loss(self.decoder_(self.encoder_(xb)), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
            self.loss_history_.append(total / len(data))
            bar.set_postfix(mse=f"{self.loss_history_[-1]:.5f}")
        self.encoder_.eval()
        self.decoder_.eval()
        with torch.inference_mode():
            self.mse_ = float(
                np.mean([torch.nn.functional.mse_loss(self._decode(p), p).item() for p in data.split(4096)])
            )
        self.mse_mean_patch_ = float(((data - data.mean(0)) ** 2).mean())
        # each code dimension in units of its spread over the training patches, so that no
        # dimension dominates the pooled embedding (and its PCA) through an arbitrary scale
        codes = self._raw_codes(pool)
        self.code_mean_ = codes.mean(0)
        self.code_scale_ = codes.std(0) + 1e-12
        # and each pooled feature in units of its spread over the training photos, so that
        # the SDs (which rise together with any contrast) do not outweigh the means
        pooled = self._pool(X)
        self.embedding_mean_ = np.nanmean(pooled, axis=0)
        self.embedding_scale_ = np.nanstd(pooled, axis=0) + 1e-12
        return self

    def _decode(self, x):
        return self.decoder_(self.encoder_(x))

    def _raw_codes(self, patches: np.ndarray) -> np.ndarray:
        import torch

        with _one_thread(), torch.inference_mode():
            return np.concatenate(
                [self.encoder_(torch.from_numpy(patches[i : i + 8192])).numpy() for i in range(0, len(patches), 8192)]
            ).astype(np.float64)

    def _codes(self, patches: np.ndarray) -> np.ndarray:
        """Standardised codes (k, code_size) of patches (k, 1, px, px)."""
        return (self._raw_codes(patches) - self.code_mean_) / self.code_scale_

    def _pool(self, X) -> np.ndarray:
        out = np.full((len(X), 2 * self.code_size), np.nan)
        for i, p in enumerate(self.patches(X)):
            if len(p) >= self.min_patches:
                c = self._codes(self.most_inflamed(p))
                out[i] = np.concatenate([c.mean(0), c.std(0)])
        return out

    def most_inflamed(self, patches: np.ndarray) -> np.ndarray:
        """The share ``pool_share`` of a photo's patches (at least ``min_patches``, at most all)
        with the highest mean positive contrast, in their original order."""
        k = min(len(patches), max(self.min_patches, int(np.ceil(self.pool_share * len(patches)))))
        load = np.clip(patches[:, 0], 0, None).mean(axis=(1, 2))
        return patches[np.sort(np.argsort(-load, kind="stable")[:k])]

    def _patch_skin(self, mask: np.ndarray) -> np.ndarray:
        """Where patches may be cut: the inner skin with ``inner_only``, else the whole skin."""
        return inner_skin(mask) if self.inner_only else mask

    def transform(self, X) -> np.ndarray:
        """Embeddings (N, 2 * code_size): mean then SD of the standardised codes of each photo's
        patches (its most inflamed ones with ``pool_share`` < 1, :meth:`most_inflamed`), each standardised over the training photos; NaN rows for unusable photos."""
        check_is_fitted(self, "embedding_scale_")
        return (self._pool(X) - self.embedding_mean_) / self.embedding_scale_

    def reconstruct(self, X) -> tuple[np.ndarray, np.ndarray]:
        """One skin patch per photo (its middle one; grey where none) and its reconstruction, uint8 (N, px, px, 3).

        Shown on a diverging scale: grey = as red as the skin around it, red = redder, cyan = less red.
        """
        import torch

        check_is_fitted(self, "embedding_scale_")
        blank = np.zeros((1, 1, self.patch_px, self.patch_px), np.float32)
        got = [p[len(p) // 2 : len(p) // 2 + 1] if len(p) else blank for p in self.patches(X)]
        x = torch.from_numpy(np.concatenate(got)) if got else torch.from_numpy(blank[:0])
        with torch.inference_mode():
            r = self._decode(x)
        return _diverging(x.numpy()[:, 0]), _diverging(r.numpy()[:, 0])

    def check_params(self) -> None:
        """:class:`AnalysisInputError` for hyper-parameters that cannot build the network."""
        from .errors import AnalysisInputError

        if self.colour not in COLOURS:
            raise AnalysisInputError(
                f"colour must be one of {', '.join(COLOURS)}, got {self.colour!r}",
                field="colour",
                allowed=", ".join(COLOURS),
            )
        step = 2 ** len(tuple(self.widths))
        if self.patch_px < step or self.patch_px % step:
            raise AnalysisInputError(
                f"patch_px must be a multiple of {step}, got {self.patch_px}", field="patch_px", allowed=f"{step * 3}"
            )


def _diverging(v: np.ndarray) -> np.ndarray:
    """Contrast maps (k, H, W) → uint8 RGB (k, H, W, 3): grey at 0, red above, cyan below."""
    t = np.clip(v, -1, 1)[..., None]
    grey = np.full(v.shape + (3,), 128.0)
    red, cyan = np.array([127.0, -128.0, -128.0]), np.array([-128.0, 127.0, 127.0])
    out = grey + np.where(t > 0, t * red, -t * cyan)
    return np.clip(out, 0, 255).round().astype(np.uint8)
