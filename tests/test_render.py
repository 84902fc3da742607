"""The procedural renderer: identity, persistence, severity fidelity, photo conditions, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import PROTOCOLS, small_protocol_dict
from scipy.stats import spearmanr

from trialsim.lesions import MARK, feature_mask
from trialsim.protocol import load_protocol, protocol_from_dict
from trialsim.render import nuisance as nz
from trialsim.render.procedural import ProceduralRenderer
from trialsim.simulate import simulate, simulate_truth


def proto(size=64, n=3, nuisance=1.0, view="cheek", aspect=1.0, style="realistic", **over):
    d = small_protocol_dict(**over)
    d["patients"]["n"] = n
    d["rendering"] = {
        "renderer": "procedural",
        "image_size": size,
        "nuisance": nuisance,
        "view": view,
        "aspect": aspect,
        "style": style,
    }
    return protocol_from_dict(d)


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def detect_lesions(bgr: np.ndarray) -> int:
    """A truth-blind redness detector: blobs whose Lab a* stands out from the local skin.

    Scales with the image (tuned at 256 px): a* lightly smoothed, minus a broad
    background, above 4 units, at least 3 px (× (size/256)²) large.
    """
    s = bgr.shape[0] / 256
    a = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)[..., 1].astype(np.float32)
    a = cv2.GaussianBlur(a, (0, 0), 0.8 * s)
    m = (a - cv2.GaussianBlur(a, (0, 0), 12 * s)) > 4
    n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= 3 * s * s).sum())


# --- identity ---------------------------------------------------------------------------------


def embed(bgr: np.ndarray) -> np.ndarray:
    """Downsampled pixels, log, exposure removed (a simple, analysis-free embedding)."""
    small = cv2.resize(bgr, (12, 12), interpolation=cv2.INTER_AREA).astype(np.float32)
    v = np.log(small + 8.0).ravel()
    return v - v.mean()


def test_patients_are_reidentified_across_days_on_the_anchor_protocol():
    p = load_protocol(PROTOCOLS / "anchor_sim_acne.yaml")
    p = p.model_copy(update={"rendering": p.rendering.model_copy(update={"image_size": 64})})
    r = ProceduralRenderer(p)
    emb, who, day = [], [], []
    for job in simulate_truth(p):
        for img, meta in zip(r.render_patient(job), job.images.itertuples(index=False)):
            emb.append(embed(decode(img.data)))
            who.append(job.patient_index)
            day.append(meta.day)
    emb, who, day = np.array(emb), np.array(who), np.array(day)
    assert len(emb) == 1400
    sq = (emb**2).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * emb @ emb.T
    d[day[:, None] == day[None, :]] = np.inf  # other days only
    nn = d.argmin(axis=1)
    acc = (who[nn] == who).mean()
    assert acc >= 0.99, acc


def test_clean_skin_differs_between_patients_and_is_fixed_within_one():
    p = proto(size=96, n=4)
    r = ProceduralRenderer(p)
    ids = [r.identity_image(i, str(i + 1)).astype(float) for i in range(4)]
    again = ProceduralRenderer(p).identity_image(2, "3")
    assert (again == ids[2]).all()
    gaps = [np.abs(ids[i] - ids[j]).mean() for i in range(4) for j in range(i + 1, 4)]
    assert min(gaps) > 4.0, gaps


def test_default_cohort_covers_at_least_five_fitzpatrick_types_and_overrides_win():
    p = load_protocol(PROTOCOLS / "anchor_sim_acne.yaml")
    r = ProceduralRenderer(p)
    types = {r.fitzpatrick(i, pid) for i, pid in enumerate(p.patients.patient_ids)}
    assert len(types) >= 5
    d = small_protocol_dict()
    d["patients"]["overrides"] = [{"patient_id": "2", "fitzpatrick": 6}]
    assert ProceduralRenderer(protocol_from_dict(d)).fitzpatrick(1, "2") == 6
    # darker types are darker
    lum = [ProceduralRenderer(proto(size=64)).identity_image(0, "1")]
    dark = protocol_from_dict(dict(d, rendering={"renderer": "procedural", "image_size": 64}))
    assert ProceduralRenderer(dark).identity_image(1, "2").mean() < lum[0].mean() - 40


# --- lesions in the images --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trial_256():
    """Clean and photographed images of a small trial at 256 px (severity from ~0 to 3)."""
    p = proto(
        size=256, n=3, schedule={"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 8, "run_in_days": 6}
    )
    r = ProceduralRenderer(p)
    rows = []
    for job in simulate_truth(p):
        days = job.days.set_index("day")
        photos = {img.image: img for img in r.render_patient(job)}
        for clean in r.clean_images(job):
            meta = job.images.set_index("image").loc[clean.image]
            rows.append(
                {
                    "patient": job.patient_index,
                    "day": int(meta["day"]),
                    "clean": clean,
                    "photo": decode(photos[clean.image].data),
                    "target": int(days.loc[meta["day"], "lesion_target"]),
                    "grade": int(days.loc[meta["day"], "severity_grade"]),
                    "identity": r.identity_image(job.patient_index, job.patient_id),
                }
            )
    return rows


def test_rendered_lesion_count_equals_target(trial_256):
    for row in trial_256:
        c = row["clean"]
        assert c.lesion_count == row["target"]
        assert int((c.lesions["stage"] != MARK).sum()) == row["target"]


@pytest.mark.parametrize("style, nuisance", [("realistic", 0.0), ("classic", 1.0)])
def test_truth_blind_detector_counts_follow_truth(style, nuisance):
    """The manifest's counts are the visible lesions: on the default look without photo
    conditions (which are meant to make counting as hard as on real photos), and on the
    classic look with them."""
    p = proto(
        size=256,
        n=3,
        nuisance=nuisance,
        style=style,
        schedule={"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 8, "run_in_days": 6},
    )
    r = ProceduralRenderer(p)
    truth, found = [], []
    for job in simulate_truth(p):
        for img in r.render_patient(job):
            truth.append(img.lesion_count)
            found.append(detect_lesions(decode(img.data)))
    rho = spearmanr(truth, found)[0]
    assert len(set(truth)) > 10
    assert rho >= 0.9, rho


def test_truth_blind_detector_follows_truth_on_the_anchor_protocol():
    p = load_protocol(PROTOCOLS / "anchor_sim_acne.yaml")  # 256 px, default photo conditions
    r = ProceduralRenderer(p)
    truth, found = [], []
    for job in simulate_truth(p):
        for img in r.render_patient(job):
            truth.append(img.lesion_count)
            found.append(detect_lesions(decode(img.data)))
    rho = spearmanr(truth, found)[0]
    assert rho >= 0.9, rho


def test_lesion_area_and_redness_rise_with_grade(trial_256):
    df = pd.DataFrame(
        [
            {
                "grade": row["grade"],
                "area": row["clean"].lesion_mask.mean(),
                # redness added to the patient's clear skin: a* of the image minus a* of the identity
                "redness": (
                    cv2.cvtColor(row["clean"].pixels, cv2.COLOR_RGB2LAB)[..., 1].astype(float).mean()
                    - cv2.cvtColor(row["identity"], cv2.COLOR_RGB2LAB)[..., 1].astype(float).mean()
                ),
            }
            for row in trial_256
        ]
    )
    by = df.groupby("grade").mean()
    assert len(by) >= 3
    assert (np.diff(by["area"].to_numpy()) > 0).all(), by
    assert (np.diff(by["redness"].to_numpy()) > 0).all(), by


def test_lesions_stay_put_in_the_clean_frame(trial_256):
    """Where a lesion is on day t and still there on day t+1, its pixels are lesion on both days."""
    by = {(r["patient"], r["day"]): r["clean"] for r in trial_256}
    checked = 0
    for (pat, day), c in by.items():
        nxt = by.get((pat, day + 1))
        if nxt is None:
            continue
        both = c.lesions.merge(nxt.lesions, on="lesion_id", suffixes=("", "_next"))
        both = both[(both["stage"] != MARK) & (both["stage_next"] != MARK)]
        assert (np.hypot(both["x"] - both["x_next"], both["y"] - both["y_next"]) <= 2.0).all()
        for x, y in zip(both["x"].round().astype(int), both["y"].round().astype(int)):
            assert nxt.lesion_mask[min(y, 255), min(x, 255)]
            checked += 1
    assert checked > 100


def test_lesions_look_raised_red_and_headed(trial_256):
    """Papule centres are redder than their skin; a dome is brighter toward the light than away."""
    from trialsim.render.procedural import lesion_sprite

    F, A, W = lesion_sprite("papule", 5.0, 1.0, 0.3, (-0.7, -0.7))
    c = F.shape[0] // 2
    assert F[c, c, 0] > F[c, c, 1] * 1.3  # red channel kept more than green: erythema
    assert F[c - 3, c - 3].mean() > F[c + 3, c + 3].mean()  # lit side brighter than shadow side
    F, A, W = lesion_sprite("pustule", 5.0, 1.0, 0.3, (-0.7, -0.7))
    assert A[c, c].min() > 100 and A[c, c, 2] < A[c, c, 0]  # a yellow-white head
    F, A, W = lesion_sprite("open_comedone", 2.5, 1.0, 0.3, (-0.7, -0.7))
    c = F.shape[0] // 2
    assert (F[c, c] * 200 + A[c, c]).max() < 100  # a dark plug


# --- photo conditions -------------------------------------------------------------------------


def test_nuisance_strength_zero_is_the_clean_image():
    # the classic skin: smooth enough that JPEG at the best quality stays within 1.5 levels
    px = ProceduralRenderer(proto(size=128, style="classic")).identity_image(0, "1")
    a = nz.apply_nuisance(px, seed=1, strength=0.0, hour=8.0)
    b = nz.apply_nuisance(px, seed=2, strength=0.0, hour=20.0)
    assert a == b
    assert np.abs(decode(a)[..., ::-1].astype(float) - px).mean() < 1.5
    c = decode(nz.apply_nuisance(px, seed=1, strength=1.0, hour=8.0))[..., ::-1]
    assert np.abs(c.astype(float) - px).mean() > 2.0


def test_default_photo_conditions_are_as_strong_as_hand_held_phone_photos():
    cs = pd.DataFrame([nz.draw_conditions(s, 1.0, 13.0, (512, 512)) for s in range(3000)])
    assert abs(cs["exposure_ev"].std() - 0.25) < 0.03
    assert abs(cs["kelvin"].std() - 300) < 30
    assert abs(cs["rotation_deg"].std() - 3.0) < 0.3
    assert abs(np.log(cs["scale"]).std() - 0.03) < 0.004
    assert abs(cs["shift_px"].map(lambda t: t[0]).std() / 512 - 0.03) < 0.004
    assert cs["blur_sigma"].max() > 1.1 and cs["blur_sigma"].max() <= 1.2
    assert abs(cs["noise_sd"].iloc[0] - 2 / 255) < 1e-9
    assert cs["quality"].min() >= 75 and cs["quality"].max() <= 95 and cs["quality"].nunique() > 15
    double = pd.DataFrame([nz.draw_conditions(s, 2.0, 13.0, (512, 512)) for s in range(3000)])
    assert abs(double["rotation_deg"].std() / cs["rotation_deg"].std() - 2.0) < 0.1


def test_lighting_differs_by_time_of_day():
    morning = pd.DataFrame([nz.draw_conditions(s, 1.0, 8.0, (256, 256)) for s in range(500)])
    noon = pd.DataFrame([nz.draw_conditions(s, 1.0, 13.0, (256, 256)) for s in range(500)])
    assert noon["kelvin"].mean() - morning["kelvin"].mean() > 300
    assert abs(noon["gradient"].map(lambda g: g[1]).mean() - morning["gradient"].map(lambda g: g[1]).mean()) > 0.5


# --- dataset folder: determinism, workers, resume, contact sheets -----------------------------


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    p = proto(size=64, n=3)
    simulate(p, tmp_path / "a")
    simulate(p, tmp_path / "b", workers=2)
    da, db = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert da == db
    assert sum(k.endswith(".jpg") for k in da) == 3 * p.n_days
    assert sum(k.startswith("contact_sheets/") for k in da) == 3
    man = pd.read_csv(tmp_path / "a" / "manifest.csv")
    days = pd.read_csv(tmp_path / "a" / "schedule.csv")
    assert len(man) == 3 * p.n_days
    les = pd.read_csv(tmp_path / "a" / "lesions.csv")
    active = les[les["stage"] != MARK].groupby("image").size().reindex(man["image"], fill_value=0)
    assert (active.to_numpy() == man["lesion_count"].to_numpy()).all()
    assert len(days) == len(man)


def test_resume_after_a_kill_gives_the_same_bytes(tmp_path):
    p = proto(size=64, n=3)
    simulate(p, tmp_path / "full")
    simulate(p, tmp_path / "cut")
    # a killed run: no tables, some images missing, a half-written temporary file
    cut = tmp_path / "cut"
    for name in ("manifest.csv", "lesions.csv", "schedule.csv"):
        (cut / name).unlink()
    imgs = sorted(cut.rglob("*.jpg"))
    for f in imgs[::3]:
        f.unlink()
    (imgs[1].parent / f".{imgs[1].name}.x.tmp").write_bytes(b"partial")
    simulate(p, cut, resume=True, workers=2)
    assert digest(tmp_path / "full") == digest(cut)


def test_other_seed_other_images(tmp_path):
    p = proto(size=64, n=1)
    a = ProceduralRenderer(p)
    b = ProceduralRenderer(p.model_copy(update={"seed": p.seed + 1}))
    ja, jb = simulate_truth(p)[0], simulate_truth(p.model_copy(update={"seed": p.seed + 1}))[0]
    assert next(iter(a.render_patient(ja))).data != next(iter(b.render_patient(jb))).data


def test_none_renderer_simulates_no_lesions_and_the_same_truth_as_procedural(tmp_path):
    p = proto(size=64, n=2)
    a = simulate(p, tmp_path / "a", renderer="none")
    b = simulate(p, tmp_path / "b")
    assert a.lesions.empty and pd.read_csv(tmp_path / "a" / "lesions.csv").empty and len(b.lesions)
    truth = ["patient_id", "day", "treatment", "severity_latent", "severity_noisefree", "seed"]
    pd.testing.assert_frame_equal(a.manifest[truth], b.manifest[truth])
    target = a.days.set_index(["patient_id", "day"])["lesion_target"]
    want = target.loc[list(zip(a.manifest["patient_id"], a.manifest["day"]))].to_numpy()
    assert (a.manifest["lesion_count"].to_numpy() == want).all()


def test_portrait_frame_and_several_photos_a_day(tmp_path):
    p = proto(size=96, n=1, aspect=4 / 3, observation={"photos_per_day": 3})
    res = simulate(p, tmp_path / "a")
    img = cv2.imread(str(tmp_path / "a" / res.manifest["image"].iloc[0]))
    assert img.shape[:2] == (96, 72)
    les = res.lesions
    assert les["x"].max() < 72 and les["y"].max() < 96
    # the same day's photos share the lesions but not the photo conditions
    first = res.manifest[res.manifest["day"] == 1]["image"].tolist()
    assert len(first) == 3
    l0 = les[les["image"] == first[0]]
    l1 = les[les["image"] == first[1]]
    assert l0["lesion_id"].tolist() == l1["lesion_id"].tolist()
    assert (tmp_path / "a" / first[0]).read_bytes() != (tmp_path / "a" / first[1]).read_bytes()


def test_face_view_keeps_eyes_brows_and_lips_free_of_lesions():
    p = proto(
        size=128,
        n=1,
        view="face",
        aspect=4 / 3,
        nuisance=0.0,
        patients={"n": 1, "baseline_severity": {"mean": 3.0, "sd": 0.0}},
    )
    r = ProceduralRenderer(p)
    job = simulate_truth(p)[0]
    h, w = 128, 96
    yy, xx = np.mgrid[0:h, 0:w]
    feat = feature_mask((xx + 0.5) / w, (yy + 0.5) / h, 4 / 3)
    n = 0
    for c in r.clean_images(job):
        assert not (c.lesion_mask & feat).any()
        n += c.lesion_count
    assert n > 100
