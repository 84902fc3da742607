"""The options of ``trialsim finetune`` as one validated model; the defaults are the seed project's recipe."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INSTANCE_PROMPT = "photo of a person with acne{grade}"


class FinetuneOptions(BaseModel):
    """What :func:`trialsim.finetune.finetune` trains, and how.

    ``photos``: a folder with ``manifest.csv`` (columns ``image`` and ``grade_column``) or one
    sub-folder per grade (``0`` … ``3`` or ``acne0`` … ``acne3``). ``out``: the LoRA folder;
    each grade's LoRA goes to ``out/acne{grade}/pytorch_lora_weights.safetensors``.
    ``base_model``: a local diffusers SDXL folder or a hub id; ``vae``: an fp16-safe VAE to use
    instead of the base model's (folder or hub id). ``prompt``: the instance prompt
    (``{grade}`` is filled in). ``resolution``: training size in px (photos are resized on their
    short side, then centre-cropped). ``steps``: optimiser steps per grade, each over
    ``batch_size`` × ``gradient_accumulation`` photos. ``learning_rate`` (AdamW; ``adam_8bit``
    uses bitsandbytes' 8-bit AdamW), constant after ``warmup_steps`` linear warm-up steps.
    ``snr_gamma``: min-SNR loss weighting γ (None or 0: plain MSE). ``rank``: LoRA rank (alpha =
    rank). ``mixed_precision``: ``fp16`` | ``bf16`` | ``no`` (the frozen networks in that dtype,
    the LoRA weights in fp32; the CPU always trains in fp32). ``checkpoint_every``: optimiser
    steps between checkpoints (rerunning continues from the last one). ``cache``: encode each
    photo with the VAE and the prompt with the text encoders once, not at every step.
    ``train_text_encoder``: a LoRA on both text encoders too (at ``text_encoder_learning_rate``;
    the prompt is then encoded at every step). ``compile``: ``torch.compile`` the UNet. ``seed``: every random draw (noise, timesteps,
    photo order, LoRA initialisation) follows from it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    OPTION_NAMES: ClassVar[dict[str, str]] = {
        "photos": "PHOTOS",
        "out": "--out",
        "base_model": "--base-model",
        "grade_column": "--grade-column",
        "grades": "--grades",
        "vae": "--vae",
        "prompt": "--prompt",
        "resolution": "--resolution",
        "batch_size": "--batch-size",
        "gradient_accumulation": "--gradient-accumulation",
        "gradient_checkpointing": "--gradient-checkpointing",
        "learning_rate": "--learning-rate",
        "warmup_steps": "--warmup-steps",
        "snr_gamma": "--snr-gamma",
        "rank": "--rank",
        "mixed_precision": "--mixed-precision",
        "steps": "--steps",
        "checkpoint_every": "--checkpoint-every",
        "seed": "--seed",
        "cache": "--cache",
        "compile": "--compile",
        "adam_8bit": "--adam-8bit",
        "train_text_encoder": "--train-text-encoder",
        "text_encoder_learning_rate": "--text-encoder-learning-rate",
    }

    photos: str
    out: str
    base_model: str
    grade_column: str = "grade"
    grades: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    vae: str | None = None
    prompt: str = INSTANCE_PROMPT
    resolution: int = Field(1024, ge=8)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation: int = Field(3, ge=1)
    gradient_checkpointing: bool = True
    learning_rate: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    snr_gamma: float | None = Field(5.0, ge=0)
    rank: int = Field(4, ge=1)
    mixed_precision: Literal["fp16", "bf16", "no"] = "fp16"
    steps: int = Field(500, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = Field(0, ge=0)
    cache: bool = True
    compile: bool = False
    adam_8bit: bool = False
    train_text_encoder: bool = False
    text_encoder_learning_rate: float = Field(5e-6, gt=0)
    device: str | None = None
    progress: bool = True

    @field_validator("photos", "out", "base_model", "vae", mode="before")
    @classmethod
    def _path_text(cls, value):
        return None if value is None else str(value)

    @field_validator("grades", mode="before")
    @classmethod
    def _grade_list(cls, value):
        """``"0,1,2,3"`` or a sequence → a sorted list of distinct grades 0–3."""
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        try:
            grades = sorted({int(v) for v in value})
        except (TypeError, ValueError):
            raise ValueError("grades must be a comma list of integers, e.g. 0,1,2,3") from None
        if any(not 0 <= g <= 3 for g in grades):
            raise ValueError("grades are ACNE04 grades 0, 1, 2 or 3")
        return grades

    @field_validator("snr_gamma")
    @classmethod
    def _zero_is_off(cls, value: float | None) -> float | None:
        return value or None

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError("the resolution must be a multiple of 8 (the VAE works on 8 × 8 px blocks)")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_has_grade(cls, value: str) -> str:
        if "{grade}" not in value:
            raise ValueError(f"the prompt must contain {{grade}}, e.g. {INSTANCE_PROMPT!r}")
        return value

    def recipe(self) -> dict:
        """The options that decide the weights; a checkpoint made under other values is not resumed."""
        skip = {"out", "progress", "device", "compile", "cache", "grades", "checkpoint_every", "gradient_checkpointing"}
        recipe = {k: v for k, v in self.model_dump().items() if k not in skip}
        for key in ("photos", "base_model", "vae"):  # the same folder however it is written
            if recipe[key] and Path(recipe[key]).expanduser().exists():
                recipe[key] = str(Path(recipe[key]).expanduser().resolve())
        return recipe
