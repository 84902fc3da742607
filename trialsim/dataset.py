"""The dataset folder (docs/contracts.md, Contract 1): atomic writes, resume and overwrite.

Layout written by :func:`trialsim.simulate.simulate`::

    DIR/manifest.csv     one row per image (truth columns included)
    DIR/lesions.csv      one row per lesion per image
    DIR/schedule.csv     the anchor's protocol CSV format
    DIR/protocol.yaml    the fully resolved protocol, seed included
    DIR/.trialsim.json   marker: the kind of folder and its protocol's hash
    DIR/images/<patient>/<patient>_d<day>_p<photo>.jpg
    DIR/contact_sheets/<patient>.png   (when images are rendered)

Tables are written only once every image is in place, so a folder with a
``manifest.csv`` is complete; an interrupted run leaves images (each written to a
temporary name and renamed) that ``--resume`` keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

# the project's one atomic-write helper; re-exported for trialsim's modules
from analysis.atomic import atomic_write_bytes as atomic_write_bytes
from analysis.atomic import atomic_write_text, write_csv

from .errors import BadInput
from .protocol import patient_folder_name

MARKER = ".trialsim.json"

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
    """The folder and file-name stem of patient ``name`` (see :func:`trialsim.protocol.patient_folder_name`)."""
    return patient_folder_name(str(name))


# what each kind of folder holds when an older trialsim wrote it (before the marker existed)
_LEGACY_SIGNS = {
    "dataset": (PROTOCOL, MANIFEST),
    "analysis": ("results.json",),
    "power": ("study.yaml",),
    "demo": (f"dataset/{PROTOCOL}", f"dataset/{MANIFEST}"),
}


def folder_kind(folder: Path) -> str | None:
    """The kind of trialsim folder ``folder`` is ("dataset", "analysis", "power", "demo"), or None.

    Proof is the marker file trialsim writes first into every output folder; a folder from
    before the marker is recognised by the files only that kind holds.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            kind = None
        if isinstance(kind, str):
            return kind
    for kind, signs in _LEGACY_SIGNS.items():
        if all((folder / s).is_file() for s in signs):
            return kind
    return None


def claim_output(out: Path, kind: str, flag: str | None, replace: bool) -> bool:
    """Check that trialsim may write the folder ``out`` as a ``kind`` folder; True when it holds output.

    An absent or empty folder is free. A non-empty one must be a ``kind`` folder trialsim wrote
    (:func:`folder_kind`), and with ``flag`` (the option that allows replacing it) given,
    ``replace`` must be set; anything else is :class:`BadInput` naming the folder and the flag.
    Nothing is written here.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput("the output path exists and is not a folder", file=str(out), field="--out")
    _check_writable(out)
    if not (out.is_dir() and any(out.iterdir())):
        return False
    found = folder_kind(out)
    if found != kind:
        what = f"a trialsim {found} folder" if found else "not a folder trialsim wrote"
        raise BadInput(
            f"the output folder is not empty and is {what}; trialsim replaces only a {kind} folder it "
            "wrote itself, so nothing of yours is lost",
            file=str(out),
            field="--out",
            allowed="a new or empty folder" + (f", or a {kind} folder of trialsim's with {flag}" if flag else ""),
        )
    if flag and not replace:
        raise BadInput(
            f"the output folder already exists and holds a trialsim {kind}; pass {flag} to replace it",
            file=str(out),
            field="--out",
            allowed=f"a new or empty folder, or {flag}",
        )
    return True


def _check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be made or written, before any work is done."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInput(f"{existing} is a file, so no folder can be made inside it", file=str(out), field="--out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"no permission to write in {existing}", file=str(out), field="--out")


def write_marker(out: Path, kind: str, inputs: str = "") -> None:
    """Mark ``out`` as a ``kind`` folder trialsim wrote; ``inputs``: the text its content follows from."""
    digest = hashlib.sha256(inputs.encode("utf-8")).hexdigest()
    text = json.dumps({"kind": kind, "inputs_sha256": digest}, sort_keys=True) + "\n"
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / MARKER, text)


def prepare_output(out: Path, protocol_yaml: str, overwrite: bool, resume: bool) -> None:
    """Make ``out`` ready: refuse an existing folder unless ``overwrite`` or ``resume``.

    Only a dataset folder trialsim wrote is resumed or replaced (:func:`claim_output`).
    ``resume`` keeps finished images but only for the same resolved protocol;
    ``overwrite`` removes what a previous simulation wrote (nothing else).
    """
    out = Path(out)
    if overwrite and resume:
        raise BadInput("choose either --overwrite or --resume, not both", field="--overwrite/--resume")
    if resume and out.is_dir() and any(out.iterdir()) and folder_kind(out) is None and (out / PROTOCOL).is_file():
        # a run killed before any marker existed: protocol.yaml alone says the folder is ours
        resume_legacy = True
    else:
        resume_legacy = False
    existing = resume_legacy or claim_output(out, "dataset", "--overwrite or --resume", overwrite or resume)
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
    # the marker first: it proves the folder is ours; the protocol pins what a resume must match
    write_marker(out, "dataset", protocol_yaml)
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


WORK_PREFIX = "trialsim-rep-"


def work_folder() -> Path:
    """A new temporary folder for one unit of work, named after this process (see :func:`remove_dead_work`)."""
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))


def remove_dead_work() -> int:
    """Remove the temporary folders of processes that no longer run (a killed study); returns how many."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*-*"):
        pid = folder.name[len(WORK_PREFIX) :].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # gone: its folder is ours to clean up
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        except OSError:  # alive but another user's, or not ours to judge
            continue
    return removed
