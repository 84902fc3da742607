"""A patch autoencoder: skin patches at a fixed scale in, one embedding per photo out.

:class:`PatchAutoencoderEmbedder` is a scikit-learn estimator. For each photo it

1. finds the skin (:func:`analysis.skin.skin_mask`),
2. removes light and white balance (:func:`analysis.patches.normalize_skin`) and keeps the
   two colour contrasts a lesion shows (log R/G and log B/G against the skin around it,
   lightly smoothed so pores and sensor noise do not dominate),
3. cuts skin patches of ``patch_frac`` of the side, resized to ``patch_px``
   (:func:`analysis.patches.extract_patches`),
4. trains a small convolutional autoencoder on the patches of all photos (``fit``),
5. pools each photo's patch codes to their mean and SD (``transform``): the mean says
   what the skin typically looks like, the SD how unevenly it does (a few inflamed
   patches among clear ones raise it).

Photos with fewer than ``min_patches`` skin patches cannot be embedded: ``usable``
says which, ``transform`` gives NaN rows for them.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .patches import extract_patches, normalize_skin
from .skin import skin_mask

SMOOTH_FRAC = 1 / 256  # SD of the light smoothing, as a fraction of the side (1 px at 256 px)


def _network(patch_px: int, code_size: int, widths, gen_seed: int):
    import torch
    import torch.nn as nn

    with torch.random.fork_rng(devices=[]):  # weights from our seed, global RNG untouched
        torch.manual_seed(gen_seed)
        enc, c_in = [], 2
        for c in widths:
            enc += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ELU()]
            c_in = c
        side = patch_px // 2 ** len(widths)
        flat = c_in * side * side
        encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, code_size))
        dec = [nn.Linear(code_size, flat), nn.ELU(), nn.Unflatten(1, (c_in, side, side))]
        rev = list(widths[::-1][1:]) + [2]
        for i, c in enumerate(rev):
            dec.append(nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1))
            if i < len(rev) - 1:
                dec.append(nn.ELU())
            c_in = c
        return encoder, nn.Sequential(*dec)


def colour_contrast(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Log R/G and log B/G contrast to the local skin, float32 (2, H, W), 0 off the skin."""
    import cv2

    n = normalize_skin(image, mask)
    sigma = max(0.5, SMOOTH_FRAC * max(image.shape[1:]))
    return np.stack([cv2.GaussianBlur(n[c] - n[1], (0, 0), sigma) * mask for c in (0, 2)])


class PatchAutoencoderEmbedder(TransformerMixin, BaseEstimator):
    """Convolutional autoencoder on skin patches; embedding = mean and SD of a photo's patch codes.

    Parameters: ``patch_frac`` (patch side / photo side), ``patch_px`` (patch side after
    resizing, px; a multiple of ``2 ** len(widths)``), ``code_size`` (code dims; the
    embedding has twice as many), ``widths`` (encoder conv widths, stride 2 each),
    ``epochs``, ``lr`` (Adam), ``batch_size`` (patches), ``max_patches`` (per photo),
    ``min_skin`` (share of a patch that must be skin), ``min_patches`` (fewer → the photo
    is unusable), ``random_state`` (int or ``numpy.random.Generator``: weights, patch
    draws, shuffling), ``progress`` (tqdm bars).
    Learned: ``encoder_``, ``decoder_``, ``loss_history_`` (mean squared error per epoch),
    ``mse_`` (final reconstruction error on the training patches) and ``mse_mean_patch_``
    (the error of predicting every patch by the mean patch: the bar ``mse_`` must beat).
    """

    def __init__(
        self,
        patch_frac=1 / 12,
        patch_px=24,
        code_size=16,
        widths=(16, 32, 32),
        epochs=8,
        lr=1e-3,
        batch_size=128,
        max_patches=64,
        min_skin=0.9,
        min_patches=4,
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
        self.min_skin = min_skin
        self.min_patches = min_patches
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

    def patches(self, X, rng: np.random.Generator) -> list[np.ndarray]:
        """Per photo: its skin patches, float32 (k, 2, patch_px, patch_px)."""
        X = self._check(X)
        it = range(len(X))
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="skin patches", unit="img")
        out = []
        for i in it:
            mask = skin_mask(X[i])
            out.append(
                extract_patches(
                    colour_contrast(X[i], mask),
                    mask,
                    self.patch_frac,
                    self.patch_px,
                    self.min_skin,
                    self.max_patches,
                    rng,
                )
            )
        return out

    def usable(self, X) -> np.ndarray:
        """Bool (N,): photos with at least ``min_patches`` skin patches."""
        return np.array([len(p) >= self.min_patches for p in self.patches(X, np.random.default_rng(0))])

    def fit(self, X, y=None):
        import torch

        if self.patch_px % 2 ** len(self.widths):
            raise ValueError(f"patch_px must be a multiple of {2 ** len(self.widths)}")
        rng = self._rng()
        per_photo = [p for p in self.patches(X, rng) if len(p) >= self.min_patches]
        if not per_photo:
            raise ValueError("no photo has enough skin patches to train on")
        data = torch.from_numpy(np.concatenate(per_photo))
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
        return self

    def _decode(self, x):
        return self.decoder_(self.encoder_(x))

    def _codes(self, patches: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.encoder_(torch.from_numpy(patches)).numpy().astype(np.float64)

    def transform(self, X) -> np.ndarray:
        """Embeddings (N, 2 * code_size): mean then SD of each photo's patch codes; NaN rows if unusable."""
        check_is_fitted(self, "encoder_")
        out = np.full((len(X), 2 * self.code_size), np.nan)
        for i, p in enumerate(self.patches(X, np.random.default_rng(0))):
            if len(p) >= self.min_patches:
                c = self._codes(p)
                out[i] = np.concatenate([c.mean(0), c.std(0)])
        return out

    def reconstruct(self, X, n_patches: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n_patches`` skin patches per photo and their reconstructions, uint8 (k, px, px, 3).

        Shown as false colour: red = log R/G contrast, blue = log B/G contrast, both around 128.
        """
        import torch

        check_is_fitted(self, "encoder_")
        got = [p[:n_patches] for p in self.patches(X, np.random.default_rng(0)) if len(p)]
        x = torch.from_numpy(np.concatenate(got)) if got else torch.zeros((0, 2, self.patch_px, self.patch_px))
        with torch.inference_mode():
            r = self._decode(x)

        def to8(t):
            t = t.numpy()
            rgb = np.stack([t[:, 0], np.zeros_like(t[:, 0]), t[:, 1]], axis=-1)
            return np.clip(128 + 255 * rgb, 0, 255).round().astype(np.uint8)

        return to8(x), to8(r)
