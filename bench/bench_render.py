"""Benchmark the procedural renderer; prints one JSON object.

- ``render_ips``: images per second on one core (one process, OpenCV single-threaded),
  everything included (skin base, lesion process, sprites, photo conditions, JPEG),
  at 256 and 512 px, on the anchor protocol's first patients (140 days each);
- ``encode_only_ips``: JPEG encoding alone of the same images (the final pixels as
  written, each at its own JPEG quality), measured in the same run;
- ``cost_ratio``: render-with-encoding time / encoding-only time (goal ≤ 8); each rate is
  the best of ``--repeats`` runs;
- ``anchor_trial_512_workers2_s``: wall time of ``simulate`` for the 1400-image anchor
  trial at 512 px with 2 workers, tables and contact sheets included (goal ≤ 30 s).

Usage: ``python bench/bench_render.py [--patients 2] [--skip-trial] [--style classic]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trialsim.protocol import load_protocol  # noqa: E402
from trialsim.render.nuisance import draw_conditions, photograph  # noqa: E402
from trialsim.render.procedural import ProceduralRenderer  # noqa: E402
from trialsim.simulate import simulate, simulate_truth  # noqa: E402


def sized(protocol, size: int):
    return protocol.model_copy(update={"rendering": protocol.rendering.model_copy(update={"image_size": size})})


def bench_size(protocol, size: int, patients: int, repeats: int) -> dict:
    p = sized(protocol, size)
    jobs = simulate_truth(p)[:patients]
    render_s = float("inf")
    for _ in range(repeats):  # best of several: other work on the machine only ever slows a run
        r = ProceduralRenderer(p)  # a fresh renderer: per-patient skins and sprites are built again
        t0 = time.perf_counter()
        n = 0
        for job in jobs:
            for img in r.render_patient(job):
                n += len(img.data) > 0
        render_s = min(render_s, time.perf_counter() - t0)
    # the same images, as written: photographed pixels encoded at their own quality
    final = []
    for job in jobs:
        for c, meta in zip(ProceduralRenderer(p).clean_images(job), job.images.itertuples(index=False)):
            cond = draw_conditions(int(meta.seed), p.rendering.nuisance, float(meta.hour), c.pixels.shape[:2])
            final.append((photograph(cv2.cvtColor(c.pixels, cv2.COLOR_RGB2BGR), cond), cond["quality"]))
    encode_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for px, q in final:
            cv2.imencode(".jpg", px, [cv2.IMWRITE_JPEG_QUALITY, q])
        encode_s = min(encode_s, time.perf_counter() - t0)
    return {
        "images": n,
        "render_ips": round(n / render_s, 1),
        "encode_only_ips": round(len(final) / encode_s, 1),
        "cost_ratio": round(render_s / encode_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2, help="anchor patients per single-core measurement")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per measurement")
    ap.add_argument("--skip-trial", action="store_true", help="skip the 1400-image anchor trial")
    ap.add_argument("--style", choices=["realistic", "classic"], help="rendering.style (default: the protocol's)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    protocol = load_protocol(ROOT / "protocols" / "anchor_sim_acne.yaml")
    if args.style:
        protocol = protocol.model_copy(
            update={"rendering": protocol.rendering.model_copy(update={"style": args.style})}
        )
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "opencv": cv2.__version__},
        "style": protocol.rendering.style,
        "single_core": {str(s): bench_size(protocol, s, args.patients, args.repeats) for s in (256, 512)},
    }
    if not args.skip_trial:
        tmp = Path(tempfile.mkdtemp(prefix="trialsim_bench_"))
        try:
            t0 = time.perf_counter()
            res = simulate(sized(protocol, 512), tmp / "ds", workers=2)
            out["anchor_trial_512_workers2_s"] = round(time.perf_counter() - t0, 2)
            out["anchor_trial_images"] = len(res.manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on the machine slows the trial
    out["goals"] = {"cost_ratio_max": 8.0, "anchor_trial_512_workers2_s_max": 30.0}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
