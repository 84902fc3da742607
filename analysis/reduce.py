"""From embeddings to one outcome per photo (PC1), and photometric normalisation of photos.

Reductions (:class:`PC1Reducer`):

- ``"global"``: PC1 of all embeddings of all patients.
- ``"per-patient"``: PC1 fitted separately per patient, as in the published
  pipeline (Schneider et al. 2023); each patient's sign is set to agree with the
  global PC1 direction, so that patients are comparable.
- ``"within"``: PC1 of the embeddings centred per patient. Identity (skin tone,
  face shape) differs between patients and dominates a global PCA; centring
  leaves the within-patient variation, which is what a treatment changes.

PC1 scores are projections of the embeddings (minus their grand mean) on the
axis, so each patient keeps its level. Nothing here reads the truth.

:func:`normalize_photometric` prepares each photo for the embedder from its own
pixels only: ``spots`` (the pipeline's default: a map with one dot per red spot),
``redness`` (local redness contrast), ``grey-world`` (white balance and exposure),
``retinex`` (illumination removed) or ``none``.
"""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("within", "global", "per-patient")
NORMALIZATIONS = ("none", "grey-world", "retinex", "redness", "spots")


def normalize_photometric(images: np.ndarray, method: str = "grey-world") -> np.ndarray:
    """Per photo: white balance (each channel's median to the photo's grey level) and exposure.

    ``images`` uint8 ``(N, 3, H, W)``; returns the same shape and dtype. The
    median (not the mean) is used so that lesions, a small part of the skin,
    barely move the reference.
    """
    if method == "none":
        return images
    if method == "retinex":
        return retinex(images)
    if method == "redness":
        return redness(images)
    if method == "spots":
        return spots(images)
    if method != "grey-world":
        raise ValueError(f"unknown normalisation {method!r}; known: {NORMALIZATIONS}")
    out = np.empty_like(images)
    target = 0.5 * 255.0
    for start in range(0, len(images), 64):
        x = images[start : start + 64].astype(np.float32)
        med = np.median(x.reshape(len(x), 3, -1), axis=2) + 1.0  # (n, 3)
        gain = med.mean(axis=1, keepdims=True) / med  # white balance
        x *= gain[:, :, None, None]
        level = np.median(x.reshape(len(x), -1), axis=1) + 1.0  # exposure
        x *= (target / level)[:, None, None, None]
        out[start : start + 64] = np.clip(x, 0, 255).round().astype(np.uint8)
    return out


def retinex(images: np.ndarray, sigma_frac: float = 1 / 32, gain: float = 160.0) -> np.ndarray:
    """Single-scale retinex per channel: log(photo) − log(its Gaussian blur), re-centred at 128.

    Removes smooth illumination, vignetting, white balance and exposure (all
    multiplicative and slowly varying) and keeps local structure such as
    lesions. ``sigma_frac``: blur SD as a fraction of the side; ``gain``: output
    grey levels per unit of log ratio. uint8 ``(N, 3, H, W)`` in and out.
    """
    import cv2

    n, _c, h, w = images.shape
    sigma = max(1.0, sigma_frac * max(h, w))
    out = np.empty_like(images)
    for i in range(n):
        x = np.log1p(images[i].astype(np.float32).transpose(1, 2, 0))
        blur = cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        r = 128.0 + gain * (x - blur)
        out[i] = np.clip(r, 0, 255).round().astype(np.uint8).transpose(2, 0, 1)
    return out


def redness(images: np.ndarray, sigma_frac: float = 0.03, gain: float = 8.0) -> np.ndarray:
    """Local redness contrast: where a photo is redder than the skin around it.

    Per photo, log R − log G minus its Gaussian blur (SD ``sigma_frac`` of the side),
    positive part × ``gain``, as a grey image (the same map in all three channels).
    Exposure, white balance, vignetting and broad lighting are multiplicative and
    smooth, so the log-chromaticity high-pass removes them; inflamed lesions and
    their halos remain. Uses the pixels of each photo only, never the truth.
    uint8 ``(N, 3, H, W)`` in and out.
    """
    import cv2

    n, _c, h, w = images.shape
    sigma = max(1.0, sigma_frac * max(h, w))
    out = np.empty_like(images)
    for i in range(n):
        x = images[i].astype(np.float32)
        rg = np.log(x[0] + 1.0) - np.log(x[1] + 1.0)
        hp = rg - cv2.GaussianBlur(rg, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        r = np.clip(hp * (gain * 255.0), 0, 255).round().astype(np.uint8)
        out[i] = r[None]
    return out


def spots(
    images: np.ndarray, contrast: float = 4.0, min_area_frac: float = 3 / 256**2, dot_radius: int = 2
) -> np.ndarray:
    """A map of red spots: one equal dot per spot that is redder than the skin around it.

    Per photo: CIELAB a* (red–green), lightly smoothed (SD 0.8 px at 256 px), minus a broad
    background (SD 12 px at 256 px); connected regions more than ``contrast`` a* units
    above it and at least ``min_area_frac`` of the frame large are spots; each is drawn as
    a dot of ``dot_radius`` px at its centre on black. Counting spots, rather than summing
    redness, gives every inflamed lesion one vote whatever its size or how red it is
    today, and flat faded marks (little a* contrast) and light, white balance, blur and
    noise barely move it. Uses each photo's own pixels only, never the truth.
    uint8 ``(N, 3, H, W)`` RGB in and out (the map in all three channels).
    """
    import cv2

    n, _c, h, w = images.shape
    s = max(h, w) / 256.0
    out = np.zeros_like(images)
    for i in range(n):
        rgb = np.ascontiguousarray(images[i].transpose(1, 2, 0))
        a_star = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1].astype(np.float32)
        a = cv2.GaussianBlur(a_star, (0, 0), 0.8 * s)
        mask = (a - cv2.GaussianBlur(a, (0, 0), 12 * s, borderType=cv2.BORDER_REFLECT)) > contrast
        _k, _, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        dots = np.zeros((h, w), np.uint8)
        keep = stats[1:, cv2.CC_STAT_AREA] >= max(1.0, min_area_frac * h * w)
        for x, y in centres[1:][keep]:
            cv2.circle(dots, (int(round(x)), int(round(y))), dot_radius, 255, -1)
        out[i] = dots[None]
    return out


def centre_by(X, groups) -> np.ndarray:
    """``X`` (n,) or (n, d) minus the mean of its group's rows, as float64; the one definition of centring."""
    X = np.asarray(X, dtype=np.float64)
    groups = np.asarray(groups)
    out = np.empty_like(X)
    for g in np.unique(groups):
        m = groups == g
        out[m] = X[m] - X[m].mean(axis=0)
    return out


def _pc1(X: np.ndarray) -> tuple[np.ndarray, float]:
    """First principal axis of already-centred rows and its explained variance ratio."""
    if X.shape[1] == 1:
        return np.ones(1), 1.0
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    var = s**2
    axis = vt[0]
    # a deterministic sign: the largest loading positive (truth alignment happens in evaluate)
    axis = axis * (1.0 if axis[np.argmax(np.abs(axis))] >= 0 else -1.0)
    return axis, float(var[0] / var.sum()) if var.sum() > 0 else 0.0


class PC1Reducer:
    """PC1 of embeddings; ``fit_transform(X, groups)`` → PC1 score per row.

    Learned: ``explained_variance_ratio_pc1_`` (for per-patient: the mean over
    patients), ``components_`` (the global or within axis; per patient a dict).
    """

    def __init__(self, reduction: str = "within", standardize: bool = False):
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; known: {REDUCTIONS}")
        self.reduction = reduction
        self.standardize = standardize

    def fit_transform(self, X: np.ndarray, groups) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        groups = np.asarray(groups)
        Xs = X
        if self.standardize:  # optional: equal weight per embedding dimension
            scale = X.std(axis=0)
            scale[scale == 0] = 1.0
            Xs = X / scale
        if self.reduction == "global":
            Xc = Xs - Xs.mean(axis=0)
            axis, evr = _pc1(Xc)
            self.components_ = axis
            self.explained_variance_ratio_pc1_ = evr
            return Xc @ axis
        Xw = centre_by(Xs, groups)
        axis, evr = _pc1(Xw)
        self.components_ = axis
        Xg = Xs - Xs.mean(axis=0)  # scores keep each patient's level (the models' random intercept)
        if self.reduction == "within":
            self.explained_variance_ratio_pc1_ = evr
            return Xg @ axis
        scores = np.empty(len(X))
        ratios, self.patient_components_ = [], {}
        for g in np.unique(groups):
            m = groups == g
            a, r = _pc1(Xw[m])
            if a @ axis < 0:
                a = -a
            self.patient_components_[g] = a
            ratios.append(r)
            scores[m] = Xg[m] @ a
        self.explained_variance_ratio_pc1_ = float(np.mean(ratios))
        return scores
