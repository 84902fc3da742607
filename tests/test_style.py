"""The procedural looks: ``classic`` unchanged, ``realistic`` (the default) closer to real phone photos."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
from conftest import small_protocol_dict

from trialsim.protocol import protocol_from_dict
from trialsim.render import nuisance as nz
from trialsim.render.procedural import ProceduralRenderer, lesion_sprite
from trialsim.render.style import STYLES
from trialsim.simulate import simulate_truth

# sha256 over the JPEG bytes of a 2-patient, 96 px trial, as the renderer made them before
# the realistic look existed
CLASSIC_SHA256 = "26326a607b2f0204228099811d6d015e1f62676ddec4608e4e5b1ed37ffb9184"


def proto(style: str | None = None, size: int = 96, n: int = 2):
    d = small_protocol_dict()
    d["patients"]["n"] = n
    d["rendering"] = {"renderer": "procedural", "image_size": size, "nuisance": 1.0}
    if style:
        d["rendering"]["style"] = style
    return protocol_from_dict(d)


def test_classic_style_renders_the_original_bytes():
    p = proto("classic")
    r, h = ProceduralRenderer(p), hashlib.sha256()
    for job in simulate_truth(p):
        for img in r.render_patient(job):
            h.update(img.data)
    assert h.hexdigest() == CLASSIC_SHA256


def test_realistic_is_the_default_and_differs_from_classic():
    assert proto().rendering.style == "realistic"
    a = ProceduralRenderer(proto()).identity_image(0, "1")
    b = ProceduralRenderer(proto("classic")).identity_image(0, "1")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def _fine_texture(rgb: np.ndarray) -> float:
    L = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    return float((L - cv2.GaussianBlur(L, (0, 0), 2.0)).std())


def test_realistic_skin_shows_more_pore_texture_than_classic():
    real = [_fine_texture(ProceduralRenderer(proto(size=256, n=4)).identity_image(i, str(i + 1))) for i in range(4)]
    clas = [
        _fine_texture(ProceduralRenderer(proto("classic", size=256, n=4)).identity_image(i, str(i + 1)))
        for i in range(4)
    ]
    assert np.mean(real) > 1.3 * np.mean(clas), (real, clas)


def _a_contrast(kind: str, look: dict) -> float:
    """The largest CIELAB a* over a lesion minus a* of the skin around it, on a flat skin patch."""
    F, A, _W = lesion_sprite(kind, 5.0, 1.0, 0.3, (-0.7, -0.7), looks=look)
    skin = np.full(F.shape, (200, 160, 140), np.float32)
    out = np.clip(skin * F + A, 0, 255).astype(np.uint8)
    a = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[..., 1].astype(float)
    return a.max() - a[0, 0]


def test_realistic_lesions_are_low_contrast_but_still_red():
    for kind in ("papule", "pustule", "nodule"):
        soft, bright = _a_contrast(kind, STYLES["realistic"].look), _a_contrast(kind, STYLES["classic"].look)
        assert 3.0 < soft < 0.6 * bright, (kind, soft, bright)


def test_realistic_camera_spreads_conditions_wider_and_keeps_classic_draws():
    cam = STYLES["realistic"].camera
    wide = pd.DataFrame([nz.draw_conditions(s, 1.0, 13.0, (512, 384), camera=cam) for s in range(2000)])
    base = pd.DataFrame([nz.draw_conditions(s, 1.0, 13.0, (512, 384)) for s in range(2000)])
    assert abs(wide["rotation_deg"].std() - cam.rotation_sd_deg) < 0.5
    assert wide["kelvin"].std() > 1.5 * base["kelvin"].std()
    assert wide["kelvin"].mean() < base["kelvin"].mean() - 500  # warm indoor light
    assert wide["tint"].std() > 0.02 and "tint" in base and (base["tint"] == 0).all()
    classic = nz.draw_conditions(7, 1.0, 9.0, (256, 256), camera=STYLES["classic"].camera)
    assert classic == nz.draw_conditions(7, 1.0, 9.0, (256, 256))


def test_hia_like_protocol_is_the_real_trials_design_with_mild_acne():
    from conftest import PROTOCOLS

    from trialsim.lesions import canonical_size
    from trialsim.protocol import load_protocol

    p = load_protocol(PROTOCOLS / "hia_like.yaml")
    assert p.patients.n == 5 and p.planned_days == 16 and p.observation.photos_per_day == 3
    assert p.schedule.period_days == 2 and p.block_sequence == "AB"
    assert p.rendering.style == "realistic" and p.rendering.view == "mixed"
    assert canonical_size(p.rendering.image_size, p.rendering.aspect) == (512, 384)  # as the real photos
    jobs = simulate_truth(p)
    assert max(int(j.days["lesion_target"].max()) for j in jobs) <= 25  # mild to moderate at most
