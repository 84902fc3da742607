"""The training commands of ``trialsim``: ``finetune`` (SDXL LoRAs per grade) and ``train-reader``
(a severity reader on simulated photos). Registered on :func:`trialsim.cli.main`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .cli_errors import handle_errors
from .errors import FiniteFloatRange, validated


@click.command()
@click.argument("photos", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="LoRA folder to write")
@click.option("--base-model", required=True, help="SDXL base model: diffusers folder or hub id")
@click.option("--grade-column", default="grade", show_default=True, help="grade column of PHOTOS/manifest.csv")
@click.option("--grades", default="0,1,2,3", show_default=True, help="comma list of grades to train")
@click.option("--vae", help="an fp16-safe VAE (folder or hub id, e.g. madebyollin/sdxl-vae-fp16-fix)")
@click.option("--prompt", help="instance prompt with {grade}  [default: photo of a person with acne{grade}]")
@click.option("--resolution", type=click.IntRange(min=8), help="training size in px  [default: 1024]")
@click.option("--batch-size", type=click.IntRange(min=1), help="photos per batch  [default: 1]")
@click.option("--gradient-accumulation", type=click.IntRange(min=1), help="batches per optimiser step  [default: 3]")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="[default: on]")
@click.option("--learning-rate", type=FiniteFloatRange(min=0, min_open=True), help="[default: 1e-4, constant]")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="linear warm-up steps  [default: 0]")
@click.option("--snr-gamma", type=FiniteFloatRange(min=0), help="min-SNR weighting γ, 0 for none  [default: 5]")
@click.option("--rank", type=click.IntRange(min=1), help="LoRA rank  [default: 4]")
@click.option("--mixed-precision", type=click.Choice(["fp16", "bf16", "no"]), help="GPU only  [default: fp16]")
@click.option("--steps", type=click.IntRange(min=1), help="optimiser steps per grade  [default: 500]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="steps between checkpoints  [default: 250]")
@click.option("--seed", type=click.IntRange(min=0), help="[default: 0]")
@click.option("--cache/--no-cache", default=None, help="encode photos and prompt once, not every step  [default: on]")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the UNet (GPU)")
@click.option("--adam-8bit", is_flag=True, default=None, help="bitsandbytes' 8-bit AdamW (GPU)")
@click.option("--train-text-encoder", is_flag=True, default=None, help="a LoRA on both text encoders too")
@click.option("--text-encoder-learning-rate", type=FiniteFloatRange(min=0, min_open=True), help="[default: 5e-6]")
@click.option("--quiet", is_flag=True, help="no progress bar")
@handle_errors
def finetune(quiet, **given):
    """Train one SDXL LoRA per grade on PHOTOS (manifest.csv or one sub-folder per grade); rerun to resume."""
    from .finetune import FinetuneOptions
    from .finetune import finetune as train

    values = {k: v for k, v in given.items() if v is not None}
    options = validated(FinetuneOptions, {**values, "progress": not quiet})
    t0 = time.perf_counter()
    for grade, path in train(options).items():
        click.echo(f"acne{grade}: {path}")
    click.echo(f"trained in {time.perf_counter() - t0:.1f} s; render with --lora GRADE={options.out}/acneGRADE")


@click.command("train-reader")
@click.argument("protocol", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="reader folder to write")
@click.option("--photos", type=click.IntRange(min=16), help="simulated training photos  [default: 2000]")
@click.option("--seed", type=click.IntRange(min=0), help="[default: 0]")
@click.option("--epochs", type=click.IntRange(min=1), help="[default: 12]")
@click.option("--image-size", type=click.IntRange(min=64, max=1024), help="px the photos are read at  [default: 256]")
@click.option(
    "--input",
    "input_kind",
    type=click.Choice(["haemoglobin", "rgb"]),
    help="what the network sees: the skin's haemoglobin contrast, or the photo  [default: haemoglobin]",
)
@click.option("--overwrite", is_flag=True, help="replace a finished reader in --out")
@click.option("--quiet", is_flag=True, help="no progress bar")
@handle_errors
def train_reader(quiet, **given):
    """Train a severity reader on photos simulated from PROTOCOL (e.g. protocols/reader.yaml); rerun to resume."""
    from .reader.train import ReaderOptions
    from .reader.train import train_reader as train

    given["input"] = given.pop("input_kind")
    values = {k: v for k, v in given.items() if v is not None}
    options = validated(ReaderOptions, {**values, "progress": not quiet})
    t0 = time.perf_counter()
    train(options)
    click.echo(
        f"reader → {options.out} in {time.perf_counter() - t0:.1f} s; use it with --method sim-reader --reader {options.out}"
    )
