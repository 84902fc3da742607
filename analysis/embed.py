"""Embedders: images → feature vectors, as scikit-learn-style estimators.

scikit-learn estimators (``BaseEstimator``, ``TransformerMixin``): ``__init__``
stores hyper-parameters only, ``fit(X)`` validates and learns, ``transform(X)``
embeds, learned state ends in ``_``. ``random_state`` is an int or a
``numpy.random.Generator``; torch seeds are derived from it deterministically.
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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .errors import AnalysisInputError

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


def seed_from(random_state) -> int:
    """An int seed from ``random_state``: the int itself, or a draw from a ``numpy.random.Generator``."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    raise AnalysisInputError(
        f"random_state must be an int or a numpy.random.Generator, got {type(random_state).__name__}",
        field="random_state",
    )


def _check_images(X) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 4 or X.shape[1] != 3 or len(X) < 2:
        raise AnalysisInputError(
            f"expected at least two images as a uint8 array (N, 3, H, W), got shape {X.shape}", field="X"
        )
    return X


class AutoencoderEmbedder(TransformerMixin, BaseEstimator):
    """Convolutional autoencoder; the embedding is its code.

    Parameters: ``image_size`` (px, a multiple of 2 ** len(channels), 16 by default;
    inputs are resized to it), ``code_size`` (embedding dims), ``channels`` (encoder
    conv widths, stride 2 each), ``code_activation`` ("none" or "sigmoid"),
    ``epochs``, ``lr`` (Adam), ``batch_size``, ``augment`` (flips + resized crops),
    ``random_state`` (int or Generator: weights, shuffling, augmentation),
    ``progress`` (tqdm over epochs).
    Learned: ``encoder_``, ``decoder_``, ``loss_history_`` (mean MSE per epoch), ``seed_``.
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
        self.channels = channels
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
            raise AnalysisInputError(f"unknown preset {preset!r}", field="--preset", allowed=", ".join(PRESETS))
        params = dict(PRESETS[preset])
        params.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**params)

    def check_params(self) -> None:
        """:class:`AnalysisInputError` for hyper-parameters that cannot build a network (``--image-size``)."""
        step = 2 ** len(tuple(self.channels))
        if not isinstance(self.image_size, (int, np.integer)) or self.image_size < step or self.image_size % step:
            raise AnalysisInputError(
                f"the autoencoder needs an image size that is a multiple of {step}, got {self.image_size}",
                field="--image-size",
                allowed=f"multiples of {step}, such as {step * 4}, {step * 8} or {step * 16}",
            )
        if self.code_activation not in ("none", "sigmoid"):
            raise AnalysisInputError(
                f"unknown code_activation {self.code_activation!r}", field="code_activation", allowed="none, sigmoid"
            )

    def _to_tensor(self, X):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(X)).float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="area")
        return x

    def _train(self, data, gen) -> None:
        """Adam on the mean squared reconstruction error; one ``loss_history_`` entry per epoch."""
        import torch
        from tqdm.auto import tqdm

        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        opt = torch.optim.Adam(params, lr=self.lr)
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

    def fit(self, X, y=None):
        """Train on uint8 images ``X`` (N, 3, H, W); returns ``self``."""
        import torch

        # 1. validate
        self.check_params()
        X = _check_images(X)
        # 2. build the network from our seed (the global torch RNG is left untouched)
        self.seed_ = seed_from(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_)
            self.encoder_, self.decoder_ = _build_autoencoder(
                self.image_size, self.code_size, tuple(self.channels), self.code_activation
            )
        # 3. train; shuffling and augmentation draw from their own generator
        gen = torch.Generator().manual_seed(self.seed_ + 1)
        self.loss_history_ = []
        self._train(self._to_tensor(X), gen)
        return self

    def transform(self, X) -> np.ndarray:
        """Codes (N, code_size) as float64."""
        import torch

        check_is_fitted(self, "encoder_")
        out = []
        with torch.inference_mode():
            for start in range(0, len(X), 128):
                out.append(self.encoder_(self._to_tensor(X[start : start + 128])).numpy())
        return np.concatenate(out).astype(np.float64)

    def reconstruct(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Originals at the model size and their reconstructions, both uint8 (N, H, W, 3)."""
        import torch

        check_is_fitted(self, "encoder_")
        with torch.inference_mode():
            x = self._to_tensor(X)
            r = self.decoder_(self.encoder_(x))
        to8 = lambda t: (t.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
        return to8(x), to8(r)


class PixelPCAEmbedder(TransformerMixin, BaseEstimator):
    """PCA of downsampled pixels (``pixel_size`` px, RGB), ``n_components`` scores per image.

    Learned: ``pca_`` (a fitted :class:`sklearn.decomposition.PCA`).
    """

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

        P = self._pixels(_check_images(X))
        k = int(min(self.n_components, P.shape[0] - 1, P.shape[1]))
        self.pca_ = PCA(n_components=max(k, 1), random_state=seed_from(self.random_state)).fit(P)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "pca_")
        return self.pca_.transform(self._pixels(X))


class OracleEmbedder(TransformerMixin, BaseEstimator):
    """The latent truth as a one-dimensional embedding (simulated data only).

    ``X`` is the manifest; returns its ``column`` (``severity_latent``) as ``(N, 1)``.
    Learned: ``column_`` (the column read).
    """

    def __init__(self, column="severity_latent"):
        self.column = column

    def fit(self, X, y=None):
        if self.column not in X.columns or X[self.column].isna().any():
            raise AnalysisInputError(
                f"method 'oracle' needs the {self.column} column (simulated data only)",
                field=self.column,
                allowed="methods ae or pixel-pca for real photos",
            )
        self.column_ = self.column
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "column_")
        return X[[self.column_]].to_numpy(dtype=np.float64)
