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

import re
import shutil
from pathlib import Path

import pandas as pd

# the project's one atomic-write helper; re-exported for trialsim's modules
from analysis.atomic import atomic_write_bytes as atomic_write_bytes
from analysis.atomic import atomic_write_text, write_csv

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
# the anchor's protocol CSV (schedule.csv; also what --from-csv reads)
SCHEDULE_COLUMNS = ["patient_id", "date", "block", "day", "treatment", "AcneSeverity"]
# lesions.csv: one row per lesion visible in an image (positions in px of the canonical frame)
LESION_COLUMNS = ["image", "lesion_id", "type", "x", "y", "radius", "stage", "intensity"]


def safe_name(name: object) -> str:
    """``name`` as a file name: every run of characters outside ``A-Za-z0-9_.-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "_"


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
    source = {"block": days["period"], "AcneSeverity": days["severity_latent"].round(3)}
    t = pd.DataFrame({c: (source[c] if c in source else days[c]).to_numpy() for c in SCHEDULE_COLUMNS})
    t.index = range(len(t))
    return t


def write_tables(out: Path, manifest: pd.DataFrame, lesions: pd.DataFrame, days: pd.DataFrame) -> None:
    out = Path(out)
    atomic_write_text(out / SCHEDULE, anchor_schedule_table(days).to_csv(lineterminator="\n"))
    write_csv(out / LESIONS, lesions)
    # manifest last: its presence says the folder is complete
    write_csv(out / MANIFEST, manifest)
