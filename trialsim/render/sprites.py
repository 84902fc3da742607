"""Lesion sprites: one lesion as ``out = skin · F + A`` on a small patch, per type and look.

Built once per (type, radius, intensity) for a patient and stamped onto every day's
scene by :class:`trialsim.render.procedural.ProceduralRenderer`. The look (halo,
redness, dome, highlight, head or plug) comes from a style's table
(:mod:`trialsim.render.style`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..lesions import MARK
from .skin import HAEMOGLOBIN_ABS, MELANIN_ABS
from .style import CLASSIC_LOOK, Look

_LOOK = CLASSIC_LOOK  # the classic look; a renderer passes its style's table


@functools.lru_cache(maxsize=256)
def _sprite_grid(ext: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets ``yy``, ``xx`` from a patch's centre (float32, (2·ext+1)² each), the
    distinct squared distances ``d2u`` (float32, ascending) and ``inv``, per pixel (flat)
    the index of its squared distance in ``d2u``; read-only, shared by every sprite of
    that extent. Radially symmetric parts of a sprite are computed on ``d2u`` (several
    times fewer values than pixels) and spread over the patch with ``inv``; each pixel
    gets the value computed from its own d2, so the bits are those of a per-pixel pass.
    """
    yy, xx = np.mgrid[-ext : ext + 1, -ext : ext + 1].astype(np.float32)
    d2 = xx**2 + yy**2
    d2u, inv = np.unique(d2.ravel(), return_inverse=True)
    for a in (yy, xx, d2u, inv):
        a.flags.writeable = False
    return yy, xx, d2u, inv


@dataclass(frozen=True)
class _Shape:
    """The intensity-free parts of a sprite (see :func:`_sprite_shape`)."""

    k: int  # patch side, 2·ext+1 px
    inv: np.ndarray  # per pixel (flat), the index of its squared distance in the radial values
    parts: dict[str, np.ndarray]


Looks = dict[str, Look]
Shapes = dict[tuple[str, float], _Shape]


def _sprite_shape(kind: str, r: float, light: tuple[float, float], looks: Looks = _LOOK) -> _Shape:
    """The parts of a sprite that depend on its type and radius but not on its intensity.

    ``r`` is the radius in px (already at least 0.6), ``light`` the unit vector toward the
    light. Returns float32 arrays: over the distinct squared distances of the sprite's
    (2·ext+1)² patch (see :func:`_sprite_grid`; ``inv`` and ``k`` = 2·ext+1 included to
    spread them), ``g`` (a mark's Gaussian), or ``gh`` (halo), ``gc`` (core), ``hsum``
    (halo + core redness, before the intensity), ``dome`` and ``head_den`` (the head's
    logistic denominator); over the patch, ``tilt`` (clipped to ±2) and ``hl``
    (highlight). A patient's sprites of one type and radius come in about ten
    intensities, so these are computed once per (type, radius) and reused (same
    operations, same order, so the same bits).
    """
    look_or_none = looks.get(kind)
    halo = (look_or_none["halo"] if look_or_none else 1.0) * r
    ext = int(np.ceil(max(3.0 * halo, 1.6 * r) + 1))
    yy, xx, d2, inv = _sprite_grid(ext)
    sh = _Shape(k=2 * ext + 1, inv=inv, parts={})
    if kind == MARK:
        sh.parts["g"] = np.exp(-d2 / (2 * (0.85 * r) ** 2))
        return sh
    look = looks[kind]
    gh = np.exp(-d2 / (2 * halo**2))
    # the inflamed core: a dome with a defined edge, inside a diffuse erythema halo
    gc = np.clip(1.0 - d2 / (1.1 * r) ** 2, 0.0, 1.0) ** 0.8
    hsum = look["halo_h"] * gh + look["core_h"] * gc
    sh.parts.update(gh=gh, gc=gc, hsum=hsum, dome=np.exp(-d2 / (2 * (0.9 * r) ** 2)))
    lx, ly = light
    sh.parts["tilt"] = np.clip((xx * lx + yy * ly) / r, -2, 2)
    if look["head"] is not None:
        rad = max(look["head"][1] * r, 0.55)
        sh.parts["head_den"] = 1.0 + np.exp(np.clip((np.sqrt(d2) - rad) / max(0.25 * rad, 0.35), -30, 30))
    if look["hl"] > 0:
        hs = max(0.4 * r, 0.7)
        hx, hy = 0.35 * r * lx, 0.35 * r * ly
        sh.parts["hl"] = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * hs**2))
    return sh


def lesion_sprite(
    kind: str,
    radius: float,
    intensity: float,
    melanin: float,
    light: tuple[float, float],
    shapes: Shapes | None = None,
    looks: Looks = _LOOK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lesion as ``out = skin · F + A`` on a square patch centred on the lesion.

    Returns ``F`` (k×k×3 multiplicative, sRGB domain), ``A`` (k×k×3 additive, 0–255)
    and ``W`` (k×k, 0–1, how much the patch is lesion; thresholded for the mask).
    ``radius`` in px, ``intensity`` 0–1, ``melanin`` the patient's level (marks are
    brown on dark skin, pink on light skin), ``light`` the unit vector toward the light.
    ``shapes``: an optional dict, kept by the caller for one patient (one ``light``),
    that caches :func:`_sprite_shape` per (type, radius).
    """
    return lesion_sprites(kind, radius, [intensity], melanin, light, shapes, looks)[0]


def lesion_sprites(
    kind: str,
    radius: float,
    intensities: list[float],
    melanin: float,
    light: tuple[float, float],
    shapes: Shapes | None = None,
    looks: Looks = _LOOK,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`lesion_sprite` for several intensities of one type and radius: one (F, A, W)
    per intensity (see :func:`_sprite_stack`)."""
    F, A, W = _sprite_stack(kind, radius, intensities, melanin, light, shapes, looks)
    return [(F[j], A[j], W[j]) for j in range(len(F))]


def _cached_shape(kind: str, r: float, light: tuple[float, float], shapes: Shapes | None, looks: Looks) -> _Shape:
    """:func:`_sprite_shape`, through the caller's per-patient cache when it keeps one."""
    if shapes is None:
        return _sprite_shape(kind, r, light, looks)
    sh = shapes.get((kind, r))
    if sh is None:
        sh = shapes[(kind, r)] = _sprite_shape(kind, r, light, looks)
    return sh


def _f32(values: list[float]) -> np.ndarray:
    """Per-sprite scalars (float64 arithmetic done) as float32, shaped to broadcast over n×k×k."""
    return np.array(values, np.float32)[:, None, None]


def _spread(radial: np.ndarray, sh: _Shape) -> np.ndarray:
    """n × distinct d2 (× c) → n × k × k (× c), each pixel taking its own distance's value."""
    # np.take: the same gather as radial[:, inv], a few times faster with a channel axis
    return np.take(radial, sh.inv, axis=1).reshape((len(radial), sh.k, sh.k) + radial.shape[2:])


def _mark_stack(sh: _Shape, I: np.ndarray, melanin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F, A, W stacks of marks: flat, brown on dark skin and pink on light skin, nothing added."""
    g = sh.parts["g"]
    dh = I * g * 0.55 / (1.0 + melanin)
    dm = I * g * (0.3 * melanin + 0.05)
    F = np.exp(-(dm[..., None] * MELANIN_ABS + dh[..., None] * HAEMOGLOBIN_ABS)) ** (1 / 2.2)
    F = _spread(F.astype(np.float32, copy=False), sh)
    return F, np.zeros_like(F, np.float32), _spread((g * I).astype(np.float32, copy=False), sh)


def _sprite_stack(
    kind: str,
    radius: float,
    intensities: list[float],
    melanin: float,
    light: tuple[float, float],
    shapes: Shapes | None = None,
    looks: Looks = _LOOK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lesion_sprite` for several intensities of one type and radius, computed together.

    Returns stacks ``F`` (n×k×k×3), ``A`` (n×k×k×3) and ``W`` (n×k×k), float32, one
    sprite per intensity, each bit-identical to a sprite computed alone:
    every scalar factor is formed in float64 as before and rounded to float32 where it
    meets the float32 patch (what numpy does with a Python float), then the same float32
    operations run in the same order over a stack of patches (n × k × k). A patient needs
    about ten intensities per (type, radius); stacking them cuts the numpy calls tenfold.
    Radially symmetric terms (everything but the dome's tilt and the highlight) are
    computed once per distinct distance and spread over the patch (see :func:`_sprite_grid`).
    """
    r = max(float(radius), 0.6)
    sh = _cached_shape(kind, r, light, shapes, looks)
    Is = [float(i) for i in intensities]
    I = _f32(Is)[:, :, 0]  # n×1: per-sprite scalars against the radial values (n × distinct d2)
    if kind == MARK:
        return _mark_stack(sh, I, melanin)
    look, p = looks[kind], sh.parts
    gh, gc = p["gh"], p["gc"]
    dh = I * p["hsum"]
    if kind == "nodule":  # deep, violaceous
        dm = _f32([i * 0.15 * (0.6 + melanin) for i in Is])[:, :, 0] * gc
    elif kind in ("papule", "pustule"):  # congested blood darkens every channel a little
        dm = _f32([i * 0.12 for i in Is])[:, :, 0] * gc
    else:
        dm = np.zeros_like(dh)
    F = _spread(np.exp(-(dm[..., None] * MELANIN_ABS + dh[..., None] * HAEMOGLOBIN_ABS)) ** (1 / 2.2), sh)
    A = np.zeros_like(F)
    # a raised dome lit from one side: brighter toward the light, a soft shadow away from it
    dome = _spread(_f32([0.45 * look["dome"] * i for i in Is])[:, :, 0] * p["dome"], sh)
    F = F * (1.0 + dome * p["tilt"])[..., None]
    if look["head"] is not None:
        col, _frac, wgt = look["head"]
        w = _spread(_f32([wgt * i for i in Is])[:, :, 0] / p["head_den"], sh)
        F = F * (1.0 - w[..., None])
        A = A + w[..., None] * np.array(col, np.float32)
    if look["hl"] > 0:
        A = A + (_f32([255.0 * look["hl"] * i for i in Is]) * p["hl"])[..., None]
    W = _spread(np.maximum(gh * _f32([min(1.0, look["halo_h"] * 2 * i) for i in Is])[:, :, 0], gc * I), sh)
    return (F.astype(np.float32, copy=False), A.astype(np.float32, copy=False), W.astype(np.float32, copy=False))
