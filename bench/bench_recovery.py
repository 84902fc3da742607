"""Known vs recovered with images: the demo at nuisance 0, 1 and 2, and the null protocol.

For each setting it simulates with the procedural renderer, runs the default analysis
(autoencoder on redness-contrast maps → within-patient PC1 → mixed model) and prints JSON:
within-patient Spearman(PC1, severity_latent), the standardised estimate beside the
standardised realised truth (and their ratio), and p. The null protocol
(protocols/null_effect.yaml, 1400 images, fixed seed) should give p ≥ 0.05.

    python bench/bench_recovery.py [--skip-null]
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

from analysis.pipeline import AnalysisConfig, analyze  # noqa: E402
from trialsim.protocol import load_protocol  # noqa: E402
from trialsim.simulate import simulate  # noqa: E402


def one(protocol, tmp: Path, name: str) -> dict:
    t0 = time.perf_counter()
    simulate(protocol, tmp / name / "dataset", workers=2)
    r = analyze(tmp / name / "dataset", tmp / name / "analysis", AnalysisConfig(report=False))
    pop, truth = r["population"][0], r["truth"][0]
    return {
        "contrast": pop["contrast"],
        "spearman_pc1_latent": round(r["embedding"]["spearman_pc1_latent"], 3),
        "estimate_std": round(pop["estimate_std"], 3),
        "realised_std": round(truth["realised_std"], 3),
        "ratio": round(pop["estimate_std"] / truth["realised_std"], 3) if truth["realised_std"] else None,
        "p_value": round(pop["p_value"], 5),
        "realised": round(truth["realised"], 3),
        "nominal": round(truth["nominal"], 3),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-null", action="store_true")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        demo = load_protocol(ROOT / "protocols" / "demo.yaml")
        for nuisance in (0.0, 1.0, 2.0):
            p = demo.model_copy(update={"rendering": demo.rendering.model_copy(update={"nuisance": nuisance})})
            out[f"demo_nuisance_{nuisance:g}"] = one(p, Path(tmp), f"demo{nuisance:g}")
        if not args.skip_null:
            out["null_effect_seed_2024"] = one(
                load_protocol(ROOT / "protocols" / "null_effect.yaml"), Path(tmp), "null"
            )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
