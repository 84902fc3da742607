"""Validity of the population test under the anchor's noise (AR(1), random-walk drift).

Over R replicates of a small protocol (8 patients × 56 days, randomised AB blocks of 7 days,
drift_sd_per_day 0.01, ar1_rho 0.7, ar1_sd 0.15, sd_obs 0.1; truth only, no
images) it fits analysis.models.fit_population to severity_latent and prints
JSON: the rejection rate at α = 0.05 under the null (Cream = Antibiotics) and
the 95% CI coverage of the realised effect with an effect (Cream − Antibiotics
= +0.5), with Monte Carlo SEs; for comparison the same for the LMM's own SE
(with t(G−1) and with the normal), and a null with between-patient effect
heterogeneity (effect_sd 0.2), judged against the nominal 0.
Randomised block order and fast onset keep the null's realised effect at 0 in
expectation (a fixed AB order with slow onset makes a real order effect).

    python bench/bench_lmm_validity.py [--replicates 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from scipy import stats

from analysis.evaluate import realised_effect
from analysis.models import fit_population
from trialsim.protocol import protocol_from_dict
from trialsim.simulate import simulate_truth


def protocol(seed: int, effect_b: float, effect_sd: float = 0.0) -> dict:
    return {
        "name": "lmm_validity",
        "seed": seed,
        "patients": {"n": 8, "baseline_severity": {"mean": 2.0, "sd": 0.2}},
        "treatments": [
            {"label": "Antibiotics", "effect": -1.0, "effect_sd": effect_sd, "onset_days": 0.5, "washout_days": 0.5},
            {
                "label": "Cream",
                "effect": -1.0 + effect_b,
                "effect_sd": effect_sd,
                "onset_days": 0.5,
                "washout_days": 0.5,
            },
        ],
        "schedule": {"design": "randomized_blocks", "blocks": 4, "period_days": 7, "run_in_days": 0},
        "dynamics": {"drift_sd_per_day": 0.01, "ar1_rho": 0.7, "ar1_sd": 0.15, "sd_obs": 0.1},
        "rendering": {"renderer": "none"},
    }


def one(seed: int, effect_b: float, effect_sd: float = 0.0) -> dict:
    proto = protocol_from_dict(protocol(seed, effect_b, effect_sd))
    days = pd.concat([j.days for j in simulate_truth(proto)], ignore_index=True)
    r = fit_population(days, "severity_latent", "Antibiotics", "Cream")
    realised = realised_effect(days, "Antibiotics", "Cream")
    q = stats.t.ppf(0.975, r["df"])
    z = stats.norm.ppf(0.975)
    return {
        "p": r["p_value"],
        "covered": r["ci_low"] <= realised <= r["ci_high"],
        "model": r["model"],
        "lmm_t_p": 2 * stats.t.sf(abs(r["estimate"] / r["se_lmm"]), r["df"]),
        "lmm_t_covered": abs(r["estimate"] - realised) <= q * r["se_lmm"],
        "naive_p": 2 * stats.norm.sf(abs(r["estimate"] / r["se_lmm"])),
        "naive_covered": abs(r["estimate"] - realised) <= z * r["se_lmm"],
        "err": r["estimate"] - realised,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    R = args.replicates
    null = [one(args.seed + i, 0.0) for i in range(R)]
    eff = [one(args.seed + 100000 + i, 0.5) for i in range(R)]
    het = [one(args.seed + 200000 + i, 0.0, 0.2) for i in range(R)]
    rate = lambda rows, key: float(np.mean([x[key] < 0.05 for x in rows]))  # noqa: E731
    mean = lambda rows, key: float(np.mean([x[key] for x in rows]))  # noqa: E731
    mcse = lambda q: float(np.sqrt(q * (1 - q) / R))  # noqa: E731
    rej, cov = rate(null, "p"), mean(eff, "covered")
    out = {
        "design": "8 patients x 56 days, randomized AB blocks x4 of 7 days, onset/washout 0.5 d; drift 0.01/day, "
        "AR(1) rho 0.7 sd 0.15, sd_obs 0.1; effect_sd 0; outcome severity_latent (no images)",
        "inference": "MixedLM REML (random intercept + random slope of the contrasted arm, fallback random "
        "intercept); SE = max(LMM SE, summary-measures SE); t with (patients-1) df",
        "replicates": R,
        "alpha": 0.05,
        "type1_rate": rej,
        "type1_mcse": mcse(rej),
        "type1_ok": bool(0.02 <= rej <= 0.08),
        "coverage_95": cov,
        "coverage_mcse": mcse(cov),
        "coverage_ok": bool(0.92 <= cov <= 0.98),
        "effect_for_coverage": 0.5,
        "power_at_effect": rate(eff, "p"),
        "bias": mean(eff, "err"),
        "lmm_se_only_t_df_type1_rate": rate(null, "lmm_t_p"),
        "lmm_se_only_t_df_coverage_95": mean(eff, "lmm_t_covered"),
        "naive_normal_type1_rate": rate(null, "naive_p"),
        "naive_normal_coverage_95": mean(eff, "naive_covered"),
        "heterogeneous_null_effect_sd_0.2_type1_rate_vs_nominal": rate(het, "p"),
        "heterogeneous_null_coverage_of_realised": mean(het, "covered"),
        "fallback_to_random_intercept": int(sum(x["model"] != "random slope" for x in null + eff + het)),
        "fits": 3 * R,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
