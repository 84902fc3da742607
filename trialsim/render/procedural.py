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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..lesions import MARK, active_count, canonical_size, image_truth, lesion_truth
from ..protocol import Protocol
from ..seeding import patient_rng
from ..views import patient_view
from .base import PatientJob, RenderedImage, Renderer
from .nuisance import apply_nuisance_scene, draw_conditions, draw_room, encode_jpeg, photo_affine, photograph_bgra
from .side import build_side
from .skin import SkinBase, build_skin, default_fitzpatrick, draw_identity
from .sprites import Shapes, _sprite_stack, lesion_sprite, lesion_sprites  # noqa: F401 (public here too)
from .style import STYLES


@dataclass
class CleanImage:
    """One photo's content before the photo conditions (canonical frame)."""

    image: str  # relative path, as in the manifest
    pixels: np.ndarray  # uint8 H×W×3 RGB
    lesions: pd.DataFrame  # LESION_COLUMNS
    lesion_count: int  # active (non-mark) lesions
    lesion_mask: np.ndarray  # bool H×W: where lesions and their halos are drawn


class _PatientState:
    """What the renderer computes once per patient."""

    def __init__(
        self,
        skin: SkinBase,
        by_day: dict[int, dict[str, np.ndarray]],
        sprite_keys: list[tuple],
        sprite_groups: list[int],
        stamps: dict[int, tuple[list, list, list]],
        with_mask: bool,
    ):
        self.skin = skin
        self.sprite_keys = sprite_keys  # (type, radius px, intensity) per sprite number
        self.group_members: dict[int, list[int]] = {}  # sprite numbers per (type, radius) group
        for j, g in enumerate(sprite_groups):
            self.group_members.setdefault(g, []).append(j)
        self.sprite_groups = sprite_groups  # (type, radius) group per sprite number
        self.stamps = stamps  # per day: sprite numbers, centres x, centres y, in drawing order
        # inside: uint8 BGRA scenes (OpenCV's channel order; four channels for its fast paths)
        self.base = cv2.cvtColor(skin.pixels, cv2.COLOR_RGB2BGRA)
        self.by_day = by_day
        # per sprite number, built on first use: F (BGRA float32), A (BGRA uint8, None when all
        # zero), mask (bool), half-width
        self.sprites: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, int] | None] = [None] * len(sprite_keys)
        self.shapes: Shapes = {}  # _sprite_shape per (type, radius)
        self.with_mask = with_mask  # only clean_images needs the lesion mask; it costs a third of the drawing
        self.day_cache: tuple[int, np.ndarray, np.ndarray | None] | None = None


class ProceduralRenderer(Renderer):
    """Procedural skin and lesions with phone-photo conditions; see the module docstring.

    Options: ``quality_range`` (JPEG quality bounds at strength 1, default (75, 95)).
    """

    name = "procedural"
    extension = ".jpg"

    def __init__(self, protocol: Protocol, quality_range=(75, 95)):
        super().__init__(protocol)
        r = protocol.rendering
        self.height, self.width = canonical_size(r.image_size, r.aspect)
        self.view = r.view
        self.aspect = r.aspect
        self.style = STYLES[r.style]
        self.strength = float(r.nuisance)
        self.quality_range = tuple(quality_range)
        self.radius_step = 0.25 * max(1.0, self.height / 256.0)
        self._skins: dict[int, SkinBase] = {}

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
            skin_style = None if self.style.name == "classic" else self.style.skin
            view = patient_view(self.view, patient_index)
            if view == "side":
                base = build_side(ident, self.height, self.width, skin_style)
            else:
                base = build_skin(ident, self.height, self.width, view, skin_style)
            self._skins = {patient_index: base}
        return self._skins[patient_index]

    def identity_image(self, patient_index: int, patient_id: str) -> np.ndarray:
        """The patient's clear skin (grade 0, no photo conditions), uint8 H×W×3 RGB."""
        return self.skin(patient_index, patient_id).pixels.copy()

    # --- lesions ------------------------------------------------------------------------------
    def _state(self, job: PatientJob, with_mask: bool = False) -> _PatientState:
        skin = self.skin(job.patient_index, job.patient_id)
        rng = patient_rng(self.protocol.seed, job.patient_index, "lesions")
        pop, by_day = lesion_truth(job, self.height, self.width, rng, self.view, self.aspect, self.style.lesion_scale)
        keys, groups, stamps = self._stamps(pop)
        return _PatientState(skin, by_day, keys, groups, stamps, with_mask)

    def _stamps(self, pop: pd.DataFrame) -> tuple[list[tuple], list[int], dict[int, tuple[list, list, list]]]:
        """The sprites the patient needs, and per day where to stamp them.

        ``pop``: the population in pixels from :func:`~trialsim.lesions.lesion_truth` (rows
        sorted by day). Returns ``keys``, one (type, radius, intensity) per distinct sprite,
        ``groups``, per sprite the number of its (type, radius) group, and per day three
        parallel lists: sprite index into ``keys``, centre x, centre y (px).
        Marks come first (underneath), then active lesions, each group in table order;
        radii are quantised to ``radius_step`` (1/4 px at 256 px, 1/2 px at 512 px) and
        intensities to 0.1 so that sprites are shared; marks faded below 0.15 (under 1 %
        change in colour) are left out; a day with none is absent. Computed for all days
        at once, with sprites numbered, because per day and per lesion it cost about 25
        small numpy calls and a key tuple per lesion for every image.
        """
        if not len(pop):
            return [], [], {}
        days = pop["day"].to_numpy()
        # by day, then marks before active lesions; lexsort is stable, so table order within
        order = np.lexsort(((pop["stage"].to_numpy() != MARK).astype(int), days))
        step = self.radius_step
        r_steps = np.round(pop["radius"].to_numpy()[order].astype(float) / step)
        i_tenths = np.round(pop["intensity"].to_numpy()[order].astype(float) * 10)
        rq, iq = r_steps * step, i_tenths / 10
        keep = iq >= 0.15
        if not keep.any():
            return [], [], {}
        order, r_steps, i_tenths, rq, iq = order[keep], r_steps[keep], i_tenths[keep], rq[keep], iq[keep]
        kinds = pop["type"].to_numpy()[order]
        # one number per (type, radius, intensity): rq and iq are functions of the rounded steps
        _, kind_code = np.unique(kinds.astype(str), return_inverse=True)
        code = (kind_code.astype(np.int64) * 1_000_003 + r_steps.astype(np.int64)) * 1_003 + i_tenths.astype(np.int64)
        ucode, first, sid = np.unique(code, return_index=True, return_inverse=True)
        keys = list(zip(kinds[first].tolist(), rq[first].tolist(), iq[first].tolist()))
        sids = sid.ravel().tolist()
        cxs = np.rint(pop["x"].to_numpy()[order].astype(float)).astype(int).tolist()
        cys = np.rint(pop["y"].to_numpy()[order].astype(float)).astype(int).tolist()
        days = days[order]
        cut = (np.flatnonzero(np.diff(days)) + 1).tolist()  # days stay sorted
        # sprites of one type and radius (same code but for the intensity) are built together
        _, group = np.unique(ucode // 1_003, return_inverse=True)
        return (
            keys,
            group.ravel().tolist(),
            {int(days[lo]): (sids[lo:hi], cxs[lo:hi], cys[lo:hi]) for lo, hi in zip([0] + cut, cut + [len(sids)])},
        )

    @staticmethod
    def _image_rows(st: _PatientState, job: PatientJob) -> tuple[list, list, list[pd.DataFrame], dict]:
        """``job.images`` as lists (image, day), each image's truth frame, and active lesions per day."""
        images = job.images["image"].tolist()
        days = [int(d) for d in job.images["day"].tolist()]
        counts = {d: active_count(st.by_day.get(d)) for d in set(days)}
        return images, days, image_truth(st.by_day, images, days), counts

    def _sprite(self, st: _PatientState, sid: int):
        """Sprite ``sid`` of the patient, building it and the rest of its (type, radius)
        group on first use (:func:`_sprite_stack` computes a group in one pass)."""
        sp = st.sprites[sid]
        if sp is not None:
            return sp
        members = [j for j in st.group_members[st.sprite_groups[sid]] if st.sprites[j] is None]
        kind, r, _ = st.sprite_keys[sid]
        F, A, W = _sprite_stack(
            kind,
            r,
            [st.sprite_keys[j][2] for j in members],
            st.skin.identity.melanin,
            st.skin.light,
            st.shapes,
            self.style.look,
        )
        # BGRA: channels reversed, alpha kept (×1, +0)
        n, k = F.shape[:2]
        F4 = np.ones((n, k, k, 4), np.float32)
        F4[..., :3] = F[..., ::-1]
        A8 = np.zeros((n, k, k, 4), np.uint8)
        A8[..., :3] = np.rint(A[..., ::-1]).clip(0, 255)
        any_a = np.asarray(A8.reshape(n, -1).any(axis=1)).tolist()
        M = W > 0.15
        for i, j in enumerate(members):
            st.sprites[j] = (F4[i], A8[i] if any_a[i] else None, M[i], k // 2)
        return st.sprites[sid]

    def _draw_day(self, st: _PatientState, day: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The day's clean scene (uint8 BGRA) and lesion mask (bool H×W; None unless
        ``st.with_mask``)."""
        if st.day_cache is not None and st.day_cache[0] == day:
            return st.day_cache[1], st.day_cache[2]
        stamps = st.stamps.get(day)
        h, w = st.base.shape[:2]
        mask = np.zeros((h, w), bool) if st.with_mask else None
        if not stamps:
            st.day_cache = (day, st.base, mask)
            return st.base, mask
        img = st.base.copy()
        sprites = st.sprites
        for sid, cx, cy in zip(*stamps):
            sp = sprites[sid] or self._sprite(st, sid)
            F, A, M, k = sp
            x0, y0, x1, y1 = cx - k, cy - k, cx + k + 1, cy + k + 1
            if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:  # the usual case: the patch lies inside
                roi = img[y0:y1, x0:x1]
                # out = skin · F + A, rounded and saturated by OpenCV, written in place
                if A is None:
                    cv2.multiply(roi, F, dst=roi, dtype=cv2.CV_8U)
                else:
                    cv2.add(cv2.multiply(roi, F, dtype=cv2.CV_8U), A, dst=roi)
                if mask is not None:
                    mask[y0:y1, x0:x1] |= M
                continue
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = F.shape[1] - max(0, x1 - w), F.shape[0] - max(0, y1 - h)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            shaded = cv2.multiply(img[y0:y1, x0:x1], F[sy0:sy1, sx0:sx1], dtype=cv2.CV_8U)
            img[y0:y1, x0:x1] = shaded if A is None else cv2.add(shaded, A[sy0:sy1, sx0:sx1])
            if mask is not None:
                mask[y0:y1, x0:x1] |= M[sy0:sy1, sx0:sx1]
        st.day_cache = (day, img, mask)
        return img, mask

    def clean_images(self, job: PatientJob) -> Iterator[CleanImage]:
        """One :class:`CleanImage` per row of ``job.images``: lesions on the patient's skin, no nuisance."""
        st = self._state(job, with_mask=True)
        images, days, truth, counts = self._image_rows(st, job)
        for image, day, lesions in zip(images, days, truth):
            scene, mask = self._draw_day(st, day)
            assert mask is not None  # drawn: the state was made with_mask
            pixels = cv2.cvtColor(scene, cv2.COLOR_BGRA2RGB)
            yield CleanImage(
                image=image, pixels=pixels, lesions=lesions, lesion_count=counts[day], lesion_mask=mask.copy()
            )

    # --- the renderer interface ---------------------------------------------------------------
    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        st = self._state(job)
        images, days, truth, counts = self._image_rows(st, job)
        seeds = [int(v) for v in job.images["seed"].tolist()]
        room = None
        if self.style.name != "classic":
            room = draw_room(patient_rng(self.protocol.seed, job.patient_index, "identity", 1), self.style.camera)
        hours = [float(v) for v in job.images["hour"].tolist()]
        for image, day, seed, hour, lesions in zip(images, days, seeds, hours, truth):
            data = None
            if wanted(image):
                scene, _ = self._draw_day(st, day)
                data = apply_nuisance_scene(
                    scene, seed, self.strength, hour, self.quality_range, self.style.camera, room
                )
            yield RenderedImage(image=image, data=data, lesions=lesions, lesion_count=counts[day])

    def photos_with_truth(self, job: PatientJob) -> Iterator[tuple[str, np.ndarray, pd.DataFrame]]:
        """Per row of ``job.images``: the photo as ``render_patient`` encodes it, decoded (uint8
        H×W×3 RGB), and its lesions with ``x_photo``, ``y_photo`` and ``radius_photo`` (px in the
        photo: the photo's rotation, scale and shift applied to the canonical ``x``, ``y``)."""
        st = self._state(job)
        images, days, truth, _ = self._image_rows(st, job)
        seeds = [int(v) for v in job.images["seed"].tolist()]
        hours = [float(v) for v in job.images["hour"].tolist()]
        room = None
        if self.style.name != "classic":
            room = draw_room(patient_rng(self.protocol.seed, job.patient_index, "identity", 1), self.style.camera)
        for image, day, seed, hour, lesions in zip(images, days, seeds, hours, truth):
            scene, _ = self._draw_day(st, day)
            h, w = scene.shape[:2]
            c = draw_conditions(seed, self.strength, hour, (h, w), self.quality_range, self.style.camera, room)
            data = encode_jpeg(photograph_bgra(scene, c), c["quality"])
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert decoded is not None  # our own JPEG
            photo = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
            m = photo_affine(c, h, w)
            xy = lesions[["x", "y"]].to_numpy(float)
            moved = xy @ m[:, :2].T + m[:, 2]
            scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
            yield (
                image,
                photo,
                lesions.assign(x_photo=moved[:, 0], y_photo=moved[:, 1], radius_photo=lesions["radius"] * scale),
            )

    def finish_patient(self, job: PatientJob, out: Path) -> None:
        """Write the patient's contact sheet into ``out/contact_sheets/``."""
        from .contact import write_contact_sheet

        write_contact_sheet(job, out)
