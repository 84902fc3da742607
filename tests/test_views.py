"""Views: side of the face and mixed per-patient views; lesions stay on the skin."""

from __future__ import annotations

import numpy as np
from conftest import small_protocol_dict

from trialsim.lesions import allowed_region, lesion_truth
from trialsim.protocol import protocol_from_dict
from trialsim.render.procedural import ProceduralRenderer
from trialsim.seeding import patient_rng
from trialsim.simulate import simulate_truth
from trialsim.views import SIDE, patient_view, side_allowed


def proto(view: str, n: int = 3, size: int = 128, severity: float = 2.5):
    d = small_protocol_dict()
    d["patients"] = {"n": n, "baseline_severity": {"mean": severity, "sd": 0.1}}
    d["rendering"] = {"renderer": "procedural", "image_size": size, "aspect": 4 / 3, "view": view, "nuisance": 0.0}
    return protocol_from_dict(d)


def _inside(x, y, key, grow=1.0):
    cx, cy, a, b = SIDE[key]
    return ((x - cx) / (grow * a)) ** 2 + ((y - cy) / (grow * b)) ** 2 <= 1.0


def test_side_view_region_lies_on_the_cheek_off_ear_lips_and_neck():
    yy, xx = np.mgrid[0:400, 0:300]
    x, y = (xx + 0.5) / 300, (yy + 0.5) / 400
    ok = side_allowed(x, y)
    assert 0.15 < ok.mean() < 0.6
    assert not (ok & ~_inside(x, y, "face")).any()
    assert not (ok & _inside(x, y, "ear")).any()
    assert not (ok & (y > 0.9)).any()
    assert (allowed_region(x, y, "side", 4 / 3) == ok).all()


def test_side_view_lesions_are_all_on_the_allowed_skin():
    p = proto("side", n=2)
    h, w = 128, 96
    n = 0
    for job in simulate_truth(p):
        pop, _ = lesion_truth(job, h, w, patient_rng(p.seed, job.patient_index, "lesions"), "side", 4 / 3)
        assert side_allowed(pop["x"].to_numpy() / w, pop["y"].to_numpy() / h).all()
        n += len(pop)
    assert n > 20


def test_mixed_view_keeps_one_view_per_patient_and_uses_both():
    views = [patient_view("mixed", i) for i in range(6)]
    assert set(views) == {"cheek", "side"} and views == [patient_view("mixed", i) for i in range(6)]
    assert patient_view("face", 4) == "face"
    p = proto("mixed", n=2)
    r = ProceduralRenderer(p)
    jobs = simulate_truth(p)
    cheek, side = (r.identity_image(j.patient_index, j.patient_id).astype(float) for j in jobs)
    # the side view shows wall and hair at the upper left, the close-up skin everywhere
    corner = (slice(0, 20), slice(0, 15))
    assert np.abs(side[corner].mean(axis=(0, 1)) - side[60:80, 70:90].mean(axis=(0, 1))).max() > 15
    assert np.abs(cheek[corner].mean(axis=(0, 1)) - cheek[60:80, 70:90].mean(axis=(0, 1))).max() < 30
    # the lesion truth follows the patient's view
    pop, _ = lesion_truth(jobs[1], 128, 96, patient_rng(p.seed, 1, "lesions"), "mixed", 4 / 3)
    assert side_allowed(pop["x"].to_numpy() / 96, pop["y"].to_numpy() / 128).all()


def test_side_view_lesions_are_drawn_where_the_truth_says():
    p = proto("side", n=1, size=256)
    r = ProceduralRenderer(p)
    job = simulate_truth(p)[0]
    skin = r.identity_image(0, job.patient_id).astype(float)
    checked = 0
    for c in list(r.clean_images(job))[::5]:
        act = c.lesions[c.lesions["stage"] != "mark"]
        for x, y in zip(act["x"].round().astype(int), act["y"].round().astype(int)):
            assert c.lesion_mask[y, x]
            checked += 1
        # every changed pixel lies near a lesion or mark of the truth (so none is drawn elsewhere)
        near = np.zeros(c.lesion_mask.shape, bool)
        yy, xx = np.mgrid[0 : near.shape[0], 0 : near.shape[1]]
        for x, y, rad in zip(c.lesions["x"], c.lesions["y"], c.lesions["radius"]):
            near |= (xx - x) ** 2 + (yy - y) ** 2 <= (10 * rad + 3) ** 2  # a sprite spans 3 halos
        changed = np.abs(c.pixels.astype(float) - skin).max(axis=2) > 0
        assert changed.any() and not (changed & ~near).any()
    assert checked > 10
