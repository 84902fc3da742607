"""Embedders: images → feature vectors, as scikit-learn-style estimators.

``fit(X)`` learns, ``transform(X)`` embeds, learned state ends in ``_``.
Image embedders take ``X`` as uint8 ``(N, 3, H, W)`` arrays; the oracle takes
the manifest (simulated data only) and returns ``severity_latent``.

- :class:`AutoencoderEmbedder`: a small convolutional autoencoder (PyTorch),
  trained on all images of all patients, embedding = its code (the analysis of
  Schneider, Gärtner, Konigorski 2023; ``preset="schneider2023"`` reproduces its
  settings: 256 px, 64-d sigmoid code, ELU, Adam lr 5e-5, batch 16, flips and
  resized crops).
- :class:`PixelPCAEmbedder`: no network, PCA of downsampled pixels.
- :class:`OracleEmbedder`: the latent truth itself (the ceiling any embedder can reach).
"""

from __future__ import annotations

import numpy as np

PRESETS = {
    # small and fast on a laptop CPU; see bench/bench_analyze.py
    "default": dict(
        image_size=128,
        code_size=32,
        channels=(16, 32, 64, 64),
        code_activation="none",
        epochs=15,
        lr=2e-3,
        batch_size=64,
        augment=False,
    ),
    # Schneider, Gärtner, Konigorski 2023 (HIAlab/multimodal_nof1_unsupervised)
    "schneider2023": dict(
        image_size=256,
        code_size=64,
        channels=(32, 64, 128, 128),
        code_activation="sigmoid",
        epochs=30,
        lr=5e-5,
        batch_size=16,
        augment=True,
    ),
}


def _build_autoencoder(size: int, code_size: int, channels, code_activation: str):
    import torch.nn as nn

    enc, c_in = [], 3
    for c in channels:
        enc += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.ELU()]
        c_in = c
    side = size // 2 ** len(channels)
    flat = c_in * side * side
    code_act = [nn.Sigmoid()] if code_activation == "sigmoid" else []
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, code_size), *code_act)
    dec = [nn.Linear(code_size, flat), nn.ELU(), nn.Unflatten(1, (c_in, side, side))]
    rev = list(channels[::-1][1:]) + [3]
    for i, c in enumerate(rev):
        dec += [nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1)]
        dec += [nn.Sigmoid()] if i == len(rev) - 1 else [nn.ELU()]
        c_in = c
    return encoder, nn.Sequential(*dec)


def _augment(x, gen):
    """Random horizontal flips and resized crops (scale 0.8–1 of the side), per sample."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 0.8 + 0.2 * torch.rand(n, generator=gen)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, generator=gen) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class AutoencoderEmbedder:
    """Convolutional autoencoder; the embedding is its code.

    Parameters: ``image_size`` (px, a multiple of 16; inputs are resized to it),
    ``code_size`` (embedding dims), ``channels`` (encoder conv widths, stride 2 each),
    ``code_activation`` ("none" or "sigmoid"), ``epochs``, ``lr`` (Adam),
    ``batch_size``, ``augment`` (flips + resized crops), ``random_state`` (all
    randomness: weights, shuffling, augmentation), ``progress`` (tqdm over epochs).
    Learned: ``encoder_``, ``decoder_``, ``loss_history_`` (mean MSE per epoch).
    """

    def __init__(
        self,
        image_size=128,
        code_size=32,
        channels=(16, 32, 64, 64),
        code_activation="none",
        epochs=20,
        lr=2e-3,
        batch_size=32,
        augment=False,
        random_state=0,
        progress=False,
    ):
        self.image_size = image_size
        self.code_size = code_size
        self.channels = tuple(channels)
        self.code_activation = code_activation
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.augment = augment
        self.random_state = random_state
        self.progress = progress

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides) -> AutoencoderEmbedder:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        params = dict(PRESETS[preset])
        params.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**params)

    def _to_tensor(self, X):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(X)).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        return x

    def fit(self, X, y=None):
        import torch

        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size must be a multiple of {2 ** len(self.channels)}")
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[1] != 3 or len(X) < 2:
            raise ValueError("expected at least two images as a uint8 array (N, 3, H, W)")
        with torch.random.fork_rng(devices=[]):  # weights from our seed, global RNG untouched
            torch.manual_seed(self.random_state)
            self.encoder_, self.decoder_ = _build_autoencoder(
                self.image_size, self.code_size, self.channels, self.code_activation
            )
        gen = torch.Generator().manual_seed(self.random_state + 1)
        data = self._to_tensor(X)
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        opt = torch.optim.Adam(params, lr=self.lr)
        self.loss_history_ = []
        from tqdm.auto import tqdm

        bar = tqdm(range(self.epochs), desc="autoencoder", unit="epoch", disable=not self.progress)
        self.encoder_.train()
        self.decoder_.train()
        for _ in bar:
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for start in range(0, len(data), self.batch_size):
                xb = data[order[start : start + self.batch_size]]
                if self.augment:
                    xb = _augment(xb, gen)
                loss = torch.nn.functional.mse_loss(self.decoder_(self.encoder_(xb)), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(xb)
            self.loss_history_.append(total / len(data))
            bar.set_postfix(mse=f"{self.loss_history_[-1]:.5f}")
        self.encoder_.eval()
        self.decoder_.eval()
        return self

    def transform(self, X) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(X), 128):
                out.append(self.encoder_(self._to_tensor(X[start : start + 128])).numpy())
        return np.concatenate(out).astype(np.float64)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def reconstruct(self, X) -> np.ndarray:
        """Originals at the model size and their reconstructions, both uint8 (N, H, W, 3)."""
        import torch

        with torch.inference_mode():
            x = self._to_tensor(X)
            r = self.decoder_(self.encoder_(x))
        to8 = lambda t: (t.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
        return to8(x), to8(r)


class PixelPCAEmbedder:
    """PCA of downsampled pixels (``pixel_size`` px, RGB), ``n_components`` scores per image."""

    def __init__(self, pixel_size=32, n_components=32, random_state=0):
        self.pixel_size = pixel_size
        self.n_components = n_components
        self.random_state = random_state

    def _pixels(self, X) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(X)).float().div_(255.0)
        x = F.interpolate(x, size=(self.pixel_size, self.pixel_size), mode="area")
        return x.reshape(len(x), -1).numpy().astype(np.float64)

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA

        P = self._pixels(X)
        k = int(min(self.n_components, P.shape[0] - 1, P.shape[1]))
        self.pca_ = PCA(n_components=max(k, 1), random_state=self.random_state).fit(P)
        return self

    def transform(self, X) -> np.ndarray:
        return self.pca_.transform(self._pixels(X))

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)


class OracleEmbedder:
    """The latent truth as a one-dimensional embedding (simulated data only).

    ``X`` is the manifest; returns its ``severity_latent`` column as ``(N, 1)``.
    """

    column = "severity_latent"

    def fit(self, X, y=None):
        if self.column not in X.columns or X[self.column].isna().any():
            raise ValueError("method 'oracle' needs the severity_latent column (simulated data only)")
        return self

    def transform(self, X) -> np.ndarray:
        return X[[self.column]].to_numpy(dtype=np.float64)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)
