"""The side view: the side of a face turned to the camera, as self-photographed trial photos show it.

The cheek and jaw fill the right of the frame (the patient's skin model of
:mod:`trialsim.render.skin`, shaded by the face's curvature and the key light), the ear
sits upper middle, hair falls behind it over a tiled wall, and the neck lies in the
jaw's shadow below. Geometry: :data:`trialsim.views.SIDE` (lesions are placed with the
same numbers, so none lands off the cheek).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..views import SIDE
from .skin import SkinBase, SkinIdentity, _lit, _skin_maps, noise_field, reflectance, srgb8_from_linear

_HAIR = [(0.30, 0.18, 0.09), (0.12, 0.07, 0.04), (0.05, 0.04, 0.035)]


def _field(x, y, e, grow=1.0):
    cx, cy, a, b = e
    return ((x - cx) / (grow * a)) ** 2 + ((y - cy) / (grow * b)) ** 2


def _wall(rng, x, y, h, w) -> np.ndarray:
    """Linear RGB of a tiled wall: pale tiles, darker grout on a slightly rotated grid, a soft gradient."""
    ang = np.deg2rad(rng.uniform(-25, 25))
    pitch = rng.uniform(0.22, 0.35) * h
    u = (x * w) * np.cos(ang) + (y * h) * np.sin(ang)
    v = -(x * w) * np.sin(ang) + (y * h) * np.cos(ang)
    grout = np.maximum(
        np.exp(-(((u % pitch) - 1.0) ** 2) / 1.2), np.exp(-(((v % (pitch * 0.5)) - 1.0) ** 2) / 1.2)
    ).astype(np.float32)
    tone = np.array(rng.uniform([0.55, 0.58, 0.60], [0.75, 0.78, 0.80]), np.float32)
    shade = (0.75 + 0.3 * (1 - y) + 0.05 * noise_field(rng, h, w, 60)).astype(np.float32)
    return tone * shade[..., None] * (1 - 0.35 * grout)[..., None]


def build_side(ident: SkinIdentity, height: int, width: int, style=None) -> SkinBase:
    """A patient's clean side-of-face scene (uint8 sRGB) in the canonical frame; ``style`` a
    :class:`trialsim.render.style.Skin` or None (the classic strengths)."""
    rng = np.random.default_rng(ident.seed)
    h, w = int(height), int(width)
    px = h / 512.0 * 0.7  # the camera is farther away than for a close-up: finer texture per pixel
    light = (float(np.cos(ident.light_angle)), float(np.sin(ident.light_angle)))
    melanin, haem, relief, sheen, xx, yy, pores = _skin_maps(rng, h, w, ident, px, style)
    pores = pores * 0.5  # from an arm's length, pores barely show
    x, y = xx / w, yy / h
    f = _field(x, y, SIDE["face"])
    face = np.clip((1 - f) / 0.02, 0, 1).astype(np.float32)
    # the cheek is brightest at its centre, turning away toward the jaw; the key light adds a tilt
    tilt = 1 + 0.25 * ((x - 0.7) * light[0] + (y - 0.45) * light[1])
    curv = np.clip((1.08 - 0.5 * np.clip(f, 0, 1) ** 2) * tilt, 0.45, 1.15).astype(np.float32)
    spec_range, pore_depth = ((0.015, 0.045), 0.42) if style is None else (style.spec_range, style.pore_depth)
    skin = _lit(melanin, haem, relief, sheen, light, curv, rng.uniform(*spec_range), pores, pore_depth)
    base = reflectance(melanin, haem)
    # the face is drawn over the neck, so the neck needs no hole for it (no seam at the jaw)
    neck = np.clip((y - SIDE["neck_top"]) / 0.04, 0, 1).astype(np.float32)
    neck_lin = base * (0.62 + 0.12 * np.clip((y - SIDE["neck_top"]) / 0.4, 0, 1))[..., None]
    fe = _field(x, y, SIDE["ear"])
    ear = np.clip((1 - fe) / 0.12, 0, 1).astype(np.float32)
    concha = np.exp(-fe * 5.0) * (x > SIDE["ear"][0] - 0.01)  # the ear's hollow, in shadow
    rim = np.exp(-(((fe - 0.8) / 0.12) ** 2))  # the helix catches the light
    ear_lin = reflectance(melanin, haem * 1.3) * (0.9 - 0.3 * concha + 0.12 * rim)[..., None]
    # hair: behind the ear and over the upper left, strands streaked along one direction
    streak = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigmaX=2.0, sigmaY=30 * px)
    streak = streak / (streak.std() + 1e-6)
    hair_col = np.array(_HAIR[min(2, (ident.fitzpatrick - 1) // 2 + int(rng.integers(0, 2)))], np.float32)
    hair_lin = hair_col * np.clip(0.9 + 0.12 * streak, 0.6, 1.3)[..., None]
    hair = np.clip((1.9 - f) / 0.15, 0, 1) * np.clip((0.60 - y) / 0.06, 0, 1) * (1 - face)
    hair = np.clip(hair * (0.95 + 0.1 * np.clip(streak, -1, 1)), 0, 1).astype(np.float32)
    out = _wall(rng, x, y, h, w)
    for layer, m in ((hair_lin, hair), (neck_lin, neck), (skin, face), (ear_lin, ear)):
        out = out * (1 - m[..., None]) + layer * m[..., None]
    return SkinBase(pixels=srgb8_from_linear(out), identity=ident, light=light)
