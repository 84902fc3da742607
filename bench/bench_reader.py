"""The sim-reader: training time, detection on held-out simulated trials, speed, and real photos.

1. Trains the default reader (``protocols/reader.yaml``, 2000 photos, seed 0) and times it
   (goal: ≤ 20 minutes on a 2-core machine).
2. On a held-out simulated trial (``protocols/hia_like.yaml``'s design, people and seed the
   reader never saw) at photo conditions 0 and 1 (the default): detection precision, recall,
   F1 and count error per lesion group, and the severity's Spearman correlation with the truth.
3. Times ``analyze --method sim-reader`` on the 1400 photos of ``protocols/anchor_sim_acne.yaml``
   (goal: ≤ 120 s; simulation not counted).
4. On the HIA trial's development photos (participants 1, 3, 5; MIT licence, HIAlab/Acne_Multimodal_Nof1;
   never used in training): within-participant Spearman of the reader's PC1 and of the patch
   autoencoder's PC1 with the experts' mean score, from the same photos.

    python bench/bench_reader.py [--out DIR] [--photos 2000] [--epochs 12] [--real DIR] [--reader DIR]
                                 [--input haemoglobin|rgb]

``--reader`` skips step 1 and uses a trained reader. Prints JSON; writes it to ``bench/results/bench_reader.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from analysis.dataset import load_dataset, load_images
from analysis.patch_ae import PatchAutoencoderEmbedder
from analysis.pipeline import AnalysisConfig, analyze
from analysis.reader import SimReaderEmbedder, load_reader
from analysis.reader.network import prepare
from analysis.reduce import PC1Reducer
from trialsim.protocol import load_protocol, protocol_from_dict
from trialsim.reader.photos import training_set
from trialsim.reader.train import ReaderOptions, _read, detection_scores, train_reader
from trialsim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]


def held_out_trial(reader_dir: Path, nuisance: float) -> dict:
    base = load_protocol(ROOT / "protocols/hia_like.yaml").resolved()
    base["rendering"] = {**base["rendering"], "nuisance": nuisance}
    ts = training_set(protocol_from_dict(base), 240, 256, seed=9999)
    r = load_reader(reader_dir)
    sev, maps = _read(r.network, prepare(ts.photos, r.config["input"]))
    table = detection_scores(maps, ts.lesions, np.arange(len(ts.photos)), r.config["thresholds"])
    return {
        "nuisance": nuisance,
        "photos": len(ts.photos),
        "severity_spearman": float(stats.spearmanr(sev, ts.severity).statistic),
        "by_group": json.loads(table.to_json(orient="records")),
    }


def analyze_speed(reader_dir: Path, work: Path) -> dict:
    ds = work / "anchor"
    simulate(load_protocol(ROOT / "protocols/anchor_sim_acne.yaml"), ds, workers=2, progress=False)
    t0 = time.perf_counter()
    res = analyze(ds, work / "anchor_an", AnalysisConfig(method="sim-reader", reader=str(reader_dir)))
    pop = res["population"][0]
    return {
        "photos": 1400,
        "analyze_s": round(time.perf_counter() - t0, 1),
        "estimate": pop["estimate"],
        "p": pop["p_value"],
    }


def real_photos(reader_dir: Path, real: Path, seed: int = 0) -> dict:
    data, images = load_images(load_dataset(real), 256)
    m = data.manifest
    pid, e = m["patient_id"].to_numpy(), m["expert_score_mean"].to_numpy(float)

    def per(pc1):
        return {
            str(p): round(float(stats.spearmanr(pc1[pid == p], e[pid == p]).statistic), 3) for p in sorted(set(pid))
        }

    est = SimReaderEmbedder(reader=reader_dir).fit()
    emb = est.transform(images)
    reader_pc1 = PC1Reducer("within").fit_transform(emb, pid)
    reader_pc1 = reader_pc1 if np.corrcoef(reader_pc1, emb[:, 0])[0, 1] >= 0 else -reader_pc1
    ae = PatchAutoencoderEmbedder(random_state=seed).fit(images)
    ae_pc1 = PC1Reducer("within").fit_transform(ae.transform(images), pid)
    red = ae.describe(images)["red_contrast"].to_numpy()
    ae_pc1 = ae_pc1 if np.corrcoef(ae_pc1, red)[0, 1] >= 0 else -ae_pc1
    raw = est.outputs(images)
    return {
        "photos": str(real),
        "spearman_reader_pc1": per(reader_pc1),
        "spearman_reader_severity": per(raw[:, 0]),
        "spearman_ae_pc1": per(ae_pc1),
        "target": "reader PC1 >= 0.5 for each participant",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--real", type=Path, default=Path("/work/shared/real/hia_dev"))
    ap.add_argument("--reader", type=Path, default=None)
    ap.add_argument("--input", choices=["haemoglobin", "rgb"], default="haemoglobin")
    args = ap.parse_args()
    torch.set_num_threads(2)  # bench script: global state is ours to set
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-reader-"))
    out: dict = {"work": str(work)}
    reader_dir = args.reader
    if reader_dir is None:
        reader_dir = work / "reader"
        t0 = time.perf_counter()
        train_reader(
            ReaderOptions(
                protocol=ROOT / "protocols/reader.yaml",
                out=reader_dir,
                photos=args.photos,
                epochs=args.epochs,
                input=args.input,
                progress=False,
            )
        )
        out["train_s"] = round(time.perf_counter() - t0, 1)
        out["train_goal_s"] = 1200
        out["held_out_people"] = json.loads((reader_dir / "training_log.json").read_text())["held_out"]
    out["thresholds"] = load_reader(reader_dir).config["thresholds"]
    out["held_out_trial"] = [held_out_trial(reader_dir, n) for n in (0.0, 1.0)]
    out["analyze_1400"] = analyze_speed(reader_dir, work)
    if args.real.is_dir():
        out["real"] = real_photos(reader_dir, args.real)
    text = json.dumps(out, indent=2)
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / "bench/results/bench_reader.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
