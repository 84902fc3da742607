"""The only door in: read a dataset folder (docs/contracts.md, Contract 1), simulated or real photos.

:func:`load_dataset` reads ``manifest.csv`` (and ``protocol.yaml`` when present)
into a :class:`TrialData`; :func:`load_images` decodes the photos to a square
uint8 array at the analysis size. Photos may have any size and aspect (resized
on the short side, centre-cropped), any EXIF orientation (applied), RGB, RGBA or
greyscale; several photos a day are fine. Nothing here imports ``trialsim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .contract import BASELINE_LABEL, MANIFEST, MANIFEST_REQUIRED, PROTOCOL
from .errors import AnalysisInputError, cell_text

MAX_DAY = 36500  # a hundred years of daily photos: the longest study day a manifest may name


@dataclass
class TrialData:
    """One trial's table of photos.

    ``manifest``: one row per image with at least ``image, patient_id (str), day (int),
    treatment (str)``, sorted by patient, day, image. ``treatments``: the contrasted
    treatment labels in protocol order (Baseline excluded). ``nominal_effects``:
    label -> protocol effect (severity units), when a protocol.yaml is present.
    """

    root: Path
    manifest: pd.DataFrame
    treatments: list[str]
    protocol: dict | None = None
    nominal_effects: dict[str, float] = field(default_factory=dict)
    skipped_images: list[str] = field(default_factory=list)

    @property
    def has_truth(self) -> bool:
        return "severity_latent" in self.manifest.columns and self.manifest["severity_latent"].notna().all()

    @property
    def has_noisefree(self) -> bool:
        return "severity_noisefree" in self.manifest.columns and self.manifest["severity_noisefree"].notna().all()

    def subset(self, keep: np.ndarray) -> TrialData:
        return TrialData(
            self.root,
            self.manifest[keep].reset_index(drop=True),
            self.treatments,
            self.protocol,
            self.nominal_effects,
            list(self.skipped_images),
        )


def _read_protocol(path: Path) -> dict | None:
    if not path.exists():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AnalysisInputError(f"cannot read the protocol ({e.__class__.__name__})", file=str(path)) from None
    if not isinstance(data, dict):
        raise AnalysisInputError("the protocol must be a YAML mapping", file=str(path))
    return data


def _days_from_timestamps(df: pd.DataFrame, path: Path) -> pd.Series:
    ts = pd.to_datetime(df["timestamp"], errors="coerce", format="ISO8601")
    bad = ts.isna()
    if bad.any():
        raise AnalysisInputError(
            f"unreadable timestamp {cell_text(df.loc[bad, 'timestamp'].iloc[0])} (row {int(np.flatnonzero(bad)[0]) + 2})",
            file=str(path),
            field="timestamp",
            allowed="ISO 8601 date or date-time",
        )
    date = ts.dt.normalize()
    first = date.groupby(df["patient_id"]).transform("min")
    return ((date - first).dt.days + 1).astype(int)


def _effect(value, label: str, path: Path) -> float:
    """A treatment's nominal effect from the dataset's protocol, as a finite number."""
    try:
        effect = float(value)
    except (TypeError, ValueError):
        effect = float("nan")
    if isinstance(value, bool) or not np.isfinite(effect):
        raise AnalysisInputError(
            f"the effect of treatment {label!r} is {value!r}, not a number",
            file=str(path),
            field="treatments.effect",
            allowed="a finite number (severity units, 0–3 scale)",
        )
    return effect


def _treatments(df: pd.DataFrame, protocol: dict | None, path: Path) -> tuple[list[str], dict[str, float]]:
    """Contrasted labels (protocol order, then first appearance) and their nominal effects (from the protocol)."""
    present = set(df["treatment"]) - {BASELINE_LABEL}
    labels, nominal = [], {}
    if protocol and isinstance(protocol.get("treatments"), list):
        for t in protocol["treatments"]:
            if isinstance(t, dict) and "label" in t:
                lab = str(t["label"])
                if lab in present:
                    labels.append(lab)
                    if t.get("effect") is not None:
                        nominal[lab] = _effect(t["effect"], lab, path.parent / PROTOCOL)
    # labels not in the protocol: in order of first appearance (earliest day, then name)
    first_day = df[df["treatment"] != BASELINE_LABEL].groupby("treatment")["day"].min()
    labels += sorted(present - set(labels), key=lambda l: (first_day[l], l))
    if len(labels) < 2:
        raise AnalysisInputError(
            f"need at least two treatments to contrast, found {sorted(present) or 'none'}",
            file=str(path),
            field="treatment",
            allowed=f"two or more labels besides '{BASELINE_LABEL}'",
        )
    return labels, nominal


def _check_inside(root: Path, images: pd.Series, path: Path) -> None:
    """Refuse a manifest that names a file outside the dataset folder (``..``, absolute, via a link)."""
    top = root.resolve()
    for row, rel in enumerate(images, start=2):
        target = (root / rel).resolve()
        if target != top and top in target.parents:
            continue
        raise AnalysisInputError(
            f"image {rel!r} in row {row} is outside the dataset folder (resolved, links followed: {target})",
            file=str(path),
            field="image",
            allowed="paths relative to the folder of manifest.csv that stay inside it",
        )


def load_dataset(folder: str | Path) -> TrialData:
    """Read ``folder/manifest.csv`` (and ``protocol.yaml``); validate the required columns."""
    root = Path(folder)
    path = root / MANIFEST
    if not root.is_dir():
        raise AnalysisInputError("not a dataset folder (expected a folder holding manifest.csv)", file=str(root))
    if not path.exists():
        raise AnalysisInputError(
            "manifest.csv is missing", file=str(path), allowed="a CSV with columns image, patient_id, day, treatment"
        )
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "treatment": str, "image": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnalysisInputError(f"unreadable CSV ({e.__class__.__name__}: {e})", file=str(path)) from None
    return dataset_from_frame(df, root, _read_protocol(root / PROTOCOL))


def dataset_from_frame(df: pd.DataFrame, root: Path, protocol: dict | None) -> TrialData:
    """A :class:`TrialData` from a manifest table as read from ``root/manifest.csv`` (checked the same way).

    Also the in-memory path of power studies without photos: the table never touches the disk.
    """
    path = Path(root) / MANIFEST
    if "day" not in df.columns and "timestamp" in df.columns and "patient_id" in df.columns:
        df["day"] = _days_from_timestamps(df, path)
    missing = [c for c in MANIFEST_REQUIRED if c not in df.columns]
    if missing:
        raise AnalysisInputError(
            f"missing column(s) {missing}",
            file=str(path),
            field=missing[0],
            allowed="columns image, patient_id, day (or timestamp), treatment",
        )
    if len(df) == 0:
        raise AnalysisInputError("the manifest has no rows", file=str(path))
    for col in ("image", "patient_id", "treatment"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna())[0]) + 2
            raise AnalysisInputError(f"empty value in row {row}", file=str(path), field=col)
    day = pd.to_numeric(df["day"], errors="coerce")
    bad_day = day.isna() | (day != np.round(day)) | (day < 1) | (day > MAX_DAY)
    if bad_day.any():
        row = int(np.flatnonzero(bad_day)[0]) + 2
        raise AnalysisInputError(
            f"bad day {df['day'].iloc[row - 2]} in row {row}",
            file=str(path),
            field="day",
            allowed=f"integers from 1 to {MAX_DAY} (study day, 1-based)",
        )
    df["day"] = day.astype(int)
    df["patient_id"] = df["patient_id"].astype(str)
    df["treatment"] = df["treatment"].astype(str)
    _check_inside(root, df["image"], path)
    twice = df["image"].duplicated(keep=False)
    if twice.any():
        image = df["image"][twice].iloc[0]
        rows = [int(r) + 2 for r in np.flatnonzero(df["image"] == image)[:2]]
        raise AnalysisInputError(
            f"image {image!r} is listed more than once (rows {rows[0]} and {rows[1]})",
            file=str(path),
            field="image",
            allowed="one row per photo",
        )
    df = df.sort_values(["patient_id", "day", "image"], kind="stable").reset_index(drop=True)
    labels, nominal = _treatments(df, protocol, path)
    return TrialData(root, df, labels, protocol, nominal)


# a photo larger than this is refused before its pixels are decoded (a 15000 px square would
# need ~700 MB); 100 megapixels holds every camera a trial would use
MAX_PIXELS = 100_000_000


def _open_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        opened = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own limit, checked on the header
        raise ValueError(f"over the {MAX_PIXELS:,} pixel limit") from None
    with opened:
        w, h = opened.size  # from the header: nothing decoded yet
        if w * h > MAX_PIXELS:
            raise ValueError(f"{w}×{h} px is over the {MAX_PIXELS:,} pixel limit")
        opened.load()
        im: Image.Image = ImageOps.exif_transpose(opened)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)


def load_images(
    data: TrialData, size: int, skip_bad: bool = False, progress: bool = False
) -> tuple[TrialData, np.ndarray]:
    """Decode every photo to ``(N, 3, size, size)`` uint8 (short side resized, centre crop).

    A missing or unreadable photo raises :class:`AnalysisInputError` naming it, or
    with ``skip_bad`` is dropped (its path recorded in ``skipped_images``).
    Returns the (possibly reduced) data and the array, row-aligned.
    """
    from PIL import UnidentifiedImageError

    out = np.zeros((len(data.manifest), size, size, 3), dtype=np.uint8)
    keep = np.ones(len(data.manifest), dtype=bool)
    skipped = []
    it = enumerate(data.manifest["image"])
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(data.manifest), desc="load images", unit="img")
    for i, rel in it:
        path = data.root / rel
        try:
            out[i] = _open_image(path, size)
        except FileNotFoundError:
            reason = "image file not found"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            reason = f"unreadable image ({e.__class__.__name__}{': ' + str(e) if isinstance(e, ValueError) else ''})"
        else:
            continue
        if not skip_bad:
            raise AnalysisInputError(f"{reason} (pass --skip-bad to drop such images)", file=str(path), field="image")
        keep[i] = False
        skipped.append(str(rel))
    kept = data.subset(keep)
    kept.skipped_images = list(data.skipped_images) + skipped
    if kept.manifest["patient_id"].nunique() < 1 or len(kept.manifest) == 0:
        raise AnalysisInputError("no readable images left", file=str(data.root / MANIFEST), field="image")
    return kept, np.ascontiguousarray(out[keep].transpose(0, 3, 1, 2))
