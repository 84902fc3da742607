"""Type-I error of the population test on protocols/null_effect.yaml (Cream = Antibiotics nominally).

Over R replicates (seeds 0..R-1) it simulates the protocol with renderer "none" and
runs analysis.pipeline.analyze with method "oracle" (the PC1 of severity_latent:
the statistics of the full pipeline without the cost of images), then prints
JSON: rejection rate at α = 0.05 against the nominal null, the mean realised
effect (which is NOT zero for this fixed-order design: Antibiotics always
follows the Baseline run-in, so its onset ramp makes Cream − Antibiotics ≈ −0.13),
and the same for a variant whose block order is randomised per patient.

    python bench/bench_null_analyze.py [--replicates 50]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from analysis.pipeline import AnalysisConfig, analyze
from trialsim.protocol import protocol_from_dict
from trialsim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


def run(design: str, R: int, tmp: Path) -> dict:
    base = yaml.safe_load((ROOT / "protocols" / "null_effect.yaml").read_text())
    rej, realised, est = [], [], []
    for seed in range(R):
        d = dict(base, seed=seed)
        if design == "randomized_blocks":
            d["schedule"] = {k: v for k, v in d["schedule"].items() if k != "sequence"} | {"design": design}
        ds = tmp / f"{design}_{seed}"
        simulate(protocol_from_dict(d), ds, renderer="none")
        r = analyze(ds, tmp / f"out_{design}_{seed}", AnalysisConfig(method="oracle", seed=seed, n_perm=200))
        pop = r["population"][0]
        rej.append(pop["p_value"] < 0.05)
        realised.append(r["truth"][0]["realised"])
        est.append(pop["estimate"])
    q = float(np.mean(rej))
    return {"design": design, "replicates": R, "type1_rate_vs_nominal": q,
            "mcse": float(np.sqrt(q * (1 - q) / R)), "mean_realised": float(np.mean(realised)),
            "mean_estimate": float(np.mean(est))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=50)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"protocol": "protocols/null_effect.yaml (seeds 0..R-1)", "method": "oracle (renderer none)",
               "alpha": 0.05,
               "fixed_AB_as_in_file": run("fixed", args.replicates, Path(tmp)),
               "randomized_blocks_variant": run("randomized_blocks", args.replicates, Path(tmp))}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
