"""Mixed batches: photos of different severities in one SDXL call, each with its own adapter weights (CPU)."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_sdxl
from sdxl_common import SIZE, protocol_dict, tiny

from trialsim.errors import BadInput
from trialsim.protocol import protocol_from_dict
from trialsim.render.sdxl import SDXLRenderer, plan_batches
from trialsim.render.sdxl.batching import plan_mixed
from trialsim.simulate import simulate_truth

__all__ = ["tiny"]  # the module-scoped fixture, used by name

SEVERITIES = [0.3, 1.7, 2.4]  # three different blends: grades 0+1, 1+2, 2+3
# attention projections (fused into one q/k/v product when asked), a 1×1 convolution (the
# resnets' shortcut), a linear layer on 2-D input (time embedding) and the transformers' proj_in
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv_shortcut", "time_emb_proj", "proj_in")


@pytest.fixture(scope="module")
def loras(tiny) -> list[str]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny["base"]), subfolder="unet")
    folders = {
        g: tiny_sdxl.save_lora(unet, tiny["root"] / "mixed" / f"acne{g}", seed=400 + g, targets=TARGETS)
        for g in range(4)
    }
    return [f"{g}={p}" for g, p in folders.items()]


def renderer(tiny, lora: list[str], **kw) -> SDXLRenderer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "no GPU, slow" warning
        return SDXLRenderer.from_options(
            protocol_from_dict(protocol_dict()),
            base_model=str(tiny["base"]),
            lora=lora,
            mode="anchor",
            **{"steps": 10, **kw},
        )


def alone(r: SDXLRenderer, pixels: np.ndarray, seeds: list[int], severities=SEVERITIES) -> np.ndarray:
    """Each photo in its own call, with its own blend set by ``set_adapters``."""
    return np.concatenate([r.render_batch(pixels[i : i + 1], s, [seeds[i]]) for i, s in enumerate(severities)])


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding (the uint8 outputs before JPEG)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return bool(diff.max() <= 2 and diff.mean() < 0.05)


def test_a_mixed_batch_renders_each_photo_as_set_adapters_renders_it_alone(tiny, loras):
    import torch
    from peft.tuners.lora import LoraLayer

    pixels = np.random.default_rng(7).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    seeds = [21, 22, 23]
    reference = renderer(tiny, loras, merge_loras=False, batching="by-weight")
    assert reference.lora_blend_ is None and reference.batching_ == "by-weight"
    expected = alone(reference, pixels, seeds)
    # the blends matter: a photo rendered at another photo's severity is far from its own
    swapped = alone(reference, pixels, seeds, severities=SEVERITIES[::-1])
    assert np.abs(swapped[0].astype(int) - expected[0].astype(int)).max() > 10

    folded = renderer(tiny, loras)  # default: folded LoRAs, mixed batches through per-sample hooks
    assert folded.batching_ == "mixed" and folded.lora_blend_ is not None and folded.severity_step_ == 0.0
    assert close(folded.render_batch(pixels, SEVERITIES, seeds), expected)
    # outside a batch the hooks add nothing: the UNet holds W0 and runs as the base model
    assert folded._sample_lora._photos == 0
    assert folded.lora_blend_.active is None or folded.lora_blend_._state["unet"] == {}

    fused = renderer(tiny, loras, fuse_qkv=True)  # the q/k/v deltas go through the fused projection
    assert fused.fuse_qkv_ and any(hasattr(m, "to_qkv") for m in fused.pipe.unet.modules())
    assert close(fused.render_batch(pixels, SEVERITIES, seeds), expected)

    peft = renderer(tiny, loras, merge_loras=False)  # peft's layers with per-sample scaling tensors
    assert peft.batching_ == "mixed" and peft.lora_blend_ is None
    assert close(peft.render_batch(pixels, SEVERITIES, seeds), expected)
    layers = [m for m in peft.pipe.unet.modules() if isinstance(m, LoraLayer)]
    assert layers and all(not isinstance(v, torch.Tensor) for m in layers for v in m.scaling.values())
    # back to one blend after a mixed batch: set_adapters' weights again, not the mixed ones
    assert close(peft.render_batch(pixels[1:2], 1.7, [22]), expected[1:2])


def test_mixed_batches_without_guidance_and_with_text_encoder_loras(tiny, tmp_path):
    loras = {g: tiny_sdxl.save_lora_with_text_encoders(tiny["base"], tmp_path / f"te{g}", seed=500 + g) for g in (1, 2)}
    specs = [f"{g}={p}" for g, p in loras.items()]
    pixels = np.random.default_rng(8).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    severities, seeds = [1.2, 1.9], [31, 32]
    for guidance in (12.0, 1.0):  # two UNet rows per photo with classifier-free guidance, one without
        reference = renderer(tiny, specs, merge_loras=False, batching="by-weight", guidance=guidance)
        expected = alone(reference, pixels, seeds, severities)
        mixed = renderer(tiny, specs, guidance=guidance)
        assert mixed.lora_blend_ is not None and mixed._text_loras
        assert close(mixed.render_batch(pixels, severities, seeds), expected), guidance


def test_mixed_batches_are_full_but_the_last_one_of_each_patient(tiny, loras):
    proto = protocol_from_dict(
        {
            **protocol_dict(),
            "patients": {"n": 2},
            "schedule": {"design": "fixed", "sequence": "A", "blocks": 3, "period_days": 4, "run_in_days": 1},
        }
    )
    jobs = simulate_truth(proto)
    calls: dict[str, list] = {"mixed": [], "by-weight": []}
    for batching, seen in calls.items():
        r = renderer(tiny, loras, batching=batching, batch_size=4, severity_step=0.05)

        def spy(pixels, severity, seeds, masks=None, seen=seen):
            seen.append(list(severity))
            return pixels

        r.render_batch = spy  # the batch plan is under test, not the pipeline
        for job in jobs:
            job.images = job.images.assign(image=lambda d: d["image"].str.removesuffix(".jpg") + ".jpg")
            assert all(o.data is not None for o in r.render_patient(job))
            seen.append("end of patient")
    per_patient = [len(j.images) for j in jobs]
    assert min(per_patient) >= 13  # enough photos for several batches per patient
    sizes = [len(c) if c != "end of patient" else c for c in calls["mixed"]]
    expected = []
    for n in per_patient:
        expected += [4] * (n // 4) + ([n % 4] if n % 4 else []) + ["end of patient"]
    assert sizes == expected
    assert any(len(set(c)) > 1 for c in calls["mixed"] if c != "end of patient")  # severities do mix
    # by-weight: one severity per call, so the rounding step limits the fill
    by_weight = [c for c in calls["by-weight"] if c != "end of patient"]
    assert all(len(set(c)) == 1 for c in by_weight) and len(by_weight) > len(sizes) - len(jobs)


def test_plan_mixed_fills_batches_in_photo_order():
    assert plan_mixed(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan_mixed(0, 4) == [] and plan_mixed(3, 8) == [[0, 1, 2]]
    # the by-weight plan of the same photos needs more calls when severities differ
    assert len(plan_batches([0.1, 0.2, 0.3, 0.4], 4)) == 4 > len(plan_mixed(4, 4))


@pytest.mark.slow
def test_mixed_batches_give_the_same_pixels_whatever_the_batch_size(tiny, loras):
    proto = protocol_from_dict(
        dict(protocol_dict(), rendering={"renderer": "sdxl", "image_size": SIZE, "nuisance": 0.0})
    )
    job = simulate_truth(proto)[0]
    job.images = job.images.assign(image=job.images["image"] + ".jpg")
    job.days = job.days.assign(severity_latent=SEVERITIES)  # three blends: one mixed batch of 3 vs 3 of 1
    px = {}
    for bs in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = SDXLRenderer.from_options(
                proto, base_model=str(tiny["base"]), lora=loras, mode="refine", batch_size=bs, steps=10
            )
        assert r.batching_ == "mixed"
        px[bs] = [np.asarray(Image.open(io.BytesIO(x.data)), dtype=float) for x in r.render_patient(job)]
    # as for one severity (tests/test_sdxl_cli.py): float-level differences become a grey level or two
    # after JPEG, while another photo's noise or severity differs by far more
    diff = np.array([[np.abs(a - b).mean() for b in px[3]] for a in px[1]])
    assert np.all(np.diag(diff) < 2.0), diff
    assert np.all(np.diag(diff) < 0.5 * np.min(diff + np.diag(np.full(len(diff), np.inf)), axis=1)), diff


def test_by_weight_batching_refuses_photos_of_different_blends(tiny, loras):
    r = renderer(tiny, loras, batching="by-weight")
    assert r.severity_step_ == 0.05  # the rounding that lets photos share a by-weight batch
    pixels = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="one severity per call"):
        r.render_batch(pixels, [0.3, 1.7], [1, 2])


def test_dora_loras_are_not_mixed_exactly_so_auto_falls_back_and_mixed_is_refused(tiny, loras, monkeypatch):
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from trialsim.render.sdxl import persample
    from trialsim.render.sdxl import renderer as renderer_module

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    plain = inject_adapter_in_model(LoraConfig(r=2, target_modules=["proj"]), Two())
    dora = inject_adapter_in_model(LoraConfig(r=2, target_modules=["proj"], use_dora=True), Two())
    assert persample.peft_exact(plain) and not persample.peft_exact(dora)
    # the renderer asks the same question of its UNet when the LoRAs run through peft's layers
    monkeypatch.setattr(renderer_module, "peft_exact", lambda unet: False)
    assert renderer(tiny, loras, merge_loras=False).batching_ == "by-weight"
    with pytest.raises(BadInput, match="mixed batches") as err:
        renderer(tiny, loras, merge_loras=False, batching="mixed")
    assert err.value.field == "--sdxl-batching"


@pytest.mark.slow
def test_a_compiled_unet_runs_mixed_batches_in_one_graph_that_new_severities_reuse(tiny, loras):
    import torch
    from torch._dynamo.utils import counters

    pixels = np.random.default_rng(9).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    seeds = [41, 42, 43]
    r = renderer(tiny, loras, fuse_qkv=True, steps=3, strength=0.5)
    batches = (SEVERITIES, [2.9, 0.1, 1.0], [1.25, 1.5, 2.75])
    eager = [r.render_batch(pixels, severities, seeds) for severities in batches]
    torch._dynamo.reset()
    counters.clear()
    # torch's graph capture alone (no C++ compiler on a CPU test machine), of the UNet's middle
    # block (attention with fused q/k/v, proj_in, resnets) to keep the test short: the hooks
    # must trace into the graph, and new per-photo weights must reuse it
    r.pipe.unet.mid_block.compile(backend="eager")
    try:
        for severities, expected in zip(batches, eager):
            assert np.array_equal(r.render_batch(pixels, severities, seeds), expected), severities
        assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    finally:
        torch._dynamo.reset()
