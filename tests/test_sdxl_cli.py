"""``trialsim simulate --renderer sdxl`` end to end on a tiny random SDXL, bad input, and the bench (CPU).

The tests run the real loading path through the command line where it matters.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdxl_common import SIZE, lora_args, protocol_dict, simulate_cli, tiny

from trialsim.errors import BadInput
from trialsim.protocol import protocol_from_dict
from trialsim.render.sdxl import SDXLRenderer
from trialsim.simulate import simulate_truth

__all__ = ["tiny"]  # the module-scoped fixture, used by name

# ---------------------------------------------------------------- end to end through the CLI


@pytest.mark.parametrize("mode", ["anchor", "refine"])
def test_simulate_renderer_sdxl_writes_a_complete_dataset(tiny, tmp_path, mode):
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(protocol_dict()))
    out = tmp_path / "out"
    res = simulate_cli(
        [
            str(proto_path),
            "--out",
            str(out),
            "--renderer",
            "sdxl",
            "--sdxl-mode",
            mode,
            "--base-model",
            str(tiny["base"]),
            *lora_args(tiny),
        ]
    )
    assert res.exit_code == 0, res.output
    man = pd.read_csv(out / "manifest.csv")
    assert len(man) == 6 and man["patient_id"].nunique() == 2 and sorted(man["day"].unique()) == [1, 2, 3]
    for rel in man["image"]:
        with Image.open(out / rel) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    lesions = pd.read_csv(out / "lesions.csv")
    proto = protocol_from_dict(protocol_dict())
    jobs = simulate_truth(proto)
    if mode == "anchor":
        # SDXL places lesions itself: no per-lesion truth, the count is the simulator's target
        assert len(lesions) == 0
        target = pd.concat([j.days.assign(patient_id=j.patient_id) for j in jobs])[
            ["patient_id", "day", "lesion_target"]
        ]
        m = man.astype({"patient_id": str}).merge(target, on=["patient_id", "day"])
        assert (m["lesion_count"] == m["lesion_target"]).all()
    else:
        # refine keeps the procedural lesions exactly: same truth as the procedural renderer's
        from trialsim.render.procedural import ProceduralRenderer

        pr = ProceduralRenderer(proto)
        want, counts = [], {}
        for j in jobs:
            j.images = j.images.assign(image=j.images["image"] + ".jpg")
            for c in pr.clean_images(j):
                want.append(c.lesions)
                counts[c.image] = c.lesion_count
        want = pd.concat(want, ignore_index=True)
        assert len(lesions) == len(want) > 0
        assert (lesions["image"].to_numpy() == want["image"].to_numpy()).all()
        assert (lesions["lesion_id"].to_numpy() == want["lesion_id"].to_numpy()).all()
        assert np.allclose(
            lesions[["x", "y", "radius"]].to_numpy(float), want[["x", "y", "radius"]].to_numpy(float), atol=1e-3
        )
        assert man.set_index("image")["lesion_count"].to_dict() == counts
    assert (out / "contact_sheets").is_dir()


@pytest.mark.slow
def test_cli_passes_the_sdxl_speed_and_refine_options_to_the_renderer(tiny, tmp_path, monkeypatch):
    import trialsim.simulate as sim

    seen = {}

    def spy(protocol, name=None, sdxl=None):
        seen.update(sdxl.model_dump(), name=name)
        raise BadInput("stop here", field="spy")

    monkeypatch.setattr(sim, "make_renderer", spy)
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(protocol_dict()))
    res = simulate_cli(
        [
            str(proto_path),
            "--out",
            str(tmp_path / "out"),
            "--renderer",
            "sdxl",
            "--base-model",
            str(tiny["base"]),
            *lora_args(tiny),
            "--sdxl-refine",
            "inpaint",
            "--vae",
            "/models/vae-fp16-fix",
            "--sdxl-batch-size",
            "3",
            "--sdxl-severity-step",
            "0.1",
            "--sdxl-compile",
            "--sdxl-dtype",
            "bf16",
            "--sdxl-batching",
            "by-weight",
        ]
    )
    assert res.exit_code == 2 and not (tmp_path / "out").exists()
    assert seen["name"] == "sdxl" and seen["refine_method"] == "inpaint" and seen["batch_size"] == 3
    assert seen["severity_step"] == 0.1 and seen["compile"] is True and seen["vae"] == "/models/vae-fp16-fix"
    assert seen["dtype"] == "bf16" and seen["batching"] == "by-weight"
    assert seen["lora"] == [a.split("=", 1)[1] for a in lora_args(tiny)]


def test_cli_inpaint_refine_with_batch_1_and_exact_severities_writes_the_dataset(tiny, tmp_path):
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(protocol_dict()))
    out = tmp_path / "out"
    res = simulate_cli(
        [
            str(proto_path),
            "--out",
            str(out),
            "--renderer",
            "sdxl",
            "--base-model",
            str(tiny["base"]),
            *lora_args(tiny),
            "--sdxl-refine",
            "inpaint",
            "--sdxl-batch-size",
            "1",
            "--sdxl-severity-step",
            "0",
        ]
    )
    assert res.exit_code == 0, res.output
    man = pd.read_csv(out / "manifest.csv")
    assert len(man) == 6 and all((out / rel).stat().st_size > 0 for rel in man["image"])
    assert len(pd.read_csv(out / "lesions.csv")) > 0  # refine keeps the per-lesion truth


def test_resume_rerenders_only_the_missing_image(tiny, tmp_path):
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(protocol_dict()))
    out = tmp_path / "out"
    args = [
        str(proto_path),
        "--out",
        str(out),
        "--renderer",
        "sdxl",
        "--sdxl-mode",
        "refine",
        "--base-model",
        str(tiny["base"]),
        *lora_args(tiny),
    ]
    assert simulate_cli(args).exit_code == 0
    man = pd.read_csv(out / "manifest.csv")
    keep = out / man["image"][0]
    gone = out / man["image"][3]
    keep_bytes, keep_mtime = keep.read_bytes(), keep.stat().st_mtime_ns
    gone.unlink()
    (out / "manifest.csv").unlink()
    res = simulate_cli(args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert gone.exists() and keep.read_bytes() == keep_bytes and keep.stat().st_mtime_ns == keep_mtime
    assert pd.read_csv(out / "manifest.csv").equals(man)


@pytest.mark.slow
def test_same_seed_gives_the_same_pixels_whatever_the_batch_size(tiny, tmp_path):
    proto = protocol_from_dict(
        dict(protocol_dict(), rendering={"renderer": "sdxl", "image_size": SIZE, "nuisance": 0.0})
    )
    job = simulate_truth(proto)[0]
    job.images = job.images.assign(image=job.images["image"] + ".jpg")
    job.days = job.days.assign(severity_latent=1.0)  # one severity: one batch of 3 vs 3 batches of 1
    px = {}
    for bs in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = SDXLRenderer.from_options(
                proto,
                base_model=str(tiny["base"]),
                lora=[f"1={tiny['loras'][1]}"],
                mode="refine",
                batch_size=bs,
                steps=10,
            )
        px[bs] = [np.asarray(Image.open(io.BytesIO(x.data)), dtype=float) for x in r.render_patient(job)]
    # batched kernels differ from single ones at float level, and JPEG turns that into a grey level or two
    # (how much depends on the process's history: 0.2 alone, 1.3 after the whole suite), while a photo
    # given another photo's noise or severity differs by far more
    diff = np.array([[np.abs(a - b).mean() for b in px[3]] for a in px[1]])
    assert np.all(np.diag(diff) < 2.0), diff
    assert np.all(np.diag(diff) < 0.5 * np.min(diff + np.diag(np.full(len(diff), np.inf)), axis=1)), diff


@pytest.mark.slow
def test_inpaint_refine_changes_pixels_only_near_lesions(tiny):
    proto = protocol_from_dict(
        dict(protocol_dict(), rendering={"renderer": "sdxl", "image_size": SIZE, "nuisance": 0.0})
    )
    job = simulate_truth(proto)[0]
    job.images = job.images.assign(image=job.images["image"] + ".jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = SDXLRenderer.from_options(
            proto,
            base_model=str(tiny["base"]),
            lora=[f"{g}={p}" for g, p in tiny["loras"].items()],
            mode="refine",
            refine_method="inpaint",
            strength=0.5,
            steps=10,
            mask_dilation_px=2,
        )
    clean = [c for c in r._procedural().clean_images(job) if np.asarray(c.lesion_mask).any()][:1]
    assert clean, "the test protocol should put lesions on some day"
    for c in clean:
        pixels = np.asarray(c.pixels)
        out = r.render_batch(pixels[None], 1.0, [0], masks=r._dilate(np.asarray(c.lesion_mask))[None])[0]
        near = r._dilate(np.asarray(c.lesion_mask))
        far = ~r._dilate(r._dilate(r._dilate(np.asarray(c.lesion_mask))))
        assert out.shape == pixels.shape
        # away from lesions the pixels are the procedural ones (within 1 grey level of feathering)
        assert np.abs(out[far].astype(float) - pixels[far]).max() <= 1.0
        if near.any():  # inside the masks SDXL (random weights here) changed them
            assert np.abs(out[near].astype(float) - pixels[near]).mean() > 5.0


# ---------------------------------------------------------------- bad input → exit 2


def _bad(tiny, tmp_path, extra: list[str], env: dict | None = None):
    import tempfile

    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(protocol_dict()))
    out = tempfile.mkdtemp(dir=tmp_path, prefix="out")
    return simulate_cli([str(proto_path), "--out", out, "--renderer", "sdxl", *extra], env=env)


def test_missing_base_model_folder_exits_2_naming_the_path(tiny, tmp_path):
    missing = tmp_path / "no" / "such" / "sdxl"
    res = _bad(tiny, tmp_path, ["--base-model", str(missing), *lora_args(tiny)])
    assert res.exit_code == 2
    assert str(missing) in res.output and "--base-model" in res.output and "Traceback" not in res.output


def test_no_base_model_exits_2(tiny, tmp_path):
    res = _bad(tiny, tmp_path, [])
    assert res.exit_code == 2 and "--base-model" in res.output


def test_lora_folder_without_the_seed_layout_file_exits_2_naming_the_file_looked_for(tiny, tmp_path):
    wrong = tmp_path / "acne2"
    wrong.mkdir()
    (wrong / "adapter_model.safetensors").write_bytes(b"")
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora=2={wrong}"])
    assert res.exit_code == 2
    assert "pytorch_lora_weights.safetensors" in res.output and str(wrong) in res.output
    assert "adapter_model.safetensors" in res.output  # says what it found instead


def test_lora_with_weights_for_another_model_exits_2(tiny, tmp_path):
    from safetensors.torch import save_file

    wrong = tmp_path / "sd15"
    wrong.mkdir()
    save_file(
        {
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 320),
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(320, 4),
        },
        str(wrong / "pytorch_lora_weights.safetensors"),
    )
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora={wrong}"])
    assert res.exit_code == 2, res.output
    assert "wrong LoRA layout" in res.output and str(wrong) in res.output


def test_a_peft_too_old_for_text_encoder_loras_is_named_not_called_a_wrong_layout(tiny, monkeypatch):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    def refuse(self, *args, **kwargs):  # what transformers raises when peft is older than it needs
        raise ValueError("The version of PEFT you are using is not compatible, please use a version >= 9.9.9")

    monkeypatch.setattr(StableDiffusionXLImg2ImgPipeline, "load_lora_weights", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(BadInput, match=r"text-encoder LoRA weights.*newer peft") as err:
            SDXLRenderer.from_options(
                protocol_from_dict(protocol_dict()), base_model=str(tiny["base"]), lora=[f"1={tiny['loras'][1]}"]
            )
    assert "wrong LoRA layout" not in str(err.value) and err.value.field == "--lora 1=" + str(tiny["loras"][1])


def test_missing_lora_path_and_bad_grade_exit_2(tiny, tmp_path):
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora=1={tmp_path / 'nope'}"])
    assert res.exit_code == 2 and str(tmp_path / "nope") in res.output
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora=7={tiny['loras'][0]}"])
    assert res.exit_code == 2 and "0, 1, 2 or 3" in res.output


def test_hub_ids_without_network_exit_2_naming_the_cache(tiny, tmp_path):
    env = {"HF_HUB_OFFLINE": "1"}
    res = _bad(tiny, tmp_path, ["--base-model", "nobody-here/sdxl-missing", *lora_args(tiny)], env=env)
    assert res.exit_code == 2, res.output
    assert "nobody-here/sdxl-missing" in res.output and "cache" in res.output
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), "--lora=1=nobody-here/acne1-lora"], env=env)
    assert res.exit_code == 2, res.output
    assert "nobody-here/acne1-lora" in res.output and "pytorch_lora_weights.safetensors" in res.output
    # without HF_HUB_OFFLINE: fails fast too (no network here; with network the repo does not exist)
    import time

    t0 = time.perf_counter()
    res = _bad(
        tiny, tmp_path, ["--base-model", "nobody-here/sdxl-missing", *lora_args(tiny)], env={"HF_HUB_OFFLINE": None}
    )
    assert res.exit_code == 2, res.output
    assert "nobody-here/sdxl-missing" in res.output and time.perf_counter() - t0 < 60


@pytest.mark.slow
def test_bench_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_sdxl", Path(__file__).resolve().parent.parent / "bench" / "bench_sdxl.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bench.main(
            ["--tiny", "--steps", "10", "--workdir", str(tmp_path), "--out", str(tmp_path / "bench.json")]
        )
    assert result["trialsim_eager"]["adapter_weights"] == {"acne1": 0.5, "acne2": 0.5}
    assert result["trialsim_eager"]["lora_path"] == "folded into the weights"
    assert result["trialsim_peft_layers"]["lora_path"].startswith("peft")
    assert result["seed_project"]["images"] == 4 and result["seed_project"]["s_per_image"] > 0
    assert set(result["speedup_vs_seed_batch1"]) == {
        "trialsim_eager.batch_1",
        "trialsim_eager.batch_2",
        "trialsim_peft_layers.batch_2",
    }
    assert not any(k.startswith("trialsim_compiled") for k in result)  # no compile on the CPU
    fill = result["anchor_trial_batches_of_8"]
    assert fill["step_0.05"]["photos"] == 1400
    assert 1 <= fill["step_0.05"]["photos_per_call"] <= fill["step_1"]["photos_per_call"] <= 8
    # mixed batches: every call full but each patient's last (10 patients × ceil(140 / 8) calls)
    assert fill["mixed"] == {"photos": 1400, "pipeline_calls": 180, "photos_per_call": 1400 / 180}
    assert json.loads((tmp_path / "bench.json").read_text())["best"] == result["best"]
    assert '"goal_met"' in capsys.readouterr().out


@pytest.mark.slow
def test_bench_whole_trial_renders_the_anchor_trial_end_to_end(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_sdxl", Path(__file__).resolve().parent.parent / "bench" / "bench_sdxl.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--whole-trial", "--tiny", "--patients", "1", "--steps", "10", "--threads", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bench.main([*args, "--workdir", str(tmp_path), "--out", str(tmp_path / "trial.json")])
    mixed = result["whole_trial_mixed"]
    # one patient of the anchor trial: 140 photos, in ceil(140 / 8) = 18 calls although severities differ
    assert mixed["photos"] == 140 and mixed["batching"] == "mixed"
    assert mixed["pipeline_calls"] == 18 and mixed["mean_batch_fill"] == pytest.approx(140 / 18)
    assert "whole_trial_by-weight" not in result  # only with --by-weight-too
    assert mixed["s_per_photo"] == pytest.approx(mixed["seconds"] / 140) and mixed["seconds"] > 0
    man = pd.read_csv(tmp_path / "trial_mixed" / "manifest.csv")
    assert len(man) == 140 and all((tmp_path / "trial_mixed" / rel).stat().st_size > 0 for rel in man["image"])
    assert result["goal_met"] is False  # a tiny model on the CPU says nothing about the GPU goal
    assert json.loads((tmp_path / "trial.json").read_text())["whole_trial_mixed"]["photos"] == 140
