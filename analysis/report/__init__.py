"""``report.html``: the result of one analysis, known against recovered, in one self-contained file.

:func:`write_report` rebuilds the report from an analysis folder alone
(docs/contracts.md, Contract 2): ``results.json``, ``embeddings.csv``,
``reconstructions.npz`` (when the autoencoder ran) and the dataset folder that
``results.json`` records (``manifest.csv`` and the photos, for the filmstrip and
the latent trajectories; left out with a note when the folder has moved).
Figures are PNG data URIs, thumbnails JPEG data URIs, styles inline: the file
opens offline and asks the network for nothing.

Sections, in order: headline (known vs recovered, verdicts), design, images,
embedding, effects, model and provenance. Without truth (real photos) the
truth parts are left out; every element that shows truth carries ``data-truth``.
Nothing here imports ``trialsim``.

Modules: :mod:`.inputs` (reading the folder), :mod:`.tables` and :mod:`.context`
(what the template shows), :mod:`.figures`, :mod:`.thumbnails`, :mod:`.render`
(the one autoescaped Jinja environment).
"""

from __future__ import annotations

from ..results import truth_is_null, verdict
from .context import build_context
from .format import fmt, fmt_p
from .inputs import ReportInputs, load_inputs
from .render import build_report, environment, render, write_report

__all__ = [
    "ReportInputs",
    "build_context",
    "build_report",
    "environment",
    "fmt",
    "fmt_p",
    "load_inputs",
    "render",
    "truth_is_null",
    "verdict",
    "write_report",
]
