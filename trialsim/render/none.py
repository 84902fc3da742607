"""``--renderer none``: the full truth, no pixels (fast designs and power studies on the oracle)."""
from __future__ import annotations

from typing import Callable, Iterator

import pandas as pd

from .base import LESION_COLUMNS, PatientJob, RenderedImage, Renderer


class NoImageRenderer(Renderer):
    name = "none"

    def render_patient(self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
                       ) -> Iterator[RenderedImage]:
        target = dict(zip(job.days["day"], job.days["lesion_target"]))
        empty = pd.DataFrame(columns=LESION_COLUMNS)
        for row in job.images.itertuples(index=False):
            yield RenderedImage(image=row.image, data=None, lesions=empty, lesion_count=int(target[row.day]))
