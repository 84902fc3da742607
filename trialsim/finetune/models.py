"""SDXL's networks for training: loading them, adding a LoRA to the UNet, and encoding photos and prompts.

Model resolution (a local folder, the Hugging Face cache or the Hub; a missing model as
:class:`~trialsim.errors.BadInput` naming ``--base-model``) is the SDXL renderer's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from ..render.sdxl.resolve import check_base_model, from_hub, quiet_libraries

# the attention projections of every transformer block, as DreamBooth-LoRA for SDXL trains them
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class Networks:
    """The frozen SDXL parts (``vae``, ``text_encoders``, ``tokenizers``), the UNet that gets the LoRA
    and the training noise schedule; ``weight_dtype`` is the dtype of the frozen networks."""

    unet: Any  # diffusers' UNet2DConditionModel (typed loosely: its mixins confuse type checkers)
    vae: Any
    text_encoders: tuple
    tokenizers: tuple
    noise_scheduler: Any
    weight_dtype: torch.dtype
    device: torch.device


def _component(cls, spec: str, is_local: bool, field: str, **kwargs):
    """``cls.from_pretrained(spec, **kwargs)`` from a folder, or from the cache / the Hub for a hub id."""
    if not is_local:
        return from_hub(
            lambda local_only: cls.from_pretrained(spec, local_files_only=local_only, **kwargs),
            spec,
            "base model" if field == "--base-model" else "VAE",
            field,
            Path(spec),
        )
    try:
        return cls.from_pretrained(spec, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        what = kwargs.get("subfolder", "model")
        raise BadInput(
            f"cannot load {what} from {Path(spec).resolve()}: {err.__class__.__name__}: {str(err).splitlines()[0][:300]}",
            field=field,
        ) from None


def load_networks(base_model: str, vae: str | None, weight_dtype: torch.dtype, device: torch.device) -> Networks:
    """Load SDXL's UNet, VAE, text encoders, tokenizers and noise schedule, frozen, on ``device``.

    The VAE stays in float32 unless ``vae`` names an fp16-safe one (SDXL's own VAE overflows in fp16).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    spec, is_local = check_base_model(base_model)
    with quiet_libraries():
        parts = {
            "tokenizer": (CLIPTokenizer, {}),
            "tokenizer_2": (CLIPTokenizer, {}),
            "text_encoder": (CLIPTextModel, {"torch_dtype": weight_dtype}),
            "text_encoder_2": (CLIPTextModelWithProjection, {"torch_dtype": weight_dtype}),
            "unet": (UNet2DConditionModel, {"torch_dtype": weight_dtype}),
            "scheduler": (DDPMScheduler, {}),
        }
        got = {k: _component(cls, spec, is_local, "--base-model", subfolder=k, **kw) for k, (cls, kw) in parts.items()}
        if vae:
            vae_local = Path(vae).expanduser().exists()
            got["vae"] = _component(AutoencoderKL, vae, vae_local, "--vae", torch_dtype=weight_dtype)
        else:
            got["vae"] = _component(
                AutoencoderKL, spec, is_local, "--base-model", subfolder="vae", torch_dtype=torch.float32
            )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        got[name].requires_grad_(False)
        got[name].eval()
        got[name].to(device)
    from diffusers.models.attention_processor import AttnProcessor2_0

    got["unet"].set_attn_processor(AttnProcessor2_0())  # PyTorch's fused scaled-dot-product attention
    return Networks(
        unet=got["unet"],
        vae=got["vae"],
        text_encoders=(got["text_encoder"], got["text_encoder_2"]),
        tokenizers=(got["tokenizer"], got["tokenizer_2"]),
        noise_scheduler=got["scheduler"],
        weight_dtype=weight_dtype,
        device=device,
    )


def place_encoders(nets: Networks, device: torch.device | str, text_encoders: bool = True) -> None:
    """Move the VAE (and the text encoders, with ``text_encoders``) to ``device``; to the CPU while
    training on cached latents frees their GPU memory for the UNet."""
    nets.vae.to(device)
    for encoder in nets.text_encoders if text_encoders else ():
        encoder.to(device)


def add_lora(model, rank: int, generator: torch.Generator, targets=LORA_TARGETS) -> list[torch.nn.Parameter]:
    """Add a fresh rank-``rank`` LoRA (alpha = rank) to ``model``'s ``targets`` (default: the UNet's attention
    projections); its parameters.

    A is drawn from N(0, 1/rank²) with ``generator`` (peft's "gaussian" initialisation, but
    reproducible), B is zero, so the LoRA starts as a no-op. The trained weights are float32.
    """
    from peft import LoraConfig

    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    params = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" not in name:
                continue
            p.data = p.data.float()
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=generator).to(p.device) / rank)
            else:
                p.zero_()
            p.requires_grad_(True)
            params.append(p)
    return params


def remove_loras(nets: Networks) -> None:
    """Take the LoRA off the UNet and, where there is one, off the text encoders."""
    nets.unet.delete_adapters("default")
    for encoder in nets.text_encoders:
        if getattr(encoder, "_hf_peft_config_loaded", False):
            encoder.delete_adapter("default")


def lora_state(model) -> dict[str, torch.Tensor]:
    """``model``'s LoRA weights with diffusers' key names (what ``save_lora_weights`` takes), on the CPU."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        # peft looks for the base model's config to see whether the vocabulary changed; it did not
        warnings.filterwarnings("ignore", message="Could not find a config file")
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}


def encode_prompt(nets: Networks, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's prompt conditioning: (1 × 77 × 2048 token embeddings, 1 × 1280 pooled embedding) at full size.

    Both text encoders' penultimate hidden states, side by side; the pooled embedding of the second.
    Gradients flow when enabled (training the text encoders' LoRAs).
    """
    hidden, pooled = [], torch.empty(0)
    for tokenizer, encoder in zip(nets.tokenizers, nets.text_encoders):
        ids = tokenizer(
            prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        out = encoder(ids.to(nets.device), output_hidden_states=True)
        pooled = out[0]
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1).float(), pooled.float()


@torch.no_grad()
def encode_photos(nets: Networks, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent distribution of ``pixels`` (N × 3 × H × W in [-1, 1]): (mean, std), N × 4 × H/8 × W/8,
    float32, on the CPU, already multiplied by the VAE's scaling factor."""
    vae = nets.vae
    dist = vae.encode(pixels.to(nets.device, vae.dtype)).latent_dist
    scale = vae.config.scaling_factor
    return (dist.mean.float() * scale).cpu(), (dist.std.float() * scale).cpu()


def time_ids(original_size: tuple[int, int], crop_top_left: tuple[int, int], size: int) -> torch.Tensor:
    """SDXL's size conditioning for one photo: original (h, w), crop (top, left), target (h, w) in px."""
    return torch.tensor([*original_size, *crop_top_left, size, size], dtype=torch.float32)
