"""Type-I error on the null protocol through `trialsim power`: the population LMM and the primary per-patient test.

Runs protocols/null_effect.yaml (10 patients × 140 days, no difference between the
treatments) for R replicates (default 200) with the chosen methods (default the oracle
embedding: the latent truth, no images; ``--methods ae,oracle`` renders the photos and
trains the autoencoder in each replicate) and prints JSON with, per method, the rejection
rate at α = 0.05 and its Monte Carlo SE of the population LMM and of the primary
per-patient test (and, under ``sensitivity``, of the other per-patient tests and of the
these-patients interval). Goal: within [0.025, 0.075].

The protocol is null for the population mean only: each patient has their own effect of
each treatment (``effect_sd`` 0.2), and the first period after the untreated run-in
inherits the ramp down from Baseline (onset 3 days), ±0.11 severity on each patient's
noise-free contrast, its sign set by which treatment came first. ``--per-patient-null``
sets both treatments' ``effect`` and ``effect_sd`` to 0 and the untreated severity to 1.5
(mid-scale: 2.95 untreated would sit on the ceiling of 3 and clip the noise), one grid
point of the study, so that the null holds for every patient on every day and the
per-patient rate is a type-I error.

    python bench/bench_power_null.py [--replicates 200] [--workers 2] [--methods oracle] [--per-patient-null]
        [--reader READER_DIR]   # with --methods sim-reader: a folder made by trialsim train-reader

A study run in two sittings (``--seed`` other than the first sitting's, so that the trials
differ) is summarised over both with ``--pool EARLIER.json``: rejections and replicates of
each test are added (the earlier file must be of the same protocol, grid and methods).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trialsim.power import PowerStudy, run_power  # noqa: E402

GOAL = (0.025, 0.075)
# no effect of either treatment, for anyone; untreated severity mid-scale, away from the 0-3 bounds
NULL_EVERY_PATIENT = [
    *(f"treatments.{i}.{k}=0" for i in (0, 1) for k in ("effect", "effect_sd")),
    "patients.baseline_severity.mean=1.5",
]


def rate_of(row) -> dict:
    rate, mcse = float(row["rejection_rate"]), float(row["rejection_mcse"])
    return {
        "unit": row["unit"],
        "replicates": int(row["replicates"]),
        "failed": int(row["failed"]),
        "type1_error": round(rate, 4),
        "mcse": round(mcse, 4),
        "within_goal": bool(GOAL[0] <= rate <= GOAL[1]),
        "coverage_of_realised": None if pd.isna(row.get("coverage")) else round(float(row["coverage"]), 4),
    }


def pooled(tests: dict, earlier: dict, path: str) -> dict:
    """``tests`` with each test's rejections and replicates added to those of ``earlier`` (a JSON of this bench)."""
    out = {}
    for method, by_test in tests.items():
        out[method] = {}
        for test, r in by_test.items():
            e = earlier.get("tests", {}).get(method, {}).get(test)
            if e is None:
                sys.exit(f"{path}: field tests.{method}.{test} is missing; cannot pool")
            n = r["replicates"] + e["replicates"]
            k = round(r["type1_error"] * r["replicates"]) + round(e["type1_error"] * e["replicates"])
            rate = k / n
            out[method][test] = {
                "unit": r["unit"],
                "replicates": n,
                "failed": r["failed"] + e["failed"],
                "rejections": k,
                "type1_error": round(rate, 4),
                "mcse": round(math.sqrt(rate * (1 - rate) / n), 4),
                "within_goal": bool(GOAL[0] <= rate <= GOAL[1]),
                "sittings": [e["replicates"], r["replicates"]],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", default="oracle")
    ap.add_argument("--per-patient-null", action="store_true", help="no effect for anyone (see above)")
    ap.add_argument("--out", default=None, help="keep the study folder here (a rerun resumes it)")
    ap.add_argument("--seed", type=int, default=2024, help="the study's seed (another sitting: another seed)")
    ap.add_argument("--pool", default=None, help="an earlier sitting's JSON to add to this one (see above)")
    ap.add_argument("--reader", default=None, help="reader folder (trialsim train-reader) for --methods sim-reader")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out) if args.out else Path(tmp.name) / "study"
    grid = NULL_EVERY_PATIENT if args.per_patient_null else []
    study = PowerStudy.from_cli(
        ROOT / "protocols" / "null_effect.yaml",
        replicates=args.replicates,
        grid=grid,
        methods=args.methods,
        seed=args.seed,
        reader=args.reader,
    )
    t0 = time.perf_counter()
    summary = run_power(study, out, workers=args.workers, progress=False)
    wall = time.perf_counter() - t0
    tests, sensitivity = {}, {}
    for method, rows in summary.groupby("method", sort=True):
        kept = rows[(rows["test"] == "lmm") | rows["test"].str.startswith("primary:")]
        tests[method] = {r["test"]: rate_of(r) for _, r in kept.iterrows()}
        other = rows[rows["test"].str.startswith("per-patient:") | (rows["test"] == "sample:severity")]
        sensitivity[method] = {r["test"]: rate_of(r) for _, r in other.iterrows()}
    this_sitting = tests
    if args.pool:
        earlier = json.loads(Path(args.pool).read_text())
        if earlier.get("grid") != grid or earlier.get("protocol") != "protocols/null_effect.yaml":
            sys.exit(f"{args.pool}: field grid or protocol differs from this run's; cannot pool")
        tests = pooled(tests, earlier, args.pool)
    print(
        json.dumps(
            {
                "protocol": "protocols/null_effect.yaml",
                "per_patient_null": args.per_patient_null,
                "grid": grid,
                "alpha": 0.05,
                "goal": list(GOAL),
                "tests": tests,
                "sensitivity": sensitivity,  # the other per-patient tests and the these-patients interval, this sitting
                **({"this_sitting": {"seed": args.seed, "tests": this_sitting}} if args.pool else {}),
                "wall_s": round(wall, 1),
                "workers": args.workers,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
