"""SDXL img2img throughput: the seed project's way vs trialsim's SDXL renderer, in one process.

Both run the seed project's settings (1024 px, 30 UniPC steps × strength 0.1, CFG 12,
per-grade LoRAs) on a random-weight, full-size SDXL built from SDXL base 1.0's configs
(speed does not depend on the weight values; nothing is downloaded):

* ``seed``: batch 1, PIL in / PIL out, the pipeline reloaded from disk for each grade
  (``from_pretrained`` + ``load_lora_weights``), the VAE upcast to fp32 as SDXL's config says;
* ``trialsim``: :class:`trialsim.render.sdxl.SDXLRenderer` — one pipeline with all four
  LoRAs, severity 1.5 (grades 1 and 2 at weight 0.5), batches, tensor in/out, an fp16 VAE
  without upcast (what an fp16-fix VAE allows), channels-last on CUDA. Three runs:
  ``trialsim_eager`` (LoRAs folded into the weights), ``trialsim_peft_layers`` (the same
  through peft's adapter layers and unfused projections, for comparison) and
  ``trialsim_compiled_b{B}`` (folded LoRAs, ``torch.compile`` of the UNet and the VAE's
  encoder and decoder, one fresh static compile per batch size; skipped on the CPU).
  On CUDA the q/k/v projections are fused (one matrix product per attention).

Prints one JSON object: seconds per image for each way, the reload cost, one CFG UNet
step, compile time (reported separately as the first call), what a new severity costs
(and whether it compiled anything new), the speed-ups over the seed project's batch 1, and
how full the batches of the anchor trial are at each severity step and with mixed batches.
``--out FILE`` rewrites the JSON after every stage, so a run cut short keeps what it
measured. ``--tiny`` builds the tiny test model instead (a minute on a CPU, to check the
script works).

``--whole-trial`` measures what a user waits for instead: the anchor trial
(``protocols/anchor_sim_acne.yaml``, 10 patients × 140 photos) rendered end to end by
``trialsim simulate --renderer sdxl --sdxl-mode anchor`` (model load, ``torch.compile`` on
CUDA, every batch, nuisance, JPEG and dataset files), with mixed batches and optionally
by-weight ones (``--by-weight-too``); JSON: photos, pipeline calls, mean batch fill,
seconds and seconds per photo, each with the model load and compile included.

    python bench/bench_sdxl.py                  # on a GPU: the real measurement
    python bench/bench_sdxl.py --tiny           # CPU smoke run
    python bench/bench_sdxl.py --whole-trial    # on a GPU: the anchor trial end to end
    python bench/bench_sdxl.py --whole-trial --tiny --by-weight-too   # CPU smoke run of it
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import tiny_sdxl  # noqa: E402

# SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0) component configs
SDXL_UNET = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    center_input_sample=False,
    cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,
    sample_size=128,
    transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)
SDXL_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
SDXL_TEXT = dict(  # CLIP ViT-L/14 text tower
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
SDXL_TEXT_2 = dict(  # OpenCLIP ViT-bigG/14 text tower
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=1280,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
PROMPT = "photo of a person with acne{grade}, portrait, close-up, cheek, detailed, HQ, photo, 4k"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_model(folder: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> Path:
    """Save a random-weight SDXL pipeline folder and four per-grade LoRA folders under ``folder``."""
    if tiny:
        comps = tiny_sdxl.build_components(tokenizer_dir=folder / "tok")
    else:
        with torch.device(device):  # initialising 3.5 B parameters on the CPU takes minutes
            comps = tiny_sdxl.build_components(
                SDXL_UNET, SDXL_VAE, SDXL_TEXT, SDXL_TEXT_2, tokenizer_dir=folder / "tok"
            )
    for k in ("unet", "vae", "text_encoder", "text_encoder_2"):
        comps[k].to(dtype=dtype)
    base = tiny_sdxl.save_tiny_sdxl(folder / "base", components=comps)
    for g in range(4):
        tiny_sdxl.save_lora(comps["unet"], folder / "loras" / f"acne{g}", seed=100 + g, rank=4, scale=0.01)
    del comps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return base


def seed_way(
    base: Path,
    loras: Path,
    size: int,
    n_per_grade: int,
    steps: int,
    strength: float,
    guidance: float,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """Batch 1, PIL in/out, pipeline reloaded per grade (as the seed project's notebook does)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, UniPCMultistepScheduler
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    loads, per_image, first = [], [], None
    t_all = time.perf_counter()
    for g in range(4):
        sync(device)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(base), torch_dtype=dtype, add_watermarker=False)
            pipe.load_lora_weights(str(loras / f"acne{g}"), weight_name="pytorch_lora_weights.safetensors")
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        sync(device)
        loads.append(time.perf_counter() - t0)
        for i in range(n_per_grade + (1 if g == 0 else 0)):
            sync(device)
            t0 = time.perf_counter()
            pipe(
                prompt=PROMPT.format(grade=g),
                image=photo,
                strength=strength,
                guidance_scale=guidance,
                num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(i),
                output_type="pil",
            ).images[0]
            sync(device)
            dt = time.perf_counter() - t0
            if g == 0 and i == 0:
                first = dt  # warm-up (CUDA context, kernels, allocator)
            else:
                per_image.append(dt)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    total = time.perf_counter() - t_all
    n = 4 * n_per_grade
    return {
        "s_per_image": statistics.mean(per_image),
        "s_per_image_median": statistics.median(per_image),
        "reload_s_per_grade": statistics.mean(loads),
        "first_image_s": first,
        "s_per_image_incl_reloads": (total - first) / n,
        "images": n,
    }


def unet_step_ms(pipe, size: int, device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    """One UNet call with classifier-free guidance (batch 2) at ``size`` px."""
    unet = pipe.unet
    lat = size // pipe.vae_scale_factor
    x = torch.randn(2, 4, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    pooled = torch.randn(
        2,
        unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim,
        device=device,
        dtype=dtype,
    )
    ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    with torch.inference_mode():
        for _ in range(2):
            unet(x, t, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            unet(x, t, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
        sync(device)
    return (time.perf_counter() - t0) / repeats * 1000


def anchor_settings(
    base: Path, loras: Path, steps: int, strength: float, guidance: float, dtype_name: str, device, compile_mode
) -> dict:
    """The SDXL renderer's settings both ways of this bench share: the seed's anchor mode with its
    four grade LoRAs (``loras/acne{0..3}``), no VAE upcast."""
    return {
        "base_model": str(base),
        "lora": [f"{g}={loras / f'acne{g}'}" for g in range(4)],
        "mode": "anchor",
        "steps": steps,
        "strength": strength,
        "guidance": guidance,
        "dtype": dtype_name,
        "device": str(device),
        "vae_upcast": False,
        "compile": compile_mode or False,
    }


def trialsim_way(
    base: Path,
    loras: Path,
    size: int,
    batches: list[int],
    repeats: int,
    steps: int,
    strength: float,
    guidance: float,
    device: torch.device,
    dtype_name: str,
    compile_mode,
    channels_last: bool,
    merge_loras: bool = True,
    step_ms: bool = False,
) -> dict:
    """:class:`SDXLRenderer`: one pipeline, all LoRAs, severity 1.5 (two adapters blended), batches."""
    from trialsim.protocol import protocol_from_dict
    from trialsim.render.sdxl import load_renderer as SDXLRenderer  # loads the pipeline

    proto = protocol_from_dict({"treatments": [{"label": "A"}], "rendering": {"renderer": "sdxl", "image_size": size}})
    out: dict = {
        "lora_path": "folded into the weights" if merge_loras else "peft layers (set_adapters)",
        "compile": compile_mode or False,
    }
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = SDXLRenderer(
            proto,
            **anchor_settings(base, loras, steps, strength, guidance, dtype_name, device, compile_mode),
            channels_last=channels_last,
            batch_size=max(batches),
            merge_loras=merge_loras,
        )
    sync(device)
    out["load_s"] = time.perf_counter() - t0
    out["fused_qkv"] = r.fuse_qkv_
    rng = np.random.default_rng(0)
    for b in batches:
        pixels = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
        seeds = list(range(b))
        sync(device)
        t0 = time.perf_counter()
        r.render_batch(pixels, 1.5, seeds)  # first call: compile / warm-up
        sync(device)
        warm = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            r.render_batch(pixels, 1.5, seeds)
            sync(device)
            times.append(time.perf_counter() - t0)
        out[f"batch_{b}"] = {
            "s_per_image": statistics.mean(times) / b,
            "s_per_batch": statistics.mean(times),
            "s_per_batch_min": min(times),
            "first_call_s (compile + warm-up)": warm,
        }
    # a new severity: new adapter blend and prompt embedding (with compile: must not recompile)
    graphs = _compiled_graphs()
    sync(device)
    t0 = time.perf_counter()
    r.render_batch(pixels, 0.7, seeds)
    sync(device)
    out["new_severity_batch_s"] = time.perf_counter() - t0
    out["new_severity_new_graphs"] = _compiled_graphs() - graphs
    out["adapter_weights"] = r.adapter_weights(1.5)
    if step_ms:
        out["unet_cfg_step_ms"] = unet_step_ms(r.pipe, size, device, r.dtype, repeats=max(3, repeats))
    if device.type == "cuda":
        out["max_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del r
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return out


def anchor_batch_fill(batch_size: int = 8, steps=(0.05, 0.1, 0.25, 1.0)) -> dict:
    """Pipeline calls the anchor trial (10 × 140 photos) needs at each severity step, and mixed."""
    from trialsim.protocol import load_protocol
    from trialsim.render.sdxl import plan_batches, quantise_severity
    from trialsim.render.sdxl.batching import plan_mixed
    from trialsim.simulate import simulate_truth

    jobs = simulate_truth(load_protocol(ROOT / "protocols" / "anchor_sim_acne.yaml"))
    photos = sum(len(j.images) for j in jobs)
    calls = sum(len(plan_mixed(len(j.images), batch_size)) for j in jobs)
    out = {"mixed": {"photos": photos, "pipeline_calls": calls, "photos_per_call": photos / calls}}
    for step in steps:
        calls = photos = 0
        for j in jobs:
            sev = j.days.set_index("day")["severity_latent"]
            plan = plan_batches([quantise_severity(sev[d], step) for d in j.images["day"]], batch_size)
            calls += len(plan)
            photos += len(j.images)
        out[f"step_{step:g}"] = {"photos": photos, "pipeline_calls": calls, "photos_per_call": photos / calls}
    return out


def whole_trial(
    base: Path,
    loras: Path,
    work: Path,
    size: int,
    steps: int,
    strength: float,
    guidance: float,
    device: torch.device,
    dtype_name: str,
    compile_mode,
    batch_size: int,
    batching: str,
    patients: int | None = None,
) -> dict:
    """The anchor trial end to end through ``simulate`` (anchor mode): load, compile, render, write.

    Returns photos, pipeline calls and their mean fill, and the seconds from the start of the
    load to the last file written (s / photo the same over the photos).
    """
    import yaml

    from trialsim.render.sdxl import SDXLRenderer
    from trialsim.render.sdxl.options import SDXLOptions
    from trialsim.simulate import SimulateOptions, simulate_from_options

    protocol = yaml.safe_load((ROOT / "protocols" / "anchor_sim_acne.yaml").read_text())
    if patients:
        protocol["patients"]["n"] = int(patients)
    proto_path = work / "anchor_trial.yaml"
    proto_path.write_text(yaml.safe_dump(protocol))
    sdxl = SDXLOptions(
        **anchor_settings(base, loras, steps, strength, guidance, dtype_name, device, compile_mode),
        batch_size=batch_size,
        batching=batching,
    )
    options = SimulateOptions(
        out=work / f"trial_{batching}", protocol=proto_path, renderer="sdxl", image_size=size, overwrite=True, sdxl=sdxl
    )
    sizes: list[int] = []
    render_batch = SDXLRenderer.render_batch

    def counted(self, pixels, *args, **kwargs):
        sizes.append(len(pixels))
        return render_batch(self, pixels, *args, **kwargs)

    SDXLRenderer.render_batch = counted  # type: ignore[method-assign]
    try:
        sync(device)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = simulate_from_options(options)
        sync(device)
        seconds = time.perf_counter() - t0
    finally:
        SDXLRenderer.render_batch = render_batch  # type: ignore[method-assign]
    photos = int(len(result.manifest))
    return {
        "batching": batching,
        "photos": photos,
        "pipeline_calls": len(sizes),
        "mean_batch_fill": sum(sizes) / max(1, len(sizes)),
        "batch_size": batch_size,
        "seconds": seconds,
        "s_per_photo": seconds / max(1, photos),
        "includes": "model load, compile (when on), every batch, nuisance, JPEG and dataset files",
        "compile": compile_mode or False,
        "size_px": size,
    }


def _compiled_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return -1


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random SDXL at 64 px (CPU smoke run)")
    ap.add_argument("--size", type=int, help="image size in px (default 1024, 64 with --tiny)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strength", type=float, default=0.1)
    ap.add_argument("--guidance", type=float, default=12.0)
    ap.add_argument("--seed-images-per-grade", type=int, default=None, help="default 4 (1 with --tiny)")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,8; 1,2 with --tiny)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per batch size (default 5, 1 --tiny)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (default: compile on CUDA)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip the compiled run if less than --compile-reserve-s is left of this budget",
    )
    ap.add_argument("--compile-reserve-s", type=float, default=240.0)
    ap.add_argument(
        "--compiled-batches",
        default="8,16",
        help="batch sizes for compiled runs, one fresh compile each (default 8,16)",
    )
    ap.add_argument("--whole-trial", action="store_true", help="the anchor trial end to end instead (see above)")
    ap.add_argument("--by-weight-too", action="store_true", help="--whole-trial: also with by-weight batches")
    ap.add_argument("--patients", type=int, default=None, help="--whole-trial: the first N patients (default 10)")
    ap.add_argument("--trial-batch-size", type=int, default=8, help="--whole-trial: photos per call (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", help="also write the JSON here (rewritten after each stage)")
    ap.add_argument("--workdir", help="where to save the random model (default: a temporary folder)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):  # JSON on stdout; keep stderr to real problems
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = args.size or (64 if args.tiny else 1024)
    per_grade = args.seed_images_per_grade or (1 if args.tiny else 4)
    batches = [int(b) for b in (args.batches or ("1,2" if args.tiny else "1,8")).split(",")]
    repeats = args.repeats or (1 if args.tiny else 5)
    compile_run = device.type == "cuda" and not args.no_compile
    channels_last = device.type == "cuda"
    if device.type == "cpu" and not args.tiny:
        print("bench_sdxl: no GPU; a full-size SDXL on the CPU takes hours. Use --tiny.", file=sys.stderr)

    result: dict = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "peft": __import__("peft").__version__,
        "model": "tiny random SDXL" if args.tiny else "random-weight full-size SDXL (base 1.0 configs)",
        "settings": {
            "size_px": size,
            "steps": args.steps,
            "strength": args.strength,
            "guidance": args.guidance,
            "scheduler": "UniPC",
            "dtype": str(dtype).replace("torch.", ""),
            "loras": 4,
            "severity": 1.5,
            "channels_last": channels_last,
        },
        "goal": "trialsim >= 4x the seed project's batch-1 throughput (<= 0.15 s/image on an H100)",
    }

    def stage(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as err:
            result[name] = {"error": f"{err.__class__.__name__}: {str(err)[:500]}"}
        result.setdefault("stage_s", {})[name] = time.perf_counter() - t0
        emit(final=False)

    def emit(final: bool) -> None:
        text = json.dumps(result, indent=2, default=float)
        if args.out:
            tmp_out = Path(args.out).with_suffix(".tmp")
            tmp_out.write_text(text + "\n")
            tmp_out.replace(args.out)
        if final:
            print(text)
        else:
            print(
                f"bench_sdxl: {list(result.get('stage_s', {}))[-1]} done ({time.perf_counter() - t_start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    tmp = tempfile.TemporaryDirectory(prefix="bench_sdxl_") if not args.workdir else None
    work = Path(args.workdir or tmp.name)
    if args.whole_trial:
        result = whole_trial_main(args, result, work, device, dtype, size, compile_run, t_start)
        if tmp is not None:
            tmp.cleanup()
        return result
    result["anchor_trial_batches_of_8"] = anchor_batch_fill(8)
    t0 = time.perf_counter()
    base = build_model(work, args.tiny, device, dtype)
    result["build_model_s"] = time.perf_counter() - t0
    common = dict(
        size=size,
        steps=args.steps,
        strength=args.strength,
        guidance=args.guidance,
        device=device,
        dtype_name="fp16" if dtype == torch.float16 else "fp32",
        channels_last=channels_last,
    )

    stage(
        "seed_project",
        lambda: seed_way(
            base, work / "loras", size, per_grade, args.steps, args.strength, args.guidance, device, dtype
        ),
    )
    stage(
        "trialsim_eager",
        lambda: trialsim_way(
            base, work / "loras", batches=batches, repeats=repeats, compile_mode=None, step_ms=True, **common
        ),
    )

    def left() -> float:
        return float("inf") if args.budget_s is None else args.budget_s - (time.perf_counter() - t_start)

    if compile_run:
        for cb in [int(b) for b in args.compiled_batches.split(",")]:
            name = f"trialsim_compiled_b{cb}"
            if left() < args.compile_reserve_s:
                result[name] = {"skipped": f"{left():.0f} s left of --budget-s"}
                continue
            torch._dynamo.reset()  # a static compile for this batch size
            stage(
                name,
                lambda cb=cb: trialsim_way(
                    base,
                    work / "loras",
                    batches=[cb],
                    repeats=repeats,
                    compile_mode=args.compile_mode or True,
                    **common,
                ),
            )
    if left() >= 60:
        stage(
            "trialsim_peft_layers",
            lambda: trialsim_way(
                base,
                work / "loras",
                batches=[max(batches)],
                repeats=repeats,
                compile_mode=None,
                merge_loras=False,
                **common,
            ),
        )
    seed = result["seed_project"]
    speed: dict = {}
    if "s_per_image" in seed:
        for name in [k for k in result if k.startswith("trialsim_")]:
            for key, v in result.get(name, {}).items():
                if key.startswith("batch_") and isinstance(v, dict):
                    speed[f"{name}.{key}"] = seed["s_per_image"] / v["s_per_image"]
    result["speedup_vs_seed_batch1"] = speed
    best = min(
        (
            (v["s_per_image"], f"{n}.{k}")
            for n in result
            if n.startswith("trialsim_") and n != "trialsim_peft_layers"
            for k, v in result[n].items()
            if k.startswith("batch_") and isinstance(v, dict)
        ),
        default=(None, None),
    )
    result["best"] = {
        "config": best[1],
        "s_per_image": best[0],
        "speedup_vs_seed_batch1": speed.get(best[1]) if best[1] else None,
    }
    result["goal_met"] = bool(best[1] and speed.get(best[1], 0) >= 4.0)
    result["total_s"] = time.perf_counter() - t_start
    emit(final=True)
    if tmp is not None:
        tmp.cleanup()
    return result


def whole_trial_main(args, result: dict, work: Path, device, dtype, size: int, compile_run: bool, t_start: float):
    """``--whole-trial``: build the model, render the anchor trial (mixed, and by-weight if asked), print JSON."""
    result["settings"].pop("severity", None)
    result["goal"] = "the anchor trial (1400 photos) in <= 4 minutes on one GPU, load and compile included"
    t0 = time.perf_counter()
    base = build_model(work, args.tiny, device, dtype)
    result["build_model_s"] = time.perf_counter() - t0
    for batching in ["mixed"] + (["by-weight"] if args.by_weight_too else []):
        t0 = time.perf_counter()
        try:
            result[f"whole_trial_{batching}"] = whole_trial(
                base,
                work / "loras",
                work,
                size=size,
                steps=args.steps,
                strength=args.strength,
                guidance=args.guidance,
                device=device,
                dtype_name="fp16" if dtype == torch.float16 else "fp32",
                compile_mode=(args.compile_mode or True) if compile_run else None,
                batch_size=args.trial_batch_size,
                batching=batching,
                patients=args.patients,
            )
        except Exception as err:
            result[f"whole_trial_{batching}"] = {"error": f"{err.__class__.__name__}: {str(err)[:500]}"}
        torch._dynamo.reset()  # the next run compiles afresh, as a new process would
        print(f"bench_sdxl: whole trial, {batching} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    mixed = result.get("whole_trial_mixed", {})
    result["goal_met"] = bool(
        not args.tiny and size >= 1024 and mixed.get("photos") == 1400 and mixed.get("seconds", 1e9) <= 240
    )
    result["total_s"] = time.perf_counter() - t_start
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
