"""``--renderer none``: the full truth, no pixels (fast designs and power studies on the oracle).

Lesion truth comes from the same population process as the procedural renderer
(:mod:`trialsim.lesions`), in the canonical frame of ``rendering.image_size`` and
``rendering.aspect``, so ``lesions.csv`` is the same whether or not pixels are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..lesions import active_count, canonical_size, lesion_truth, truth_rows
from ..seeding import patient_rng
from .base import PatientJob, RenderedImage, Renderer
from .style import STYLES


class NoImageRenderer(Renderer):
    name = "none"

    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        r = self.protocol.rendering
        h, w = canonical_size(r.image_size, r.aspect)
        rng = patient_rng(self.protocol.seed, job.patient_index, "lesions")
        _, by_day = lesion_truth(job, h, w, rng, r.view, r.aspect, STYLES[r.style].lesion_scale)
        for row in job.images.itertuples(index=False):
            day = by_day.get(int(row.day))
            yield RenderedImage(
                image=row.image, data=None, lesions=truth_rows(day, row.image), lesion_count=active_count(day)
            )
