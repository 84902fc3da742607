"""Analysis difficulty: how well the default analysis ranks a folder's photos by severity.

The analysis's default embedding (:mod:`analysis.pipeline`'s default method, normalisation
and reduction: the skin-patch autoencoder unless the defaults change) runs on the folder alone, as ``trialsim analyze`` would run
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


def _default_config():
    """The options ``trialsim analyze`` runs with by default."""
    from ..pipeline import AnalysisConfig

    return AnalysisConfig()


def input_size(cfg=None) -> int:
    """Pixels the default analysis loads a photo at (short side, centre crop)."""
    from ..embed import PRESETS
    from ..embedding import PATCH_IMAGE_SIZE, SKIN, normalisation

    cfg = cfg or _default_config()
    if normalisation(cfg) == SKIN:
        return PATCH_IMAGE_SIZE
    return cast(int, cfg.image_size or PRESETS[cfg.preset]["image_size"])  # PRESETS holds mixed values


def pc1_scores(images: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PC1 of the default analysis embedding, and which photos it could use.

    ``images`` uint8 (N, S, S, 3) at :func:`input_size`. On the skin path, photos without
    usable skin are left out, as ``trialsim analyze --skip-bad`` leaves them out.
    """
    from ..embedding import SKIN, embedder, normalisation
    from ..pipeline import DEFAULT_REDUCTION
    from ..reduce import PC1Reducer, normalize_photometric

    cfg = _default_config()
    cfg.seed = seed
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    keep = np.ones(len(x), bool)
    if normalisation(cfg) == SKIN:
        keep = embedder("ae", None, cfg).describe(x)["usable"].to_numpy(bool)
        x = x[keep]
    else:
        x = normalize_photometric(x, normalisation(cfg))
    emb = embedder("ae", None, cfg).fit_transform(x)
    return PC1Reducer(DEFAULT_REDUCTION).fit_transform(emb, groups[keep]), keep


def difficulty(folder: str, severity: str, seed: int = 0, progress: bool = False) -> dict:
    """Within-patient Spearman of PC1 with ``severity``: pooled, per patient and the median."""
    pf: PhotoFolder = load_folder(folder, input_size(), severity=severity, progress=progress)
    pc1, keep = pc1_scores(pf.images, pf.groups, seed)
    m = pf.manifest[keep].reset_index(drop=True)
    groups = pf.groups[keep]
    sev = m[severity].to_numpy(float)
    pooled = within_spearman(pc1, sev, groups)
    sign = -1.0 if pooled < 0 else 1.0
    per = {}
    for g, idx in pd.Series(np.arange(len(m))).groupby(groups):
        ix = idx.to_numpy()
        per[str(g)] = within_spearman(sign * pc1[ix], sev[ix], np.zeros(len(ix)))
    vals = [v for v in per.values() if np.isfinite(v)]
    return {
        "severity_column": severity,
        "spearman_pooled": abs(pooled) if np.isfinite(pooled) else None,
        "spearman_per_patient": per,
        "spearman_median": float(np.median(vals)) if vals else None,
        "n_photos": len(pf.manifest),
        "n_photos_used": len(m),
    }
