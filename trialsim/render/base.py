"""The renderer interface shared by every renderer (procedural, SDXL, none).

The dataset writer hands a renderer one :class:`PatientJob` at a time and writes
what comes back; it never needs to know how images are made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from ..dataset import LESION_COLUMNS as LESION_COLUMNS
from ..protocol import Protocol


@dataclass
class PatientJob:
    """Everything a renderer needs for one patient.

    ``days``: one row per study day the patient is observed (``day``, ``treatment``,
    ``severity_latent``, ``lesion_target``, …), sorted by day, including days whose
    photos are all missing (lesions live on between photos).
    ``images``: one row per photo to produce (``image`` relative path, ``day``,
    ``photo`` index within the day, ``hour`` of day, ``seed``), sorted.
    """

    protocol: Protocol
    patient_id: str
    patient_index: int
    days: pd.DataFrame
    images: pd.DataFrame


@dataclass
class RenderedImage:
    image: str  # relative path, as in the manifest
    data: bytes | None  # the encoded file, or None when the renderer makes no pixels
    lesions: pd.DataFrame  # LESION_COLUMNS, one row per lesion visible in this image
    lesion_count: int


class Renderer(ABC):
    """Turns a patient's truth into images and per-lesion truth."""

    name: str = "base"
    extension: str = ".jpg"

    def __init__(self, protocol: Protocol):
        self.protocol = protocol

    @abstractmethod
    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        """Yield one :class:`RenderedImage` per row of ``job.images``, in order.

        ``wanted(image)`` False means the file already exists (resume): the renderer
        still yields the image's truth but may skip making its pixels (``data=None``).
        """
