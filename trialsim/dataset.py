"""The dataset folder (DESIGN.md, Contract 1): atomic writes, resume and overwrite.

Layout written by :func:`trialsim.simulate.simulate`::

    DIR/manifest.csv     one row per image (truth columns included)
    DIR/lesions.csv      one row per lesion per image
    DIR/schedule.csv     the anchor's protocol CSV format
    DIR/protocol.yaml    the fully resolved protocol, seed included
    DIR/images/<patient>/<patient>_d<day>_p<photo>.jpg
    DIR/contact_sheets/<patient>.png   (when images are rendered)

Tables are written only once every image is in place, so a folder with a
``manifest.csv`` is complete; an interrupted run leaves images (each written to a
temporary name and renamed) that ``--resume`` keeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from .errors import BadInput

MANIFEST = "manifest.csv"
LESIONS = "lesions.csv"
SCHEDULE = "schedule.csv"
PROTOCOL = "protocol.yaml"
IMAGES_DIR = "images"
CONTACT_DIR = "contact_sheets"
_OUTPUTS = (MANIFEST, LESIONS, SCHEDULE, PROTOCOL, IMAGES_DIR, CONTACT_DIR)

MANIFEST_COLUMNS = [
    "image",
    "patient_id",
    "day",
    "treatment",
    "timestamp",
    "block",
    "period",
    "photo",
    "severity_latent",
    "severity_noisefree",
    "severity_grade",
    "lesion_count",
    "seed",
]
SCHEDULE_COLUMNS = ["patient_id", "date", "block", "day", "treatment", "AcneSeverity"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; dataset files are for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n", float_format="%.6g"))


def prepare_output(out: Path, protocol_yaml: str, overwrite: bool, resume: bool) -> None:
    """Make ``out`` ready: refuse an existing folder unless ``overwrite`` or ``resume``.

    ``resume`` keeps finished images but only for the same resolved protocol;
    ``overwrite`` removes what a previous simulation wrote (nothing else).
    """
    out = Path(out)
    if overwrite and resume:
        raise BadInput("choose either --overwrite or --resume, not both", field="--overwrite/--resume")
    if out.exists() and not out.is_dir():
        raise BadInput("the output path exists and is not a folder", file=str(out), field="--out")
    existing = out.is_dir() and any(out.iterdir())
    if existing and not (overwrite or resume):
        raise BadInput(
            "the output folder already exists and is not empty; pass --overwrite to replace "
            "it or --resume to finish an interrupted run",
            file=str(out),
            field="--out",
        )
    if existing and resume:
        prev = out / PROTOCOL
        if prev.exists() and prev.read_text(encoding="utf-8") != protocol_yaml:
            raise BadInput(
                "cannot resume: the folder was made with a different protocol or seed",
                file=str(prev),
                field="protocol",
                allowed="the same protocol and --seed as before",
            )
    if existing and overwrite:
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # protocol first: it marks the folder as ours and pins what a resume must match
    atomic_write_text(out / PROTOCOL, protocol_yaml)
    # leftovers of a killed write are never valid files
    for tmp in out.rglob(".*.tmp"):
        tmp.unlink()


def anchor_schedule_table(days: pd.DataFrame) -> pd.DataFrame:
    """The anchor's CSV layout (unnamed index column, severity rounded to 3 decimals)."""
    t = pd.DataFrame(
        {
            "patient_id": days["patient_id"].to_numpy(),
            "date": days["date"].to_numpy(),
            "block": days["period"].to_numpy(),
            "day": days["day"].to_numpy(),
            "treatment": days["treatment"].to_numpy(),
            "AcneSeverity": days["severity_latent"].round(3).to_numpy(),
        }
    )
    t.index = range(len(t))
    return t


def write_tables(out: Path, manifest: pd.DataFrame, lesions: pd.DataFrame, days: pd.DataFrame) -> None:
    out = Path(out)
    atomic_write_text(out / SCHEDULE, anchor_schedule_table(days).to_csv(lineterminator="\n"))
    write_csv(out / LESIONS, lesions)
    # manifest last: its presence says the folder is complete
    write_csv(out / MANIFEST, manifest)
