"""``trialsim finetune`` speed and the whole anchor trial on one GPU, in one short run.

On a random-weight, full-size SDXL built from SDXL base 1.0's configs (speed does not depend
on the weight values; nothing is downloaded), at the seed project's recipe (1024 px, batch 1,
gradient accumulation 3, gradient checkpointing, fp16 mixed precision, min-SNR γ 5, rank 4):

* ``training_cached`` / ``training_uncached``: optimiser steps per second and peak GPU memory
  of :mod:`trialsim.finetune`'s loop with the VAE latents and prompt embeddings computed once
  per photo (the VAE and text encoders then leave the GPU) and with them computed at every step;
  the first step (warm-up) is not timed;
* ``whole_trial``: the anchor trial (protocols/anchor_sim_acne.yaml: 10 patients × 140 photos)
  rendered by ``trialsim simulate --renderer sdxl`` in anchor mode with four LoRAs and
  ``torch.compile``, wall time from model load to the last photo written (goal: ≤ 240 s; the
  seed project's way took about 14 minutes without reloads, 32 with).

Prints one JSON object; ``--out FILE`` rewrites it after every stage, so a run cut short keeps
what it measured. ``--tiny`` runs the same code on the tiny test model at 32 px (training) and
64 px (a 2-patient trial) on the CPU, to check the script works.

    python bench/bench_finetune.py --out bench/results/finetune.json   # on a GPU
    python bench/bench_finetune.py --tiny                               # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TRIAL_GOAL_S = 240.0


def _bench_sdxl():
    """bench_sdxl.py, for its full-size SDXL configs and its random-model builder."""
    spec = importlib.util.spec_from_file_location("bench_sdxl", ROOT / "bench" / "bench_sdxl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_photos(folder: Path, n: int, height: int, width: int, seed: int = 0) -> Path:
    """``n`` random photos of ``height`` × ``width`` px (speed does not depend on what they show)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def training_speed(base: Path, photos: Path, cache: bool, tiny: bool, steps: int, device: torch.device) -> dict:
    """Optimiser steps per second and peak GPU memory of the training loop on one grade's photos."""
    from trialsim.finetune import FinetuneOptions
    from trialsim.finetune.cache import Examples
    from trialsim.finetune.models import load_networks, place_encoders
    from trialsim.finetune.photos import find_photos, load_photo
    from trialsim.finetune.train import new_trainer, optimizer_step

    opts = FinetuneOptions(
        photos=photos, out="unused", base_model=base, grades="0", resolution=32 if tiny else 1024, cache=cache
    )
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    nets = load_networks(str(base), None, dtype, device)
    nets.unet.train()
    nets.unet.enable_gradient_checkpointing()
    examples = Examples(
        nets, [load_photo(p, opts.resolution) for p in find_photos(photos, [0])[0]], "acne0", opts.resolution, cache
    )
    if cache:
        place_encoders(nets, "cpu")
    sync(device)
    out: dict = {"load_and_encode_s": time.perf_counter() - t0, "cache": cache}
    trainer = new_trainer(nets, opts, grade=0)
    trainer.losses.append(optimizer_step(nets, nets.unet, trainer, examples, opts))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.losses.append(optimizer_step(nets, nets.unet, trainer, examples, opts))
    sync(device)
    elapsed = time.perf_counter() - t0
    out.update(
        steps_timed=steps,
        steps_per_s=steps / elapsed,
        s_per_step=elapsed / steps,
        loss_finite=bool(np.isfinite(trainer.losses).all()),
    )
    if device.type == "cuda":
        out["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del nets, examples, trainer
    return out


def whole_trial(base: Path, loras: Path, work: Path, tiny: bool, device: torch.device) -> dict:
    """Wall time of ``trialsim simulate`` on the anchor trial with the SDXL renderer, load and compile included."""
    from trialsim.render.sdxl.options import SDXLOptions
    from trialsim.simulate import SimulateOptions, simulate_from_options

    protocol = ROOT / "protocols" / "anchor_sim_acne.yaml"
    if tiny:  # 2 patients, 6 days
        spec = yaml.safe_load(protocol.read_text())
        spec["patients"]["n"] = 2
        spec["schedule"].update(period_days=1, run_in_days=2, blocks=2)
        protocol = work / "tiny_anchor.yaml"
        protocol.write_text(yaml.safe_dump(spec))
    size = 64 if tiny else 1024
    sdxl = SDXLOptions(
        base_model=str(base),
        lora=[f"{g}={loras / f'acne{g}'}" for g in range(4)],
        mode="anchor",
        base_photos=str(write_photos(work / "portraits", 10, size, size, seed=1)),
        dtype="fp16" if device.type == "cuda" else "fp32",
        vae_upcast=False,  # what an fp16-safe VAE (--vae) allows
        compile=device.type == "cuda",
        device=str(device),
    )
    options = SimulateOptions(
        out=work / "trial", protocol=protocol, renderer="sdxl", image_size=size, sdxl=sdxl, overwrite=True
    )
    sync(device)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = simulate_from_options(options)
    sync(device)
    wall = time.perf_counter() - t0
    photos = len(result.manifest)
    return {
        "photos": photos,
        "size_px": size,
        "wall_s (load + compile + render + write)": wall,
        "s_per_photo": wall / photos,
        "goal_s": TRIAL_GOAL_S,
        "goal_met": wall <= TRIAL_GOAL_S,
        "seed_project_reference_min": {"without_reloads": 14, "with_reloads": 32},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random SDXL on the CPU (smoke run)")
    ap.add_argument("--steps", type=int, default=None, help="timed optimiser steps per run (default 10, 2 --tiny)")
    ap.add_argument("--skip-trial", action="store_true", help="only the training figures")
    ap.add_argument("--out", help="also write the JSON here (rewritten after each stage)")
    ap.add_argument("--workdir", help="where to save the random model (default: a temporary folder)")
    args = ap.parse_args(argv)
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):  # JSON on stdout; keep stderr to real problems
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
        if not args.tiny:
            print(
                "bench_finetune: no GPU; full-size SDXL training on the CPU takes hours. Use --tiny.", file=sys.stderr
            )
    steps = args.steps or (2 if args.tiny else 10)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_finetune_"))
    result: dict = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "peft": __import__("peft").__version__,
        "model": "tiny random SDXL" if args.tiny else "random-weight full-size SDXL (base 1.0 configs)",
        "recipe": "1024 px, batch 1, gradient accumulation 3, gradient checkpointing, fp16 mixed precision, "
        "min-SNR γ 5, LoRA rank 4 on the attention projections, AdamW 1e-4",
    }

    def emit() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    t0 = time.perf_counter()
    base = _bench_sdxl().build_model(
        work / "model", args.tiny, device, torch.float16 if device.type == "cuda" else torch.float32
    )
    result["build_model_s"] = time.perf_counter() - t0
    photos = work / "photos"
    write_photos(photos / "0", 3, *((40, 48) if args.tiny else (1200, 1024)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for cache in (True, False):
            result["training_cached" if cache else "training_uncached"] = training_speed(
                base, photos, cache, args.tiny, steps, device
            )
            emit()
    result["cached_speedup"] = result["training_cached"]["steps_per_s"] / result["training_uncached"]["steps_per_s"]
    if not args.skip_trial:
        result["whole_trial"] = whole_trial(base, work / "model" / "loras", work, args.tiny, device)
    emit()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
