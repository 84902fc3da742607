"""The SDXL renderer on a tiny random SDXL pipeline (CPU, no downloads).

``tests/tiny_sdxl.py`` saves a real diffusers SDXL folder (UNet, VAE, two CLIP text
encoders, tokenizers with a vocabulary written here) and four LoRAs in the seed
project's layout (``acne{g}/pytorch_lora_weights.safetensors``); the tests run the
real loading path, through ``trialsim simulate --renderer sdxl`` where it matters.
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
import yaml
from click.testing import CliRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_sdxl

from trialsim.cli import main
from trialsim.errors import BadInput
from trialsim.protocol import protocol_from_dict
from trialsim.render.sdxl import SDXLOptions, SDXLRenderer, grade_blend, parse_lora_specs, quantise_severity
from trialsim.simulate import simulate_truth

SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A saved tiny SDXL folder and four per-grade LoRA folders."""
    root = tmp_path_factory.mktemp("tiny_sdxl")
    base = tiny_sdxl.save_tiny_sdxl(root / "base", components=tiny_sdxl.build_components(tokenizer_dir=root / "tok"))
    loras = tiny_sdxl.save_lora_folders(base, root / "loras")
    return {"base": base, "loras": loras, "root": root}


def _protocol_dict() -> dict:
    """2 patients × 3 days at 64 px."""
    return {
        "name": "sdxl-tiny",
        "seed": 5,
        "patients": {"n": 2, "baseline_severity": {"mean": 2.4, "sd": 0.2}},
        "treatments": [{"label": "A", "effect": -1.5, "onset_days": 1, "washout_days": 1}],
        "schedule": {"design": "fixed", "sequence": "A", "blocks": 1, "period_days": 2, "run_in_days": 1},
        "dynamics": {"ar1_rho": 0.5, "ar1_sd": 0.1},
        "rendering": {"renderer": "sdxl", "image_size": SIZE, "nuisance": 1.0},
    }


def _lora_args(tiny) -> list[str]:
    return [f"--lora={g}={p}" for g, p in tiny["loras"].items()]


def _simulate(args: list[str], env: dict | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "no GPU, slow" warning
        return CliRunner().invoke(main, ["simulate", *args, "--quiet"], env=env)


# ---------------------------------------------------------------- continuous severity


def test_grade_blend_of_severity_1_5_is_half_grade_1_half_grade_2():
    assert grade_blend(1.5, [0, 1, 2, 3]) == {1: 0.5, 2: 0.5}
    assert grade_blend(2.0, [0, 1, 2, 3]) == {2: 1.0}
    w = grade_blend(0.25, [0, 1, 2, 3])
    assert w[0] == pytest.approx(0.75, abs=1e-9) and w[1] == pytest.approx(0.25, abs=1e-9)
    assert grade_blend(3.4, [0, 1, 2, 3]) == {3: 1.0}
    # missing grades: blend the nearest available ones
    assert grade_blend(1.5, [0, 3]) == {0: 0.5, 3: 0.5}


def test_batches_hold_equal_severities_and_at_most_batch_size_photos():
    from trialsim.render.sdxl import plan_batches

    plan = plan_batches([1.5, 0.5, 1.5, 1.5, 0.5, 1.5], 3)
    assert plan == [(0.5, [1, 4]), (1.5, [0, 2, 3]), (1.5, [5])]
    assert plan_batches([], 8) == []


def test_quantised_severity_steps_of_0_05_and_clips_to_0_3():
    assert quantise_severity(1.512, 0.05) == 1.5
    assert quantise_severity(1.526, 0.05) == 1.55
    assert quantise_severity(-0.2, 0.05) == 0.0
    assert quantise_severity(3.7, 0.05) == 3.0
    assert quantise_severity(1.234567, 0) == 1.234567


def test_lora_specs_accept_grade_paths_or_one_path_and_reject_mixtures():
    assert parse_lora_specs(["0=a", "acne3=b"]) == [(0, "a"), (3, "b")]
    assert parse_lora_specs(["only/one"]) == [(None, "only/one")]
    for bad in (["5=a"], ["1=a", "1=b"], ["a", "1=b"]):
        with pytest.raises(BadInput):
            parse_lora_specs(bad)


def _one_day_job(proto, severity: float):
    """The first patient with one photo, on a day whose latent severity is ``severity``."""
    job = simulate_truth(proto)[0]
    job.days = job.days.copy()
    job.days["severity_latent"] = severity
    job.images = job.images.iloc[[1]].assign(image=lambda d: d["image"] + ".jpg").reset_index(drop=True)
    return job


def _anchor_renderer(tiny, tmp_path, **kw) -> SDXLRenderer:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    Image.fromarray(np.full((80, 80, 3), 180, np.uint8)).save(photos / "face.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "no GPU, slow" warning
        return SDXLRenderer.from_options(
            protocol_from_dict(_protocol_dict()),
            base_model=str(tiny["base"]),
            lora=[f"{g}={p}" for g, p in tiny["loras"].items()],
            mode="anchor",
            base_photos=str(photos),
            **kw,
        )


def test_adapter_weights_used_for_severity_1_5_are_half_grade_1_half_grade_2(tiny, tmp_path):
    from safetensors.torch import load_file

    proto = protocol_from_dict(_protocol_dict())
    job = _one_day_job(proto, 1.5)
    r = _anchor_renderer(tiny, tmp_path)
    assert r.lora_blend_ is not None and r.lora_blend_.adapters == ["acne0", "acne1", "acne2", "acne3"]
    out = list(r.render_patient(job))
    assert len(out) == 1 and out[0].data is not None
    assert r.adapter_weights_ == {1.5: {"acne1": 0.5, "acne2": 0.5}}
    assert r.lora_blend_.active == {"acne1": 0.5, "acne2": 0.5}

    # every adapted UNet weight is W0 + 0.5·B1A1 + 0.5·B2A2, computed here from the files alone
    # (the LoRAs were saved without alphas, so peft's scaling alpha/rank is 1)
    base = load_file(str(Path(tiny["base"]) / "unet" / "diffusion_pytorch_model.safetensors"))
    lora = {g: load_file(str(tiny["loras"][g] / "pytorch_lora_weights.safetensors")) for g in (1, 2)}
    modules = dict(r.pipe.unet.named_modules())
    keys = [k[len("unet.") : -len(".lora_A.weight")] for k in lora[1] if k.endswith(".lora_A.weight")]
    assert len(keys) >= 8
    for name in keys:
        expected = base[name + ".weight"].float()
        for g in (1, 2):
            expected = expected + 0.5 * (
                lora[g][f"unet.{name}.lora_B.weight"].float() @ lora[g][f"unet.{name}.lora_A.weight"].float()
            )
        got = modules[name].weight.detach().float()
        assert type(modules[name]).__name__ == "Linear"  # peft's wrapper is gone
        assert np.abs((got - expected).numpy()).max() < 1e-5, name


def test_folded_loras_render_what_peft_renders_and_forget_earlier_blends(tiny, tmp_path):
    seeds = [11, 12]
    pixels = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    folded = _anchor_renderer(tiny, tmp_path)
    peft = _anchor_renderer(tiny, tmp_path, merge_loras=False)
    assert peft.lora_blend_ is None
    first = folded.render_batch(pixels, 1.5, seeds)
    # the same pixels as peft's unmerged adapters (up to float rounding)
    diff = np.abs(first.astype(int) - peft.render_batch(pixels, 1.5, seeds).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    # the LoRAs change the picture, so the comparison above is not vacuous
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = SDXLRenderer.from_options(
            protocol_from_dict(_protocol_dict()), base_model=str(tiny["base"]), mode="anchor"
        )
    assert np.abs(plain.render_batch(pixels, 1.5, seeds).astype(int) - first.astype(int)).max() > 10
    # back to 1.5 after other blends: identical bytes (W0 is kept, nothing accumulates)
    for sev in (2.75, 0.0, 3.0):
        folded.render_batch(pixels, sev, seeds)
    assert np.array_equal(folded.render_batch(pixels, 1.5, seeds), first)


def test_text_encoder_loras_are_folded_too(tiny, tmp_path):
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    loras = {g: tiny_sdxl.save_lora_with_text_encoders(tiny["base"], tmp_path / f"te{g}", seed=200 + g) for g in (1, 2)}
    specs = [f"{g}={p}" for g, p in loras.items()]
    pixels = np.random.default_rng(2).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        proto = protocol_from_dict(_protocol_dict())
        folded = SDXLRenderer.from_options(proto, base_model=str(tiny["base"]), lora=specs, mode="anchor")
        peft = SDXLRenderer.from_options(
            proto, base_model=str(tiny["base"]), lora=specs, mode="anchor", merge_loras=False
        )
    assert folded.lora_blend_ is not None
    assert not any(
        isinstance(m, LoraLayer)
        for c in ("unet", "text_encoder", "text_encoder_2")
        for m in getattr(folded.pipe, c).modules()
    )
    a = folded.render_batch(pixels, 1.5, [7])
    b = peft.render_batch(pixels, 1.5, [7])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # the text encoder's projection carries the blend, computed from the files alone
    te = load_file(str(Path(tiny["base"]) / "text_encoder" / "model.safetensors"))
    files = {g: load_file(str(p / "pytorch_lora_weights.safetensors")) for g, p in loras.items()}
    name = "encoder.layers.0.self_attn.q_proj"  # as the files name it (the model may nest it deeper)
    expected = te[name + ".weight"].float()
    for g in (1, 2):
        expected = expected + 0.5 * (
            files[g][f"text_encoder.{name}.lora_B.weight"].float()
            @ files[g][f"text_encoder.{name}.lora_A.weight"].float()
        )
    [got] = [
        m.weight.detach().float()
        for n, m in folded.pipe.text_encoder.named_modules()
        if n == name or n.endswith("." + name)
    ]
    assert np.abs((got - expected).numpy()).max() < 1e-5


def test_bf16_runs_the_vae_without_the_fp32_round_trip(tiny, tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    r16 = _anchor_renderer(tiny, tmp_path, dtype="bf16")
    r32 = _anchor_renderer(tiny, tmp_path)
    assert r32.pipe.vae.config.force_upcast  # SDXL's own VAE config asks for the fp32 upcast
    assert not r16.pipe.vae.config.force_upcast
    import torch

    assert r16.pipe.vae.dtype == torch.bfloat16 and r16.pipe.unet.dtype == torch.bfloat16
    a, b = r16.render_batch(pixels, 1.5, [9]), r32.render_batch(pixels, 1.5, [9])
    assert r16.pipe.vae.dtype == torch.bfloat16  # no switch to fp32 during the call
    # the same picture up to bf16 rounding (about 1.5 levels; another seed differs by about 40)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 12


def test_loras_that_cannot_be_folded_run_through_peft_layers(tiny, tmp_path):
    """A LoRA on 3×3 convolutions (LoCon-style) is not folded: peft's layers carry it instead."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft.tuners.lora import LoraLayer

    unet = UNet2DConditionModel.from_pretrained(str(tiny["base"]), subfolder="unet")
    assert tuple(unet.down_blocks[0].resnets[0].conv1.kernel_size) == (3, 3)
    folders = {}
    for g in (1, 2):
        folders[g] = tmp_path / f"conv{g}"
        tiny_sdxl.save_lora(unet, folders[g], seed=300 + g, scale=0.3, targets=("to_q", "to_v", "conv1", "conv2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = SDXLRenderer.from_options(
            protocol_from_dict(_protocol_dict()),
            base_model=str(tiny["base"]),
            lora=[f"{g}={p}" for g, p in folders.items()],
            mode="anchor",
            fuse_qkv=False,
        )
    assert r.lora_blend_ is None
    layers = [m for m in r.pipe.unet.modules() if isinstance(m, LoraLayer)]
    assert layers
    pixels = np.random.default_rng(4).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    out = r.render_batch(pixels, 1.5, [5])
    assert out.shape == pixels.shape
    conv = next(m for m in layers if "acne1" in m.scaling and isinstance(m.get_base_layer(), torch.nn.Conv2d))
    assert conv.scaling["acne1"] == pytest.approx(0.5) and conv.scaling["acne2"] == pytest.approx(0.5)


def test_fused_qkv_projections_carry_the_lora_blend(tiny, tmp_path):
    seeds = [3, 4]
    pixels = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    fused = _anchor_renderer(tiny, tmp_path, fuse_qkv=True)
    plain = _anchor_renderer(tiny, tmp_path, fuse_qkv=False)
    assert fused.fuse_qkv_ and not plain.fuse_qkv_
    assert any(hasattr(m, "to_qkv") for m in fused.pipe.unet.modules())
    for sev in (1.5, 0.3, 2.75):  # each new blend must reach the fused weights
        a, b = fused.render_batch(pixels, sev, seeds), plain.render_batch(pixels, sev, seeds)
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, sev
    with pytest.raises(BadInput, match="fused"):
        _anchor_renderer(tiny, tmp_path, fuse_qkv=True, merge_loras=False)


# ---------------------------------------------------------------- end to end through the CLI


@pytest.mark.parametrize("mode", ["anchor", "refine"])
def test_simulate_renderer_sdxl_writes_a_complete_dataset(tiny, tmp_path, mode):
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(_protocol_dict()))
    out = tmp_path / "out"
    res = _simulate(
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
            *_lora_args(tiny),
        ]
    )
    assert res.exit_code == 0, res.output
    man = pd.read_csv(out / "manifest.csv")
    assert len(man) == 6 and man["patient_id"].nunique() == 2 and sorted(man["day"].unique()) == [1, 2, 3]
    for rel in man["image"]:
        with Image.open(out / rel) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    lesions = pd.read_csv(out / "lesions.csv")
    proto = protocol_from_dict(_protocol_dict())
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
    proto_path.write_text(yaml.safe_dump(_protocol_dict()))
    res = _simulate(
        [
            str(proto_path),
            "--out",
            str(tmp_path / "out"),
            "--renderer",
            "sdxl",
            "--base-model",
            str(tiny["base"]),
            *_lora_args(tiny),
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
        ]
    )
    assert res.exit_code == 2 and not (tmp_path / "out").exists()
    assert seen["name"] == "sdxl" and seen["refine_method"] == "inpaint" and seen["batch_size"] == 3
    assert seen["severity_step"] == 0.1 and seen["compile"] is True and seen["vae"] == "/models/vae-fp16-fix"
    assert seen["dtype"] == "bf16"
    assert seen["lora"] == [a.split("=", 1)[1] for a in _lora_args(tiny)]


def test_cli_inpaint_refine_with_batch_1_and_exact_severities_writes_the_dataset(tiny, tmp_path):
    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump(_protocol_dict()))
    out = tmp_path / "out"
    res = _simulate(
        [
            str(proto_path),
            "--out",
            str(out),
            "--renderer",
            "sdxl",
            "--base-model",
            str(tiny["base"]),
            *_lora_args(tiny),
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
    proto_path.write_text(yaml.safe_dump(_protocol_dict()))
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
        *_lora_args(tiny),
    ]
    assert _simulate(args).exit_code == 0
    man = pd.read_csv(out / "manifest.csv")
    keep = out / man["image"][0]
    gone = out / man["image"][3]
    keep_bytes, keep_mtime = keep.read_bytes(), keep.stat().st_mtime_ns
    gone.unlink()
    (out / "manifest.csv").unlink()
    res = _simulate(args + ["--resume"])
    assert res.exit_code == 0, res.output
    assert gone.exists() and keep.read_bytes() == keep_bytes and keep.stat().st_mtime_ns == keep_mtime
    assert pd.read_csv(out / "manifest.csv").equals(man)


@pytest.mark.slow
def test_same_seed_gives_the_same_pixels_whatever_the_batch_size(tiny, tmp_path):
    proto = protocol_from_dict(
        dict(_protocol_dict(), rendering={"renderer": "sdxl", "image_size": SIZE, "nuisance": 0.0})
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
    for a, b in zip(px[1], px[3]):
        assert np.abs(a - b).mean() < 1.0  # JPEG of float-level differences: under one grey level


@pytest.mark.slow
def test_inpaint_refine_changes_pixels_only_near_lesions(tiny):
    proto = protocol_from_dict(
        dict(_protocol_dict(), rendering={"renderer": "sdxl", "image_size": SIZE, "nuisance": 0.0})
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
    proto_path.write_text(yaml.safe_dump(_protocol_dict()))
    out = tempfile.mkdtemp(dir=tmp_path, prefix="out")
    return _simulate([str(proto_path), "--out", out, "--renderer", "sdxl", *extra], env=env)


def test_missing_base_model_folder_exits_2_naming_the_path(tiny, tmp_path):
    missing = tmp_path / "no" / "such" / "sdxl"
    res = _bad(tiny, tmp_path, ["--base-model", str(missing), *_lora_args(tiny)])
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
    import torch
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
                protocol_from_dict(_protocol_dict()), base_model=str(tiny["base"]), lora=[f"1={tiny['loras'][1]}"]
            )
    assert "wrong LoRA layout" not in str(err.value) and err.value.field == "--lora 1=" + str(tiny["loras"][1])


def test_missing_lora_path_and_bad_grade_exit_2(tiny, tmp_path):
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora=1={tmp_path / 'nope'}"])
    assert res.exit_code == 2 and str(tmp_path / "nope") in res.output
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), f"--lora=7={tiny['loras'][0]}"])
    assert res.exit_code == 2 and "0, 1, 2 or 3" in res.output


def test_hub_ids_without_network_exit_2_naming_the_cache(tiny, tmp_path):
    env = {"HF_HUB_OFFLINE": "1"}
    res = _bad(tiny, tmp_path, ["--base-model", "nobody-here/sdxl-missing", *_lora_args(tiny)], env=env)
    assert res.exit_code == 2, res.output
    assert "nobody-here/sdxl-missing" in res.output and "cache" in res.output
    res = _bad(tiny, tmp_path, ["--base-model", str(tiny["base"]), "--lora=1=nobody-here/acne1-lora"], env=env)
    assert res.exit_code == 2, res.output
    assert "nobody-here/acne1-lora" in res.output and "pytorch_lora_weights.safetensors" in res.output
    # without HF_HUB_OFFLINE: fails fast too (no network here; with network the repo does not exist)
    import time

    t0 = time.perf_counter()
    res = _bad(
        tiny, tmp_path, ["--base-model", "nobody-here/sdxl-missing", *_lora_args(tiny)], env={"HF_HUB_OFFLINE": None}
    )
    assert res.exit_code == 2, res.output
    assert "nobody-here/sdxl-missing" in res.output and time.perf_counter() - t0 < 60


def test_without_gpu_warns_that_it_will_be_slow(tiny):
    import torch

    proto = protocol_from_dict(_protocol_dict())
    if torch.cuda.is_available():  # on a GPU machine the CPU is still chosen when asked for
        with pytest.warns(RuntimeWarning, match="slow"):
            r = SDXLRenderer.from_options(proto, base_model=str(tiny["base"]), device="cpu")
    else:
        with pytest.warns(RuntimeWarning, match="slow"):
            r = SDXLRenderer.from_options(proto, base_model=str(tiny["base"]))
    assert r.device.type == "cpu"


def test_with_a_gpu_there_is_no_slow_warning(tiny):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = SDXLRenderer.from_options(protocol_from_dict(_protocol_dict()), base_model=str(tiny["base"]))
    assert r.device.type == "cuda" and not [w for w in caught if "slow" in str(w.message)]


def test_the_constructor_loads_nothing_and_from_options_checks_before_loading(tiny, tmp_path):
    proto = protocol_from_dict(_protocol_dict())
    r = SDXLRenderer(proto, SDXLOptions(base_model=str(tmp_path / "nothing-here")))
    assert r.pipe is None and r.options.base_model.endswith("nothing-here")
    with pytest.raises(BadInput, match="--base-model"):
        SDXLRenderer.from_options(proto, r.options)
    with pytest.raises(BadInput, match="--sdxl-batch-size"):
        SDXLRenderer.from_options(proto, base_model=str(tiny["base"]), batch_size=0)


def test_adapter_weights_are_kept_per_severity_not_per_image(tiny, tmp_path):
    proto = protocol_from_dict(
        {
            **_protocol_dict(),
            "patients": {"n": 1},
            "schedule": {"design": "fixed", "sequence": "A", "blocks": 6, "period_days": 5, "run_in_days": 1},
        }
    )
    job = simulate_truth(proto)[0]
    job.images = job.images.assign(image=lambda d: d["image"] + ".jpg")
    r = _anchor_renderer(tiny, tmp_path, severity_step=0.5)
    r.render_batch = lambda pixels, severity, seeds, masks=None: pixels  # the pipeline is not under test
    out = list(r.render_patient(job))
    severities = {quantise_severity(s, 0.5) for s in job.days["severity_latent"]}
    assert len(out) > 20 and all(o.data is not None for o in out)
    assert len(r.adapter_weights_) <= len(severities) <= 7
    assert all(r.adapter_weights_[s] == r.adapter_weights(s) for s in r.adapter_weights_)


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
    assert json.loads((tmp_path / "bench.json").read_text())["best"] == result["best"]
    assert '"goal_met"' in capsys.readouterr().out
