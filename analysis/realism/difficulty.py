"""Analysis difficulty: how well the default analysis ranks a folder's photos by severity.

The analysis's default embedding (:mod:`analysis.pipeline`'s default method, photometric
normalisation and reduction) runs on the folder alone, as ``trialsim analyze`` would run
it; PC1 is compared with a severity reference (``severity_latent`` for simulated photos,
an expert score for real ones) by the within-patient Spearman correlation. PC1's sign is
arbitrary, so it is set once per folder so that the pooled within-patient correlation is
positive, as the analysis does where truth exists.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pandas as pd

from ..evaluate import within_spearman
from .data import PhotoFolder, load_folder


def pc1_scores(images: np.ndarray, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """PC1 of the default analysis embedding. ``images`` uint8 (N, S, S, 3) at the preset's size."""
    from ..embed import AutoencoderEmbedder
    from ..pipeline import DEFAULT_NORMALIZATION, DEFAULT_REDUCTION
    from ..reduce import PC1Reducer, normalize_photometric

    x = normalize_photometric(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), DEFAULT_NORMALIZATION)
    emb = AutoencoderEmbedder.from_preset("default", random_state=seed).fit_transform(x)
    return PC1Reducer(DEFAULT_REDUCTION).fit_transform(emb, groups)


def difficulty(folder: str, severity: str, seed: int = 0, progress: bool = False) -> dict:
    """Within-patient Spearman of PC1 with ``severity``: pooled, per patient and the median."""
    from ..embed import PRESETS

    image_size = cast(int, PRESETS["default"]["image_size"])  # PRESETS holds mixed values
    pf: PhotoFolder = load_folder(folder, image_size, severity=severity, progress=progress)
    m = pf.manifest
    pc1 = pc1_scores(pf.images, pf.groups, seed)
    sev = m[severity].to_numpy(float)
    pooled = within_spearman(pc1, sev, pf.groups)
    sign = -1.0 if pooled < 0 else 1.0
    per = {}
    for g, idx in pd.Series(np.arange(len(m))).groupby(pf.groups):
        ix = idx.to_numpy()
        per[str(g)] = within_spearman(sign * pc1[ix], sev[ix], np.zeros(len(ix)))
    vals = [v for v in per.values() if np.isfinite(v)]
    return {
        "severity_column": severity,
        "spearman_pooled": abs(pooled) if np.isfinite(pooled) else None,
        "spearman_per_patient": per,
        "spearman_median": float(np.median(vals)) if vals else None,
        "n_photos": len(m),
    }
