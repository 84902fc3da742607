"""The tiny random SDXL model and helpers shared by the SDXL tests (CPU, no downloads).

``tests/tiny_sdxl.py`` saves a real diffusers SDXL folder (UNet, VAE, two CLIP text
encoders, tokenizers with a vocabulary written here) and four LoRAs in the seed
project's layout (``acne{g}/pytorch_lora_weights.safetensors``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_sdxl

from trialsim.cli import main
from trialsim.protocol import protocol_from_dict
from trialsim.render.sdxl import SDXLRenderer
from trialsim.simulate import simulate_truth

SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A saved tiny SDXL folder and four per-grade LoRA folders."""
    root = tmp_path_factory.mktemp("tiny_sdxl")
    base = tiny_sdxl.save_tiny_sdxl(root / "base", components=tiny_sdxl.build_components(tokenizer_dir=root / "tok"))
    loras = tiny_sdxl.save_lora_folders(base, root / "loras")
    return {"base": base, "loras": loras, "root": root}


def protocol_dict() -> dict:
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


def lora_args(tiny) -> list[str]:
    return [f"--lora={g}={p}" for g, p in tiny["loras"].items()]


def simulate_cli(args: list[str], env: dict | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "no GPU, slow" warning
        return CliRunner().invoke(main, ["simulate", *args, "--quiet"], env=env)


def one_day_job(proto, severity: float):
    """The first patient with one photo, on a day whose latent severity is ``severity``."""
    job = simulate_truth(proto)[0]
    job.days = job.days.copy()
    job.days["severity_latent"] = severity
    job.images = job.images.iloc[[1]].assign(image=lambda d: d["image"] + ".jpg").reset_index(drop=True)
    return job


def anchor_renderer(tiny, tmp_path, **kw) -> SDXLRenderer:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    Image.fromarray(np.full((80, 80, 3), 180, np.uint8)).save(photos / "face.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the "no GPU, slow" warning
        return SDXLRenderer.from_options(
            protocol_from_dict(protocol_dict()),
            base_model=str(tiny["base"]),
            lora=[f"{g}={p}" for g, p in tiny["loras"].items()],
            mode="anchor",
            base_photos=str(photos),
            **kw,
        )
