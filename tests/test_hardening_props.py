"""Property tests: hostile patient ids and manifest paths never reach outside the folders given.

Ids with separators, unicode, dots, blanks and near-clashes either are refused as bad input
or get folders of their own inside ``images/``; manifests naming paths with ``..``, absolute
paths or links out of the folder are refused before any image is opened.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from conftest import small_protocol_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analysis.dataset as adata
from analysis.errors import AnalysisInputError
from trialsim.errors import BadInput
from trialsim.protocol import folder_clashes, protocol_from_dict
from trialsim.simulate import simulate

ID_CHARS = list("aAbB_-./\\ :") + ["é", "\u0301", "山", "\u200b", "\t"]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(ids=st.lists(st.text(alphabet=ID_CHARS, min_size=1, max_size=4), min_size=1, max_size=4, unique=True))
def test_hostile_ids_get_separate_folders_inside_images(tmp_path_factory, ids):
    base = tmp_path_factory.mktemp("ids")
    d = small_protocol_dict(
        patients={"n": len(ids), "ids": ids},
        schedule={"design": "fixed", "sequence": "AB", "blocks": 1, "period_days": 1, "run_in_days": 0},
        observation={"days": 1},
        rendering={"renderer": "procedural", "image_size": 32},
    )
    blank = any(not i.strip() or i != i.strip() for i in ids)
    try:
        protocol = protocol_from_dict(d)
    except BadInput:
        assert blank or folder_clashes(ids)
        return
    assert not blank and not folder_clashes(ids)
    out = base / "ds"
    result = simulate(protocol, out)
    written = [p for p in base.rglob("*") if p.is_file()]
    assert all(out in p.parents for p in written)  # nothing outside the folder given
    jpgs = sorted(p for p in written if p.suffix == ".jpg")
    assert len(jpgs) == len(ids) == len(result.manifest)  # one photo per patient, none shared
    images = (out / "images").resolve()
    assert all(p.resolve().parent.parent == images for p in jpgs)
    assert len({p.parent.name.casefold() for p in jpgs}) == len(ids)
    assert not any(p.name.startswith(".") or p.parent.name.startswith(".") for p in jpgs)


KINDS = ["inside", "inside_dot", "inside_link", "dotdot", "deep_dotdot", "absolute", "link_out", "dir_link_out"]
ESCAPES = {"dotdot", "deep_dotdot", "absolute", "link_out", "dir_link_out"}


def _hostile_dataset(base: Path, kinds: list[str]) -> Path:
    from PIL import Image

    ds = base / "ds"
    (ds / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 80, 80)).save(ds / "images" / "ok.png")
    Image.new("RGB", (16, 16), (10, 10, 10)).save(base / "out.png")
    (base / "elsewhere").mkdir()
    Image.new("RGB", (16, 16), (10, 10, 10)).save(base / "elsewhere" / "x.png")
    (ds / "images" / "in_link.png").symlink_to(ds / "images" / "ok.png")
    (ds / "images" / "out_link.png").symlink_to(base / "out.png")
    (ds / "linked").symlink_to(base / "elsewhere")
    for i in range(len(kinds)):  # one photo per row: a manifest lists each photo once
        Image.new("RGB", (16, 16), (200, 80, 80)).save(ds / "images" / f"ok{i}.png")
        (ds / "images" / f"in_link{i}.png").symlink_to(ds / "images" / f"ok{i}.png")
    path = {
        "inside": "images/ok{i}.png",
        "inside_dot": "images/./ok{i}.png",
        "inside_link": "images/in_link{i}.png",
        "dotdot": "../out.png",
        "deep_dotdot": "images/../../out.png",
        "absolute": str(base / "out.png"),
        "link_out": "images/out_link.png",
        "dir_link_out": "linked/x.png",
    }
    rows = [
        {"image": path[k].format(i=i), "patient_id": f"p{i % 2}", "day": i + 1, "treatment": "AB"[(i // 2) % 2]}
        for i, k in enumerate(kinds)
    ]
    pd.DataFrame(rows).to_csv(ds / "manifest.csv", index=False)
    return ds


@FAST
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=4, max_size=8))
def test_hostile_manifest_paths_are_never_read(tmp_path_factory, kinds):
    kinds = ["inside", "inside", "inside", "inside", *kinds]  # both arms for both patients
    ds = _hostile_dataset(tmp_path_factory.mktemp("man"), kinds)
    opened: list[Path] = []
    real_open = adata._open_image

    def recording(path, size):
        opened.append(Path(path))
        return real_open(path, size)

    with mock.patch.object(adata, "_open_image", recording):
        if ESCAPES & set(kinds):
            with pytest.raises(AnalysisInputError, match="outside the dataset folder"):
                adata.load_dataset(ds)
            assert not opened
            return
        data = adata.load_dataset(ds)
        adata.load_images(data, 16)
    top = ds.resolve()
    assert len(opened) == len(kinds) and all(top in p.resolve().parents for p in opened)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**70),
    patient=st.integers(0, 2**40),
    keys=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 23)), min_size=1, max_size=20),
)
def test_image_seeds_in_one_pass_equal_one_by_one(seed, patient, keys):
    from trialsim.seeding import image_seed, image_seeds

    days, photos = (np.array(k, dtype=np.int64) for k in zip(*keys))
    got = image_seeds(seed, patient, days, photos)
    assert got.tolist() == [image_seed(seed, patient, d, p) for d, p in keys]
