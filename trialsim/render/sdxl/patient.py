"""One patient's photos as SDXL inputs: severities, seeds, source pixels and lesion masks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...dataset import LESION_COLUMNS
from ...errors import BadInput
from ...seeding import seed_sequence
from ..base import PatientJob
from .batching import quantise_severity

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class Item:
    """One photo to render: where it comes from and its truth."""

    image: str
    severity: float  # quantised
    seed: int  # the manifest's per-photo seed (nuisance)
    generator_seed: int  # SDXL noise
    hour: float
    source: np.ndarray | None  # H×W×3 uint8 input to SDXL (None: not wanted)
    mask: np.ndarray | None  # H×W bool lesion mask (refine/inpaint)
    lesions: pd.DataFrame
    lesion_count: int


def generator_seed(seed: int, patient_index: int, day: int, photo: int) -> int:
    """The seed of one photo's SDXL noise: keyed by photo, so batching never changes it."""
    return int(seed_sequence(seed, patient_index, "sdxl", int(day), int(photo)).generate_state(1)[0])


def list_photos(folder: Path) -> list[Path]:
    """The photos in ``folder`` (sorted), or BadInput naming ``--base-photos``."""
    if not folder.is_dir():
        raise BadInput(f"base photo folder not found: {folder.resolve()}", field="--base-photos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise BadInput(
            f"no photos in {folder.resolve()}", field="--base-photos", allowed=", ".join(sorted(PHOTO_SUFFIXES))
        )
    return files


def pick_photo(files: list[Path], job: PatientJob) -> Path:
    """The file named after the patient, else one drawn per patient (as the seed project drew a grade-0 photo)."""
    named = [p for p in files if p.stem == str(job.patient_id)]
    if named:
        return named[0]
    rng = np.random.default_rng(seed_sequence(job.protocol.seed, job.patient_index, "sdxl"))
    return files[int(rng.integers(len(files)))]


def read_photo(path: Path, height: int, width: int) -> np.ndarray:
    """A portrait cropped and scaled to height×width px, H×W×3 uint8."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            rgb = ImageOps.exif_transpose(opened).convert("RGB")
            return np.asarray(ImageOps.fit(rgb, (width, height), Image.Resampling.LANCZOS))
    except OSError as err:
        raise BadInput(
            f"cannot read the photo ({err.__class__.__name__})", file=str(path), field="--base-photos"
        ) from None


def fit_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``img`` as uint8, resized to height×width px when it is another size."""
    if img.shape[:2] == (height, width):
        return img.astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(img.astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS))


def dilation_px(mask: np.ndarray, px: int | None) -> int:
    """The mask dilation in px: ``px``, else 1/64 of the height (at least 2)."""
    return px if px is not None else max(2, mask.shape[0] // 64)


def dilate(mask: np.ndarray, px: int | None) -> np.ndarray:
    """A boolean mask grown by an ellipse of :func:`dilation_px` radius."""
    import cv2

    r = dilation_px(mask, px)
    if r <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def feather(mask: np.ndarray, px: int | None) -> np.ndarray:
    """Soft 0–1 weights from a boolean mask (a Gaussian edge of about half the dilation)."""
    import cv2

    sigma = max(0.5, dilation_px(mask, px) / 2.0)
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


def anchor_items(
    job: PatientJob, step: float, base: Callable[[], np.ndarray], wanted: Callable[[str], bool]
) -> list[Item]:
    """Anchor mode: every wanted photo starts from the patient's one base portrait ``base()``.

    SDXL decides where lesions go, so no per-lesion truth; ``lesion_count`` is the target count.
    """
    days = job.days.set_index("day")
    rows = list(job.images.itertuples(index=False))
    portrait = base() if any(wanted(r.image) for r in rows) else None
    empty = pd.DataFrame(columns=LESION_COLUMNS)
    items = []
    for r in rows:
        d = days.loc[r.day]
        items.append(
            Item(
                r.image,
                quantise_severity(d["severity_latent"], step),
                int(r.seed),
                generator_seed(job.protocol.seed, job.patient_index, r.day, r.photo),
                float(r.hour),
                portrait if wanted(r.image) else None,
                None,
                empty,
                int(d["lesion_target"]),
            )
        )
    return items


def refine_items(
    job: PatientJob, step: float, clean: list, masks: Callable[[np.ndarray], np.ndarray] | None, wanted
) -> list[Item]:
    """Refine mode: each photo starts from the procedural renderer's clean image and keeps its lesion truth.

    ``clean``: the procedural renderer's clean images, one per row of ``job.images``; ``masks``
    turns a lesion mask into the inpainting mask (None: img2img on the whole photo).
    """
    days = job.days.set_index("day")
    items = []
    for r, c in zip(job.images.itertuples(index=False), clean):
        if c.image != r.image:
            raise RuntimeError(f"procedural renderer returned {c.image} for {r.image}")
        want = wanted(r.image)
        d = days.loc[r.day]
        items.append(
            Item(
                r.image,
                quantise_severity(d["severity_latent"], step),
                int(r.seed),
                generator_seed(job.protocol.seed, job.patient_index, r.day, r.photo),
                float(r.hour),
                np.asarray(c.pixels, dtype=np.uint8) if want else None,
                masks(np.asarray(c.lesion_mask)) if want and masks is not None else None,
                c.lesions,
                int(c.lesion_count),
            )
        )
    return items
