"""The SDXL renderer on a tiny random SDXL pipeline: severity blends, folded LoRAs, loading (CPU, no downloads)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_sdxl
from sdxl_common import SIZE, anchor_renderer, one_day_job, protocol_dict, tiny

from trialsim.errors import BadInput
from trialsim.protocol import protocol_from_dict
from trialsim.render.sdxl import SDXLOptions, SDXLRenderer, grade_blend, parse_lora_specs, quantise_severity
from trialsim.simulate import simulate_truth

__all__ = ["tiny"]  # the module-scoped fixture, used by name

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


def test_adapter_weights_used_for_severity_1_5_are_half_grade_1_half_grade_2(tiny, tmp_path):
    from safetensors.torch import load_file

    proto = protocol_from_dict(protocol_dict())
    job = one_day_job(proto, 1.5)
    r = anchor_renderer(tiny, tmp_path, batching="by-weight")  # one blend per call: folded into the UNet
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
    folded = anchor_renderer(tiny, tmp_path)
    peft = anchor_renderer(tiny, tmp_path, merge_loras=False)
    assert peft.lora_blend_ is None
    first = folded.render_batch(pixels, 1.5, seeds)
    # the same pixels as peft's unmerged adapters (up to float rounding)
    diff = np.abs(first.astype(int) - peft.render_batch(pixels, 1.5, seeds).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    # the LoRAs change the picture, so the comparison above is not vacuous
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = SDXLRenderer.from_options(
            protocol_from_dict(protocol_dict()), base_model=str(tiny["base"]), mode="anchor"
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
        proto = protocol_from_dict(protocol_dict())
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
    r16 = anchor_renderer(tiny, tmp_path, dtype="bf16")
    r32 = anchor_renderer(tiny, tmp_path)
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
            protocol_from_dict(protocol_dict()),
            base_model=str(tiny["base"]),
            lora=[f"{g}={p}" for g, p in folders.items()],
            mode="anchor",
            fuse_qkv=False,
            batching="by-weight",  # one blend per call, set through peft's scalings
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
    fused = anchor_renderer(tiny, tmp_path, fuse_qkv=True)
    plain = anchor_renderer(tiny, tmp_path, fuse_qkv=False)
    assert fused.fuse_qkv_ and not plain.fuse_qkv_
    assert any(hasattr(m, "to_qkv") for m in fused.pipe.unet.modules())
    for sev in (1.5, 0.3, 2.75):  # each new blend must reach the fused weights
        a, b = fused.render_batch(pixels, sev, seeds), plain.render_batch(pixels, sev, seeds)
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, sev
    with pytest.raises(BadInput, match="fused"):
        anchor_renderer(tiny, tmp_path, fuse_qkv=True, merge_loras=False)


def test_without_gpu_warns_that_it_will_be_slow(tiny):
    import torch

    proto = protocol_from_dict(protocol_dict())
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
        r = SDXLRenderer.from_options(protocol_from_dict(protocol_dict()), base_model=str(tiny["base"]))
    assert r.device.type == "cuda" and not [w for w in caught if "slow" in str(w.message)]


def test_the_constructor_loads_nothing_and_from_options_checks_before_loading(tiny, tmp_path):
    proto = protocol_from_dict(protocol_dict())
    r = SDXLRenderer(proto, SDXLOptions(base_model=str(tmp_path / "nothing-here")))
    assert r.pipe is None and r.options.base_model.endswith("nothing-here")
    with pytest.raises(BadInput, match="--base-model"):
        SDXLRenderer.from_options(proto, r.options)
    with pytest.raises(BadInput, match="--sdxl-batch-size"):
        SDXLRenderer.from_options(proto, base_model=str(tiny["base"]), batch_size=0)


def test_adapter_weights_are_kept_per_severity_not_per_image(tiny, tmp_path):
    proto = protocol_from_dict(
        {
            **protocol_dict(),
            "patients": {"n": 1},
            "schedule": {"design": "fixed", "sequence": "A", "blocks": 6, "period_days": 5, "run_in_days": 1},
        }
    )
    job = simulate_truth(proto)[0]
    job.images = job.images.assign(image=lambda d: d["image"] + ".jpg")
    r = anchor_renderer(tiny, tmp_path, severity_step=0.5)
    r.render_batch = lambda pixels, severity, seeds, masks=None: pixels  # the pipeline is not under test
    out = list(r.render_patient(job))
    severities = {quantise_severity(s, 0.5) for s in job.days["severity_latent"]}
    assert len(out) > 20 and all(o.data is not None for o in out)
    assert len(r.adapter_weights_) <= len(severities) <= 7
    assert all(r.adapter_weights_[s] == r.adapter_weights(s) for s in r.adapter_weights_)
