"""Type-I error of each per-patient test when no patient has an effect (oracle outcome, no images).

Simulates R trials of a protocol with every treatment effect and its between-patient SD
set to 0 (so that the null holds for each patient, not only on average), runs the
per-patient tests on the latent severity (the oracle, the best any photo outcome can do)
and prints JSON with each test's rejection rate at alpha 0.05 over all patient tests,
with its Monte Carlo SE. Goal for the primary test (``cycles``): within [0.025, 0.075].

    python bench/bench_primary_null.py [--protocol protocols/hia_pilot.yaml] [--replicates 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.dataset import load_dataset
from analysis.models import contrasts, patient_tests
from analysis.primary import DEFAULT_PRIMARY_TEST, cycle_test
from trialsim.protocol import load_protocol, protocol_from_dict
from trialsim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


def one_trial(base: dict, seed: int, work: Path) -> list[dict]:
    d = dict(base, seed=seed, treatments=[dict(t, effect=0.0, effect_sd=0.0) for t in base["treatments"]])
    simulate(protocol_from_dict(d), work, renderer="none", progress=False)
    data = load_dataset(work)
    rows = []
    for a, b in contrasts(data.treatments):
        for i, (pid, p) in enumerate(data.manifest.groupby("patient_id", sort=True)):
            p = p.sort_values("day", kind="stable")
            rng = np.random.default_rng([seed, i])
            tests = patient_tests(p, "severity_latent", a, b, rng, n_perm=500)
            tests.append(cycle_test(p, "severity_latent", a, b))
            rows += [{"seed": seed, "patient_id": pid, "test": t["test"], "p_value": t["p_value"]} for t in tests]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", type=Path, default=ROOT / "protocols" / "hia_pilot.yaml")
    ap.add_argument("--replicates", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()
    base = load_protocol(args.protocol).model_dump()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.replicates):
            rows += one_trial(base, args.seed + r, Path(tmp) / f"trial_{r}")
    df = pd.DataFrame(rows).dropna(subset=["p_value"])
    rates = {}
    for test, g in df.groupby("test"):
        rate = float((g["p_value"] < 0.05).mean())
        rates[test] = {"rejection_rate": rate, "mc_se": float(np.sqrt(rate * (1 - rate) / len(g))), "tests": len(g)}
    print(
        json.dumps(
            {
                "protocol": str(
                    args.protocol.relative_to(ROOT) if args.protocol.is_relative_to(ROOT) else args.protocol
                ),
                "effects": "all 0, between-patient SD 0",
                "replicates": args.replicates,
                "outcome": "severity_latent (oracle)",
                "primary_test": DEFAULT_PRIMARY_TEST,
                "alpha": 0.05,
                "by_test": rates,
                "goal": "primary test within [0.025, 0.075]",
                "wall_s": round(time.perf_counter() - t0, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
