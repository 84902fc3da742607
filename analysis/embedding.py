"""Step 1 of the analysis, per method: which embedder, the photos it can use, fit and embed.

The ``ae`` method reads the skin by default (normalisation ``skin``): the patch
autoencoder (:class:`analysis.patch_ae.PatchAutoencoderEmbedder`) on the photos as
taken. Any other normalisation (``spots``, ``redness``, ``grey-world``, ``retinex``,
``none``) selects the whole-photo autoencoder of ``--preset`` on the normalised photos,
as does ``--preset schneider2023`` (the published configuration) on its own.

Photos the skin path cannot use (no skin found, or too little of it outside glare) are
named; :func:`check_usable` stops the analysis on them or, with ``skip_bad``, drops them.
On real photos PC1 has no natural sign; :func:`orient_by_redness` sets it so that PC1
rises with the skin's red contrast, which reads no score.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .dataset import TrialData
from .embed import AutoencoderEmbedder, OracleEmbedder, PixelPCAEmbedder
from .errors import AnalysisInputError
from .patch_ae import PatchAutoencoderEmbedder

SKIN = "skin"  # the normalisation name of the patch autoencoder's input
PATCH_IMAGE_SIZE = 256  # px the photos are loaded at for the patch autoencoder


def normalisation(cfg) -> str:
    """The normalisation in effect: the option, else ``skin`` (preset default) or ``spots`` (schneider2023)."""
    return cfg.normalize or (SKIN if cfg.preset == "default" else "spots")


def embedder(method: str, data: TrialData | None, cfg):
    """The unfitted embedder of ``method`` under the options ``cfg`` (an AnalysisConfig)."""
    if method == "oracle":
        if data is None or not data.has_truth:
            raise AnalysisInputError(
                "method 'oracle' needs the severity_latent column (simulated data only)",
                file=str(data.root / "manifest.csv") if data is not None else None,
                field="severity_latent",
                allowed="methods ae or pixel-pca for real photos",
            )
        return OracleEmbedder()
    if method == "pixel-pca":
        return PixelPCAEmbedder(random_state=cfg.seed)
    if method == "sim-reader":
        from .reader import SimReaderEmbedder

        return SimReaderEmbedder(reader=cfg.reader, progress=cfg.progress)
    if normalisation(cfg) == SKIN:
        given = {"epochs": cfg.epochs, "code_size": cfg.code_size}
        return PatchAutoencoderEmbedder(
            random_state=cfg.seed, progress=cfg.progress, **{k: v for k, v in given.items() if v is not None}
        )
    return AutoencoderEmbedder.from_preset(
        cfg.preset,
        image_size=cfg.image_size,
        epochs=cfg.epochs,
        code_size=cfg.code_size,
        random_state=cfg.seed,
        progress=cfg.progress,
    )


def embed(method: str, data: TrialData, images, cfg, timings: dict):
    """Embeddings (N, d) for one method; returns (embeddings, fitted embedder)."""
    est = embedder(method, data, cfg)
    X = data.manifest if method == "oracle" else images
    t0 = time.perf_counter()
    est.fit(X)
    # the oracle learns nothing: its time counts as embedding
    timings["embed" if method == "oracle" else "train"] += time.perf_counter() - t0
    t1 = time.perf_counter()
    emb = est.transform(X)
    timings["embed"] += time.perf_counter() - t1
    return emb, est


def check_usable(data: TrialData, images: np.ndarray, cfg) -> tuple[TrialData, np.ndarray, pd.DataFrame]:
    """Skin share, patch count and red contrast of every photo; unusable photos stop the run or are dropped.

    Returns the (possibly reduced) data, the photos and the per-photo table (row-aligned,
    with an ``image`` column).
    """
    table = embedder("ae", data, cfg).describe(images)
    table.insert(0, "image", data.manifest["image"].to_numpy())
    bad = table.loc[~table["usable"], "image"].astype(str).tolist()
    if bad and not cfg.skip_bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise AnalysisInputError(
            f"{len(bad)} photo(s) show too little skin to analyse (no skin found, or all glare): {shown} "
            "(pass --skip-bad to drop such images)",
            file=str(data.root / "manifest.csv"),
            field="image",
        )
    if not bad:
        return data, images, table
    keep = table["usable"].to_numpy()
    kept = data.subset(keep)
    kept.skipped_images = list(data.skipped_images) + bad
    if len(kept.manifest) == 0:
        raise AnalysisInputError("no photo with enough skin left", file=str(data.root / "manifest.csv"), field="image")
    return kept, images[keep], table[keep].reset_index(drop=True)


def orient_by_redness(pc1: np.ndarray, photos: pd.DataFrame | None) -> tuple[np.ndarray, bool]:
    """Flip PC1 so that it rises with the photos' red contrast; returns (scores, whether oriented)."""
    if photos is None or len(photos) != len(pc1) or np.std(photos["red_contrast"]) == 0:
        return pc1, False
    r = np.corrcoef(pc1, photos["red_contrast"].to_numpy(float))[0, 1]
    return (-pc1 if np.isfinite(r) and r < 0 else pc1), True


def orient_by_read_severity(pc1: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Flip PC1 so that it rises with the embedding's first column (the reader's inflammatory count,
    or its severity with ``embed="all"``)."""
    r = np.corrcoef(pc1, emb[:, 0])[0, 1] if np.std(emb[:, 0]) > 0 else 1.0
    return -pc1 if np.isfinite(r) and r < 0 else pc1


def skin_summary(photos: pd.DataFrame) -> dict:
    """The share of each photo used as skin: median, range, and per photo."""
    s = photos["skin_share"].to_numpy(float)
    return {
        "share_median": float(np.median(s)),
        "share_min": float(s.min()),
        "share_max": float(s.max()),
        "patches_median": float(photos["n_patches"].median()),
        "by_image": {str(k): float(v) for k, v in zip(photos["image"], s)},
    }


def reconstructions(est, images: np.ndarray, names: np.ndarray) -> dict:
    """Up to 8 evenly spaced photos (one skin patch each for the patch autoencoder), as seen and rebuilt."""
    pick = np.linspace(0, len(images) - 1, min(8, len(images))).round().astype(int)
    orig, rec = est.reconstruct(images[pick])
    out = {
        "originals": orig,
        "reconstructions": rec,
        "images": names[pick].astype(str),
        "loss_history": np.array(est.loss_history_),
    }
    if isinstance(est, PatchAutoencoderEmbedder):
        out["mse"] = np.array([est.mse_, est.mse_mean_patch_])  # the autoencoder's and the mean patch's
    return out


def effective_rank(X: np.ndarray) -> float:
    """exp(entropy of the normalised PCA spectrum) of the rows of ``X``: 1 = one direction, d = all equal."""
    X = np.asarray(X, float)
    s = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2
    if s.sum() <= 0:
        return float("nan")
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p + 1e-300))))
