"""Power-study throughput: replicates per minute with 1 and 2 workers on the HIA pilot design.

Each replicate is the whole job: simulate (5 patients × 16 days × 3 photos, procedural images
at 256 px) → pixel-PCA embedding → PC1 → mixed model and per-patient tests. Prints JSON with
the two rates and the parallel efficiency (rate with 2 workers ÷ twice the rate with 1),
measured in one run.

    python bench/bench_power.py [--replicates 8] [--method pixel-pca]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# one thread per process in both runs, so that 2 workers are compared with 1 core, not 2 threads
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from trialsim.power import PowerStudy, run_power  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=8)
    ap.add_argument("--method", default="pixel-pca")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = {"design": "protocols/hia_pilot.yaml", "method": args.method, "cpus": os.cpu_count()}
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            study = PowerStudy.from_cli(
                ROOT / "protocols" / "hia_pilot.yaml",
                replicates=args.replicates,
                grid=["effect=0,-0.6"],
                methods=args.method,
                seed=1,
            )
            t0 = time.perf_counter()
            summary = run_power(study, Path(tmp) / f"w{workers}", workers=workers, progress=False)
            wall = time.perf_counter() - t0
            n = 2 * args.replicates
            rates[workers] = n / wall * 60.0
            out[f"workers_{workers}"] = {
                "replicates": n,
                "wall_s": round(wall, 2),
                "replicates_per_min": round(rates[workers], 2),
                "failed": int(summary["failed"].sum()),
            }
        same = (Path(tmp) / "w1" / "replicates.csv").read_bytes() == (Path(tmp) / "w2" / "replicates.csv").read_bytes()
    out["identical_results"] = same
    out["parallel_efficiency"] = round(rates[2] / (2 * rates[1]), 3)
    out["goal_parallel_efficiency_min"] = 0.8
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
