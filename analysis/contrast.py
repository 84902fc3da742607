"""What the photo analysis reads of the skin: its contrast at the scale of a lesion.

:func:`redness_contrast` (CIELAB a*) and :func:`haemoglobin_contrast` (optical density on
the axis that neither light nor melanin moves), each band-passed against the skin around
it (:func:`_band_pass`); :func:`inner_skin`, the skin away from its edge.
"""

from __future__ import annotations

import numpy as np

AB_SCALE = 8.0  # a* units per unit of network input (a papule is a few units redder than its skin)
BAND = (1 / 64, 1 / 32)  # SDs of the band-pass, fractions of the side: the size of a lesion
HB_SCALE = 0.15  # optical density per unit of network input: a* and haemoglobin maps span alike
# melanin's absorption falls as wavelength^-3.48 (Jacques 2013, Phys Med Biol 58:R37); at the
# camera channels' middle wavelengths (R, G, B) its optical-density spectrum is:
_MELANIN = (np.array([610.0, 540.0, 465.0]) / 465.0) ** -3.48
# the haemoglobin axis: orthogonal to shading (1, 1, 1) and to melanin, green-absorbing positive
_HB_AXIS = np.cross(np.ones(3), _MELANIN)
_HB_AXIS = (np.sign(_HB_AXIS[1]) * _HB_AXIS / np.linalg.norm(_HB_AXIS)).astype(np.float32)
COLOURS = ("haemoglobin", "a_star")


def _band_pass(channel: np.ndarray, mask: np.ndarray, band) -> np.ndarray:
    """Skin-weighted Gaussian average of ``channel`` at SD ``band[0]`` of the side minus one at
    ``band[1]`` (what is off the skin never enters either)."""
    import cv2

    side = max(channel.shape)
    w = mask.astype(np.float32)

    def avg(frac):
        s = max(0.5, frac * side)
        return cv2.GaussianBlur(channel * w, (0, 0), s) / (cv2.GaussianBlur(w, (0, 0), s) + 1e-6)

    return (avg(band[0]) - avg(band[1])) * w


def haemoglobin_contrast(image: np.ndarray, mask: np.ndarray, band=BAND) -> np.ndarray:
    """Haemoglobin contrast at the scale of a lesion, float32 (1, H, W), 0 off the skin.

    Optical density of linear RGB projected on :data:`_HB_AXIS` (blind to shading and to
    melanin), band-passed as :func:`redness_contrast` does, in units of :data:`HB_SCALE`.
    ``image`` uint8 (3, H, W) RGB, ``mask`` bool (H, W).
    """
    c = np.ascontiguousarray(image.transpose(1, 2, 0)).astype(np.float32) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    density = -np.log(linear + 1 / 255)
    return (_band_pass(density @ _HB_AXIS, mask, band) / HB_SCALE)[None].astype(np.float32)


def inner_skin(mask: np.ndarray, band=BAND) -> np.ndarray:
    """The skin at least ``band[1]`` of the side inside the skin's edge (the band-pass's
    surround lies on the skin); the whole mask where that leaves nothing."""
    import cv2

    r = max(1, round(band[1] * max(mask.shape)))
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return inner.astype(bool) if inner.any() else mask


def contrast_map(image: np.ndarray, mask: np.ndarray, colour: str = "haemoglobin") -> np.ndarray:
    """The network's input for one photo: :func:`haemoglobin_contrast` or :func:`redness_contrast`."""
    return haemoglobin_contrast(image, mask) if colour == "haemoglobin" else redness_contrast(image, mask)


def redness_contrast(image: np.ndarray, mask: np.ndarray, band=BAND) -> np.ndarray:
    """CIELAB a* contrast at the scale of a lesion, float32 (1, H, W), 0 off the skin.

    A skin-weighted Gaussian average of a* with SD ``band[0]`` of the side minus one with
    SD ``band[1]`` (background and hair never enter either), in units of :data:`AB_SCALE`.
    ``image`` uint8 (3, H, W) RGB, ``mask`` bool (H, W).
    """
    import cv2

    rgb = np.ascontiguousarray(image.transpose(1, 2, 0)).astype(np.float32) / 255.0
    a_star = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1]
    return (_band_pass(a_star, mask, band) / AB_SCALE)[None]
