"""Views: where the camera looks, as geometry shared by the lesion process and the renderers.

``cheek``: a skin close-up filling the frame. ``face``: a frontal face (geometry in
:data:`trialsim.lesion_geometry.FACE`). ``side``: the side of the face turned to the camera, with
the cheek and jaw, the ear, hair and a tiled wall behind (:data:`SIDE`). ``mixed``: per
patient one of cheek and side (:func:`patient_view`), as in trials where participants
photograph themselves. A patient keeps one view for the whole study.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

Ellipse = tuple[float, float, float, float]  # centre x, centre y, semi-axis x, semi-axis y


class SideGeometry(TypedDict):
    face: Ellipse
    ear: Ellipse
    lips: Ellipse
    neck_top: float


# Side view (the side of the face turned to the camera: cheek and jaw, ear, hair, a wall),
# in frame fractions (x of the width, y of the height): centre x, centre y, semi-axes.
SIDE: SideGeometry = {
    "face": (0.95, 0.42, 0.62, 0.50),
    "ear": (0.37, 0.29, 0.075, 0.11),
    "lips": (1.0, 0.80, 0.07, 0.045),
    "neck_top": 0.55,  # below this (left of the jaw) is the neck, in the jaw's shadow
}
SIDE_SCALE = 0.6  # the cheek fills less of the frame than in the close-up
VIEWS = ("cheek", "face", "side")


def patient_view(view: str, patient_index: int) -> str:
    """The view of one patient: ``view`` itself, or for ``mixed`` a fixed cycle (cheek,
    side, cheek, ...) so that about a third of the patients are photographed from the side."""
    if view != "mixed":
        return view
    return "side" if patient_index % 3 == 1 else "cheek"


def side_allowed(x, y) -> np.ndarray:
    """True where a side-view lesion may sit: on the cheek and jaw, off the ear, lips and neck
    (``x``, ``y`` normalised to the frame)."""
    fx, fy, fa, fb = SIDE["face"]
    ok = ((x - fx) / (0.9 * fa)) ** 2 + ((y - fy) / (0.92 * fb)) ** 2 <= 1.0
    for e, grow in ((SIDE["ear"], 1.5), (SIDE["lips"], 1.4)):
        ex, ey, ea, eb = e
        ok &= ((x - ex) / (grow * ea)) ** 2 + ((y - ey) / (grow * eb)) ** 2 > 1.0
    return ok & (y > 0.05) & (y < 0.88) & (x < 0.97)
