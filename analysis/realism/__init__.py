"""The realism test: are simulated photos as hard to read as real trial photos?

:func:`compare` reads two photo folders (each a ``manifest.csv`` with ``image`` and
``patient_id`` beside its photos) and writes ``realism.json``, ``realism.html`` and
``scores.csv`` into an output folder:

1. classifier two-sample tests (:mod:`.c2st`): fixed image statistics with a random
   forest, and a small CNN from scratch, cross-validated with folds grouped by
   patient; ROC AUC with a patient-bootstrap CI; the higher AUC is the headline;
2. analysis difficulty (:mod:`.difficulty`): the default analysis embedding on each
   folder, within-patient Spearman of PC1 with a severity reference.

Reads folders through the dataset contract only; never imports the simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_text, write_csv
from ..errors import AnalysisInputError
from .c2st import feature_scores, grouped_folds, summary
from .data import load_folder, read_manifest
from .features import FEATURES, feature_table

SIM_SEVERITY = "severity_latent"


def _severity_columns(real: Path, sim: Path, real_severity: str | None) -> tuple[str | None, str | None]:
    """Check both manifests up front (so that nothing is computed or written on bad input)."""
    read_manifest(real, real_severity)
    sim_cols = read_manifest(sim).columns
    return real_severity, (SIM_SEVERITY if SIM_SEVERITY in sim_cols else None)


def compare(
    real_dir, sim_dir, out, real_severity: str | None = None, cnn: bool = True, seed: int = 0, progress: bool = False
) -> dict:
    """Run the realism test of ``sim_dir`` against ``real_dir``; write into ``out``; return the JSON dict."""
    real_dir, sim_dir, out = Path(real_dir), Path(sim_dir), Path(out)
    if out.exists() and not out.is_dir():
        raise AnalysisInputError("the output path exists and is not a folder", file=str(out), field="--out")
    real_sev, sim_sev = _severity_columns(real_dir, sim_dir, real_severity)
    real = load_folder(real_dir, 256, progress=progress)
    sim = load_folder(sim_dir, 256, progress=progress)
    images = np.concatenate([real.images, sim.images])
    y = np.r_[np.zeros(len(real.images), int), np.ones(len(sim.images), int)]
    groups = np.r_[["real:" + g for g in real.groups], ["sim:" + g for g in sim.groups]]
    # folds by patient_id alone: a person in both folders stays on one side of every split
    fold_groups = np.r_[real.groups, sim.groups].astype(str)
    feats = feature_table(images)
    X = feats.to_numpy(float)
    f_score, importance = feature_scores(X, y, fold_groups, seed)
    tests = [summary("fixed statistics (random forest)", y, f_score, groups, seed)]
    scores = {"statistics": f_score}
    if cnn:
        from .cnn import cnn_scores

        c_score = cnn_scores(images, y, grouped_folds(y, fold_groups, seed), seed=seed)
        tests.append(summary("small CNN on crops (from scratch)", y, c_score, groups, seed))
        scores["cnn"] = c_score
    diff = {}
    if real_sev and sim_sev:
        from .difficulty import difficulty

        diff = {
            "real": difficulty(real_dir, real_sev, seed, progress),
            "sim": difficulty(sim_dir, sim_sev, seed, progress),
        }
        diff["median_gap"] = diff["sim"]["spearman_median"] - diff["real"]["spearman_median"]
    result = {
        "real_dir": str(real_dir),
        "sim_dir": str(sim_dir),
        "headline_auc": max(t["auc"] for t in tests),
        "classifiers": tests,
        "feature_importance": dict(sorted(zip(FEATURES, importance.round(4).tolist()), key=lambda kv: -kv[1])),
        "difficulty": diff,
        "seed": seed,
    }
    table = pd.DataFrame(
        {"folder": np.where(y == 1, "simulated", "real"), "patient_id": groups, "image": _paths(real, sim)}
    )
    for k, v in scores.items():
        table[f"p_sim_{k}"] = v
    table = pd.concat([table, feats], axis=1)
    from .report import render_html

    html = render_html(result, table, images)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "scores.csv", table)
    atomic_write_text(out / "realism.html", html)
    atomic_write_text(out / "realism.json", json.dumps(_clean(result), indent=2) + "\n")
    return result


def _paths(real, sim) -> list[str]:
    return [str(real.root / p) for p in real.manifest["image"]] + [str(sim.root / p) for p in sim.manifest["image"]]


def _clean(x):
    """JSON-safe: NaN → null, numpy scalars → Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
