"""Photo conditions: what a hand-held phone does to one clean skin image.

Per image (all numbers from the image's own seed, drawn in a fixed order so that
``strength`` scales effects without changing which numbers are drawn):

=====================  ==============================================  =====================
effect                 at strength 1 (the default)                     scales with strength
=====================  ==============================================  =====================
auto-exposure          mean brightness pulled 40 % (in log) toward 150    on at strength > 0
exposure               SD 0.25 EV (of linear light)                    SD
white balance          SD 300 K around 5500 K, warmer mornings/evenings SD and time-of-day shift
framing                rotation SD 3°, scale SD 3 %, shift SD 3 %       SDs
lighting               gradient from a direction set by the hour,       strength of gradient,
                       up to ±15 %; vignetting 10–30 % at the corners   vignetting
defocus                Gaussian blur σ uniform in [0, 1.2] px (×H/512   σ
                       above 512 px)
sensor noise           SD 2/255 per channel                             SD
JPEG                   quality uniform in 75–95                         range below 95
=====================  ==============================================  =====================

Strength 0 gives the clean image encoded at the best quality of ``quality_range``.
One multiplicative light field, one affine warp (rotation, scale, shift; reflected
borders), one blur and a window of a fixed noise bank per image keep it fast; the
result is deterministic.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

EXPOSURE_SD_EV = 0.25
WHITE_BALANCE_SD_K = 300.0
WHITE_BALANCE_MEAN_K = 5500.0
ROTATION_SD_DEG = 3.0
SCALE_SD = 0.03
SHIFT_SD = 0.03
DEFOCUS_MAX_PX = 1.2
NOISE_SD = 2.0 / 255.0
GRADIENT_MAX = 0.15
AUTO_EXPOSURE_TARGET = 150.0  # sRGB grey level the camera's metering aims for
AUTO_EXPOSURE_PULL = 0.4  # how far toward it (0 = manual exposure, 1 = all the way)
VIGNETTE_RANGE = (0.10, 0.30)


@functools.lru_cache(maxsize=4)
def _noise_bank(sd_levels: float, n: int = 1 << 21) -> np.ndarray:
    """A fixed bank of Gaussian sensor noise in grey levels (int16, SD ``sd_levels``).

    Drawing a million normals per 512 px image would cost more than the rest of the
    photo; a random window into one fixed bank is as good for sensor noise. Rounded
    to whole grey levels, as an ADC does.
    """
    z = np.random.default_rng(np.random.SeedSequence(0x5EED0F5E)).standard_normal(n, np.float32)
    return np.rint(z * sd_levels).astype(np.int16)


@functools.lru_cache(maxsize=4)
def _noise_bank_parts(sd_levels: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_noise_bank` split into its positive and negative parts (uint8 each).

    ``saturate(a + n)`` equals ``saturate(saturate(a + max(n, 0)) - max(-n, 0))`` for
    uint8 ``a``, and two uint8 saturating ops are several times faster in OpenCV than
    one mixed uint8 + int16 add.
    """
    bank = _noise_bank(sd_levels)
    return (np.clip(bank, 0, 255).astype(np.uint8), np.clip(-bank, 0, 255).astype(np.uint8))


@functools.lru_cache(maxsize=8)
def _light_grid(gh: int, gw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The light field's coarse grid (y, x in [-1, 1], float32 gh×gw) and x² + y² (for the
    vignette), built once per shape."""
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    yy = yy / (gh - 1) * 2 - 1
    xx = xx / (gw - 1) * 2 - 1
    r2 = xx**2 + yy**2
    for a in (yy, xx, r2):
        a.flags.writeable = False
    return yy, xx, r2


def white_balance_gains(kelvin: float) -> np.ndarray:
    """Per-channel (R, G, B) gains of a camera balanced for 5500 K shooting under ``kelvin``."""
    mired = 1e6 / kelvin - 1e6 / WHITE_BALANCE_MEAN_K
    g = np.array([np.exp(0.0011 * mired), 1.0, np.exp(-0.0016 * mired)], np.float32)
    return g / g.mean() * 1.0


def draw_room(rng: np.random.Generator, camera) -> dict:
    """A patient's own photo setting (the room, lamp and phone they always use): offsets of
    colour temperature (K), tint and exposure (EV) that every photo of theirs shares."""
    z = rng.standard_normal(3)
    return {"kelvin": camera.room_kelvin_sd * z[0], "tint": camera.room_tint_sd * z[1], "ev": camera.room_ev_sd * z[2]}


def draw_conditions(
    seed: int, strength: float, hour: float, shape: tuple[int, int], quality_range=(75, 95), camera=None, room=None
) -> dict:
    """The photo conditions of one image (numbers only; :func:`apply_nuisance` uses them).

    ``camera``: a :class:`trialsim.render.style.Camera` of SDs and ranges at strength 1;
    None gives the table above (the classic look's camera). ``room``: the patient's
    offsets from :func:`draw_room`, or None.
    """
    if camera is None:
        from .style import Camera

        camera = Camera()
    rng = np.random.default_rng(int(seed))
    z = rng.standard_normal(7)
    u = rng.random(6)
    # drawn after the classic numbers, so that a camera without tint keeps them all
    tint = float(rng.standard_normal()) * camera.tint_sd if camera.tint_sd > 0 else 0.0
    room = room or {"kelvin": 0.0, "tint": 0.0, "ev": 0.0}
    tint += room["tint"]
    s = float(strength)
    h, w = shape
    # time of day: light comes from the side the sun/window is on and is warmer off midday
    tod = np.clip((hour - 13.0) / 6.0, -1.5, 1.5)
    kelvin = WHITE_BALANCE_MEAN_K + s * (camera.white_balance_mean_k - WHITE_BALANCE_MEAN_K)
    kelvin += s * (room["kelvin"] + camera.white_balance_sd_k * z[1] - 700.0 * tod**2)
    angle = np.pi * (0.5 + 0.35 * tod) + 0.6 * (u[0] - 0.5)
    lo, hi = quality_range
    quality = int(round(hi - (hi - lo) * u[4] * min(s, 1.0) - 10 * max(s - 1.0, 0.0) * u[4]))
    return {
        "strength": s,
        "exposure_ev": s * (camera.exposure_sd_ev * z[0] + room["ev"]) - s * 0.15 * abs(tod),
        "kelvin": float(kelvin),
        "rotation_deg": s * camera.rotation_sd_deg * z[2],
        "scale": float(np.exp(s * camera.scale_sd * z[3])),
        "shift_px": (s * camera.shift_sd * z[4] * w, s * camera.shift_sd * z[5] * h),
        "gradient": (s * camera.gradient_max * (0.3 + 0.7 * u[1]), float(angle)),
        "vignette": s * (camera.vignette_range[0] + (camera.vignette_range[1] - camera.vignette_range[0]) * u[2]),
        "blur_sigma": s * camera.defocus_max_px * u[3] * max(1.0, h / 512.0),
        "noise_sd": s * camera.noise_sd,
        "tint": s * tint,
        "noise_offset": int(u[5] * (1 << 20)),
        "quality": max(10, min(100, quality)),
    }


def _light_field(c: dict, h: int, w: int, auto_exposure: float = 1.0) -> tuple[np.ndarray, float]:
    """Exposure × white balance × lighting gradient × vignetting as (uint8 H×W×4 field, scale).

    The image is multiplied by ``field · scale / 255``; the field is normalised to a
    peak of 255 so that 8 bits hold it to 0.4 % (finer than the sensor noise).
    """
    gh, gw = 16, max(2, int(round(16 * w / h)))
    yy, xx, r2 = _light_grid(gh, gw)
    g, ang = c["gradient"]
    field = 1.0 + g * (np.cos(ang) * xx + np.sin(ang) * yy) * 0.7
    field *= 1.0 - c["vignette"] * r2 / 2.0
    field *= 2.0 ** c["exposure_ev"]
    gains = np.append(white_balance_gains(c["kelvin"])[::-1], 1.0)  # BGR + alpha
    if c.get("tint"):
        gains[1] *= np.float32(np.exp(c["tint"]))  # green-magenta: fluorescent and LED light
    # light multiplies linear intensities; the scene is sRGB-encoded (≈ a 1/2.2 power)
    small = (field[..., None] * gains[None, None, :]) ** (1 / 2.2) * auto_exposure
    peak = float(small.max())
    small8 = np.rint(small / peak * 255.0).astype(np.uint8)
    return cv2.resize(small8, (w, h), interpolation=cv2.INTER_LINEAR), peak


def photo_affine(c: dict, h: int, w: int) -> np.ndarray:
    """The 2×3 map from the scene's pixels to the photo's under conditions ``c`` (rotation about
    the centre, scale, shift); the identity when ``c["strength"]`` is 0 (no warp is applied)."""
    if c["strength"] <= 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), c["rotation_deg"], c["scale"])
    m[0, 2] += c["shift_px"][0]
    m[1, 2] += c["shift_px"][1]
    return m


def photograph_bgra(scene: np.ndarray, c: dict) -> np.ndarray:
    """The photo (BGR uint8) of a clean scene (uint8 BGRA) under conditions ``c``.

    Light (a smooth field) is applied in the scene's frame, then one affine warp
    (rotation, scale, shift; reflected borders), defocus, sensor noise. Four channels
    and 8 bits throughout because OpenCV's vectorised paths are several times faster.
    """
    h, w = scene.shape[:2]
    if c["strength"] <= 0:
        return cv2.cvtColor(scene, cv2.COLOR_BGRA2BGR)
    # the phone meters the frame: it pulls the mean brightness part of the way to mid-grey
    b, g, r, _ = cv2.mean(scene)
    luma = max(0.114 * b + 0.587 * g + 0.299 * r, 1.0)
    auto = float(np.clip((AUTO_EXPOSURE_TARGET / luma) ** (AUTO_EXPOSURE_PULL * min(c["strength"], 1.0)), 0.5, 2.5))
    field, peak = _light_field(c, h, w, auto)
    lit = cv2.multiply(scene, field, scale=peak / 255.0)  # rounds and saturates
    out = cv2.warpAffine(lit, photo_affine(c, h, w), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if c["blur_sigma"] > 0.05:
        k = 2 * int(np.ceil(2.5 * c["blur_sigma"])) + 1  # the kernel to ±2.5 σ (99 % of its weight)
        out = cv2.GaussianBlur(out, (k, k), c["blur_sigma"])
    n = h * w * 4
    pos, neg = _noise_bank_parts(round(float(c["noise_sd"]) * 255.0, 6))
    if len(pos) > n:
        off = c["noise_offset"] % (len(pos) - n)
        pos, neg = pos[off : off + n].reshape(h, w, 4), neg[off : off + n].reshape(h, w, 4)
    else:
        pos, neg = np.resize(pos, n).reshape(h, w, 4), np.resize(neg, n).reshape(h, w, 4)
    # + the noise bank's window, saturated: its positive part added, its negative part subtracted
    out = cv2.subtract(cv2.add(out, pos), neg)
    return cv2.cvtColor(out, cv2.COLOR_BGRA2BGR)


def photograph(bgr: np.ndarray, c: dict) -> np.ndarray:
    """:func:`photograph_bgra` for a BGR uint8 image."""
    return photograph_bgra(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), c)


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def apply_nuisance_scene(
    scene: np.ndarray, seed: int, strength: float, hour: float, quality_range=(75, 95), camera=None, room=None
) -> bytes:
    """:func:`apply_nuisance` for a uint8 BGRA scene (the renderer's internal form)."""
    c = draw_conditions(seed, strength, hour, scene.shape[:2], quality_range, camera, room)
    return encode_jpeg(photograph_bgra(scene, c), c["quality"])


def apply_nuisance(pixels: np.ndarray, seed: int, strength: float, hour: float, quality_range=(75, 95)) -> bytes:
    """JPEG bytes of ``pixels`` (uint8 H×W×3 RGB, canonical frame) as a phone would have taken it."""
    scene = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGRA)
    return apply_nuisance_scene(scene, seed, strength, hour, quality_range)
