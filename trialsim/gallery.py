"""The skin grid: a few patients of different skin types at every severity grade.

``trialsim gallery --out docs/skin_grid.png`` renders, with the default procedural
renderer, one row per patient (Fitzpatrick types given, by default II, IV and VI)
and one column per ACNE04 grade 0–3, each image the patient's photo after three
weeks at a steady severity in that grade. It is the picture to look at, as a
dermatologist would, before trusting the simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

import cv2
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from analysis.atomic import atomic_write_bytes

from .dynamics import GRADE_NAMES, severity_grade, target_lesion_count
from .protocol import protocol_from_dict
from .render.base import PatientJob
from .render.contact import grid, label_tile
from .seeding import image_seed

GRADE_SEVERITY = (0.3, 1.0, 2.0, 2.8)  # a steady latent severity inside each grade
_ROMAN = ("I", "II", "III", "IV", "V", "VI")
_DAYS = 21


def gallery_protocol(
    fitzpatrick=(2, 4, 6),
    image_size: int = 256,
    aspect: float = 1.0,
    view: str = "cheek",
    nuisance: float = 1.0,
    seed: int = 0,
):
    ids = [f"type{_ROMAN[f - 1]}" for f in fitzpatrick]
    return protocol_from_dict(
        {
            "name": "gallery",
            "seed": seed,
            "patients": {
                "n": len(ids),
                "ids": ids,
                "overrides": [{"patient_id": i, "fitzpatrick": f} for i, f in zip(ids, fitzpatrick)],
            },
            "treatments": [{"label": "None", "effect": 0.0}],
            "rendering": {
                "renderer": "procedural",
                "image_size": image_size,
                "aspect": aspect,
                "view": view,
                "nuisance": nuisance,
            },
        },
        source="<gallery>",
    )


def steady_job(protocol, patient_index: int, patient_id: str, severity: float, days: int = _DAYS) -> PatientJob:
    """A patient held at one severity for ``days`` days, photographed on the last day."""
    day = np.arange(1, days + 1)
    d = pd.DataFrame(
        {
            "patient_id": patient_id,
            "day": day,
            "treatment": "None",
            "severity_latent": float(severity),
            "severity_noisefree": float(severity),
            "severity_grade": int(severity_grade(severity)),
            "lesion_target": int(target_lesion_count(severity)),
        }
    )
    images = pd.DataFrame(
        [
            {
                "image": f"{patient_id}_s{severity:.2f}.jpg",
                "day": days,
                "photo": 0,
                "hour": 13.0,
                "timestamp": "",
                "seed": image_seed(protocol.seed, patient_index, days, 0),
            }
        ]
    )
    return PatientJob(protocol, patient_id, patient_index, d, images)


def skin_grid(
    fitzpatrick=(2, 4, 6),
    image_size: int = 256,
    aspect: float = 1.0,
    view: str = "cheek",
    nuisance: float = 1.0,
    seed: int = 0,
    grades=(0, 1, 2, 3),
) -> np.ndarray:
    """The grid as a BGR uint8 image: rows = patients (skin types), columns = grades."""
    from .render.procedural import ProceduralRenderer

    proto = gallery_protocol(fitzpatrick, image_size, aspect, view, nuisance, seed)
    renderer = ProceduralRenderer(proto)
    tiles = []
    for i, pid in enumerate(proto.patients.patient_ids):
        for g in grades:
            sev = GRADE_SEVERITY[g]
            job = steady_job(proto, i, pid, sev)
            img = next(iter(renderer.render_patient(job)))
            px = _decode(img.data)
            tiles.append(
                label_tile(
                    px,
                    [
                        f"Fitzpatrick {_ROMAN[fitzpatrick[i] - 1]}, grade {g} ({GRADE_NAMES[g]})",
                        f"{img.lesion_count} lesions, severity {sev:.1f}",
                    ],
                    height=image_size,
                )
            )
    return grid(tiles, len(grades), title="trialsim procedural renderer: skin types x ACNE04 grades")


def _decode(data: bytes | None) -> np.ndarray:
    """A rendered JPEG as BGR pixels."""
    px = None if data is None else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if px is None:
        raise RuntimeError("the renderer returned no decodable image")
    return px


class GalleryOptions(BaseModel):
    """What ``trialsim gallery`` takes: skin types 1–6 (one row each; a comma list is accepted),
    image size (px), aspect (height / width), view, nuisance strength and seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    OPTION_NAMES: ClassVar[dict[str, str]] = {
        "fitzpatrick": "--fitzpatrick",
        "image_size": "--image-size",
        "aspect": "--aspect",
        "view": "--view",
        "nuisance": "--nuisance",
        "seed": "--seed",
    }

    fitzpatrick: tuple[Annotated[int, Field(ge=1, le=6)], ...] = Field((2, 4, 6), min_length=1)
    image_size: int = Field(256, ge=32, le=2048)
    aspect: float = Field(1.0, ge=0.2, le=5.0)
    view: Literal["cheek", "face"] = "cheek"
    nuisance: float = Field(1.0, ge=0, le=4)
    seed: int = Field(0, ge=0)

    @field_validator("fitzpatrick", mode="before")
    @classmethod
    def _comma_list(cls, value):
        """``"2,4,6"`` → ``["2", "4", "6"]`` (then validated as integers 1–6)."""
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value


def write_skin_grid(out: str | Path, **kwargs) -> Path:
    """Render :func:`skin_grid` and write it as PNG to ``out``."""
    out = Path(out)
    _ok, buf = cv2.imencode(".png", skin_grid(**kwargs))
    atomic_write_bytes(out, buf.tobytes())
    return out
