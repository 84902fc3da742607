"""Type-I error of the population LMM on the null protocol, oracle method, by `trialsim power`.

Runs protocols/null_effect.yaml (10 patients × 140 days, no difference between the
treatments) for R replicates (default 200) with the oracle embedding (the latent truth;
no images) and prints JSON with the rejection rate at α = 0.05 and its Monte Carlo SE.
Goal: within [0.025, 0.075].

    python bench/bench_power_null.py [--replicates 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trialsim.power import PowerStudy, run_power  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep the study folder here")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out) if args.out else Path(tmp.name) / "study"
    study = PowerStudy.from_cli(
        ROOT / "protocols" / "null_effect.yaml", replicates=args.replicates, grid=[], methods="oracle", seed=2024
    )
    t0 = time.perf_counter()
    summary = run_power(study, out, workers=args.workers, progress=False)
    wall = time.perf_counter() - t0
    lmm = summary[summary["test"] == "lmm"].iloc[0]
    rate, mcse = float(lmm["rejection_rate"]), float(lmm["rejection_mcse"])
    print(
        json.dumps(
            {
                "protocol": "protocols/null_effect.yaml",
                "method": "oracle",
                "test": "lmm (t, patients − 1 df)",
                "replicates": int(lmm["replicates"]),
                "failed": int(lmm["failed"]),
                "type1_error": round(rate, 4),
                "mcse": round(mcse, 4),
                "goal": [0.025, 0.075],
                "within_goal": bool(0.025 <= rate <= 0.075),
                "coverage_of_realised": None if "coverage" not in lmm else round(float(lmm["coverage"]), 4),
                "wall_s": round(wall, 1),
                "workers": args.workers,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
