"""The reader network: a small fully convolutional net with two heads.

Input (:func:`prepare`), by the reader's ``input``:

- ``haemoglobin`` (the default): two channels, the photo's haemoglobin contrast at the
  scale of a lesion (:func:`analysis.contrast.haemoglobin_contrast`: blind to light,
  shading and melanin) on the skin away from its edge, and that skin's mask. What a
  renderer and a camera agree on is where blood is; the rest of their look (skin tone,
  light, background, hair) never reaches the network. The density is counted on that skin
  only, so hair lines, ears' rims and backgrounds count nothing.
- ``rgb``: the photo (3, S, S), each channel standardised over the photo
  (:func:`standardise`), which removes exposure and white balance.

Outputs: a lesion density map per lesion group at a quarter of the input's side
(non-negative; its sum over a region is the number of lesions of that group there), and
one severity value (0-3 scale) from the pooled features. Fully convolutional: it trains
on crops and reads whole photos.
"""

from __future__ import annotations

import numpy as np

GROUPS = ("comedone", "inflammatory", "mark")  # what the density heads count
STRIDE = 4  # input px per density cell
INPUTS = {"haemoglobin": 2, "rgb": 3}  # the reader's input kinds and their channels
HB_GAIN = 15.0  # haemoglobin contrast to network input: about unit SD over simulated skin


def group_of(kind: str, stage: str) -> str:
    """The density group of a lesion of type ``kind`` at life-cycle ``stage``."""
    if stage == "mark" or kind == "mark":
        return "mark"
    return "comedone" if kind.endswith("comedone") else "inflammatory"


def standardise(photos: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) → float32, each photo's channels to mean 0 and SD 1."""
    x = photos.astype(np.float32)
    mu = x.mean(axis=(2, 3), keepdims=True)
    sd = x.std(axis=(2, 3), keepdims=True) + 1.0
    return (x - mu) / sd


def prepare(photos: np.ndarray, kind: str = "haemoglobin", progress: bool = False) -> np.ndarray:
    """uint8 photos (N, 3, H, W) → the network's float32 input (N, ``INPUTS[kind]``, H, W)."""
    if kind == "rgb":
        return standardise(photos)
    from ..contrast import haemoglobin_contrast, inner_skin
    from ..skin import skin_mask

    out = np.zeros((len(photos), INPUTS[kind]) + photos.shape[2:], np.float32)
    it = range(len(photos))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="haemoglobin maps", unit="img")
    for i in it:
        mask = skin_mask(photos[i])
        inner = inner_skin(mask)
        out[i, 0] = haemoglobin_contrast(photos[i], mask)[0] * inner * HB_GAIN
        out[i, 1] = inner
    return out


def build_network(width: int = 32, groups: int = len(GROUPS), seed: int = 0, kind: str = "rgb"):
    """The network (torch ``nn.Module``) for input ``kind``, its weights drawn from ``seed``
    (global RNG untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _ReaderNet(width, groups, INPUTS[kind], kind == "haemoglobin")


def _conv(c_in: int, c_out: int, stride: int = 1):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ELU())


def _make_class():
    import torch
    import torch.nn as nn

    class ReaderNet(nn.Module):
        """Encoder to 1/8, decoder back to 1/4 with a skip; density and severity heads."""

        def __init__(self, width: int, groups: int, channels: int = 3, on_skin: bool = False):
            super().__init__()
            w = width
            self.on_skin = on_skin  # the last input channel is the skin: count there only
            self.stem = nn.Sequential(_conv(channels, w // 2, 2), _conv(w // 2, w, 2), _conv(w, w))
            self.deep = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w), _conv(2 * w, 2 * w))
            self.merge = _conv(3 * w, w)
            self.density = nn.Conv2d(w, groups, 1)
            assert self.density.bias is not None
            nn.init.constant_(self.density.bias, -8.0)  # a near-empty map at the start (softplus(-8) ≈ 3e-4)
            self.severity = nn.Linear(2 * w, 1)

        def forward(self, x):
            skip = self.stem(x)
            deep = self.deep(skip)
            up = nn.functional.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            feat = self.merge(torch.cat([skip, up], dim=1))
            density = nn.functional.softplus(self.density(feat))
            if self.on_skin:
                skin = nn.functional.adaptive_avg_pool2d(x[:, -1:], density.shape[-2:])
                density = density * skin
            severity = self.severity(deep.mean(dim=(2, 3)))[:, 0]
            return density, severity

    return ReaderNet


_CLASS = None


def _ReaderNet(width: int, groups: int, channels: int, on_skin: bool):
    global _CLASS
    if _CLASS is None:  # torch is imported only when a reader is built
        _CLASS = _make_class()
    return _CLASS(width, groups, channels, on_skin)
