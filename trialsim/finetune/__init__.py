"""``trialsim finetune``: DreamBooth-style LoRA fine-tuning of SDXL, one LoRA per ACNE04 grade.

The first step of the seed project's photo path (the SDXL renderer does the second): for each
grade, a LoRA on SDXL's UNet is trained on that grade's photos with the instance prompt
``photo of a person with acne{grade}`` and written to ``out/acne{grade}/pytorch_lora_weights.safetensors``,
the layout ``trialsim simulate --renderer sdxl --lora`` reads. Defaults are the seed project's
recipe (:class:`FinetuneOptions`). Rerunning the same call continues from the last checkpoint;
a grade already finished is kept.

Modules: :mod:`.options` (the options), :mod:`.photos` (which photo has which grade; loading and
cropping), :mod:`.models` (loading SDXL, the LoRA, encoders), :mod:`.cache` (latents and prompt
embeddings once per photo), :mod:`.train` (the loop), :mod:`.checkpoint` (checkpoints, log, output).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from .options import INSTANCE_PROMPT, FinetuneOptions

__all__ = ["INSTANCE_PROMPT", "FinetuneOptions", "finetune"]


def _placement(options: FinetuneOptions):
    """(device, dtype of the frozen networks): the mixed-precision dtype on CUDA, float32 on the CPU."""
    import torch

    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        if options.mixed_precision != "no":
            warnings.warn(
                f"trialsim finetune: no CUDA GPU; training in float32 instead of {options.mixed_precision} "
                "(very slow at 1024 px)",
                RuntimeWarning,
                stacklevel=3,
            )
        return device, torch.float32
    return device, {"fp16": torch.float16, "bf16": torch.bfloat16, "no": torch.float32}[options.mixed_precision]


def _finished(folder: Path, options: FinetuneOptions) -> bool:
    """Whether ``folder`` already holds this grade's LoRA trained with these options (BadInput if with others)."""
    from ..errors import BadInput
    from ..render.sdxl.resolve import LORA_WEIGHT_NAME
    from .checkpoint import read_log

    if not (folder / LORA_WEIGHT_NAME).is_file():
        return False
    log = read_log(folder)
    if log is None or log.get("recipe") != options.recipe() or log.get("steps_done") != options.steps:
        raise BadInput(
            f"{folder / LORA_WEIGHT_NAME} already exists and was not trained with these options",
            field="--out",
            allowed="another --out, or delete that folder to train it again",
        )
    return True


def finetune(options: FinetuneOptions, on_step: Callable[[int, int, float], None] | None = None) -> dict[int, Path]:
    """Train the LoRA of each grade in ``options.grades``; ``{grade: weights file}``.

    Every input is checked (photos found and readable, base model present) before training
    starts. ``on_step(grade, step, loss)`` is called after each optimiser step. Raises
    :class:`~trialsim.errors.BadInput` for anything the user can fix.
    """
    from ..render.sdxl.resolve import check_base_model
    from .cache import Examples
    from .checkpoint import grade_folder
    from .models import load_networks, place_encoders
    from .photos import find_photos, load_photo
    from .train import train_grade

    check_base_model(options.base_model)
    paths = find_photos(options.photos, options.grades, options.grade_column)
    todo = [g for g in options.grades if not _finished(grade_folder(options.out, g), options)]
    photos = {g: [load_photo(p, options.resolution) for p in paths[g]] for g in todo}
    out = {g: grade_folder(options.out, g) / "pytorch_lora_weights.safetensors" for g in options.grades}
    if not todo:
        return out
    device, dtype = _placement(options)
    nets = load_networks(options.base_model, options.vae, dtype, device)
    nets.unet.train()  # the LoRA layers train; SDXL's UNet has no dropout, so the frozen part is unchanged
    if options.gradient_checkpointing:
        nets.unet.enable_gradient_checkpointing()
    for grade in todo:
        place_encoders(nets, device)
        prompt = options.prompt.format(grade=grade)
        examples = Examples(nets, photos[grade], prompt, options.resolution, options.cache, options.train_text_encoder)
        if options.cache:  # not needed until the next grade's photos (the text encoders are, when they train)
            place_encoders(nets, "cpu", text_encoders=not options.train_text_encoder)
        callback = None if on_step is None else (lambda step, loss, g=grade: on_step(g, step, loss))
        out[grade] = train_grade(nets, examples, options, grade, callback)
    return out
