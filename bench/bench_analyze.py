"""Wall time of the analysis on the 1400-image anchor trial (protocols/anchor_sim_acne.yaml).

Simulates the anchor (procedural renderer, the protocol's 256 px images) into a temporary folder
(not timed), then runs analysis.pipeline.analyze (method ae by default, 128 px
analysis size) and prints JSON: total wall time and its split (load, train,
embed, reduce, models), images, threads, the recovered vs known effect, and whether the
autoencoder collapsed (PC1's explained variance, the embedding's effective rank, its
reconstruction error next to the mean patch's).
The goal on a 2-core laptop CPU is ≤ 180 s in total.

    python bench/bench_analyze.py [--method ae] [--threads 2] [--epochs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from analysis.pipeline import AnalysisConfig, analyze
from trialsim.protocol import load_protocol
from trialsim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="ae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--keep", type=Path, default=None, help="keep the dataset and analysis here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # bench script: global state is ours to set
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        proto = load_protocol(ROOT / "protocols" / "anchor_sim_acne.yaml")
        t0 = time.perf_counter()
        ds = base / "dataset"
        if not (ds / "manifest.csv").exists():
            simulate(proto, ds, workers=args.threads)
        t_sim = time.perf_counter() - t0
        t1 = time.perf_counter()
        r = analyze(
            ds,
            base / "analysis",
            AnalysisConfig(method=args.method, image_size=args.image_size, epochs=args.epochs, seed=0),
        )
        wall = time.perf_counter() - t1
        recon = base / "analysis" / "reconstructions.npz"
        mse = None  # the autoencoder's and the mean patch's reconstruction error (patch autoencoder only)
        if recon.exists():
            with np.load(recon) as z:
                mse = [float(v) for v in z["mse"]] if "mse" in z else None
    pop = r["population"][0]
    print(
        json.dumps(
            {
                "protocol": "protocols/anchor_sim_acne.yaml (rendered at its 256 px, procedural; analysed at --image-size)",
                "method": args.method,
                "analysis_image_size": args.image_size,
                "torch_threads": args.threads,
                "n_images": r["n_images"],
                "simulate_s_not_counted": round(t_sim, 1),
                "total_s": round(wall, 1),
                "split_s": r["timings_s"],
                "goal_total_s": 180,
                "contrast": pop["contrast"],
                "estimate_std": pop["estimate_std"],
                "p_value": pop["p_value"],
                "known_realised_std": pop.get("known_realised_std"),
                "spearman_pc1_latent": r["embedding"]["spearman_pc1_latent"],
                "explained_variance_ratio_pc1": r["embedding"]["explained_variance_ratio_pc1"],
                "effective_rank": r["embedding"].get("effective_rank"),
                "reconstruction_mse": None if mse is None else mse[0],
                "mean_patch_mse": None if mse is None else mse[1],
                "epochs": r["config"]["epochs"],
                "preset": r["config"]["preset"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
