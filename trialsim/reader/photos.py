"""Training photos for the reader: rendered photos, lesion density maps and severities.

The photos are those :class:`~trialsim.render.procedural.ProceduralRenderer` makes for a
protocol (identities, skin types, views, photo conditions), read as the analysis reads a
dataset: short side resized to ``size``, centre crop (:func:`analysis.dataset.load_images`).
Each visible lesion (intensity ≥ 0.3) puts a unit of mass at its centre in its group's map
(:data:`analysis.reader.network.GROUPS`), spread by a Gaussian of SD one map cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from analysis.reader.detect import visible
from analysis.reader.network import GROUPS, STRIDE

from ..protocol import Protocol, protocol_from_dict
from ..render.procedural import ProceduralRenderer
from ..simulate import simulate_truth


@dataclass
class TrainingSet:
    """``photos`` uint8 (N, 3, S, S); ``density`` float32 (N, groups, S/4, S/4); ``severity`` (N,)
    latent severity; ``lesions``: the visible lesions (``photo`` index, ``group``, ``x``, ``y``,
    ``radius`` in the S-px photo); ``patient`` (N,) patient index; ``inputs`` the photos as
    the network reads them."""

    photos: np.ndarray
    density: np.ndarray
    severity: np.ndarray
    lesions: pd.DataFrame
    patient: np.ndarray
    # the network's input (analysis.reader.network.prepare); empty until training sets it
    inputs: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))


def square(photo: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """H×W×3 → size×size×3 as the analysis loads photos; returns it and (scale, dx, dy) mapping
    photo px to square px: ``x' = x·scale − dx``."""
    h, w = photo.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    big = cv2.resize(photo, (nw, nh), interpolation=interp)
    dy, dx = (nh - size) // 2, (nw - size) // 2
    return big[dy : dy + size, dx : dx + size], scale, float(dx), float(dy)


def density_map(lesions: pd.DataFrame, size: int) -> np.ndarray:
    """float32 (groups, size/STRIDE, size/STRIDE): unit mass per lesion, Gaussian SD 1 cell."""
    cells = size // STRIDE
    out = np.zeros((len(GROUPS), cells, cells), np.float32)
    for k, g in enumerate(GROUPS):
        sel = lesions[lesions["group"] == g]
        cx = np.floor(sel["x"].to_numpy(float) / STRIDE).astype(int)
        cy = np.floor(sel["y"].to_numpy(float) / STRIDE).astype(int)
        inside = (cx >= 0) & (cy >= 0) & (cx < cells) & (cy < cells)
        np.add.at(out[k], (cy[inside], cx[inside]), 1.0)
        out[k] = gaussian_filter(out[k], 1.0, mode="constant")
    return out


def training_protocol(protocol: Protocol, n_photos: int, seed: int) -> Protocol:
    """``protocol`` with enough patients for ``n_photos`` photos and its seed replaced by ``seed``."""
    per_patient = protocol.n_days * protocol.observation.photos_per_day
    data = protocol.resolved()
    data["seed"] = int(seed)
    data["patients"] = {**data["patients"], "n": max(1, math.ceil(n_photos / max(1, per_patient)))}
    data["patients"].pop("ids", None)
    data["patients"].pop("overrides", None)
    return protocol_from_dict(data, source="reader training protocol")


def training_set(protocol: Protocol, n_photos: int, size: int, seed: int, progress: bool = False) -> TrainingSet:
    """The first ``n_photos`` photos of :func:`training_protocol`, at ``size`` px, with their truth."""
    from tqdm.auto import tqdm

    proto = training_protocol(protocol, n_photos, seed)
    renderer = ProceduralRenderer(proto)
    photos: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    sev: list[float] = []
    pats: list[int] = []
    rows: list[pd.DataFrame] = []
    bar = tqdm(total=n_photos, desc="training photos", unit="photo", disable=not progress)
    for job in simulate_truth(proto):
        latent = dict(zip(job.days["day"].tolist(), job.days["severity_latent"].tolist()))
        for (_, photo, les), day in zip(renderer.photos_with_truth(job), job.images["day"].tolist()):
            if len(photos) == n_photos:
                break
            img, scale, dx, dy = square(photo, size)
            v = visible(les)
            v = pd.DataFrame(
                {
                    "photo": len(photos),
                    "group": v["group"].to_numpy(),
                    "x": v["x_photo"].to_numpy(float) * scale - dx,
                    "y": v["y_photo"].to_numpy(float) * scale - dy,
                    "radius": v["radius_photo"].to_numpy(float) * scale,
                }
            )
            v = v[(v["x"] >= 0) & (v["y"] >= 0) & (v["x"] < size) & (v["y"] < size)]
            rows.append(v)
            maps.append(density_map(v, size))
            photos.append(img.transpose(2, 0, 1))
            sev.append(float(latent[int(day)]))
            pats.append(job.patient_index)
            bar.update()
    bar.close()
    return TrainingSet(
        np.stack(photos), np.stack(maps), np.asarray(sev), pd.concat(rows, ignore_index=True), np.asarray(pats)
    )
