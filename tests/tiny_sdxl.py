"""A tiny random SDXL pipeline and per-grade LoRAs in the seed project's file layout.

Used by ``tests/test_sdxl.py`` (and ``bench/bench_sdxl.py --tiny``) to exercise the
real loading path of :mod:`trialsim.render.sdxl` on a CPU with no downloads:
``save_tiny_sdxl(folder)`` writes a folder that ``StableDiffusionXLImg2ImgPipeline
.from_pretrained`` reads (UNet, VAE, two CLIP text encoders, two tokenizers with a
byte-level vocabulary written here, scheduler); ``save_lora_folders(base, out)``
writes ``out/acne{g}/pytorch_lora_weights.safetensors`` for g = 0..3, each a random
rank-4 LoRA on the UNet's attention projections (as DreamBooth-LoRA training saves).

The component builders take config dicts, so the benchmark builds a full-size SDXL
from the same code with SDXL base 1.0's config values.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2),
    # 6 time ids (original size, crop, target size) × 8 + the pooled embedding of text encoder 2 (32)
    projection_class_embeddings_input_dim=6 * 8 + 32,
    cross_attention_dim=64,  # text encoder 1 hidden (32) + text encoder 2 hidden (32)
    norm_num_groups=1,
)
TINY_VAE = dict(
    block_out_channels=[32, 64],
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    latent_channels=4,
    sample_size=64,
    norm_num_groups=32,
)
TINY_TEXT = dict(
    bos_token_id=0,
    eos_token_id=2,
    hidden_size=32,
    intermediate_size=37,
    layer_norm_eps=1e-05,
    num_attention_heads=4,
    num_hidden_layers=2,
    pad_token_id=1,
    vocab_size=1000,
    hidden_act="gelu",
    projection_dim=32,
    max_position_embeddings=77,
)
TINY_TEXT_2 = TINY_TEXT
# the scheduler SDXL base 1.0 ships with (the renderer switches it to UniPC, as the seed project did)
SDXL_SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
    use_karras_sigmas=False,
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(folder: str | Path, model_max_length: int = 77) -> Path:
    """A CLIP tokenizer whose vocabulary is every byte (alone and word-final) plus a few merges.

    Writes ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` into ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges = ["a c", "ac n", "acn e</w>", "p h", "o t", "ph ot", "phot o</w>"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": model_max_length,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        ),
        encoding="utf-8",
    )
    return folder


def build_components(
    unet: dict = TINY_UNET,
    vae: dict = TINY_VAE,
    text: dict = TINY_TEXT,
    text_2: dict = TINY_TEXT_2,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Random-weight SDXL components (the ``**components`` of an SDXL pipeline)."""
    import tempfile

    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="tiny_clip_tok_")
    tok_dir = write_tokenizer(tokenizer_dir)
    with torch.random.fork_rng(devices=[]):  # seeded random weights, the caller's RNG state untouched
        torch.manual_seed(seed)
        return dict(
            unet=UNet2DConditionModel(**unet),
            vae=AutoencoderKL(**vae),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_2)),
            tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77),
            tokenizer_2=CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77),
            scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        )


def save_tiny_sdxl(
    folder: str | Path, components: dict | None = None, seed: int = 0, variant_dtype: torch.dtype | None = None
) -> Path:
    """Save an SDXL base-style pipeline folder (``model_index.json`` + one folder per component)."""
    from diffusers import StableDiffusionXLPipeline

    folder = Path(folder)
    comps = components or build_components(seed=seed)
    pipe = StableDiffusionXLPipeline(**comps)
    if variant_dtype is not None:
        pipe.to(dtype=variant_dtype)
    pipe.save_pretrained(str(folder))
    return folder


def save_lora(
    unet, folder: str | Path, seed: int, rank: int = 4, scale: float = 0.5, targets=("to_q", "to_k", "to_v", "to_out.0")
) -> Path:
    """One random LoRA on ``unet``'s ``targets`` (default: the attention projections), saved as
    the seed project saved its DreamBooth-LoRAs: ``folder/pytorch_lora_weights.safetensors``
    with ``unet.``-prefixed keys.

    ``unet`` is left without the adapter. ``scale`` sets the size of the random B matrices
    (peft initialises B to zero, which would make every LoRA a no-op).
    """
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    cfg = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets))
    name = f"tmp_lora_{seed}"
    unet.add_adapter(cfg, adapter_name=name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod_name, p in unet.named_parameters():
            if f"lora_B.{name}" in mod_name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * scale)
    state = get_peft_model_state_dict(unet, adapter_name=name)
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=state)
    unet.delete_adapters(name)
    return folder


def save_lora_folders(base: str | Path, out: str | Path, grades=(0, 1, 2, 3), rank: int = 4) -> dict[int, Path]:
    """``out/acne{g}/pytorch_lora_weights.safetensors`` for each grade, on the UNet saved in ``base``."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet")
    out = Path(out)
    return {g: save_lora(unet, out / f"acne{g}", seed=100 + g, rank=rank) for g in grades}


def save_lora_with_text_encoders(
    base: str | Path, folder: str | Path, seed: int, rank: int = 4, scale: float = 0.5
) -> Path:
    """A LoRA on the UNet and both text encoders (as DreamBooth-LoRA with ``--train_text_encoder``)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    base = Path(base)
    models = {
        "unet": (
            UNet2DConditionModel.from_pretrained(str(base), subfolder="unet"),
            ["to_q", "to_k", "to_v", "to_out.0"],
        ),
        "text_encoder": (
            CLIPTextModel.from_pretrained(str(base), subfolder="text_encoder"),
            ["q_proj", "k_proj", "v_proj", "out_proj"],
        ),
        "text_encoder_2": (
            CLIPTextModelWithProjection.from_pretrained(str(base), subfolder="text_encoder_2"),
            ["q_proj", "k_proj", "v_proj", "out_proj"],
        ),
    }
    gen = torch.Generator().manual_seed(seed)
    states = {}
    for key, (model, targets) in models.items():
        model.add_adapter(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets),
            adapter_name="tmp",
        )
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B.tmp" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        states[key] = get_peft_model_state_dict(model, adapter_name="tmp")
    StableDiffusionXLPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=states["unet"],
        text_encoder_lora_layers=states["text_encoder"],
        text_encoder_2_lora_layers=states["text_encoder_2"],
    )
    return Path(folder)
