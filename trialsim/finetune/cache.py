"""The training examples of one grade: latents and prompt conditioning, computed once or at every step.

With caching (the default) each photo goes through the VAE and the prompt through the text
encoders once, before training; without it they run again for every batch (what a plain
training loop does), which only costs time: the latent drawn for a photo is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .models import Networks, encode_photos, encode_prompt, time_ids
from .photos import TrainingPhoto


@dataclass
class Batch:
    """What the UNet needs for one step: ``latents`` (B × 4 × h × w), ``prompt_embeds`` (B × 77 × D),
    ``pooled`` (B × D2), ``time_ids`` (B × 6); float32 on the training device."""

    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor


class Examples:
    """The photos of one grade with their prompt; :meth:`batch` draws the latents of some of them.

    ``cache``: encode every photo and the prompt now (then the VAE and text encoders are not
    needed again) instead of at every :meth:`batch`. ``train_text_encoder``: the text encoders
    carry a LoRA being trained, so the prompt is encoded at every batch, with gradients.
    """

    def __init__(
        self,
        nets: Networks,
        photos: list[TrainingPhoto],
        prompt: str,
        size: int,
        cache: bool = True,
        train_text_encoder: bool = False,
    ):
        self.nets, self.photos, self.prompt, self.cache = nets, photos, prompt, cache
        self.train_text_encoder = train_text_encoder
        self.time_ids = torch.stack([time_ids(p.original_size, p.crop_top_left, size) for p in photos])
        self.latent_dist: tuple[torch.Tensor, torch.Tensor] | None = None
        self.conditioning: tuple[torch.Tensor, torch.Tensor] | None = None
        if cache:
            # one photo at a time: a VAE encode at 1024 px needs several GB, more with a batch
            parts = [encode_photos(nets, self._pixels([i])) for i in range(len(photos))]
            self.latent_dist = (torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts]))
            if not train_text_encoder:
                with torch.no_grad():
                    self.conditioning = encode_prompt(nets, prompt)

    def __len__(self) -> int:
        return len(self.photos)

    def _pixels(self, index: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.photos[i].pixels for i in index]))

    def _encode_prompt(self) -> tuple[torch.Tensor, torch.Tensor]:
        nets = self.nets
        autocast = nets.weight_dtype != torch.float32  # fp16 encoders, fp32 LoRA weights
        with (
            torch.set_grad_enabled(self.train_text_encoder),
            torch.autocast(nets.device.type, nets.weight_dtype, enabled=autocast),
        ):
            return encode_prompt(nets, self.prompt)

    def batch(self, index: list[int], generator: torch.Generator) -> Batch:
        """The photos ``index`` as a :class:`Batch`, each latent drawn from its VAE distribution with ``generator``."""
        if self.latent_dist is not None:
            mean, std = self.latent_dist[0][index], self.latent_dist[1][index]
        else:
            mean, std = encode_photos(self.nets, self._pixels(index))
        embeds, pooled = self.conditioning if self.conditioning is not None else self._encode_prompt()
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        n, device = len(index), self.nets.device
        return Batch(
            latents=latents.to(device),
            prompt_embeds=embeds.to(device).expand(n, -1, -1),
            pooled=pooled.to(device).expand(n, -1),
            time_ids=self.time_ids[index].to(device),
        )
