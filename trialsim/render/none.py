"""``--renderer none``: the day-level truth, no pixels and no lesions (fast designs and power studies on the oracle).

Nothing is drawn, so no lesion is simulated either: ``lesions.csv`` holds its header
only and a photo's ``lesion_count`` is the day's target count (``lesion_target`` of
``days.csv``, the count the lesion process of a rendered study is drawn toward).
Simulating lesions here doubled the run time of latent-only studies for a table no
analysis of such a study reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from ..dataset import LESION_COLUMNS
from .base import PatientJob, RenderedImage, Renderer

_NO_LESIONS = pd.DataFrame(columns=LESION_COLUMNS)


class NoImageRenderer(Renderer):
    name = "none"

    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        target = dict(zip(job.days["day"].astype(int), job.days["lesion_target"].astype(int)))
        for row in job.images.itertuples(index=False):
            yield RenderedImage(image=row.image, data=None, lesions=_NO_LESIONS, lesion_count=target[int(row.day)])
