"""Single-patient power and per-patient type-I error, by `trialsim power` (oracle, no photos, no bounds).

1. Power: ``protocols/single_patient.yaml`` (one patient, one AB block in random order,
   immediate onset and washout, white noise SD 1) over effect 0/0.5/1.0 SD × period 5/10/20
   days, primary test ``auto`` (the verdict test: gls, with the protocol's stated noise);
   each cell's per-patient rejection rate beside the analytic two-sample t power (pooled,
   n per arm = period days) and the gap in Monte Carlo SEs.
2. Type-I error of every per-patient test at 10/20/40 daily observations with AR(1) noise
   ρ = 0 and 0.5 (stationary SD 1): one AB block (periods 5/10/20 days) for gls, welch,
   ar1, permutation and randomization; five AB blocks (periods 1/2/4 days) for cycles,
   which needs two cycles or more. ``verdict`` marks the test ``auto`` gives verdicts from
   on that design (gls on one block, cycles on five). Goal for those: within [0.025, 0.075].
3. The gls test when the stated ρ is wrong (stated 0 / 0.25 / 0.5 / 0.75 against true 0 and
   0.5, one AB block), straight from :func:`analysis.stated_noise.gls_test`.

Prints JSON (and writes it with --json).

    python bench/bench_single_patient.py [--replicates 1000] [--workers 2] [--json bench/results/x.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.ar1 import ar1_noise  # noqa: E402
from analysis.stated_noise import assumed_rho, gls_test  # noqa: E402
from trialsim.design import t_power  # noqa: E402
from trialsim.power import PowerStudy, run_power  # noqa: E402

PROTOCOL = ROOT / "protocols" / "single_patient.yaml"


def _study(tmp: Path, name: str, changes: dict, grid: list[str], replicates: int, primary: str, seed: int):
    d = yaml.safe_load(PROTOCOL.read_text())
    for section, values in changes.items():
        d[section] = dict(d.get(section) or {}, **values)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return PowerStudy.from_cli(
        path, replicates=replicates, grid=grid, methods="oracle", seed=seed, primary_test=primary
    )


def _run(study, out: Path, workers: int):
    t0 = time.perf_counter()
    summary = run_power(study, out, workers=workers, progress=False)
    return summary, time.perf_counter() - t0


def power_table(tmp: Path, replicates: int, workers: int) -> tuple[list[dict], float]:
    study = _study(tmp, "power", {}, ["effect=0,0.5,1.0", "period_days=5,10,20"], replicates, "auto", 1)
    summary, secs = _run(study, tmp / "power", workers)
    rows = []
    for _, r in summary[summary["test"] == "primary:gls (per patient)"].iterrows():
        n = int(r["period_days"])
        analytic = t_power(float(r["effect"]), n, n)
        se = math.sqrt(analytic * (1 - analytic) / int(r["replicates"]))
        rows.append(
            {
                "effect_sd": float(r["effect"]),
                "obs_per_arm": n,
                "replicates": int(r["replicates"]),
                "failed": int(r["failed"]),
                "rejection_rate": round(float(r["rejection_rate"]), 4),
                "analytic_t": round(analytic, 4),
                "mcse": round(se, 4),
                "gap_in_mcse": round((float(r["rejection_rate"]) - analytic) / se, 2),
                "within_2_mcse": bool(abs(float(r["rejection_rate"]) - analytic) <= 2 * se),
            }
        )
    return rows, secs


def type1(tmp: Path, replicates: int, workers: int) -> tuple[list[dict], float]:
    rows, secs = [], 0.0
    for rho in (0.0, 0.5):
        noise = {"sd_obs": 0.0, "ar1_sd": 1.0, "ar1_rho": rho}
        for blocks, periods, primary in ((1, "5,10,20", "auto"), (5, "1,2,4", "cycles")):
            name = f"null_rho{rho}_blocks{blocks}"
            changes = {"dynamics": noise, "schedule": {"blocks": blocks}}
            study = _study(tmp, name, changes, ["effect=0", f"period_days={periods}"], replicates, primary, 2)
            summary, s = _run(study, tmp / name, workers)
            secs += s
            tests = ["per-patient:cycles"] if blocks > 1 else []
            for _, r in summary.iterrows():
                test = str(r["test"]).replace("primary:", "per-patient:").replace(" (per patient)", "")
                if (blocks > 1) != (test == "per-patient:cycles") or test in tests[1:]:
                    continue
                rate = float(r["rejection_rate"])
                rows.append(
                    {
                        "test": test.split(":", 1)[1],
                        "rho": rho,
                        "blocks": blocks,
                        "obs": 2 * blocks * int(r["period_days"]),
                        "replicates": int(r["replicates"]) - int(r["failed"]),
                        "type1": None if math.isnan(rate) else round(rate, 4),
                        "mcse": None if math.isnan(rate) else round(float(r["rejection_mcse"]), 4),
                        "verdict": test.split(":", 1)[1] == ("cycles" if blocks > 1 else "gls"),
                        "within_0.025_0.075": bool(0.025 <= rate <= 0.075),
                        "note": str(r.get("note") or "") if str(r.get("note")) != "nan" else "",
                    }
                )
    return rows, secs


def misstated(replicates: int, seed: int = 3) -> list[dict]:
    """Type-I of the gls test on one AB block when the stated ρ is not the true one."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (10, 20, 40):
        days = np.arange(1.0, n + 1)
        X = np.c_[np.ones(n), np.r_[np.zeros(n // 2), np.ones(n // 2)]]
        for true in (0.0, 0.5):
            Y = ar1_noise(rng, replicates, n, true)
            for stated in (0.0, 0.25, 0.5, 0.75):
                noise = assumed_rho(stated)
                p = np.array([gls_test(y, days, X, 1, noise)["p_value"] for y in Y])
                rate = float(np.mean(p < 0.05))
                rows.append(
                    {
                        "obs": n,
                        "true_rho": true,
                        "stated_rho": stated,
                        "type1": round(rate, 4),
                        "mcse": round(math.sqrt(rate * (1 - rate) / replicates), 4),
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        power, s_power = power_table(Path(tmp), args.replicates, args.workers)
        t1, s_t1 = type1(Path(tmp), args.replicates, args.workers)
    wrong = misstated(args.replicates)
    n_rep = args.replicates * (9 + 12)
    out = {
        "bench": "single_patient",
        "protocol": "protocols/single_patient.yaml",
        "method": "oracle",
        "alpha": 0.05,
        "workers": args.workers,
        "power_primary_test": "auto (gls, white noise stated by the protocol)",
        "power": power,
        "power_all_within_2_mcse": all(r["within_2_mcse"] for r in power),
        "type1": t1,
        "verdict_tests_all_within": all(r["within_0.025_0.075"] for r in t1 if r["verdict"]),
        "gls_stated_rho_wrong": wrong,
        "seconds": round(s_power + s_t1, 1),
        "ms_per_replicate_wall": round(1000 * (s_power + s_t1) / n_rep, 2),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
