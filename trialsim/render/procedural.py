"""The default renderer: procedural skin, persistent lesions, phone-photo conditions.

Per patient: a clean skin base (:mod:`trialsim.render.skin`, from the patient's
``identity`` stream) and a lesion population over all observed days
(:mod:`trialsim.lesions`, ``lesions`` stream), both computed once. Per day: the
day's lesions stamped onto the base as sprites (erythema halo, dome shading and
highlight, a pustule's head, a comedone's plug), cached per type, size and
intensity. Per photo: :func:`trialsim.render.nuisance.apply_nuisance` with the
photo's seed, then JPEG.

The same clean images (:meth:`ProceduralRenderer.clean_images`) and the clean
skin (:meth:`ProceduralRenderer.identity_image`) are what the SDXL renderer
refines, so both renderers share lesion truth and identity.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import pandas as pd

from ..lesions import MARK, active_count, canonical_size, image_truth, lesion_truth
from ..protocol import Protocol
from ..seeding import patient_rng
from .base import PatientJob, RenderedImage, Renderer
from .nuisance import apply_nuisance_scene
from .skin import (HAEMOGLOBIN_ABS, MELANIN_ABS, SkinBase, build_skin, default_fitzpatrick, draw_identity)


@dataclass
class CleanImage:
    """One photo's content before the photo conditions (canonical frame)."""

    image: str                # relative path, as in the manifest
    pixels: np.ndarray        # uint8 H×W×3 RGB
    lesions: pd.DataFrame     # LESION_COLUMNS
    lesion_count: int         # active (non-mark) lesions
    lesion_mask: np.ndarray   # bool H×W: where lesions and their halos are drawn


# per type: halo width and redness, core redness, dome height, highlight, and a blend
# toward a head/plug colour (RGB, radius as a fraction of the lesion radius, weight)
_LOOK = {
    "papule":          dict(halo=2.0, halo_h=1.8, core_h=3.2, dome=1.0, hl=0.07, head=None),
    "pustule":         dict(halo=2.0, halo_h=1.8, core_h=2.6, dome=1.1, hl=0.16,
                            head=((242, 232, 190), 0.5, 0.85)),
    "nodule":          dict(halo=1.6, halo_h=1.3, core_h=3.2, dome=0.8, hl=0.10, head=None),
    "closed_comedone": dict(halo=1.3, halo_h=0.6, core_h=0.0, dome=0.9, hl=0.08,
                            head=((240, 228, 205), 0.6, 0.22)),
    "open_comedone":   dict(halo=1.1, halo_h=0.18, core_h=0.0, dome=0.3, hl=0.0,
                            head=((48, 38, 32), 0.5, 0.85)),
}


@functools.lru_cache(maxsize=256)
def _sprite_grid(ext: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets ``yy``, ``xx`` from a patch's centre and ``d2`` = their squared distance
    (float32, (2·ext+1)² each, read-only), shared by every sprite of that extent."""
    yy, xx = np.mgrid[-ext:ext + 1, -ext:ext + 1].astype(np.float32)
    d2 = xx ** 2 + yy ** 2
    for a in (yy, xx, d2):
        a.flags.writeable = False
    return yy, xx, d2


def lesion_sprite(kind: str, radius: float, intensity: float, melanin: float,
                  light: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A lesion as ``out = skin · F + A`` on a square patch centred on the lesion.

    Returns ``F`` (k×k×3 multiplicative, sRGB domain), ``A`` (k×k×3 additive, 0–255)
    and ``W`` (k×k, 0–1, how much the patch is lesion; thresholded for the mask).
    ``radius`` in px, ``intensity`` 0–1, ``melanin`` the patient's level (marks are
    brown on dark skin, pink on light skin), ``light`` the unit vector toward the light.
    """
    r = max(float(radius), 0.6)
    look = _LOOK.get(kind)
    halo = (look["halo"] if look else 1.0) * r
    ext = int(np.ceil(max(3.0 * halo, 1.6 * r) + 1))
    yy, xx, d2 = _sprite_grid(ext)
    I = float(intensity)
    if kind == MARK:
        g = np.exp(-d2 / (2 * (0.85 * r) ** 2))
        dh = I * g * 0.55 / (1.0 + melanin)
        dm = I * g * (0.3 * melanin + 0.05)
        F = np.exp(-(dm[..., None] * MELANIN_ABS + dh[..., None] * HAEMOGLOBIN_ABS)) ** (1 / 2.2)
        return F.astype(np.float32), np.zeros_like(F, np.float32), (g * I).astype(np.float32)
    gh = np.exp(-d2 / (2 * halo ** 2))
    # the inflamed core: a dome with a defined edge, inside a diffuse erythema halo
    gc = np.clip(1.0 - d2 / (1.1 * r) ** 2, 0.0, 1.0) ** 0.8
    dh = I * (look["halo_h"] * gh + look["core_h"] * gc)
    if kind == "nodule":  # deep, violaceous
        dm = I * 0.15 * (0.6 + melanin) * gc
    elif kind in ("papule", "pustule"):  # congested blood darkens every channel a little
        dm = I * 0.12 * gc
    else:
        dm = np.zeros_like(dh)
    F = np.exp(-(dm[..., None] * MELANIN_ABS + dh[..., None] * HAEMOGLOBIN_ABS)) ** (1 / 2.2)
    A = np.zeros_like(F)
    # a raised dome lit from one side: brighter toward the light, a soft shadow away from it
    dome = np.exp(-d2 / (2 * (0.9 * r) ** 2))
    lx, ly = light
    tilt = (xx * lx + yy * ly) / r
    F = F * (1.0 + 0.45 * look["dome"] * I * dome * np.clip(tilt, -2, 2))[..., None]
    if look["head"] is not None:
        col, frac, wgt = look["head"]
        rad = max(frac * r, 0.55)
        w = wgt * I / (1.0 + np.exp(np.clip((np.sqrt(d2) - rad) / max(0.25 * rad, 0.35), -30, 30)))
        F = F * (1.0 - w[..., None])
        A = A + w[..., None] * np.array(col, np.float32)
    if look["hl"] > 0:
        hs = max(0.4 * r, 0.7)
        hx, hy = 0.35 * r * lx, 0.35 * r * ly
        hl = np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * hs ** 2))
        A = A + (255.0 * look["hl"] * I * hl)[..., None]
    W = np.maximum(gh * min(1.0, look["halo_h"] * 2 * I), gc * I)
    return F.astype(np.float32), A.astype(np.float32), W.astype(np.float32)


class _PatientState:
    """What the renderer computes once per patient."""

    def __init__(self, skin: SkinBase, by_day: dict[int, dict[str, np.ndarray]], with_mask: bool):
        self.skin = skin
        # inside: uint8 BGRA scenes (OpenCV's channel order; four channels for its fast paths)
        self.base = cv2.cvtColor(skin.pixels, cv2.COLOR_RGB2BGRA)
        self.by_day = by_day
        self.sprites: dict[tuple, tuple[np.ndarray, np.ndarray | None, np.ndarray, int]] = {}
        self.with_mask = with_mask  # only clean_images needs the lesion mask; it costs a third of the drawing
        self.day_cache: tuple[int, np.ndarray, np.ndarray] | None = None


class ProceduralRenderer(Renderer):
    """Procedural skin and lesions with phone-photo conditions; see the module docstring.

    Options: ``quality_range`` (JPEG quality bounds at strength 1, default (75, 95)).
    """

    name = "procedural"
    extension = ".jpg"

    def __init__(self, protocol: Protocol, quality_range=(75, 95), **_ignored):
        super().__init__(protocol)
        r = protocol.rendering
        self.height, self.width = canonical_size(r.image_size, r.aspect)
        self.view = r.view
        self.aspect = r.aspect
        self.strength = float(r.nuisance)
        self.quality_range = tuple(quality_range)
        self.radius_step = 0.25 * max(1.0, self.height / 256.0)
        self._skins: dict[int, SkinBase] = {}
        cv2.setNumThreads(1)  # deterministic and no oversubscription when patients run in parallel

    # --- identity -----------------------------------------------------------------------------
    def fitzpatrick(self, patient_index: int, patient_id: str) -> int:
        for o in self.protocol.patients.overrides:
            if o.patient_id == str(patient_id) and o.fitzpatrick is not None:
                return int(o.fitzpatrick)
        return default_fitzpatrick(self.protocol.seed, patient_index)

    def skin(self, patient_index: int, patient_id: str) -> SkinBase:
        """The patient's clean skin base (cached for the last patient)."""
        if patient_index not in self._skins:
            rng = patient_rng(self.protocol.seed, patient_index, "identity")
            ident = draw_identity(rng, self.fitzpatrick(patient_index, patient_id))
            self._skins = {patient_index: build_skin(ident, self.height, self.width, self.view)}
        return self._skins[patient_index]

    def identity_image(self, patient_index: int, patient_id: str) -> np.ndarray:
        """The patient's clear skin (grade 0, no photo conditions), uint8 H×W×3 RGB."""
        return self.skin(patient_index, patient_id).pixels.copy()

    # --- lesions ------------------------------------------------------------------------------
    def _state(self, job: PatientJob, with_mask: bool = False) -> _PatientState:
        skin = self.skin(job.patient_index, job.patient_id)
        rng = patient_rng(self.protocol.seed, job.patient_index, "lesions")
        _, by_day = lesion_truth(job, self.height, self.width, rng, self.view, self.aspect)
        return _PatientState(skin, by_day, with_mask)

    @staticmethod
    def _image_rows(st: _PatientState, job: PatientJob) -> tuple[list, list, list[pd.DataFrame], dict]:
        """``job.images`` as lists (image, day), each image's truth frame, and active lesions per day."""
        images = job.images["image"].tolist()
        days = [int(d) for d in job.images["day"].tolist()]
        counts = {d: active_count(st.by_day.get(d)) for d in set(days)}
        return images, days, image_truth(st.by_day, images, days), counts

    def _sprite(self, st: _PatientState, key: tuple):
        sp = st.sprites.get(key)
        if sp is None:
            F, A, W = lesion_sprite(key[0], key[1], key[2], st.skin.identity.melanin, st.skin.light)
            F4 = np.concatenate([F[..., ::-1], np.ones_like(F[..., :1])], axis=2)
            A4 = np.concatenate([A[..., ::-1], np.zeros_like(A[..., :1])], axis=2)
            A8 = np.ascontiguousarray(np.rint(A4).clip(0, 255), np.uint8)
            sp = (np.ascontiguousarray(F4, np.float32), A8 if A8.any() else None, W > 0.15, F.shape[0] // 2)
            st.sprites[key] = sp
        return sp

    def _draw_day(self, st: _PatientState, day: int) -> tuple[np.ndarray, np.ndarray]:
        """The day's clean scene (uint8 BGRA) and lesion mask."""
        if st.day_cache is not None and st.day_cache[0] == day:
            return st.day_cache[1], st.day_cache[2]
        rows = st.by_day.get(day)
        h, w = st.base.shape[:2]
        mask = np.zeros((h, w), bool)
        if rows is None or not len(rows["x"]):
            st.day_cache = (day, st.base, mask)
            return st.base, mask
        img = st.base.copy()
        # marks underneath, then active lesions; sprites quantised in radius (1/4 px at 256 px,
        # 1/2 px at 512 px) and to 0.1 in intensity so that most come from the cache
        order = np.argsort((rows["stage"] != MARK).astype(int), kind="stable")
        kinds = rows["type"][order].tolist()
        step = self.radius_step
        rq = (np.round(rows["radius"][order].astype(float) / step) * step).tolist()
        iq = (np.round(rows["intensity"][order].astype(float) * 10) / 10).tolist()
        cxs = np.rint(rows["x"][order].astype(float)).astype(int).tolist()
        cys = np.rint(rows["y"][order].astype(float)).astype(int).tolist()
        sprites, with_mask = st.sprites, st.with_mask
        for kind, r, inten, cx, cy in zip(kinds, rq, iq, cxs, cys):
            if inten < 0.15:
                continue  # a mark faded below what a photo shows (under 1 % change in colour)
            sp = sprites.get((kind, r, inten)) or self._sprite(st, (kind, r, inten))
            F, A, M, k = sp
            x0, y0, x1, y1 = cx - k, cy - k, cx + k + 1, cy + k + 1
            if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:  # the usual case: the patch lies inside
                roi = img[y0:y1, x0:x1]
                # out = skin · F + A, rounded and saturated by OpenCV, written in place
                if A is None:
                    cv2.multiply(roi, F, dst=roi, dtype=cv2.CV_8U)
                else:
                    cv2.add(cv2.multiply(roi, F, dtype=cv2.CV_8U), A, dst=roi)
                if with_mask:
                    mask[y0:y1, x0:x1] |= M
                continue
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = F.shape[1] - max(0, x1 - w), F.shape[0] - max(0, y1 - h)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            shaded = cv2.multiply(img[y0:y1, x0:x1], F[sy0:sy1, sx0:sx1], dtype=cv2.CV_8U)
            img[y0:y1, x0:x1] = shaded if A is None else cv2.add(shaded, A[sy0:sy1, sx0:sx1])
            if with_mask:
                mask[y0:y1, x0:x1] |= M[sy0:sy1, sx0:sx1]
        st.day_cache = (day, img, mask)
        return img, mask

    def clean_images(self, job: PatientJob) -> Iterator[CleanImage]:
        """One :class:`CleanImage` per row of ``job.images``: lesions on the patient's skin, no nuisance."""
        st = self._state(job, with_mask=True)
        images, days, truth, counts = self._image_rows(st, job)
        for image, day, lesions in zip(images, days, truth):
            scene, mask = self._draw_day(st, day)
            pixels = cv2.cvtColor(scene, cv2.COLOR_BGRA2RGB)
            yield CleanImage(image=image, pixels=pixels, lesions=lesions,
                             lesion_count=counts[day], lesion_mask=mask.copy())

    # --- the renderer interface ---------------------------------------------------------------
    def render_patient(self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
                       ) -> Iterator[RenderedImage]:
        st = self._state(job)
        images, days, truth, counts = self._image_rows(st, job)
        seeds = [int(v) for v in job.images["seed"].tolist()]
        hours = [float(v) for v in job.images["hour"].tolist()]
        for image, day, seed, hour, lesions in zip(images, days, seeds, hours, truth):
            data = None
            if wanted(image):
                scene, _ = self._draw_day(st, day)
                data = apply_nuisance_scene(scene, seed, self.strength, hour, self.quality_range)
            yield RenderedImage(image=image, data=data, lesions=lesions, lesion_count=counts[day])

    def finish_patient(self, job: PatientJob, out: Path) -> None:
        """Write the patient's contact sheet into ``out/contact_sheets/``."""
        from .contact import write_contact_sheet
        write_contact_sheet(job, out)
