"""The simulator core end to end with --renderer none: contract 1, anchor compatibility, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROTOCOLS, small_protocol_dict

from trialsim.errors import BadInput
from trialsim.protocol import load_protocol, protocol_from_dict
from trialsim.simulate import simulate


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_anchor_protocol_matches_the_seed_projects_csv(tmp_path, anchor_csv):
    p = load_protocol(PROTOCOLS / "anchor_sim_acne.yaml")
    res = simulate(p, tmp_path / "ds", renderer="none")
    man = pd.read_csv(tmp_path / "ds" / "manifest.csv")
    assert len(man) == 1400
    for col in ["image", "patient_id", "day", "treatment", "severity_latent", "severity_grade", "lesion_count", "seed"]:
        assert col in man.columns
    ours = pd.read_csv(tmp_path / "ds" / "schedule.csv", index_col=0)
    anchor = pd.read_csv(anchor_csv, index_col=0)
    assert list(ours.columns) == list(anchor.columns)
    assert len(ours) == len(anchor)
    # same design: the same treatment on the same (patient, day)
    assert (ours["treatment"].to_numpy() == anchor["treatment"].to_numpy()).all()
    assert (ours["date"].to_numpy() == anchor["date"].to_numpy()).all()
    diff = (ours.groupby("block")["AcneSeverity"].mean() - anchor.groupby("block")["AcneSeverity"].mean()).abs()
    assert diff.max() < 0.3, diff.to_dict()
    assert res.manifest["severity_latent"].between(0, 3).all()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    p = protocol_from_dict(small_protocol_dict())
    simulate(p, tmp_path / "a", renderer="none")
    simulate(p, tmp_path / "b", renderer="none")
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")
    q = p.model_copy(update={"seed": p.seed + 1})
    simulate(q, tmp_path / "c", renderer="none")
    a = pd.read_csv(tmp_path / "a" / "manifest.csv")
    c = pd.read_csv(tmp_path / "c" / "manifest.csv")
    assert not np.allclose(a["severity_latent"], c["severity_latent"])
    assert yaml.safe_load((tmp_path / "c" / "protocol.yaml").read_text())["seed"] == p.seed + 1


def test_resolved_protocol_reproduces_the_folder(tmp_path):
    p = protocol_from_dict(small_protocol_dict())
    simulate(p, tmp_path / "a", renderer="none")
    again = load_protocol(tmp_path / "a" / "protocol.yaml")
    simulate(again, tmp_path / "b", renderer="none")
    assert folder_digest(tmp_path / "a") == folder_digest(tmp_path / "b")


def test_existing_folder_is_refused_unless_overwrite_or_resume(tmp_path):
    p = protocol_from_dict(small_protocol_dict())
    simulate(p, tmp_path / "a", renderer="none")
    with pytest.raises(BadInput, match="already exists"):
        simulate(p, tmp_path / "a", renderer="none")
    simulate(p, tmp_path / "a", renderer="none", overwrite=True)
    simulate(p, tmp_path / "a", renderer="none", resume=True)
    with pytest.raises(BadInput, match="different protocol"):
        simulate(p.model_copy(update={"seed": 99}), tmp_path / "a", renderer="none", resume=True)


def test_missing_photos_dropout_and_several_photos_a_day(tmp_path):
    d = small_protocol_dict(observation={"photos_per_day": 3, "missing_photo_prob": 0.2, "dropout_prob": 1.0})
    d["patients"]["n"] = 6
    p = protocol_from_dict(d)
    res = simulate(p, tmp_path / "a", renderer="none")
    man = res.manifest
    full = p.n_days * 3 * 6
    assert len(man) < full * 0.85  # photos are missing and everyone drops out early
    assert man.groupby("patient_id")["day"].max().max() <= p.n_days
    assert man["photo"].isin([0, 1, 2]).all()
    ts = pd.to_datetime(man["timestamp"])
    assert (
        ts.dt.normalize() == pd.to_datetime(p.observation.start_date) + pd.to_timedelta(man["day"] - 1, unit="D")
    ).all()
    # morning, midday and evening photos
    assert ts.dt.hour.min() < 10 and ts.dt.hour.max() >= 19
    # images named uniquely and one per row
    assert man["image"].is_unique


def test_from_csv_uses_the_anchor_severities_as_truth(tmp_path, anchor_csv):
    from trialsim.anchor_csv import jobs_from_csv, protocol_for_csv, read_anchor_csv

    df = read_anchor_csv(anchor_csv)
    proto = protocol_for_csv(df, seed=1, rendering={"renderer": "none"})
    res = simulate(proto, tmp_path / "ds", renderer="none", jobs=jobs_from_csv(df, proto))
    anchor = pd.read_csv(anchor_csv, index_col=0)
    man = res.manifest
    assert len(man) == len(anchor)
    np.testing.assert_allclose(man["severity_latent"].to_numpy(), anchor["AcneSeverity"].to_numpy())
    ours = pd.read_csv(tmp_path / "ds" / "schedule.csv", index_col=0)
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), anchor.reset_index(drop=True), check_dtype=False)


def test_rendering_in_process_leaves_opencv_threads_as_they_were(tmp_path):
    import cv2

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)  # not 1, so that a renderer pinning one thread would show
        simulate(protocol_from_dict(small_protocol_dict()), tmp_path / "a", renderer="procedural")
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_parallel_rendering_after_opencv_ran_threaded_in_this_process_finishes(tmp_path):
    # a forked worker inherits OpenCV's running thread pool half-copied and waits forever on it
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, cv2, numpy as np\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from conftest import small_protocol_dict\n"
        "from trialsim.protocol import protocol_from_dict\n"
        "from trialsim.simulate import simulate\n"
        "if __name__ == '__main__':\n"
        "    cv2.setNumThreads(2)\n"
        "    for _ in range(3):\n"
        "        cv2.GaussianBlur(np.ones((1500, 1500), np.float32), (0, 0), 5)\n"
        "    p = protocol_from_dict(small_protocol_dict(rendering={'renderer': 'procedural', 'image_size': 64}))\n"
        "    print(len(simulate(p, sys.argv[1], workers=2).manifest))\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ds")], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) == len(pd.read_csv(tmp_path / "ds" / "manifest.csv")) > 0
