"""How much of the realised effect the rendered skin carries: the per-lesion truth, no pixels; prints JSON.

The realised effect is a contrast of the latent severity. The photos show lesions, which
follow the latent's target count through a life cycle: when the count falls, the lesions
nearest their end resolve early and leave post-inflammatory marks that fade over two to
eight weeks. A photo measure that reads marks as lesions (redness does) sees less of a
short-period effect than the latent has, and any measurement model fitted over all days
(slow changes carry marks and lesions together) cannot give it back.

For each patient of PROTOCOL (``--patients`` per seed, ``--seeds`` seeds, the effect of
the last treatment set to ``--effect``) this computes, per study day, the truth channels

- ``latent``: ``severity_latent`` itself (the oracle);
- ``lesion_count``: the number of active lesions (what a reader that counts every lesion,
  whatever its size and stage, would see; it equals the day's target count);
- ``inflammatory_count``: papules, pustules and nodules only (what the experts' grading
  and the sim-reader count);
- ``active_burden``: Σ intensity · radius² over active lesions (papules, pustules, …);
- ``burden_with_marks``: the same with the marks added;

and, for each, the arm difference of daily means converted to severity units through the
channel's within-patient slope on ``severity_latent`` (one slope over all patients,
:func:`analysis.severity.measurement_model`), averaged over patients: the effect a perfect
reader of that channel would report, beside the realised effect. ``share`` is their ratio.

    python bench/bench_visible_effect.py [--protocol protocols/hia_pilot.yaml] [--effect -0.3]
        [--period-days D] [--blocks K]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.severity import measurement_model  # noqa: E402
from trialsim.lesions import MARK, lesion_population  # noqa: E402
from trialsim.protocol import protocol_from_dict  # noqa: E402
from trialsim.seeding import patient_rng  # noqa: E402
from trialsim.simulate import patient_truth  # noqa: E402

CHANNELS = ("latent", "lesion_count", "inflammatory_count", "active_burden", "burden_with_marks")
INFLAMMATORY = ("papule", "pustule", "nodule")


def patient_days(protocol, index: int) -> pd.DataFrame:
    """One patient's days with the truth channels (lesions drawn as the simulator draws them for the cheek)."""
    job = patient_truth(protocol, index, f"p{index}")
    days = job.days.copy()
    pop = lesion_population(days, patient_rng(protocol.seed, index, "lesions"))
    area = pop["intensity"].astype(float) * pop["radius"].astype(float) ** 2
    active = area[pop["type"] != MARK].groupby(pop["day"][pop["type"] != MARK]).sum()
    every = area.groupby(pop["day"]).sum()
    count = (pop["type"] != MARK).groupby(pop["day"]).sum()
    inflamed = pop["type"].isin(INFLAMMATORY).groupby(pop["day"]).sum()
    days["latent"] = days["severity_latent"]
    days["lesion_count"] = count.reindex(days["day"]).fillna(0).to_numpy(float)
    days["inflammatory_count"] = inflamed.reindex(days["day"]).fillna(0).to_numpy(float)
    days["active_burden"] = active.reindex(days["day"]).fillna(0.0).to_numpy()
    days["burden_with_marks"] = every.reindex(days["day"]).fillna(0.0).to_numpy()
    days["patient_id"] = f"{protocol.seed}-{index}"
    return days


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", default=str(ROOT / "protocols" / "hia_pilot.yaml"))
    ap.add_argument("--effect", type=float, default=-0.3)
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--period-days", type=int, default=None, help="override the schedule's period length")
    ap.add_argument("--blocks", type=int, default=None, help="override the schedule's number of blocks")
    args = ap.parse_args()
    spec = yaml.safe_load(Path(args.protocol).read_text())
    spec["treatments"][-1]["effect"] = args.effect
    for key, value in (("period_days", args.period_days), ("blocks", args.blocks)):
        if value is not None:
            spec["schedule"][key] = value
    spec["patients"]["n"] = args.patients
    a, b = spec["treatments"][0]["label"], spec["treatments"][-1]["label"]
    frames = []
    for s in range(args.seeds):
        protocol = protocol_from_dict({**spec, "seed": s})
        frames += [patient_days(protocol, i) for i in range(args.patients)]
    days = pd.concat(frames, ignore_index=True)
    days = days[days["treatment"].isin([a, b])]

    def arm_difference(col: str) -> pd.Series:
        m = days.groupby(["patient_id", "treatment"])[col].mean().unstack()
        return m[b] - m[a]

    realised = float(arm_difference("severity_noisefree").mean())
    out = {}
    for ch in CHANNELS:
        mm = measurement_model(days[ch], days["severity_latent"], days["patient_id"])
        per = arm_difference(ch) / mm["slope"]
        out[ch] = {
            "effect_severity": round(float(per.mean()), 4),
            "mcse": round(float(per.std(ddof=1) / np.sqrt(len(per))), 4),
            "share": round(float(per.mean()) / realised, 3),
            "r2_within": round(mm["r2_within"], 3),
        }
    print(
        json.dumps(
            {
                "protocol": Path(args.protocol).name,
                "effect": args.effect,
                "period_days": spec["schedule"]["period_days"],
                "blocks": spec["schedule"]["blocks"],
                "patients": int(days["patient_id"].nunique()),
                "realised_effect": round(realised, 4),
                "channels": out,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
