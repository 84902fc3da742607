"""One replicate of a power study: simulate a trial, analyse it, and turn the results into rows.

Two paths share the analysis (:func:`analysis.pipeline.run`) and the rows
(:func:`rows_from_results`):

- in memory, for the oracle without kept images: the truth is simulated with no photos
  and no lesions, the manifest goes through the same CSV formatting as a dataset folder
  (6 significant digits) and is analysed without touching the disk;
- through a dataset folder, for everything else (photos are rendered and read back).
"""

from __future__ import annotations

import errno
import shutil
from io import StringIO
from pathlib import Path

import pandas as pd

from analysis.results import Results

from .dataset import work_folder
from .power_bayes import bayes_rows, with_bayes
from .power_table import patient_row, primary_rows, severity_rows
from .protocol import Protocol, protocol_from_dict


def _lmm_rows(res: Results) -> list[dict]:
    truth = res.truth_by_contrast()
    rows = []
    for pop in res.population:
        tr = truth.get(pop.contrast)
        rows.append(
            {
                "method": pop.method,
                "test": "lmm",
                "contrast": pop.contrast,
                "estimate": pop.estimate_std,
                "ci_low": pop.ci_low_std,
                "ci_high": pop.ci_high_std,
                "p_value": pop.p_value,
                "known": tr.realised_std if tr else None,
                "estimate_raw": pop.estimate,
                "known_raw": tr.realised if tr else None,
                "error": pop.get("error") or "",
            }
        )
        rows += severity_rows(pop, tr)  # severity units through the measurement model (truth only)
    return rows


def per_patient_rows(res: Results) -> list[dict]:
    """One row per patient and per-patient test other than the primary (its rows are :func:`primary_rows`).

    A test's rejection rate over these rows is per-patient power: the share of patient-trials
    whose own test rejects. ``min_p`` is the smallest p the test can reach (randomisation test).
    """
    return [patient_row(p, f"per-patient:{p.test}") for p in res.patients if p.test != res.primary_test]


def rows_from_results(res: Results, task: dict) -> list[dict]:
    """The replicate's rows: population model (when there is one), primary per patient, other tests per patient."""
    rows = _lmm_rows(res) + primary_rows(res) + per_patient_rows(res) + bayes_rows(res)
    for r in rows:
        r.update(grid_point=task["key"], replicate=task["replicate"], seed=task["seed"])
    return rows


def failed_rows(task: dict, methods: list[str], e: Exception) -> list[dict]:
    return [
        {
            "grid_point": task["key"],
            "replicate": task["replicate"],
            "seed": task["seed"],
            "method": m,
            "test": "lmm",
            "contrast": "",
            "error": f"{e.__class__.__name__}: {e}"[:300],
        }
        for m in methods
    ]


def in_memory_results(protocol: Protocol, cfg) -> Results:
    """Simulate ``protocol`` without photos or lesions and analyse it with the oracle, all in memory."""
    from analysis.dataset import dataset_from_frame
    from analysis.pipeline import run

    from .dataset import MANIFEST_COLUMNS
    from .render.none import NoImageRenderer
    from .simulate import render_patient_to_folder, simulate_truth

    renderer = NoImageRenderer(protocol)
    nowhere = Path("/nonexistent-trialsim-dataset")  # no file is read or written under it
    manifest = pd.concat(
        [render_patient_to_folder(job, renderer, nowhere).manifest for job in simulate_truth(protocol)],
        ignore_index=True,
    ).reindex(columns=MANIFEST_COLUMNS)
    # the dataset folder's number format, so both paths analyse the same values
    text = manifest.to_csv(index=False, lineterminator="\n", float_format="%.6g")
    frame = pd.read_csv(StringIO(text), dtype={"patient_id": str, "treatment": str, "image": str})
    data = dataset_from_frame(frame, nowhere, protocol.resolved())
    return run(nowhere, cfg, data=data)


def run_replicate(args) -> list[dict]:
    """Simulate and analyse one replicate; failures become rows with ``error`` set."""
    from analysis.pipeline import AnalysisConfig, run, write

    from .power import apply_grid_point
    from .simulate import simulate

    base, task, methods, keep_dir, primary = args
    cfg = AnalysisConfig(
        method=",".join(methods), seed=task["seed"], progress=False, primary_test=primary, reader=task.get("reader")
    )
    if task.get("model") == "bayes":
        cfg = with_bayes(cfg)
    lean = methods == ["oracle"] and not keep_dir
    work = None if lean else work_folder()
    try:
        d = apply_grid_point(base, task["point"])
        d["seed"] = task["seed"]
        protocol = protocol_from_dict(d)
        if work is None:
            res = in_memory_results(protocol, cfg)
        else:
            renderer = "none" if methods == ["oracle"] else None
            simulate(protocol, work / "dataset", renderer=renderer, progress=False)
            res = run(work / "dataset", cfg)
            if keep_dir:
                write(res, work / "analysis", report=False)
        rows = rows_from_results(res, task)
    except Exception as e:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise  # the machine, not the replicate: stop the study with a clear message
        rows = failed_rows(task, methods, e)
    finally:
        if work is not None and keep_dir:
            dest = Path(keep_dir) / task["key"].replace(";", "_") / f"replicate_{task['replicate']:04d}"
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(work), dest)
        elif work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return rows
