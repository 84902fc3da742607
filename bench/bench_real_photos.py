"""How the photo analysis reads real trial photos, next to the trial's experts.

Reads the HIA acne N-of-1 trial's development photos (participants 1, 3, 5; MIT licence,
Health Intervention Analytics lab, HIAlab/Acne_Multimodal_Nof1) by path, embeds them with
the patch autoencoder (:class:`analysis.patch_ae.PatchAutoencoderEmbedder`), takes PC1 of
the embeddings centred per participant, and prints JSON with, per participant: the share
of each photo used as skin, the within-participant Spearman correlation of PC1 with the
experts' mean score, the primary test's estimate and p-value (paired t-test over treatment
cycles) and the experts' own Welch t-test; overall: PC1's explained variance,
the embedding's effective rank, and the autoencoder's reconstruction error next to that of
the mean patch.

    python bench/bench_real_photos.py [--photos DIR] [--image-size 256] [--threads 1] [--seed 0]
                                      [--other-seeds 1,2,3,4] [--redness]

``--other-seeds`` refits the autoencoder with each further seed and adds, per seed, the
participants' Spearman correlations (how much the figures owe to one network's start).
The default autoencoder reads haemoglobin on the skin away from its edge and pools each
photo's most inflamed fifth of patches; ``--redness`` runs the earlier reading instead
(CIELAB a* over every skin patch, all patches pooled).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from analysis.dataset import load_dataset, load_images
from analysis.models import contrasts, patient_tests
from analysis.patch_ae import PatchAutoencoderEmbedder
from analysis.primary import cycle_test
from analysis.reduce import PC1Reducer

DEFAULT_PHOTOS = Path("/work/shared/real/hia_dev")


def effective_rank(X: np.ndarray) -> float:
    """exp(entropy of the normalised PCA spectrum): 1 = one direction, d = all equal."""
    s = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p + 1e-300))))


def per_participant(m, pc1, shares, a, b, seed) -> list[dict]:
    rows = []
    for i, (pid, p) in enumerate(_by_participant(m.assign(share=shares), pc1)):
        p = p.sort_values("day", kind="stable")
        tests = {t["test"]: t for t in patient_tests(p, "PC1", a, b, np.random.default_rng([seed, i]))}
        e = p["expert_score_mean"].to_numpy(float)
        arm_b = (p["treatment"] == b).to_numpy()
        w = stats.ttest_ind(e[arm_b], e[~arm_b], equal_var=False)
        primary = cycle_test(p, "PC1", a, b)
        agree = None if abs(w.statistic) <= 1 else bool(np.sign(primary["estimate"]) == np.sign(w.statistic))
        rows.append(
            {
                "participant": pid,
                "photos": len(p),
                "skin_share_median": float(p["share"].median()),
                "skin_share_min": float(p["share"].min()),
                "spearman_pc1_expert": float(stats.spearmanr(p["PC1"], e).statistic),
                "primary_cycles_estimate": primary["estimate"],
                "primary_cycles_p": primary["p_value"],
                "primary_cycles_n": primary["n_cycles"],
                "primary_flagged": bool(primary["p_value"] < 0.05),
                "sensitivity_p": {t: r["p_value"] for t, r in tests.items()},
                "randomization_min_p": tests["randomization"].get("min_p"),
                "experts_effect": float(e[arm_b].mean() - e[~arm_b].mean()),
                "experts_welch_t": float(w.statistic),
                "experts_welch_p": float(w.pvalue),
                "sign_agrees_with_experts": agree,
            }
        )
    return rows


REDNESS = {"colour": "a_star", "inner_only": False, "pool_share": 1.0}


def fit_pc1(images, m, seed, epochs, option=None):
    """Fit the default patch autoencoder with ``seed``; PC1 centred per participant, its sign
    set so that it rises with the skin's red contrast (never from a score)."""
    params = {"random_state": seed} | ({"epochs": epochs} if epochs else {}) | (option or {})
    est = PatchAutoencoderEmbedder(**params).fit(images)
    emb = est.transform(images)
    reducer = PC1Reducer("within")
    pc1 = reducer.fit_transform(emb, m["patient_id"].to_numpy())
    photos = est.describe(images)
    if np.corrcoef(pc1, photos["red_contrast"])[0, 1] < 0:
        pc1 = -pc1
    return est, emb, reducer, pc1, photos


def _by_participant(m, pc1):
    return m.assign(PC1=pc1).groupby("patient_id", sort=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--other-seeds", default="", help="comma list: refit with these seeds too")
    ap.add_argument("--redness", action="store_true", help="the earlier reading: a* over every patch, all pooled")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # bench script: global state is ours to set
    t0 = time.perf_counter()
    data, images = load_images(load_dataset(args.photos), args.image_size)
    m = data.manifest
    option = REDNESS if args.redness else {}
    est, emb, reducer, pc1, photos = fit_pc1(images, m, args.seed, args.epochs, option)
    shares = photos["skin_share"].to_numpy()
    (a, b), *_ = contrasts(data.treatments)
    rows = per_participant(m, pc1, shares, a, b, args.seed)
    rhos = [r["spearman_pc1_expert"] for r in rows]
    seeds = [{"seed": args.seed, "spearman": rhos, "median": float(np.median(rhos))}]
    for seed in [int(s) for s in args.other_seeds.split(",") if s.strip()]:
        other = fit_pc1(images, m, seed, args.epochs, option)[3]
        r = [float(stats.spearmanr(p["PC1"], p["expert_score_mean"]).statistic) for _, p in _by_participant(m, other)]
        seeds.append({"seed": seed, "spearman": r, "median": float(np.median(r))})
    out = {
        "photos": str(args.photos),
        "source": "HIAlab/Acne_Multimodal_Nof1 (MIT), participants 1, 3, 5",
        "embedder": "PatchAutoencoderEmbedder " + json.dumps(est.get_params(), default=str),
        "image_size": args.image_size,
        "participants": rows,
        "spearman_median": float(np.median(rhos)),
        "spearman_min": float(np.min(rhos)),
        "flagged_by_primary": int(sum(r["primary_flagged"] for r in rows)),
        "explained_variance_ratio_pc1": reducer.explained_variance_ratio_pc1_,
        "effective_rank": effective_rank(emb),
        "reconstruction_mse": est.mse_,
        "mean_patch_mse": est.mse_mean_patch_,
        "by_seed": seeds,
        "wall_s": round(time.perf_counter() - t0, 1),
        "targets": "spearman >= 0.5 each and >= 0.6 median; none flagged; signs agree where |t| > 1",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
