"""``--method sim-reader``: each photo embedded as a trained reader's outputs.

The embedding's columns (``embed``): by default the reader's count of inflammatory lesions
(papules, pustules, nodules: what a haemoglobin reader sees, and what acne grading counts
most); with ``embed="all"`` its severity and its lesion count per group
(:data:`analysis.reader.network.GROUPS`). Each is standardised by its mean and SD over the
reader's training photos, so that PCA weighs them alike. The reader learned from simulated
photos only (``trialsim train-reader``); ``fit`` learns nothing from the trial.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .network import prepare


def resize_photos(photos: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, 3, H, W) → uint8 (N, 3, size, size) (area averaging down, linear up)."""
    import cv2

    if photos.shape[2] == size and photos.shape[3] == size:
        return photos
    out = np.empty((len(photos), 3, size, size), np.uint8)
    for i, p in enumerate(photos):
        interp = cv2.INTER_AREA if max(p.shape[1:]) > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(np.ascontiguousarray(p.transpose(1, 2, 0)), (size, size), interpolation=interp).transpose(
            2, 0, 1
        )
    return out


class SimReaderEmbedder(TransformerMixin, BaseEstimator):
    """Photos (uint8 (N, 3, H, W)) → the reader's outputs, standardised (N, 1 + groups).

    Parameters: ``reader`` (the reader folder), ``embed`` (``"inflammatory"`` or ``"all"``),
    ``batch_size`` (photos per forward pass), ``progress`` (a tqdm bar). Learned by ``fit``:
    ``reader_`` (the loaded reader).
    """

    def __init__(self, reader=None, embed: str = "inflammatory", batch_size: int = 32, progress: bool = False):
        self.reader = reader
        self.embed = embed
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, X=None, y=None):
        from .files import load_reader

        if self.reader is None:
            from ..errors import AnalysisInputError

            raise AnalysisInputError(
                "method 'sim-reader' needs a reader folder",
                field="--reader",
                allowed="a folder from trialsim train-reader",
            )
        self.reader_ = load_reader(self.reader)
        return self

    def read(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs: severity (N,) and density maps float32 (N, groups, S/4, S/4) at the reader's size."""
        import torch
        from tqdm.auto import tqdm

        check_is_fitted(self, "reader_")
        X = resize_photos(np.asarray(X), int(self.reader_.config["image_size"]))
        sev, maps = [], []
        starts = range(0, len(X), self.batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc="sim-reader", unit="batch", disable=not self.progress):
                x = prepare(X[s : s + self.batch_size], self.reader_.config["input"])
                d, v = self.reader_.network(torch.from_numpy(x))
                maps.append(d.numpy())
                sev.append(v.numpy())
        if not maps:
            return np.zeros(0), np.zeros((0, len(self.reader_.config["groups"]), 1, 1), np.float32)
        return np.concatenate(sev).astype(float), np.concatenate(maps)

    def outputs(self, X) -> np.ndarray:
        """Unstandardised outputs (N, 1 + groups): severity, then the count of each group."""
        sev, maps = self.read(X)
        return np.column_stack([sev, maps.sum(axis=(2, 3))])

    def columns(self) -> list[int]:
        """The columns of :meth:`outputs` the embedding keeps."""
        if self.embed == "all":
            return list(range(1 + len(self.reader_.config["groups"])))
        return [1 + list(self.reader_.config["groups"]).index("inflammatory")]

    def transform(self, X) -> np.ndarray:
        out = self.outputs(X)
        cfg = self.reader_.config
        keep = self.columns()
        return (out[:, keep] - np.asarray(cfg["embedding_mean"])[keep]) / np.asarray(cfg["embedding_scale"])[keep]
