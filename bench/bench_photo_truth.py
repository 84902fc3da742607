"""Benchmark the per-photo truth of a long, dense study; prints one JSON object.

- ``image_seed_one_by_one_s`` / ``image_seeds_vectorised_s``: the manifest's photo seeds of one
  patient followed for 36,500 days with 24 photos a day (876,000 photos), one SeedSequence per
  photo versus one vectorised pass (the values are checked equal on the first ``--check`` photos;
  the one-by-one time is measured on those and scaled);
- ``patient_truth_s``: :func:`trialsim.simulate.patient_truth` of that patient (schedule,
  trajectory and the photo table), as the simulator runs it.

Usage: ``python bench/bench_photo_truth.py [--check 50000] [--skip-truth]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from trialsim.protocol import protocol_from_dict
from trialsim.seeding import image_seed, image_seeds
from trialsim.simulate import patient_truth

DAYS, PER_DAY = 36500, 24


def long_protocol():
    return protocol_from_dict(
        {
            "name": "long",
            "seed": 3,
            "patients": {"n": 1, "baseline_severity": {"mean": 2.5, "sd": 0.2}},
            "treatments": [{"label": "A", "effect": -1.0}, {"label": "B", "effect": -2.0}],
            "schedule": {"design": "fixed", "sequence": "AB", "blocks": 6, "period_days": 3040, "run_in_days": 20},
            "observation": {"photos_per_day": PER_DAY},
            "rendering": {"renderer": "none"},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", type=int, default=50000, help="photos seeded one by one (timed, then scaled)")
    ap.add_argument("--skip-truth", action="store_true")
    args = ap.parse_args()
    days = np.repeat(np.arange(1, DAYS + 1), PER_DAY)
    photos = np.tile(np.arange(PER_DAY), DAYS)
    t = time.perf_counter()
    fast = image_seeds(3, 0, days, photos)
    vec_s = time.perf_counter() - t
    t = time.perf_counter()
    slow = [image_seed(3, 0, int(d), int(p)) for d, p in zip(days[: args.check], photos[: args.check])]
    one_s = (time.perf_counter() - t) * len(days) / args.check
    out = {
        "photos": int(len(days)),
        "image_seeds_vectorised_s": round(vec_s, 3),
        "image_seed_one_by_one_s": round(one_s, 2),
        "equal": bool(np.array_equal(fast[: args.check], slow)),
        "python": platform.python_version(),
    }
    if not args.skip_truth:
        t = time.perf_counter()
        patient_truth(long_protocol(), 0, "1")
        out["patient_truth_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
