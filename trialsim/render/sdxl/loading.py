"""Loading SDXL with diffusers' own loading (``from_pretrained``, ``load_lora_weights``) and making it fast.

:func:`load_pipeline` is the slow part of :meth:`SDXLRenderer.from_options
<trialsim.render.sdxl.SDXLRenderer.from_options>`; every input was checked before it runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ...errors import BadInput
from .blend import LoraBlend
from .options import SDXLOptions
from .resolve import LoraSource, from_hub, quiet_libraries, torch_dtype


@dataclass
class Placement:
    """Where and how the networks run: ``device``, ``dtype`` (torch objects) and images per call."""

    device: object
    dtype: object
    batch_size: int


def place(options: SDXLOptions) -> Placement:
    """Device (CUDA when there is one), dtype and batch size for ``options``; warns when on the CPU."""
    import torch

    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        warnings.warn(
            "trialsim sdxl: no CUDA GPU found; SDXL runs on the CPU in float32, which is very "
            "slow (minutes per 1024 px image). Running anyway.",
            RuntimeWarning,
            stacklevel=3,
        )
    dtype = torch_dtype(options.dtype, device.type == "cuda")
    if device.type == "cpu" and dtype == torch.float16:
        warnings.warn("fp16 is not supported on the CPU; using float32", RuntimeWarning, stacklevel=3)
        dtype = torch.float32
    return Placement(device, dtype, int(options.batch_size or (8 if device.type == "cuda" else 2)))


def _load_vae(spec: str, dtype):
    """An SDXL VAE from a local folder or a hub id."""
    from diffusers import AutoencoderKL

    vp = Path(spec).expanduser()
    if vp.exists():
        try:
            return AutoencoderKL.from_pretrained(str(vp), torch_dtype=dtype)
        except (OSError, ValueError) as err:
            raise BadInput(
                f"cannot load the VAE from {vp.resolve()} ({err.__class__.__name__})", field="--vae"
            ) from None
    return from_hub(
        lambda local_only: AutoencoderKL.from_pretrained(spec, torch_dtype=dtype, local_files_only=local_only),
        spec,
        "VAE",
        "--vae",
        vp,
    )


def _from_pretrained(base_model: str, is_local: bool, kwargs: dict):
    """``StableDiffusionXLImg2ImgPipeline.from_pretrained`` from a folder, the cache or the Hub."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    if not is_local:
        return from_hub(
            lambda local_only: StableDiffusionXLImg2ImgPipeline.from_pretrained(
                base_model, local_files_only=local_only, **kwargs
            ),
            base_model,
            "base model",
            "--base-model",
            Path(base_model),
        )
    try:
        return StableDiffusionXLImg2ImgPipeline.from_pretrained(base_model, **kwargs)
    except (OSError, ValueError) as err:
        raise BadInput(
            f"cannot load the SDXL pipeline from {Path(base_model).resolve()}: "
            f"{err.__class__.__name__}: {str(err).splitlines()[0][:300]}",
            field="--base-model",
        ) from None


def load_lora(pipe, src: LoraSource) -> None:
    """``pipe.load_lora_weights`` for one LoRA as adapter ``src.adapter_name``; BadInput when it does not fit."""
    where = f"--lora {'' if src.grade is None else f'{src.grade}='}{src.spec}"
    file = Path(src.folder) / src.weight_name
    try:
        pipe.load_lora_weights(src.folder, weight_name=src.weight_name, adapter_name=src.adapter_name)
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        if "version of PEFT" in str(err):  # transformers refuses the installed peft for text encoders
            import peft
            import transformers

            raise BadInput(
                f"{file} holds text-encoder LoRA weights, which transformers "
                f"{transformers.__version__} loads only with a newer peft than the installed "
                f"{peft.__version__} ({str(err).splitlines()[0][:200]})",
                field=where,
                allowed="a peft and transformers pair that fit (pyproject.toml pins one)",
            ) from None
        raise BadInput(
            f"wrong LoRA layout: {file} does not load into SDXL's UNet/text encoders "
            f"({err.__class__.__name__}: {str(err).splitlines()[0][:300]})",
            field=where,
            allowed="a DreamBooth-LoRA for SDXL base 1.0 saved by diffusers",
        ) from None
    loaded = {a for names in pipe.get_list_adapters().values() for a in names}
    if src.adapter_name not in loaded:
        raise BadInput(
            f"wrong LoRA layout: no weight in {file} matched SDXL's UNet or text encoders "
            "(a LoRA for another base model?)",
            field=where,
            allowed="a DreamBooth-LoRA for SDXL base 1.0 saved by diffusers",
        ) from None


def load_pipeline(options: SDXLOptions, base_model: str, is_local: bool, loras: list[LoraSource], where: Placement):
    """The img2img pipeline with every LoRA loaded as its own adapter, on ``where.device``."""
    with quiet_libraries():  # transformers prints notes about optional packages on first import
        from diffusers import UniPCMultistepScheduler

    kwargs: dict = dict(torch_dtype=where.dtype, add_watermarker=False)
    with quiet_libraries():
        if options.vae:
            kwargs["vae"] = _load_vae(options.vae, where.dtype)
        pipe = _from_pretrained(base_model, is_local, kwargs)
        for src in loras:
            load_lora(pipe, src)
        pipe.to(where.device)
    if options.scheduler == "unipc":
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    import torch

    vae_upcast = options.vae_upcast
    if vae_upcast is None and (options.vae or where.dtype == torch.bfloat16):
        vae_upcast = False  # an fp16-safe VAE, or bfloat16 (fp32's range): no fp32 round trip
    if vae_upcast is not None:
        pipe.vae.register_to_config(force_upcast=bool(vae_upcast))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def speed_up(pipe, options: SDXLOptions, has_loras: bool, device) -> tuple[LoraBlend | None, bool]:
    """Fold the LoRAs, channels-last, fused q/k/v and ``torch.compile`` as ``options`` ask.

    Returns the :class:`LoraBlend` (None when the LoRAs run through peft's layers, or there are
    none) and whether q/k/v projections were fused.
    """
    import torch

    blend = LoraBlend(pipe) if has_loras and options.merge_loras and LoraBlend.supports(pipe) else None
    cuda = device.type == "cuda"
    if options.channels_last if options.channels_last is not None else cuda:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    fuse = options.fuse_qkv if options.fuse_qkv is not None else cuda and (not has_loras or blend is not None)
    if fuse:  # after the memory-format change: the LoRA targets become views of the fused weights
        if has_loras and blend is None:
            raise BadInput(
                "fused q/k/v projections need the LoRAs folded into the weights",
                field="fuse_qkv",
                allowed="merge_loras=True, or fuse_qkv=False",
            )
        pipe.unet.fuse_qkv_projections()
        pipe.vae.fuse_qkv_projections()
        if blend is not None:
            blend.follow_fused_projections(pipe.unet)
    if options.compile:
        mode = options.compile if isinstance(options.compile, str) else None
        for module in (pipe.unet, pipe.vae.encoder, pipe.vae.decoder):
            module.compile(mode=mode, fullgraph=False)
    return blend, bool(fuse)
