"""The Bayesian N-of-1 model (``--model bayes``): calibration, null behaviour, real photos, speed.

Prints JSON and writes it to ``bench/results/bench_bayes.json``. Parts (``--parts``):

- ``calibration``: simulated trials of ``protocols/hia_pilot.yaml`` and of its one-patient
  version, analysed on the oracle outcome (``severity_latent``: the oracle embedding's PC1
  is this column, centred); coverage of each patient's realised effect (noise-free
  severity, arm b's observation days minus arm a's) by the 95% credible interval.
- ``null``: the same protocol with no effect difference (``effect=0``): histogram of the
  population P(benefit) over trials and the share above 0.95 (and per patient).
- ``real``: the HIA trial's development photos (``/work/shared/real/hia_dev``; MIT
  licence, Health Intervention Analytics lab, HIAlab/Acne_Multimodal_Nof1) through
  ``analyze`` with the default method and ``--model bayes``, per participant beside the
  experts' reading.
- ``timing``: ``--model bayes`` on the demo dataset; a power study with ``--model bayes``.

    python bench/bench_bayes.py [--trials 200] [--workers 2] [--parts calibration,null,...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "hia_pilot.yaml"
REAL = Path("/work/shared/real/hia_dev")
OUT = ROOT / "bench" / "results" / "bench_bayes.json"


def simulate_manifest(point: dict, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """One simulated trial of hia_pilot with ``point``'s changes (no photos): its manifest and arms."""
    from trialsim.power import apply_grid_point
    from trialsim.protocol import load_protocol, protocol_from_dict
    from trialsim.simulate import simulate

    d = apply_grid_point(load_protocol(PROTOCOL).resolved(), point)
    d["seed"] = int(seed)
    with tempfile.TemporaryDirectory() as tmp:
        simulate(protocol_from_dict(d), Path(tmp) / "ds", renderer="none", progress=False)
        m = pd.read_csv(Path(tmp) / "ds" / "manifest.csv")
    return m, [t["label"] for t in d["treatments"]]


def one_trial(args) -> dict:
    """Fit one simulated trial; per patient: CrI, P(benefit), realised effect."""
    point, seed, settings = args
    from analysis.bayes import SamplerSettings, analyse_contrast
    from analysis.evaluate import realised_by_patient

    m, (a, b) = simulate_manifest(point, seed)
    t0 = time.perf_counter()
    fit = analyse_contrast(m, "severity_latent", (a, b), seed=seed, settings=SamplerSettings(**settings))
    realised = realised_by_patient(m, a, b)
    realised.index = realised.index.astype(str)
    return {
        "seconds": time.perf_counter() - t0,
        "converged": fit["diagnostics"]["converged"],
        "pop_p_benefit": fit["population"]["p_benefit"],
        "pop": fit["population"],
        "patients": [dict(p, realised=float(realised[p["patient_id"]])) for p in fit["patients"]],
    }


def run_trials(point: dict, n: int, settings: dict, workers: int, seed0: int) -> list[dict]:
    args = [(point, seed0 + i, settings) for i in range(n)]
    if workers <= 1:
        return [one_trial(a) for a in args]
    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(one_trial, args, chunksize=max(1, n // (4 * workers)))


def coverage(trials: list[dict]) -> dict:
    pats = [p for t in trials for p in t["patients"]]
    inside = [p["ci_low"] <= p["realised"] <= p["ci_high"] for p in pats]
    cov = float(np.mean(inside))
    return {
        "trials": len(trials),
        "patient_trials": len(pats),
        "coverage_95": cov,
        "coverage_mcse": float(np.sqrt(cov * (1 - cov) / len(pats))),
        "mean_ci_width": float(np.mean([p["ci_high"] - p["ci_low"] for p in pats])),
        "bias": float(np.mean([p["estimate"] - p["realised"] for p in pats])),
        "not_converged": int(sum(not t["converged"] for t in trials)),
        "seconds_per_fit": float(np.median([t["seconds"] for t in trials])),
    }


def null_summary(trials: list[dict]) -> dict:
    pop = np.array([t["pop_p_benefit"] for t in trials])
    pat = np.array([p["p_benefit"] for t in trials for p in t["patients"]])
    edges = np.linspace(0, 1, 11)
    return {
        "trials": len(trials),
        "population_p_benefit_histogram": {
            "edges": edges.round(2).tolist(),
            "counts": np.histogram(pop, edges)[0].tolist(),
        },
        "population_share_above_0.95": float(np.mean(pop > 0.95)),
        "patient_p_benefit_histogram": {
            "edges": edges.round(2).tolist(),
            "counts": np.histogram(pat, edges)[0].tolist(),
        },
        "patient_share_above_0.95": float(np.mean(pat > 0.95)),
        "not_converged": int(sum(not t["converged"] for t in trials)),
    }


def real_photos(seed: int) -> dict:
    """``trialsim analyze --model bayes`` on the HIA development photos, beside the experts' Welch test."""
    from scipy import stats

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "trialsim", "analyze", str(REAL), "--out", f"{tmp}/a", "--model", "bayes"]
        subprocess.run([*cmd, "--seed", str(seed), "--quiet"], check=True, cwd=ROOT, capture_output=True)
        res = json.loads(Path(f"{tmp}/a/results.json").read_text())
        seconds = time.perf_counter() - t0
    m = pd.read_csv(REAL / "manifest.csv")
    fit = res["bayes"]["fits"][0]
    experts = experts_posterior(m, fit["a"], fit["b"], seed)
    out = []
    for p in fit["patients"]:
        g = m[m["patient_id"].astype(str) == p["patient_id"]]
        arm_b = (g["treatment"].astype(str) == fit["b"]).to_numpy()
        e = g["expert_score_mean"].to_numpy(float)
        w = stats.ttest_ind(e[arm_b], e[~arm_b], equal_var=False)
        keys = ("estimate", "ci_low", "ci_high", "p_benefit", "p_mid", "decision")
        out.append(
            {
                "participant": p["patient_id"],
                **{k: p[k] for k in keys},
                "experts_effect": float(e[arm_b].mean() - e[~arm_b].mean()),
                "experts_welch_p": float(w.pvalue),
                "experts_posterior": experts[p["patient_id"]],
            }
        )
    return {
        "method": fit["method"],
        "contrast": fit["contrast"],
        "direction_known": fit["direction_known"],
        "converged": fit["diagnostics"]["converged"],
        "population": {k: fit["population"][k] for k in ("estimate", "ci_low", "ci_high", "p_benefit")},
        "participants": out,
        "seconds": seconds,
    }


def experts_posterior(m: pd.DataFrame, a: str, b: str, seed: int) -> dict:
    """The same Bayesian model on the experts' mean score (the outcome a photo reader should match), per participant."""
    from analysis.bayes import SamplerSettings, analyse_contrast

    d = m.assign(patient_id=m["patient_id"].astype(str), treatment=m["treatment"].astype(str))
    fit = analyse_contrast(d, "expert_score_mean", (a, b), seed=seed, settings=SamplerSettings(draws=1000))
    keys = ("estimate", "ci_low", "ci_high", "p_benefit", "p_mid", "decision")
    return {p["patient_id"]: {k: p[k] for k in keys} for p in fit["patients"]}


def timing(replicates: int) -> dict:
    """Wall time of ``analyze --model bayes`` on the demo dataset (oracle and default method) and of a power study."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = [sys.executable, "-m", "trialsim"]
        subprocess.run(
            [*run, "simulate", "protocols/demo.yaml", "--out", f"{tmp}/demo", "--quiet"], check=True, cwd=ROOT
        )
        for method in ("oracle", "ae"):
            t0 = time.perf_counter()
            cmd = [*run, "analyze", f"{tmp}/demo", "--out", f"{tmp}/{method}", "--method", method, "--model", "bayes"]
            subprocess.run([*cmd, "--quiet"], check=True, cwd=ROOT, capture_output=True)
            res = json.loads(Path(f"{tmp}/{method}/results.json").read_text())
            out[f"demo_{method}_total_s"] = time.perf_counter() - t0
            out[f"demo_{method}_bayes_step_s"] = res["timings_s"].get("bayes")
        t0 = time.perf_counter()
        cmd = [*run, "power", str(PROTOCOL), "--replicates", str(replicates), "--out", f"{tmp}/power"]
        subprocess.run([*cmd, "--model", "bayes", "--quiet"], check=True, cwd=ROOT, capture_output=True)
        out[f"power_{replicates}_replicates_s"] = time.perf_counter() - t0
        summary = pd.read_csv(f"{tmp}/power/summary.csv")
        out["power_summary"] = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--parts", default="calibration,null,real,timing")
    ap.add_argument("--power-replicates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    settings = {"chains": args.chains, "warmup": args.warmup, "draws": args.draws}
    parts = args.parts.split(",")
    report: dict = {}
    if {"calibration", "null"} & set(parts):  # the sampler settings of the simulated trials' fits
        report["settings"] = dict(settings, trials=args.trials, workers=args.workers)
    w = args.workers
    steps = {
        "calibration": lambda: {
            "calibration_hia_pilot": coverage(run_trials({}, args.trials, settings, w, 1000)),
            "calibration_one_patient": coverage(run_trials({"patients": 1}, args.trials, settings, w, 2000)),
        },
        "null": lambda: {
            "null_hia_pilot_effect0": null_summary(run_trials({"effect": 0}, args.trials, settings, w, 3000))
        },
        "real": lambda: {"real_hia_dev": real_photos(args.seed)} if REAL.exists() else {},
        "timing": lambda: {"timing": timing(args.power_replicates)},
    }
    for part in parts:
        report.update(steps[part]())
        save(report, args.out)  # each part as it finishes: a long run can be read part by part
    print(json.dumps(report, indent=2, default=float))


def save(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**existing, **report}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
