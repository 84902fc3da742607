"""Checkpoints, the loss log and the finished LoRA of one grade, each written atomically.

Layout under ``out/acne{grade}/``: ``pytorch_lora_weights.safetensors`` (the finished LoRA, the
layout ``trialsim simulate --renderer sdxl --lora`` reads), ``train_log.json`` (loss per
optimiser step) and, while training, ``checkpoints/step-NNNNNN.pt`` (the LoRA, optimiser,
learning-rate schedule, loss scaler and random-generator state; only the latest is kept).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from analysis.atomic import atomic_write_bytes, atomic_write_text

from ..errors import BadInput
from ..render.sdxl.resolve import LORA_WEIGHT_NAME

LOG_NAME = "train_log.json"
CHECKPOINTS = "checkpoints"


def grade_folder(out: str | Path, grade: int) -> Path:
    return Path(out) / f"acne{grade}"


def _write(path: Path, data: bytes) -> None:
    """Atomic write; a full disk is bad input naming the path (the partial temporary file is removed)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise BadInput(f"cannot write {path} ({err.strerror or err})", field="--out") from None


def check_disk_room(folder: Path, need_bytes: int) -> None:
    """BadInput naming ``--out`` when the disk holding ``folder`` has less than ``need_bytes`` free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise BadInput(
            f"no disk room for checkpoints in {folder.resolve()}: {free / 2**20:.1f} MiB free, "
            f"{need_bytes / 2**20:.1f} MiB needed",
            field="--out",
            allowed="a folder on a disk with room for the LoRA, its optimiser state and the log",
        )


def latest_checkpoint(folder: Path) -> Path | None:
    files = sorted((folder / CHECKPOINTS).glob("step-*.pt"))
    return files[-1] if files else None


def save_checkpoint(folder: Path, step: int, state: dict) -> Path:
    """Write ``state`` as ``checkpoints/step-{step}.pt`` atomically, then drop the older checkpoints."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = folder / CHECKPOINTS / f"step-{step:06d}.pt"
    _write(path, buffer.getvalue())
    for old in (folder / CHECKPOINTS).glob("step-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInput(
            f"unreadable checkpoint ({err.__class__.__name__}); delete it to start this grade again",
            file=str(path),
        ) from None


def remove_checkpoints(folder: Path) -> None:
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)


def write_log(folder: Path, grade: int, recipe: dict, losses: list[float], steps: int) -> None:
    """``train_log.json``: the grade, the options that decide the weights, and the loss per optimiser step."""
    log = {"grade": grade, "steps_done": len(losses), "steps": steps, "recipe": recipe, "loss": losses}
    try:
        atomic_write_text(folder / LOG_NAME, json.dumps(log, indent=1) + "\n")
    except OSError as err:
        raise BadInput(f"cannot write {folder / LOG_NAME} ({err.strerror or err})", field="--out") from None


def read_log(folder: Path) -> dict | None:
    try:
        return json.loads((folder / LOG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_lora(folder: Path, unet_state: dict[str, torch.Tensor], text_state=None, text_2_state=None) -> Path:
    """Write the finished LoRA (the UNet's, and the text encoders' when given) with diffusers'
    ``save_lora_weights`` (into a temporary folder, then a rename)."""
    from diffusers import StableDiffusionXLPipeline

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".lora-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / LORA_WEIGHT_NAME
    tmp = Path(tempfile.mkdtemp(prefix=".lora-", dir=folder))
    try:
        StableDiffusionXLPipeline.save_lora_weights(
            str(tmp),
            unet_lora_layers=unet_state,
            text_encoder_lora_layers=text_state,
            text_encoder_2_lora_layers=text_2_state,
        )
        os.chmod(tmp / LORA_WEIGHT_NAME, 0o644)
        os.replace(tmp / LORA_WEIGHT_NAME, final)
    except OSError as err:
        raise BadInput(f"cannot write {final} ({err.strerror or err})", field="--out") from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return final
