"""Reading an analysis folder (docs/contracts.md, Contract 2) into typed report inputs.

``results.json`` is read into :class:`~analysis.results.Results`; ``embeddings.csv``
and ``reconstructions.npz`` (when the autoencoder ran) beside it; the dataset
folder that ``results.json`` records (``manifest.csv`` and the photos, for the
filmstrip and the latent trajectories) when it can be found from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ..contract import MANIFEST
from ..errors import AnalysisInputError, cell_text
from ..results import Results, TruthEntry

EMBEDDING_COLUMNS = ["image", "patient_id", "day", "treatment", "method", "PC1"]


@dataclass
class ReportInputs:
    """Everything the report reads. ``manifest`` and ``dataset_root`` are ``None`` when the dataset has moved."""

    results_dir: Path
    results: Results
    embeddings: pd.DataFrame  # image, patient_id, day, treatment, method, PC1 (may be empty)
    reconstructions: dict | None = None
    manifest: pd.DataFrame | None = None
    dataset_root: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def truth(self) -> list[TruthEntry]:
        return list(self.results.truth or [])

    @property
    def has_truth(self) -> bool:
        return bool(self.truth)

    @property
    def has_latent(self) -> bool:
        return bool(
            self.has_truth
            and self.manifest is not None
            and "severity_latent" in self.manifest.columns
            and self.manifest["severity_latent"].notna().any()
        )


def natural_key(s) -> tuple:
    """Sort key: numeric ids in numeric order, then the rest alphabetically."""
    s = str(s)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _read_embeddings(path: Path) -> pd.DataFrame:
    """``embeddings.csv`` (its first six columns; none when absent); :class:`AnalysisInputError` naming the
    file, and the row and field where one is at fault, when it is not the table an analysis writes."""
    cols = EMBEDDING_COLUMNS
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    allowed = f"the table `trialsim analyze` writes ({', '.join(cols)}, e0, e1, ...), or no file at all"
    try:
        text = path.read_text(encoding="utf-8")
        df = pd.read_csv(
            StringIO(text),
            usecols=lambda c: c in cols,
            dtype={"image": str, "patient_id": str, "treatment": str, "method": str},
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        why = "an empty file" if isinstance(e, pd.errors.EmptyDataError) else f"unreadable ({e.__class__.__name__})"
        raise AnalysisInputError(f"embeddings.csv is {why}", file=str(path), allowed=allowed) from None
    lacking = [c for c in cols if c not in df.columns]
    if lacking:
        raise AnalysisInputError(
            "column missing from embeddings.csv", file=str(path), field=lacking[0], allowed=allowed
        )
    _check_embedding_rows(df, path, text)
    return df[cols]


def _check_embedding_rows(df: pd.DataFrame, path: Path, text: str) -> None:
    """Every row names its photo and method, with a day and PC1 that are numbers, and the file is whole."""
    header, _, rest = text.partition("\n")
    last = rest.rstrip("\n").rpartition("\n")[2]
    if rest and not text.endswith("\n") and len(last.split(",")) < len(header.split(",")):
        raise AnalysisInputError(
            f"row {len(df) + 1} has {len(last.split(','))} of the header's {len(header.split(','))} fields: "
            "the file was cut short",
            file=str(path),
            allowed="rerun `trialsim analyze` to write it again",
        )
    for c in ("image", "method"):
        empty = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0]) + 2  # 1-based, after the header
            raise AnalysisInputError(f"row {row} is empty here", file=str(path), field=c)
    # a day every row has; PC1 may be empty (a number that could not be computed) but never text
    for c in ("day", "PC1"):
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna() & (df[c].notna() if c == "PC1" else True)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise AnalysisInputError(
                f"row {i + 2} holds {cell_text(df[c].iloc[i])}, not a number",
                file=str(path),
                field=c,
                allowed="a number" + (" or nothing" if c == "PC1" else ""),
            )


def read_npz(path: Path) -> dict | None:
    """The arrays of an optional ``.npz`` beside results.json; None when it is absent or unreadable
    (the report then leaves its section out)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def _read_reconstructions(path: Path) -> dict | None:
    rec = read_npz(path)
    if rec is None:
        return None
    ok = (
        "originals" in rec
        and "reconstructions" in rec
        and rec["originals"].ndim == 4
        and rec["originals"].shape == rec["reconstructions"].shape
        and len(rec["originals"]) > 0
    )
    return rec if ok else None


def _dataset_candidates(raw, results_dir: Path) -> list[Path]:
    out = []
    if raw:
        p = Path(raw)
        out += [p] if p.is_absolute() else [Path.cwd() / p, results_dir / p, results_dir.parent / p.name]
    out.append(results_dir.parent / "dataset")  # the layout of `trialsim demo`: OUT/dataset, OUT/analysis
    seen, unique = set(), []
    for c in out:
        key = str(c.resolve()) if c.exists() else str(c)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


def _find_dataset(raw: str | None, results_dir: Path, images: set[str]) -> tuple[Path | None, pd.DataFrame | None]:
    """The dataset folder whose manifest lists this analysis' images (or ``None``)."""
    for cand in _dataset_candidates(raw, results_dir):
        path = cand / MANIFEST
        if not path.is_file():
            continue
        try:
            man = pd.read_csv(path, dtype={"image": str, "patient_id": str, "treatment": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
            continue
        if "image" not in man.columns:
            continue
        # the same trial: (nearly) every analysed image is listed
        if images and len(images & set(man["image"])) < 0.9 * len(images):
            continue
        return cand, man
    return None, None


def read_results(results_dir: Path) -> Results:
    """``results.json`` of ``results_dir``; :class:`AnalysisInputError` naming the file (and field) if unusable."""
    path = results_dir / "results.json"
    if not path.is_file():
        raise AnalysisInputError(
            "no results.json here: not an analysis folder",
            file=str(results_dir),
            allowed=f"a folder written by `trialsim analyze DATASET --out {results_dir}`",
        )
    try:
        results = Results.from_json(path)
    except json.JSONDecodeError as e:
        raise AnalysisInputError(
            f"results.json is not JSON ({e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno}); cut short or"
            " not written by an analysis",
            file=str(path),
            allowed="the file `trialsim analyze` writes (docs/contracts.md, Contract 2)",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnalysisInputError(f"unreadable results.json ({e.__class__.__name__})", file=str(path)) from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or None
        raise AnalysisInputError(
            f"results.json does not match Contract 2: {first['msg']}", file=str(path), field=where
        ) from None
    if not results.population and not results.population_skipped:
        raise AnalysisInputError(
            "results.json holds no population model: not the output of an analysis",
            file=str(path),
            field="population",
            allowed="a list with one entry per method and contrast (docs/contracts.md, Contract 2)",
        )
    return results


def load_inputs(results_dir: str | Path) -> ReportInputs:
    """Read an analysis folder; raises :class:`AnalysisInputError` when ``results.json`` is missing or unreadable."""
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    emb = _read_embeddings(results_dir / "embeddings.csv")
    inputs = ReportInputs(results_dir, results, emb, _read_reconstructions(results_dir / "reconstructions.npz"))
    root, manifest = _find_dataset(results.dataset, results_dir, set(emb["image"].dropna()))
    inputs.dataset_root, inputs.manifest = root, manifest
    if root is None:
        inputs.notes.append(
            f"The dataset folder recorded in results.json ({results.dataset or 'none'}) "
            "was not found from here, so the filmstrip"
            + (" and the latent trajectories are" if inputs.has_truth else " is")
            + " left out. Rebuild the report where the dataset is to see them."
        )
    if len(emb) == 0 and manifest is not None:
        inputs.embeddings = manifest.reindex(columns=emb.columns)
    return inputs
