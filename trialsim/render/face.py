"""The frontal face view: a patient's skin maps shaped into a face with features and hair.

Features come from :data:`trialsim.lesion_geometry.FACE` (height units), so lesions, which
avoid the same ellipses, never sit on the eyes, brows, nose or lips.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..lesion_geometry import FACE
from .skin import SkinBase, SkinIdentity, _lit, noise_field, reflectance, srgb8_from_linear

_HAIR_COLOURS = [(0.55, 0.40, 0.22), (0.30, 0.18, 0.09), (0.12, 0.07, 0.04), (0.05, 0.04, 0.035)]
_IRIS_COLOURS = [(0.20, 0.35, 0.55), (0.30, 0.40, 0.25), (0.35, 0.20, 0.08), (0.15, 0.08, 0.04)]


def _ellipse_field(xx, yy, cx, cy, ax, ay):
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2


def _soft(field, edge):
    """1 inside an ellipse field (<1), 0 outside, with a soft edge of ``edge`` (field units)."""
    return np.clip((1.0 - field) / edge, 0.0, 1.0).astype(np.float32)


def _face_px(e: tuple[float, float, float, float], cu: float, H: float) -> tuple[float, float, float, float]:
    """A :data:`FACE` ellipse (height units, u from the centre) in pixels: (cx, cy, ax, ay)."""
    du, v, au, av = e
    return (cu + du * H, v * H, au * H, av * H)


def _face_shading(
    xx: np.ndarray,
    yy: np.ndarray,
    face_e: tuple[float, ...],
    nose_e: tuple[float, ...],
    light: tuple[float, float],
    H: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(skin coverage of face and neck, shading) of the frontal face; ellipses in pixels."""
    fx, fy, fax, fay = face_e
    # narrow the jaw toward the chin
    taper = 1.0 + 0.35 * np.clip((yy - fy) / fay, 0, 1) ** 2
    face_f = ((xx - fx) / (fax / taper)) ** 2 + ((yy - fy) / fay) ** 2
    face = _soft(face_f, 0.04)
    neck_edge = ((np.abs(xx - fx) < 0.14 * H) & (yy > fy)).astype(np.float32)
    neck = cv2.GaussianBlur(neck_edge, (0, 0), 1.5)
    skin = np.clip(face + neck, 0, 1)
    # shading: the face is a rounded surface; the neck sits in the jaw's shadow
    curv = np.clip(1.06 - 0.5 * np.clip(face_f, 0, 1.2) ** 2, 0.5, 1.1)
    below = np.clip((yy - (fy + fay * 0.80)) / (0.08 * H), 0, 1) * (face < 0.5)
    neck_shade = 0.55 + 0.2 * np.clip((yy - (fy + fay)) / (0.15 * H), 0, 1)
    curv = (curv * (1 - below) + neck_shade * below).astype(np.float32)
    # nose: a side shadow and two nostrils
    nx, ny, _nax, _nay = nose_e
    side = np.exp(-(((xx - (nx - light[0] * 0.03 * H)) / (0.018 * H)) ** 2 + ((yy - ny) / (0.08 * H)) ** 2))
    curv = curv * (1 - 0.18 * side)
    for s in (-1, 1):
        nos = np.exp(-(((xx - (nx + s * 0.022 * H)) / (0.012 * H)) ** 2 + ((yy - (ny + 0.07 * H)) / (0.007 * H)) ** 2))
        curv = curv * (1 - 0.55 * nos)
    return skin, curv


def _lips(
    lin: np.ndarray,
    melanin: np.ndarray,
    haem: np.ndarray,
    curv: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    lips_e: tuple[float, ...],
    H: float,
) -> np.ndarray:
    """``lin`` with lips drawn: more haemoglobin and a dark line between them."""
    lx, ly, lax, lay = lips_e
    lips = _soft(_ellipse_field(xx, yy, lx, ly, lax, lay), 0.25)
    lip_col = reflectance(melanin * 1.15, haem + 1.6) * curv[..., None] * 0.9
    lin = lin * (1 - lips[..., None]) + lip_col * lips[..., None]
    line = np.exp(-(((yy - ly) / (0.004 * H)) ** 2)) * _soft(_ellipse_field(xx, yy, lx, ly, lax, lay * 3), 0.3)
    return lin * (1 - 0.6 * line[..., None])


def _eye(
    lin: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    eye_e: tuple[float, ...],
    light: tuple[float, float],
    iris_col: np.ndarray,
    dark_sclera: bool,
) -> np.ndarray:
    """``lin`` with one eye drawn: sclera, iris, pupil, a catch-light and the upper lid line."""
    ex, ey, eax, eay = eye_e
    eye = _soft(_ellipse_field(xx, yy, ex, ey, eax, eay), 0.2)
    sclera = np.array([0.62, 0.58, 0.55], np.float32) * (0.85 if dark_sclera else 1.0)
    iris = _soft(_ellipse_field(xx, yy, ex, ey, eay * 0.95, eay * 0.95), 0.3) * eye
    pupil = _soft(_ellipse_field(xx, yy, ex, ey, eay * 0.42, eay * 0.42), 0.4) * eye
    glint = (
        _soft(
            _ellipse_field(xx, yy, ex + light[0] * eay * 0.35, ey + light[1] * eay * 0.35, eay * 0.15, eay * 0.15),
            0.6,
        )
        * eye
    )
    col = sclera * (1 - iris[..., None]) + iris_col * iris[..., None]
    col = col * (1 - pupil[..., None]) + 0.02 * pupil[..., None]
    col = col + 0.6 * glint[..., None]
    lin = lin * (1 - eye[..., None]) + col * eye[..., None]
    lid = np.exp(-(((_ellipse_field(xx, yy, ex, ey + eay * 0.2, eax * 1.02, eay * 1.25) - 1) / 0.08) ** 2))
    lid = lid * (yy < ey)
    return lin * (1 - 0.65 * lid[..., None])


def _brow(
    lin: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    brow_e: tuple[float, ...],
    hair_col: np.ndarray,
    hair_tex: np.ndarray,
) -> np.ndarray:
    """``lin`` with one arched brow in the hair's colour and texture."""
    bx, by, bax, bay = brow_e
    brow_f = ((xx - bx) / bax) ** 2 + ((yy - by + 0.3 * bay * (1 - ((xx - bx) / bax) ** 2)) / bay) ** 2
    brow = _soft(brow_f, 0.35) * hair_tex
    return lin * (1 - brow[..., None]) + hair_col * hair_tex[..., None] * brow[..., None]


def _hair_and_wall(
    rng: np.random.Generator,
    lin: np.ndarray,
    skin: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    face_e: tuple[float, ...],
    hair_col: np.ndarray,
    hair_tex: np.ndarray,
    h: int,
    w: int,
) -> np.ndarray:
    """The face composited back to front: wall, hair behind the head, skin, hair over the forehead."""
    H = float(h)
    fx, fy, fax, fay = face_e
    wall = np.array([0.55, 0.56, 0.58], np.float32) * (0.8 + 0.2 * (1 - yy / H))[..., None]
    hairline = FACE["hairline_v"] * H + 0.02 * H * noise_field(rng, h, w, 20).clip(-2, 2)
    head = _soft(_ellipse_field(xx, yy, fx, fy - 0.04 * H, fax * 1.12, fay * 1.1), 0.05)
    behind = head * np.clip((fy + 0.12 * H - yy) / (0.04 * H), 0, 1)
    front = head * np.clip((hairline - yy) / (0.01 * H) + 1, 0, 1)
    hair_shade = np.clip(
        1.0 - 0.35 * np.clip(_ellipse_field(xx, yy, fx, fy - 0.04 * H, fax * 1.12, fay * 1.1), 0, 1), 0.5, 1
    )
    hair_lin = hair_col * (hair_tex * hair_shade)[..., None]
    out = wall * (1 - behind[..., None]) + hair_lin * 0.8 * behind[..., None]
    out = out * (1 - skin[..., None]) + lin * skin[..., None]
    return out * (1 - front[..., None]) + hair_lin * front[..., None]


def build_face(
    rng: np.random.Generator,
    ident: SkinIdentity,
    melanin: np.ndarray,
    haem: np.ndarray,
    relief: np.ndarray,
    sheen: np.ndarray,
    pores: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    light: tuple[float, float],
    h: int,
    w: int,
) -> SkinBase:
    """The frontal face view of a patient's skin maps (features from :data:`FACE`)."""
    H = float(h)
    cu = w / 2.0
    face_e = _face_px(FACE["face"], cu, H)
    skin, curv = _face_shading(xx, yy, face_e, _face_px(FACE["nose"], cu, H), light, H)
    lin = _lit(melanin, haem, relief, sheen, light, curv, rng.uniform(0.015, 0.035), pores)
    lin = _lips(lin, melanin, haem, curv, xx, yy, _face_px(FACE["lips"], cu, H), H)

    hair_col = np.array(_HAIR_COLOURS[min(3, (ident.fitzpatrick - 1) // 2 + int(rng.integers(0, 2)))], np.float32)
    iris_col = np.array(_IRIS_COLOURS[min(3, (ident.fitzpatrick - 1) // 2 + int(rng.integers(0, 2)))], np.float32)
    hair_tex = 0.75 + 0.25 * noise_field(rng, h, w, 3).clip(-2, 2) / 2
    for e, b in zip(FACE["eyes"], FACE["brows"]):
        lin = _eye(lin, xx, yy, _face_px(e, cu, H), light, iris_col, ident.fitzpatrick >= 5)
        lin = _brow(lin, xx, yy, _face_px(b, cu, H), hair_col, hair_tex)
    lin = _hair_and_wall(rng, lin, skin, xx, yy, face_e, hair_col, hair_tex, h, w)
    pixels = srgb8_from_linear(lin)
    return SkinBase(pixels=pixels, identity=ident, light=light)
