"""``trialsim train-reader`` and ``--method sim-reader``: learning, reloading, resume, clear skin, bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from analysis.reader import SimReaderEmbedder, load_reader
from analysis.reader.detect import detections, match, scores
from trialsim.cli import main
from trialsim.protocol import load_protocol
from trialsim.reader import train as train_mod
from trialsim.reader.photos import training_set
from trialsim.reader.train import ReaderOptions, train_reader

TINY = """
name: tiny_reader
seed: 3
patients: {n: 2, baseline_severity: {mean: 1.5, sd: 0.8}}
treatments:
  - {label: "Off", effect: 0.0}
  - {label: "On", effect: -1.0, onset_days: 1.0, washout_days: 1.0}
schedule: {design: fixed, sequence: AB, blocks: 1, period_days: 2, run_in_days: 0}
observation: {photos_per_day: 1, missing_photo_prob: 0.0, dropout_prob: 0.0}
dynamics: {drift_sd_per_day: 0.1, ar1_rho: 0.5, ar1_sd: 0.2, sd_obs: 0.05}
rendering: {renderer: procedural, image_size: 128, aspect: 1.0, view: cheek, nuisance: 0.5, style: realistic}
"""


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _opts(tmp_path: Path, out: str = "reader", **kw) -> ReaderOptions:
    proto = tmp_path / "tiny.yaml"
    proto.write_text(TINY)
    base = dict(
        protocol=proto,
        out=tmp_path / out,
        photos=48,
        image_size=128,
        crop=64,
        epochs=10,
        batch_size=8,
        lr=3e-3,
        width=16,
        progress=False,
    )
    return ReaderOptions(**{**base, **kw})


def test_training_photos_carry_their_lesions_in_photo_coordinates(tmp_path):
    ts = training_set(load_protocol(_write(tmp_path)), 8, 64, seed=0)
    assert ts.photos.shape == (8, 3, 64, 64) and ts.density.shape == (8, 3, 16, 16)
    # each map's mass is its lesions inside the frame (a Gaussian near the edge loses a little)
    per_photo = ts.lesions.groupby("photo").size().reindex(range(8), fill_value=0).to_numpy()
    assert np.allclose(ts.density.sum(axis=(1, 2, 3)), per_photo, atol=0.35 * per_photo.max() + 0.5)
    assert per_photo.sum() > 0 and ts.lesions[["x", "y"]].to_numpy().max() < 64


def _write(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def test_training_lowers_the_loss_and_the_same_seed_gives_the_same_weights(tmp_path):
    train_reader(_opts(tmp_path, "a"))
    train_reader(_opts(tmp_path, "b"))
    log = json.loads((tmp_path / "a" / "training_log.json").read_text())
    whole = [e["loss"] for e in log["epochs"] if e.get("whole_photos")]
    assert len(whole) == 2 and whole[1] < 0.85 * whole[0]  # the loss on whole photos, before and after
    a, b = ((tmp_path / d / "weights.safetensors").read_bytes() for d in "ab")
    assert a == b
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "Trained on" in card and "Limits" in card
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    train_reader(_opts(tmp_path, "whole"))
    real = train_mod._epoch
    calls = {"n": 0}

    def dies_at_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "_epoch", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        train_reader(_opts(tmp_path, "cut"))
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (tmp_path / "cut" / "config.json").exists()
    monkeypatch.setattr(train_mod, "_epoch", real)
    train_reader(_opts(tmp_path, "cut"))
    assert (tmp_path / "cut" / "weights.safetensors").read_bytes() == (
        tmp_path / "whole" / "weights.safetensors"
    ).read_bytes()
    assert len(json.loads((tmp_path / "cut" / "training_log.json").read_text())["epochs"]) == 12


def test_a_saved_reader_reloads_to_identical_outputs(tmp_path):
    train_reader(_opts(tmp_path))
    ts = training_set(load_protocol(_write(tmp_path)), 6, 128, seed=5)
    first = SimReaderEmbedder(reader=tmp_path / "reader").fit().outputs(ts.photos)
    again = SimReaderEmbedder(reader=str(tmp_path / "reader")).fit().outputs(ts.photos)
    assert first.shape == (6, 4) and np.array_equal(first, again)
    r = load_reader(tmp_path / "reader")
    with torch.inference_mode():
        from analysis.reader.network import prepare

        d, v = r.network(torch.from_numpy(prepare(ts.photos, r.config["input"])))
    assert np.allclose(first[:, 0], v.numpy()) and np.allclose(first[:, 1:], d.sum(dim=(2, 3)).numpy())


def test_detections_match_lesions_of_their_group_only():
    maps = np.zeros((3, 16, 16), np.float32)
    maps[1, 4, 4] = 0.2  # an inflammatory peak at cell (4, 4): px (18, 18)
    maps[0, 10, 10] = 0.2  # a comedone peak
    dets = detections(maps)
    assert sorted(dets["group"]) == ["comedone", "inflammatory"]
    import pandas as pd

    truth = pd.DataFrame(
        {"group": ["inflammatory", "mark"], "x": [19.0, 42.0], "y": [17.0, 42.0], "radius": [3.0, 3.0]}
    )
    m = match(dets, truth).set_index("group")
    assert m.loc["inflammatory", "tp"] == 1 and m.loc["comedone", "tp"] == 0 and m.loc["mark", "true"] == 1
    s = scores(m.reset_index()).set_index("group")
    assert s.loc["inflammatory", "f1"] == 1.0 and s.loc["mark", "recall"] == 0.0


def test_a_bad_reader_folder_is_exit_2_naming_the_file(tmp_path):
    from trialsim.cli import main as cli

    ds = tmp_path / "ds"
    r = CliRunner().invoke(cli, ["simulate", str(_write(tmp_path)), "--out", str(ds), "--quiet"])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    for folder, named in ((tmp_path / "missing", "missing"), (bad, "config.json")):
        r = CliRunner().invoke(
            main,
            [
                "analyze",
                str(ds),
                "--out",
                str(tmp_path / "an"),
                "--method",
                "sim-reader",
                "--reader",
                str(folder),
                "--quiet",
            ],
        )
        assert r.exit_code == 2, r.output
        assert named in r.output and not (tmp_path / "an" / "results.json").exists()
    r = CliRunner().invoke(
        main, ["analyze", str(ds), "--out", str(tmp_path / "an"), "--method", "sim-reader", "--quiet"]
    )
    assert r.exit_code == 2 and "--reader" in r.output


def test_sim_reader_analysis_end_to_end(tmp_path):
    train_reader(_opts(tmp_path))
    ds = tmp_path / "ds"
    assert CliRunner().invoke(main, ["simulate", str(_write(tmp_path)), "--out", str(ds), "--quiet"]).exit_code == 0
    r = CliRunner().invoke(
        main,
        [
            "analyze",
            str(ds),
            "--out",
            str(tmp_path / "an"),
            "--method",
            "sim-reader,oracle",
            "--reader",
            str(tmp_path / "reader"),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "an" / "results.json").read_text())
    assert {p["method"] for p in res["population"]} == {"sim-reader", "oracle"}
    assert "sim-reader" in (tmp_path / "an" / "report.html").read_text()


def test_sim_reader_reads_photos_without_truth_and_orients_pc1_by_its_count(tmp_path):
    import pandas as pd

    train_reader(_opts(tmp_path))
    ds = tmp_path / "ds"
    assert CliRunner().invoke(main, ["simulate", str(_write(tmp_path)), "--out", str(ds), "--quiet"]).exit_code == 0
    # as a folder of real photos: the four required columns, no truth, no protocol
    m = pd.read_csv(ds / "manifest.csv")
    m[["image", "patient_id", "day", "treatment"]].to_csv(ds / "manifest.csv", index=False)
    for name in ("protocol.yaml", "lesions.csv", "design.json", "days.csv", "schedule.csv", ".trialsim.json"):
        (ds / name).unlink(missing_ok=True)
    args = ["--method", "sim-reader", "--reader", str(tmp_path / "reader"), "--quiet"]
    r = CliRunner().invoke(main, ["analyze", str(ds), "--out", str(tmp_path / "an"), *args])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "an" / "results.json").read_text())
    assert res["truth"] is None and "inflammatory count" in res["embedding"]["sign_note"]
    emb = pd.read_csv(tmp_path / "an" / "embeddings.csv")
    assert np.corrcoef(emb["PC1"], emb["e0"])[0, 1] >= 0  # PC1 rises with the read count
    assert (tmp_path / "an" / "reader_views.npz").exists()


def test_a_reader_counts_near_zero_on_skin_without_lesions(tmp_path):
    import cv2

    train_reader(_opts(tmp_path))
    ts = training_set(load_protocol(_write(tmp_path)), 12, 128, seed=5)
    est = SimReaderEmbedder(reader=tmp_path / "reader").fit()
    # the same people's skin with every lesion smoothed away (colour, light and framing kept)
    clear = np.stack([cv2.GaussianBlur(p.transpose(1, 2, 0), (0, 0), 12).transpose(2, 0, 1) for p in ts.photos])
    spotted, plain = est.outputs(ts.photos), est.outputs(clear)
    assert spotted[:, 2].mean() > 3  # inflammatory lesions counted where there are some
    assert plain[:, 2].mean() < 0.1 * spotted[:, 2].mean() and plain[:, 2].mean() < 0.5
    assert plain[:, 1:].sum(1).mean() < 0.15 * spotted[:, 1:].sum(1).mean()


def test_a_reader_folder_from_before_the_input_field_reads_rgb(tmp_path):
    train_reader(_opts(tmp_path, input="rgb", epochs=2))
    cfg_path = tmp_path / "reader" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["input"] == "rgb"
    del cfg["input"]
    cfg_path.write_text(json.dumps(cfg))
    ts = training_set(load_protocol(_write(tmp_path)), 4, 128, seed=5)
    est = SimReaderEmbedder(reader=tmp_path / "reader", embed="all").fit()
    assert est.reader_.config["input"] == "rgb" and est.transform(ts.photos).shape == (4, 4)
    cfg["input"] = "infrared"
    cfg_path.write_text(json.dumps(cfg))
    from analysis.errors import AnalysisInputError

    with pytest.raises(AnalysisInputError) as err:
        load_reader(tmp_path / "reader")
    assert err.value.field == "input" and "config.json" in str(err.value.file)


POWER_PROTOCOL = TINY.replace("n: 2,", "n: 3,").replace("blocks: 1,", "blocks: 2,")


def test_a_power_study_with_the_sim_reader_records_its_reader_and_refuses_another(tmp_path):
    train_reader(_opts(tmp_path))
    proto = tmp_path / "power.yaml"
    proto.write_text(POWER_PROTOCOL)

    def power(out: str, *extra: str):
        args = ["power", str(proto), "--replicates", "2", "--out", str(tmp_path / out), "--quiet"]
        return CliRunner().invoke(main, [*args, "--method", "oracle,sim-reader", *extra])

    r = power("no_reader")
    assert r.exit_code == 2 and "--reader" in r.output and not (tmp_path / "no_reader").exists()
    r = power("bad_reader", "--reader", str(tmp_path))
    assert r.exit_code == 2 and "config.json" in r.output and not (tmp_path / "bad_reader").exists()

    r = power("study", "--reader", str(tmp_path / "reader"))
    assert r.exit_code == 0, r.output
    import pandas as pd

    rep = pd.read_csv(tmp_path / "study" / "replicates.csv")
    lmm = rep[(rep["method"] == "sim-reader") & (rep["test"] == "lmm")]
    assert len(lmm) == 2 and lmm["error"].isna().all() and np.isfinite(lmm["estimate_raw"]).all()
    assert (rep["method"] == "oracle").any()
    spec = (tmp_path / "study" / "study.yaml").read_text()
    assert f"reader: {(tmp_path / 'reader').resolve()}" in spec

    # the same folder with another reader is another study
    (tmp_path / "other").mkdir()
    for f in (tmp_path / "reader").iterdir():
        (tmp_path / "other" / f.name).write_bytes(f.read_bytes())
    r = power("study", "--reader", str(tmp_path / "other"))
    assert r.exit_code == 2 and "different study" in r.output
