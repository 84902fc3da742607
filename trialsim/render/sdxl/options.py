"""The SDXL renderer's options as one validated model (what ``trialsim simulate --renderer sdxl`` takes)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SEED_PROMPT = "photo of a person with acne{grade}, portrait, close-up, cheek, detailed, HQ, photo, 4k"


class SDXLOptions(BaseModel):
    """Options of :class:`~trialsim.render.sdxl.SDXLRenderer`; see the package docstring for what each does.

    ``base_model``: local diffusers folder or hub id. ``lora``: ``["0=PATH", …, "3=PATH"]``,
    ``["PATH"]`` or empty. ``mode``: ``"anchor"`` | ``"refine"``. ``base_photos``: folder of
    portraits for anchor mode (a file named after the patient id is used for that patient,
    else one is drawn per patient). ``steps``, ``strength`` (default 0.1 anchor, 0.2 refine),
    ``guidance``: diffusers' ``num_inference_steps``, ``strength``, ``guidance_scale``.
    ``batch_size``: images per pipeline call (default 8 on CUDA, 2 on CPU). ``dtype``:
    ``auto`` (fp16 on CUDA, fp32 on CPU) | ``fp16`` | ``bf16`` | ``fp32``. ``vae``: an
    fp16-safe VAE (folder or hub id, e.g. madebyollin/sdxl-vae-fp16-fix) to replace the
    base model's, which then runs in half precision without the fp32 upcast; in bf16 the
    base model's VAE runs without the upcast too (``vae_upcast`` overrides both).
    ``batching``: ``"mixed"`` fills every batch with the patient's next photos whatever their
    severities, each photo with its own adapter weights (:mod:`~trialsim.render.sdxl.persample`);
    ``"by-weight"`` puts only photos of equal (rounded) severity in a batch; ``"auto"`` (default)
    is mixed where that is exact (LoRAs folded, or plain peft LoRAs without DoRA), else by-weight.
    ``severity_step``: severities are rounded to this step (0–3 scale; default 0, exact, with
    mixed batches and 0.05 with by-weight ones, where a coarser step fills batches).
    ``refine_method``: ``"img2img"`` (whole photo) | ``"inpaint"`` (inside the dilated lesion
    masks, ``mask_dilation_px`` wide; default 1/64 of the height). ``merge_loras``: fold the
    blended adapters into the weights (:class:`~trialsim.render.sdxl.blend.LoraBlend`; default,
    where the LoRAs allow it) instead of running them through peft's layers. ``fuse_qkv``: one
    matrix product for q, k and v in every attention (default on CUDA when the LoRAs are folded
    or absent). ``compile``: ``torch.compile`` the UNet and the VAE's encoder and decoder (CUDA);
    ``True`` for the default mode or a mode name such as ``"max-autotune-no-cudagraphs"``.
    ``scheduler``: ``"unipc"`` (the seed project's) or ``"pipeline"`` (the base model's own).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the command-line option each field comes from, for error messages
    OPTION_NAMES: ClassVar[dict[str, str]] = {
        "base_model": "--base-model",
        "lora": "--lora",
        "mode": "--sdxl-mode",
        "base_photos": "--base-photos",
        "refine_method": "--sdxl-refine",
        "vae": "--vae",
        "batch_size": "--sdxl-batch-size",
        "severity_step": "--sdxl-severity-step",
        "batching": "--sdxl-batching",
        "dtype": "--sdxl-dtype",
        "compile": "--sdxl-compile",
    }

    base_model: str | None = None
    lora: list[str] = Field(default_factory=list)
    mode: Literal["anchor", "refine"] = "refine"
    base_photos: str | None = None
    steps: int = Field(30, ge=1)
    strength: float | None = Field(None, gt=0, le=1)
    guidance: float = Field(12.0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    dtype: Literal["auto", "fp16", "float16", "bf16", "bfloat16", "fp32", "float32"] = "auto"
    device: str | None = None
    severity_step: float | None = Field(None, ge=0, le=1)
    batching: Literal["auto", "mixed", "by-weight"] = "auto"
    refine_method: Literal["img2img", "inpaint"] = "img2img"
    mask_dilation_px: int | None = Field(None, ge=0)
    prompt: str = SEED_PROMPT
    vae: str | None = None
    vae_upcast: bool | None = None
    channels_last: bool | None = None
    compile: bool | str = False
    scheduler: Literal["unipc", "pipeline"] = "unipc"
    merge_loras: bool = True
    fuse_qkv: bool | None = None

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_list(cls, value):
        """One path, a ``{grade: path}`` mapping or a sequence of specs → a list of specs."""
        if value is None:
            return []
        if isinstance(value, dict):
            return [f"{g}={p}" for g, p in value.items()]
        if isinstance(value, str) or hasattr(value, "__fspath__"):
            return [str(value)]
        return [str(v) for v in value]

    @field_validator("base_model", "base_photos", "vae", mode="before")
    @classmethod
    def _path_text(cls, value):
        return None if value is None else str(value)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_grade(cls, value: str) -> str:
        if "{grade}" not in value:
            raise ValueError(f"the prompt must contain {{grade}}, e.g. {SEED_PROMPT!r}")
        return value

    @property
    def strength_or_default(self) -> float:
        """``strength``, else the seed project's 0.1 in anchor mode and 0.2 in refine mode."""
        return float(self.strength if self.strength is not None else (0.1 if self.mode == "anchor" else 0.2))
