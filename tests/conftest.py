from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ROOT / "protocols"
ANCHOR_CSV_CANDIDATES = [ROOT.parent / "shared" / "anchors" / "sim_acne.csv", ROOT / "tests" / "data" / "sim_acne.csv"]


@pytest.fixture
def anchor_csv() -> Path:
    for p in ANCHOR_CSV_CANDIDATES:
        if p.exists():
            return p
    pytest.skip("the anchor CSV (shared/anchors/sim_acne.csv) is not beside this checkout")


def small_protocol_dict(**overrides) -> dict:
    """A small, fast protocol as plain data; ``overrides`` replace top-level sections."""
    d = {
        "name": "small",
        "seed": 3,
        "patients": {"n": 3, "baseline_severity": {"mean": 2.5, "sd": 0.2}},
        "treatments": [
            {"label": "A", "effect": -1.0, "effect_sd": 0.1, "onset_days": 2, "washout_days": 2},
            {"label": "B", "effect": -2.0, "effect_sd": 0.1, "onset_days": 2, "washout_days": 2},
        ],
        "schedule": {"design": "fixed", "sequence": "AB", "blocks": 2, "period_days": 5, "run_in_days": 4},
        "dynamics": {"drift_sd_per_day": 0.01, "ar1_rho": 0.5, "ar1_sd": 0.1, "sd_obs": 0.05},
        "rendering": {"renderer": "none", "image_size": 64},
    }
    d.update(overrides)
    return d
