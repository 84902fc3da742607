"""The realism test on the real development photos; prints one JSON object.

Simulates ``protocols/hia_like.yaml`` (default settings) into a temporary folder and runs
``trialsim realism REAL SIM --real-severity expert_score_mean`` on it: the classifier AUCs
(goals: fixed statistics ≤ 0.75, CNN ≤ 0.85) and the analysis difficulty (goal: the
simulation's median within-patient Spearman within ±0.15 of the real photos'). The real
photos are read from their folder by path, never copied. With ``--figure PATH`` it also
writes a PNG of real photos beside simulated ones (real photos: HIAlab/Acne_Multimodal_Nof1,
MIT licence, (c) 2022 Health Intervention Analytics lab).

Usage: ``python bench/bench_realism.py [--real ../shared/real/hia_dev] [--no-cnn] [--style classic]
[--figure docs/realism_real_vs_sim.png]``
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

from analysis.realism import compare  # noqa: E402
from trialsim.protocol import load_protocol  # noqa: E402
from trialsim.simulate import simulate  # noqa: E402


def figure(real: Path, sim: Path, path: Path, n: int = 4) -> None:
    """Rows of real photos (one per patient) above rows of simulated ones, 3:4 thumbnails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image

    rows = []
    for folder, label in ((real, "real"), (sim, "simulated")):
        m = pd.read_csv(folder / "manifest.csv", dtype={"patient_id": str})
        for pid in sorted(m["patient_id"].unique())[:3]:
            sub = m[m["patient_id"] == pid]
            pick = sub.iloc[[round(i * (len(sub) - 1) / (n - 1)) for i in range(n)]]
            rows.append((f"{label} {pid}", [folder / p for p in pick["image"]]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.8 * n, 2.4 * len(rows)), constrained_layout=True)
    for r, (label, paths) in enumerate(rows):
        for c, p in enumerate(paths):
            with Image.open(p) as im:
                axes[r, c].imshow(im.convert("RGB").resize((192, 256)))
            axes[r, c].axis("off")
        axes[r, 0].set_title(label, loc="left", fontsize=9)
    fig.text(0.01, 0.002, "Real: HIAlab/Acne_Multimodal_Nof1 (MIT, (c) 2022 HIA lab)", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60, metadata={"Software": None})


def main() -> None:
    ap = argparse.ArgumentParser()
    near = [d / "shared" / "real" / "hia_dev" for d in (ROOT.parent, ROOT.parent.parent)]
    ap.add_argument("--real", type=Path, default=next((d for d in near if d.is_dir()), near[0]))
    ap.add_argument("--no-cnn", action="store_true")
    ap.add_argument("--style", choices=["realistic", "classic"], default=None)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--keep", type=Path, help="write the simulated folder and the realism output here")
    args = ap.parse_args()
    p = load_protocol(ROOT / "protocols" / "hia_like.yaml")
    if args.style:
        p = p.model_copy(update={"rendering": p.rendering.model_copy(update={"style": args.style})})
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        t0 = time.perf_counter()
        simulate(p, base / "sim", workers=1)
        t1 = time.perf_counter()
        res = compare(args.real, base / "sim", base / "realism", "expert_score_mean", cnn=not args.no_cnn)
        t2 = time.perf_counter()
        if args.figure:
            figure(args.real, base / "sim", args.figure)
    d = res["difficulty"]
    out = {
        "style": p.rendering.style,
        "auc": {t["classifier"]: [round(t[k], 3) for k in ("auc", "ci_low", "ci_high")] for t in res["classifiers"]},
        "headline_auc": round(res["headline_auc"], 3),
        "spearman_median": {"real": d["real"]["spearman_median"], "sim": d["sim"]["spearman_median"]},
        "spearman_median_gap": d["median_gap"],
        "timings_s": {"simulate": round(t1 - t0, 1), "realism": round(t2 - t1, 1)},
        "goals": {"auc_statistics_max": 0.75, "auc_cnn_max": 0.85, "abs_spearman_gap_max": 0.15},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
