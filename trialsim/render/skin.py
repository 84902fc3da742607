"""A patient's skin: a two-chromophore colour model and the textures that make an identity.

Colour: linear reflectance per channel ``R_c = B_c · exp(-m·Em_c - h·Eh_c)`` with ``m``
the melanin and ``h`` the haemoglobin content (arbitrary units). Melanin darkens all
channels and blue most (Fitzpatrick I ≈ 0.1 … VI ≈ 2.4); haemoglobin absorbs green
and blue, so more of it (flush, erythema around a papule) reads as red on light skin
and as a darker, violaceous brown on dark skin, as it does in clinic photos.

Texture, fixed per patient (drawn from the patient's ``identity`` stream): low- and
mid-frequency pigment and redness variation, freckles and moles that stay put, pores
on a jittered grid (fine dark dots ~5 px apart at 512 px), skin-line micro-relief lit
from one side, the broad curvature of the cheek, an oily specular sheen and the odd
hair. The ``face`` view draws a frontal face (:mod:`trialsim.render.face`) with the same
skin.

:func:`build_skin` returns the clean base (uint8 sRGB) in the canonical frame plus
the numbers lesion sprites need (melanin level, light direction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .style import Skin

# absorption spectra over (R, G, B) in this model's units
MELANIN_ABS = np.array([1.00, 1.28, 1.52], np.float32)
HAEMOGLOBIN_ABS = np.array([0.04, 0.42, 0.38], np.float32)
BASE_REFLECTANCE = np.array([0.98, 0.86, 0.70], np.float32)
# mean melanin per Fitzpatrick type I–VI
FITZPATRICK_MELANIN = {1: 0.10, 2: 0.24, 3: 0.50, 4: 0.95, 5: 1.45, 6: 2.10}


def srgb_from_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


_SRGB_LUT_SIZE = 16384
_SRGB_LUT = np.rint(srgb_from_linear(np.linspace(0, 1, _SRGB_LUT_SIZE)) * 255).astype(np.uint8)


def srgb8_from_linear(x: np.ndarray) -> np.ndarray:
    """Linear [0, 1] → sRGB uint8 through a 14-bit table (fast; at most one grey level off)."""
    idx = np.clip(x * (_SRGB_LUT_SIZE - 1) + 0.5, 0, _SRGB_LUT_SIZE - 1).astype(np.int32)
    return _SRGB_LUT[idx]


def reflectance(melanin, haemoglobin) -> np.ndarray:
    """Linear RGB reflectance for melanin and haemoglobin maps (…, 3)."""
    m = np.asarray(melanin, np.float32)[..., None]
    h = np.asarray(haemoglobin, np.float32)[..., None]
    return BASE_REFLECTANCE * np.exp(-m * MELANIN_ABS - h * HAEMOGLOBIN_ABS)


def noise_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise with features about ``cell`` px across, zero mean and unit SD (float32)."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    f = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = (f.shape[0] - h) // 2, (f.shape[1] - w) // 2
    f = f[oy : oy + h, ox : ox + w]
    return (f - f.mean()) / (f.std() + 1e-6)


def _spots(h: int, w: int, xy: np.ndarray, amp: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian spots of one width: impulses then one blur."""
    img = np.zeros((h, w), np.float32)
    if len(xy):
        xi = np.clip(np.rint(xy[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.rint(xy[:, 1]).astype(int), 0, h - 1)
        np.add.at(img, (yi, xi), amp.astype(np.float32))
    k = int(2 * np.ceil(3 * sigma) + 1)
    return cv2.GaussianBlur(img, (k, k), sigma) * (2 * np.pi * sigma**2)


@dataclass
class SkinIdentity:
    """What makes one patient look like themselves (all drawn once per patient)."""

    fitzpatrick: int
    melanin: float
    haemoglobin: float
    seed: int  # for the patient's texture maps
    light_angle: float  # radians, direction the key light comes from in the canonical frame


def draw_identity(rng: np.random.Generator, fitzpatrick: int) -> SkinIdentity:
    u = rng.random(4)
    return SkinIdentity(
        fitzpatrick=int(fitzpatrick),
        melanin=float(FITZPATRICK_MELANIN[int(fitzpatrick)] * (0.88 + 0.24 * u[0])),
        haemoglobin=float(0.35 + 0.4 * u[1]),
        seed=int(rng.integers(0, 2**31 - 1)),
        light_angle=float(np.deg2rad(200 + 60 * u[2])),  # from the upper left, varying by patient
    )


def default_fitzpatrick(seed: int, patient_index: int) -> int:
    """Fitzpatrick type I–VI of a patient without an override: consecutive patients cycle
    through all six types (offset by the study seed), so any six patients cover them all."""
    return 1 + (int(seed) + int(patient_index)) % 6


@dataclass
class SkinBase:
    """A patient's clean skin in the canonical frame, before lesions and photo conditions."""

    pixels: np.ndarray  # uint8 H×W×3 sRGB
    identity: SkinIdentity
    light: tuple[float, float]  # unit vector pointing from the skin toward the key light (x, y)


def _skin_strengths(st: Skin | None) -> tuple[float, float, float, float]:
    """(redness patches, pore spacing at 512 px, mid-frequency pigment, pore size) of a style."""
    if st is None:
        return 0.12, 5.2, 0.03, 0.9
    return st.redness_patches, st.pore_spacing, st.mid_tone, st.pore_size


def _haemoglobin(
    rng: np.random.Generator, h: int, w: int, px: float, h0: float, patches: float, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """Haemoglobin map around the patient's level ``h0``: patchy redness and a cheek flush."""
    hb_low = noise_field(rng, h, w, 90 * px)
    hb_mid = noise_field(rng, h, w, 14 * px)
    # a flush over the cheek's apex, placed per patient
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    flush = np.exp(-(((yy - cy) / (0.45 * h)) ** 2 + ((xx - cx) / (0.45 * w)) ** 2))
    return h0 * (1 + patches * hb_low + 0.06 * hb_mid + 0.3 * rng.uniform(0.2, 1.0) * flush)


def _freckles(rng: np.random.Generator, h: int, w: int, px: float, ident: SkinIdentity, low: np.ndarray) -> np.ndarray:
    """Added melanin of freckles: many on light skin for some patients, few on dark skin;
    clustered where the low-frequency noise ``low`` is high."""
    f_rate = {1: 1.0, 2: 0.8, 3: 0.4, 4: 0.15, 5: 0.08, 6: 0.05}[ident.fitzpatrick]
    n_freck = int(rng.uniform(0, 1) ** 1.5 * 260 * f_rate * (h * w) / (512 * 512))
    fxy = rng.random((n_freck, 2)) * [w, h]
    keep = low[np.clip(fxy[:, 1].astype(int), 0, h - 1), np.clip(fxy[:, 0].astype(int), 0, w - 1)] > -0.3
    fxy = fxy[keep]
    famp = rng.uniform(0.25, 0.9, len(fxy)) * (0.25 + 0.5 * max(ident.melanin, 0.3))
    return _spots(h, w, fxy, famp, max(0.7, 1.6 * px))


def _moles(rng: np.random.Generator, h: int, w: int, px: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """0–3 moles: dark, round, a few px across; their coverage 0–1 (float32 H×W)."""
    n_mole = int(rng.integers(0, 4))
    mxy = rng.random((n_mole, 2)) * [w * 0.85, h * 0.85] + [w * 0.075, h * 0.075]
    mole_r = rng.uniform(2.0, 4.5, n_mole) * px
    mole = np.zeros((h, w), np.float32)
    for (mx, my), r in zip(mxy, mole_r):
        y0, y1 = max(0, int(my - 3 * r - 3)), min(h, int(my + 3 * r + 4))
        x0, x1 = max(0, int(mx - 3 * r - 3)), min(w, int(mx + 3 * r + 4))
        d = np.sqrt((xx[y0:y1, x0:x1] - mx) ** 2 + (yy[y0:y1, x0:x1] - my) ** 2)
        edge = 1.0 / (1.0 + np.exp(np.clip((d - r) / max(0.35, 0.4 * px), -30, 30)))
        mole[y0:y1, x0:x1] = np.maximum(mole[y0:y1, x0:x1], edge)
    return mole


def _pores(
    rng: np.random.Generator,
    h: int,
    w: int,
    px: float,
    mid: np.ndarray,
    spacing_512: float,
    pore_size: float,
    classic: bool,
) -> np.ndarray:
    """Pore depth: a jittered grid of small pits, deeper and denser at the cheek's centre
    (``classic``: the classic look; otherwise a third of the pores open wider)."""
    spacing = max(1.6, spacing_512 * px)
    gy, gx = np.mgrid[0 : h + spacing : spacing, 0 : w + spacing : spacing]
    pxy = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(-0.45, 0.45, (gx.size, 2)) * spacing
    pamp = rng.uniform(0.3, 1.0, len(pxy))
    pores = _spots(h, w, pxy, pamp, max(0.55, pore_size * px))
    if classic:
        return pores * (0.75 + 0.25 * np.clip(mid, -2, 2)) / max(pores.max(), 1e-6)
    wide = rng.random(len(pxy)) < 0.33
    pores = pores + 0.5 * _spots(h, w, pxy[wide], pamp[wide], max(0.8, 1.8 * pore_size * px))
    # depth scaled to a typical pore, not the deepest overlap
    return pores * (0.8 + 0.2 * np.clip(mid, -2, 2)) / max(float(np.percentile(pores, 99)), 1e-6)


def _skin_lines(rng: np.random.Generator, h: int, w: int, px: float) -> np.ndarray:
    """Two crossing families of fine furrows (the skin's diamond pattern), zero mean, unit SD."""
    lines = np.zeros((h, w), np.float32)
    for ang in rng.uniform(0, np.pi, 2):
        n = rng.standard_normal((h, w)).astype(np.float32)
        L = int(max(5, 13 * px)) | 1
        k = np.zeros((L, L), np.float32)
        c = L // 2
        cv2.line(
            k,
            (int(c - c * np.cos(ang)), int(c - c * np.sin(ang))),
            (int(c + c * np.cos(ang)), int(c + c * np.sin(ang))),
            1.0,
            1,
        )
        k /= k.sum()
        lines += cv2.filter2D(n, -1, k)
    blurred = cv2.GaussianBlur(lines, (0, 0), max(0.5, 0.6 * px))
    return (blurred - blurred.mean()) / (blurred.std() + 1e-6)


def _skin_maps(
    rng: np.random.Generator, h: int, w: int, ident: SkinIdentity, px: float, st: Skin | None = None
) -> tuple[np.ndarray, ...]:
    """Melanin map, haemoglobin map, relief height, sheen, pixel grids x and y, and pore depth
    for a skin patch (px = pixels per 512-unit), each H×W.

    ``st``: a :class:`trialsim.render.style.Skin` (None: the classic strengths)."""
    patches, spacing_512, mid_tone, pore_size = _skin_strengths(st)
    m0 = ident.melanin
    low = noise_field(rng, h, w, 140 * px)
    mid = noise_field(rng, h, w, 28 * px)
    fine = noise_field(rng, h, w, 5 * px)
    melanin = m0 * np.exp(0.035 * low + mid_tone * mid + 0.02 * fine)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    haem = _haemoglobin(rng, h, w, px, ident.haemoglobin, patches, xx, yy)
    melanin = melanin + _freckles(rng, h, w, px, ident, low)
    mole = _moles(rng, h, w, px, xx, yy)  # slightly raised, too
    melanin = melanin + mole * (1.6 + 0.4 * m0)
    pores = _pores(rng, h, w, px, mid, spacing_512, pore_size, st is None)
    if st is not None:
        # pores hold pigment and sebum: they read brown, not grey
        melanin = melanin + 0.3 * np.clip(pores, 0, 1.5) * (0.25 + 0.5 * m0)
    lines = _skin_lines(rng, h, w, px)
    relief = -0.6 * pores + 0.10 * lines + 0.16 * fine + 0.6 * mole
    # sheen: specular reflection of an oily film, strongest where the cheek faces the light
    sheen = np.clip(0.75 + 0.2 * low + 0.05 * mid, 0, None) * (1.0 - 0.6 * np.clip(pores, 0, 1))
    return melanin, haem, relief, sheen, xx, yy, pores


def _hairs(rng, h, w, px, n) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        x0, y0 = rng.random() * w, rng.random() * h
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(25, 70) * px
        bend = rng.uniform(-0.6, 0.6)
        t = np.linspace(0, 1, 20)
        a = ang + bend * t
        pts = np.stack([x0 + np.cumsum(np.cos(a)) * length / 20, y0 + np.cumsum(np.sin(a)) * length / 20], 1)
        cv2.polylines(mask, [np.rint(pts * 16).astype(np.int32)], False, 255, 1, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _lit(melanin, haem, relief, sheen, light, curvature, spec_amp, pores, pore_depth=0.42):
    """Linear RGB: reflectance × shading + specular."""
    gy, gx = np.gradient(relief)
    shade = 1.0 + 0.16 * (gx * light[0] + gy * light[1]) + 0.04 * relief - pore_depth * np.clip(pores, 0, 1)
    shade = shade * curvature
    lin = reflectance(melanin, haem) * shade[..., None] + (spec_amp * sheen * curvature**6)[..., None]
    return lin


def build_skin(ident: SkinIdentity, height: int, width: int, view: str = "cheek", style=None) -> SkinBase:
    """Render a patient's clean skin (no lesions, no photo conditions) in the canonical frame.

    ``style``: a :class:`trialsim.render.style.Skin` (None: the classic look)."""
    rng = np.random.default_rng(ident.seed)
    h, w = int(height), int(width)
    px = h / 512.0
    pore_depth = 0.42
    if style is not None:
        # the patient's camera distance and pores: a separate stream, so the classic draws stay as they were
        u = np.random.default_rng([ident.seed, 1]).random(2)
        px *= style.zoom_range[0] + (style.zoom_range[1] - style.zoom_range[0]) * float(u[0])
        lo, hi = style.pore_depth_range
        pore_depth = style.pore_depth * (lo + (hi - lo) * float(u[1]))
    light = (float(np.cos(ident.light_angle)), float(np.sin(ident.light_angle)))
    if view == "face":
        px_face = px * 0.5  # the whole face in frame: pores and lines are finer per pixel
        melanin, haem, relief, sheen, xx, yy, pores = _skin_maps(rng, h, w, ident, px_face)
        from .face import build_face  # the face view builds on this module's maps and lighting

        return build_face(rng, ident, melanin, haem, relief, sheen, pores, xx, yy, light, h, w)
    melanin, haem, relief, sheen, xx, yy, pores = _skin_maps(rng, h, w, ident, px, style)
    n_hair = int(rng.choice([0, 0, 1, 1, 2, 3]))
    hair = _hairs(rng, h, w, px, n_hair)
    melanin = melanin * (1 - 0.7 * hair) + hair * 0.7 * (2.8 + 0.3 * ident.melanin) if n_hair else melanin
    # the cheek's curvature: brightest toward a per-patient apex, falling off to the edges
    ay, ax = rng.uniform(0.25, 0.65) * h, rng.uniform(0.25, 0.75) * w
    r2 = ((yy - ay) / (0.9 * h)) ** 2 + ((xx - ax) / (0.9 * w)) ** 2
    if style is None:
        curvature = np.clip(1.04 - 0.38 * r2, 0.55, 1.1).astype(np.float32)
        spec_amp = rng.uniform(0.015, 0.045)
        lin = _lit(melanin, haem, relief, sheen, light, curvature, spec_amp, pores)
    else:
        # the cheek turns away from the key light: brighter on its lit side
        side = ((xx - ax) * light[0] + (yy - ay) * light[1]) / (0.9 * max(h, w))
        curvature = np.clip((1.04 - style.curvature * r2) * (1 + 0.35 * side), 0.4, 1.15).astype(np.float32)
        spec_amp = rng.uniform(*style.spec_range)
        lin = _lit(melanin, haem, relief, sheen, light, curvature, spec_amp, pores, pore_depth)
        # glints: the oily film catches the light in tiny bright specks on the lit, shiny skin
        n = int(rng.uniform(0.1, 1.0) * 700 * h * w / (512 * 512))
        gxy = rng.random((n, 2)) * [w, h]
        glint = _spots(h, w, gxy, rng.uniform(0.3, 1.0, n), max(0.5, 0.7 * px))
        lin = lin + (spec_amp * 3.0 * glint * sheen * curvature**4)[..., None]
    pixels = srgb8_from_linear(lin)
    return SkinBase(pixels=pixels, identity=ident, light=light)
