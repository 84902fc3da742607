"""The two procedural looks, as numbers: ``realistic`` (the default) and ``classic``.

``classic`` is the original look: bright, uniform lesion domes on smooth skin, mild photo
conditions. ``realistic`` is calibrated on real trial phone photos (the HIA acne N-of-1
trial's development photos; statistics only, no pixels): visible pores and shine, shading
from the cheek's curvature, uneven tone, small low-contrast lesions, and the wider spread
of exposure, white balance, framing and focus that hand-held phone photos show there
(measured with ``trialsim realism``: brightness, a*/b* and their spread, fine-texture
energy, spectrum slope and red-spot contrast of the real photos).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from . import nuisance as nz


# per lesion type: halo width and redness, core redness, dome height, highlight, and a blend
# toward a head/plug colour (RGB, radius as a fraction of the lesion radius, weight)
class Look(TypedDict):
    """One lesion type's look (see :mod:`trialsim.render.sprites`)."""

    halo: float  # halo width, in lesion radii
    halo_h: float  # halo redness (haemoglobin added at the centre)
    core_h: float  # core redness
    dome: float  # dome height: how much the lit side brightens and the far side darkens
    hl: float  # specular highlight strength (0: none)
    head: tuple[tuple[int, int, int], float, float] | None  # (RGB, radius fraction, weight) or None


CLASSIC_LOOK: dict[str, Look] = {
    "papule": dict(halo=2.0, halo_h=1.8, core_h=3.2, dome=1.0, hl=0.07, head=None),
    "pustule": dict(halo=2.0, halo_h=1.8, core_h=2.6, dome=1.1, hl=0.16, head=((242, 232, 190), 0.5, 0.85)),
    "nodule": dict(halo=1.6, halo_h=1.3, core_h=3.2, dome=0.8, hl=0.10, head=None),
    "closed_comedone": dict(halo=1.3, halo_h=0.6, core_h=0.0, dome=0.9, hl=0.08, head=((240, 228, 205), 0.6, 0.22)),
    "open_comedone": dict(halo=1.1, halo_h=0.18, core_h=0.0, dome=0.3, hl=0.0, head=((48, 38, 32), 0.5, 0.85)),
}
# real mild acne: diffuse, flat-topped, a* contrast of 4-8 units against the skin rather than
# 12-16; heads are small and dull; comedones are skin-coloured bumps or small dark plugs
REALISTIC_LOOK: dict[str, Look] = {
    "papule": dict(halo=2.2, halo_h=0.8, core_h=0.8, dome=0.35, hl=0.0, head=None),
    "pustule": dict(halo=2.1, halo_h=0.75, core_h=0.7, dome=0.4, hl=0.02, head=((236, 226, 196), 0.4, 0.35)),
    "nodule": dict(halo=1.9, halo_h=0.7, core_h=1.0, dome=0.4, hl=0.0, head=None),
    "closed_comedone": dict(halo=1.6, halo_h=0.3, core_h=0.0, dome=0.45, hl=0.0, head=((236, 222, 200), 0.5, 0.12)),
    "open_comedone": dict(halo=1.2, halo_h=0.1, core_h=0.0, dome=0.2, hl=0.0, head=((70, 55, 45), 0.45, 0.55)),
}


@dataclass(frozen=True)
class Camera:
    """Photo-condition SDs and ranges at strength 1 (see :mod:`trialsim.render.nuisance`)."""

    exposure_sd_ev: float = nz.EXPOSURE_SD_EV
    white_balance_sd_k: float = nz.WHITE_BALANCE_SD_K
    rotation_sd_deg: float = nz.ROTATION_SD_DEG
    scale_sd: float = nz.SCALE_SD
    shift_sd: float = nz.SHIFT_SD
    defocus_max_px: float = nz.DEFOCUS_MAX_PX  # at 512 px
    noise_sd: float = nz.NOISE_SD
    gradient_max: float = nz.GRADIENT_MAX
    vignette_range: tuple[float, float] = nz.VIGNETTE_RANGE
    tint_sd: float = 0.0  # green-magenta tint of the white balance (log gain on green)
    white_balance_mean_k: float = nz.WHITE_BALANCE_MEAN_K  # the light's mean colour temperature
    # per patient (their own room and phone): SDs of colour temperature, tint and exposure offsets
    room_kelvin_sd: float = 0.0
    room_tint_sd: float = 0.0
    room_ev_sd: float = 0.0


@dataclass(frozen=True)
class Skin:
    """Skin-texture strengths (multipliers on the classic model's terms)."""

    pore_depth: float = 0.42  # shading loss at a pore's centre
    pore_spacing: float = 5.2  # px between pores at 512 px (cheek close-up)
    pore_size: float = 0.9  # Gaussian SD of a pore at 512 px
    spec_range: tuple[float, float] = (0.015, 0.045)  # specular amplitude, linear units
    curvature: float = 0.38  # brightness fall-off from the cheek's apex
    redness_patches: float = 0.12  # SD of the broad haemoglobin variation (relative)
    zoom_range: tuple[float, float] = (1.0, 1.0)  # per-patient camera distance (texture scale)
    pore_depth_range: tuple[float, float] = (1.0, 1.0)  # per-patient multiplier on pore_depth
    mid_tone: float = 0.03  # SD of the mid-scale (28 px at 512) melanin variation, log units


@dataclass(frozen=True)
class Style:
    name: str
    look: dict[str, Look] = field(default_factory=lambda: CLASSIC_LOOK)
    camera: Camera = Camera()
    skin: Skin = Skin()
    lesion_scale: float = 1.0  # multiplies lesion radii (the field of view of the close-up)


STYLES = {
    "classic": Style("classic"),
    "realistic": Style(
        "realistic",
        look=REALISTIC_LOOK,
        camera=Camera(
            exposure_sd_ev=0.35,
            white_balance_sd_k=500.0,
            rotation_sd_deg=6.0,
            scale_sd=0.08,
            shift_sd=0.05,
            defocus_max_px=2.0,
            noise_sd=3.0 / 255.0,
            gradient_max=0.35,
            vignette_range=(0.05, 0.35),
            tint_sd=0.04,
            white_balance_mean_k=4700.0,  # indoor light that auto white balance leaves warm
            room_kelvin_sd=600.0,  # the real participants' photos differ in colour more between than within
            room_tint_sd=0.04,
            room_ev_sd=0.2,
        ),
        skin=Skin(
            pore_depth=0.45,
            pore_spacing=7.0,
            pore_size=1.4,
            spec_range=(0.02, 0.08),
            curvature=0.45,
            redness_patches=0.22,
            zoom_range=(0.9, 1.6),
            pore_depth_range=(0.4, 1.2),
            mid_tone=0.07,
        ),
        lesion_scale=1.7,  # real close-ups are taken a hand's width away: lesions span 10-25 px at 512 px
    ),
}
