"""The training loop: one LoRA per grade on SDXL's UNet, resumable from its last checkpoint.

Each optimiser step: for each of ``gradient_accumulation`` batches, draw the photos' latents,
noise and timesteps, add the noise (the DDPM forward process), predict it with the UNet and
take the mean squared error, weighted by min(SNR, γ)/SNR (min-SNR weighting); then clip the
gradient norm to 1 and step AdamW. All randomness comes from one ``torch.Generator`` whose state
is part of the checkpoint, so an interrupted run that resumes draws what an uninterrupted run
would have drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput
from . import checkpoint as ckpt
from .cache import Batch, Examples
from .models import TEXT_LORA_TARGETS, Networks, add_lora, lora_state, remove_loras
from .options import FinetuneOptions

MAX_GRAD_NORM = 1.0


@dataclass
class Trainer:
    """The optimiser-side state of one grade's run: what a checkpoint holds besides the weights."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    losses: list[float] = field(default_factory=list)

    def state(self, recipe: dict) -> dict:
        return {
            "recipe": recipe,
            "lora": [p.detach().cpu().clone() for p in self.params],
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "losses": list(self.losses),
        }

    def restore(self, state: dict) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["lora"], strict=True):
                p.copy_(saved.to(p.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.losses = [float(x) for x in state["losses"]]


def _optimizer(groups: list[dict], options: FinetuneOptions) -> torch.optim.Optimizer:
    if not options.adam_8bit:
        return torch.optim.AdamW(groups, lr=options.learning_rate, weight_decay=1e-4)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise BadInput(
            "8-bit Adam needs the bitsandbytes package, which is not installed",
            field="--adam-8bit",
            allowed="pip install bitsandbytes (CUDA), or train without --adam-8bit",
        ) from None
    return bnb.optim.AdamW8bit(groups, lr=options.learning_rate, weight_decay=1e-4)


def new_trainer(nets: Networks, options: FinetuneOptions, grade: int) -> Trainer:
    """A fresh LoRA on ``nets.unet`` (and the text encoders, with ``train_text_encoder``) with its optimiser,
    constant learning rate after warm-up and generator."""
    generator = torch.Generator().manual_seed(options.seed * 10 + grade)
    params = add_lora(nets.unet, options.rank, generator)
    groups = [{"params": params, "lr": options.learning_rate}]
    if options.train_text_encoder:
        text = [p for enc in nets.text_encoders for p in add_lora(enc, options.rank, generator, TEXT_LORA_TARGETS)]
        groups.append({"params": text, "lr": options.text_encoder_learning_rate})
        params = params + text
    optimizer = _optimizer(groups, options)
    warmup = options.warmup_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    fp16 = nets.weight_dtype == torch.float16
    scaler = torch.amp.GradScaler(nets.device.type, enabled=fp16 and nets.device.type == "cuda")
    return Trainer(params, optimizer, schedule, scaler, generator)


def batch_indices(micro_step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The photos of batch ``micro_step``: every photo once per epoch, in an order drawn for each epoch from ``seed``."""
    out = []
    for k in range(micro_step * batch_size, (micro_step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(order[pos]))
    return out


def diffusion_loss(nets: Networks, unet, batch: Batch, generator: torch.Generator, snr_gamma: float | None):
    """The (min-SNR weighted) noise-prediction loss of one batch, a float32 scalar."""
    from diffusers.training_utils import compute_snr

    sched = nets.noise_scheduler
    noise = torch.randn(batch.latents.shape, generator=generator).to(batch.latents.device)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(batch.latents),), generator=generator)
    t = t.to(batch.latents.device)
    noisy = sched.add_noise(batch.latents, noise, t)
    autocast = nets.weight_dtype != torch.float32
    with torch.autocast(nets.device.type, dtype=nets.weight_dtype, enabled=autocast):
        pred = unet(
            noisy,
            t,
            encoder_hidden_states=batch.prompt_embeds,
            added_cond_kwargs={"text_embeds": batch.pooled, "time_ids": batch.time_ids},
        ).sample
    v_prediction = sched.config.prediction_type == "v_prediction"
    target = sched.get_velocity(batch.latents, noise, t) if v_prediction else noise
    per_sample = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample.mean()
    snr = compute_snr(sched, t)
    weight = torch.clamp(snr, max=snr_gamma) / (snr + 1 if v_prediction else snr)
    return (per_sample * weight).mean()


def optimizer_step(nets: Networks, unet, trainer: Trainer, examples: Examples, options: FinetuneOptions) -> float:
    """One optimiser step over ``gradient_accumulation`` batches; the mean loss of those batches."""
    step, accumulate, total = len(trainer.losses), options.gradient_accumulation, 0.0
    for micro in range(accumulate):
        index = batch_indices(step * accumulate + micro, options.batch_size, len(examples), options.seed)
        batch = examples.batch(index, trainer.generator)
        loss = diffusion_loss(nets, unet, batch, trainer.generator, options.snr_gamma)
        trainer.scaler.scale(loss / accumulate).backward()
        total += float(loss.detach())
    trainer.scaler.unscale_(trainer.optimizer)
    torch.nn.utils.clip_grad_norm_(trainer.params, MAX_GRAD_NORM)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.lr_schedule.step()
    return total / accumulate


def _resume(folder: Path, trainer: Trainer, recipe: dict) -> None:
    """Restore ``trainer`` from the latest checkpoint in ``folder``, if any; BadInput if it was made differently."""
    path = ckpt.latest_checkpoint(folder)
    if path is None:
        return
    state = ckpt.load_checkpoint(path)
    if state.get("recipe") != recipe:
        changed = sorted(k for k in recipe if state.get("recipe", {}).get(k) != recipe[k])
        raise BadInput(
            f"the checkpoint {path} was made with other options (differs in: {', '.join(changed) or 'format'})",
            field="--out",
            allowed="the same options to resume, or another --out (or delete that folder) to start again",
        )
    trainer.restore(state)


def _compiled(unet, options: FinetuneOptions):
    if not options.compile:
        return unet
    if unet.device.type != "cuda":
        warnings.warn("torch.compile is for CUDA; training the UNet uncompiled", RuntimeWarning, stacklevel=3)
        return unet
    return torch.compile(unet)


def train_grade(
    nets: Networks,
    examples: Examples,
    options: FinetuneOptions,
    grade: int,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Train (or finish training) grade ``grade``'s LoRA and write it; the path of the weights file.

    ``on_step(step, loss)`` is called after every optimiser step (1-based ``step``).
    """
    from tqdm.auto import tqdm

    folder, recipe = ckpt.grade_folder(options.out, grade), options.recipe()
    trainer = new_trainer(nets, options, grade)
    try:
        lora_bytes = sum(p.numel() for p in trainer.params) * 4
        ckpt.check_disk_room(folder, 4 * lora_bytes + 2**20)  # weights + 2 Adam moments, twice while replacing
        _resume(folder, trainer, recipe)
        unet = _compiled(nets.unet, options)
        bar = tqdm(total=options.steps, initial=len(trainer.losses), desc=f"acne{grade}", disable=not options.progress)
        with bar:
            while len(trainer.losses) < options.steps:
                loss = optimizer_step(nets, unet, trainer, examples, options)
                trainer.losses.append(loss)
                step = len(trainer.losses)
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
                if step % options.checkpoint_every == 0 and step < options.steps:
                    ckpt.save_checkpoint(folder, step, trainer.state(recipe))
                    ckpt.write_log(folder, grade, recipe, trainer.losses, options.steps)
                if on_step is not None:
                    on_step(step, loss)
        text = [lora_state(enc) for enc in nets.text_encoders] if options.train_text_encoder else [None, None]
        path = ckpt.save_lora(folder, lora_state(nets.unet), *text)
        ckpt.write_log(folder, grade, recipe, trainer.losses, options.steps)
        ckpt.remove_checkpoints(folder)
        return path
    finally:
        remove_loras(nets)
