"""``--renderer sdxl``: images through SDXL img2img with per-grade LoRAs (the seed project, improved).

The seed project (Hettich 2024) renders each day with SDXL base 1.0 img2img from one
base photo per patient, using one DreamBooth-LoRA per acne grade 0–3, the severity
rounded to a grade and the pipeline reloaded per grade. Here:

* the base model and every LoRA are loaded **once** into one pipeline (diffusers'
  ``from_pretrained``, ``load_lora_weights(adapter_name="acne{g}")``);
* severity stays **continuous**: severity ``s`` between grades ``g`` and ``g+1`` uses the
  adapters ``acne{g}`` and ``acne{g+1}`` with weights ``(1-f, f)``, ``f = s - g``, and the
  prompt embedding is the same blend of the two grades' prompts (so a single LoRA, or
  none, is continuous too). A blend that holds for a whole call (text encoders; the UNet in
  by-weight batches) is folded into the weights (:class:`LoraBlend`: ``W0 + Σ w·B·A``,
  rewritten from the kept ``W0`` for each new severity), so the network runs without peft's
  per-layer LoRA products and a compiled UNet does not recompile; LoRAs that cannot be
  folded go through diffusers' ``set_adapters`` instead;
* images are **batched**, ``batch_size`` at a time. With ``batching="mixed"`` (the default
  where it is exact) a patient's photos fill every batch in order whatever their severities
  (:func:`~.batching.plan_mixed`: all batches full but the patient's last): each photo gets
  its own prompt embedding and its own adapter weights, the LoRA deltas computed per sample
  inside the UNet (:mod:`.persample`; the unconditional half of classifier-free guidance
  too), so a photo's pixels are those of rendering it alone with its blend. Severities are
  then exact (``severity_step`` 0). With ``batching="by-weight"`` one blend holds for a
  whole call (folded into the weights, no LoRA work in the forward pass): severities are
  quantised to ``severity_step`` (default 0.05 on the 0–3 scale; the seed project's step is
  1) and only photos with the same quantised severity share a call (:func:`plan_batches`);
* on CUDA: half precision, channels-last, fused q/k/v projections, and optionally
  ``torch.compile`` of the UNet and the VAE (``compile=True``; a few minutes once);
* every photo has its own ``torch.Generator`` keyed by (study seed, patient, day,
  photo), so its noise does not depend on batch composition or worker count (on the CPU
  the pixels are identical whatever the batch; on a GPU the kernels picked for another
  batch size may change the last bit);
* two modes. ``anchor`` reproduces the seed project: img2img from one base photo per
  patient (``base_photos`` folder, else the procedural renderer's grade-0 identity),
  strength 0.1, CFG 12, 30 UniPC steps, prompt ``photo of a person with acne{L}, …``.
  SDXL decides where lesions go, so anchor mode carries **no per-lesion truth**
  (``lesions.csv`` gets no rows; ``lesion_count`` is the simulator's target count).
  ``refine`` (default) takes the procedural renderer's clean image, with its exact
  lesions, through img2img at low strength (``refine_method="img2img"``) or through
  inpainting limited to the dilated lesion masks (``"inpaint"``); lesion positions,
  persistence and identity come from the simulator and its lesion truth stays valid.

The per-photo nuisance (light, framing, blur, noise, JPEG) of the procedural renderer
is applied after SDXL in both modes (``--nuisance 0`` leaves photos as SDXL made them).
``adapter_weights_`` records the adapter weights used at each (quantised) severity.

A patient's input frames are held in memory while its batches are formed (140 days at
1024 px ≈ 440 MB); run SDXL with ``--workers 1`` on one GPU (each worker loads its own
pipeline).

Modules: :mod:`.options` (:class:`SDXLOptions`), :mod:`.resolve` (base model and LoRAs:
local folders, the Hugging Face cache, the Hub), :mod:`.blend` (:class:`LoraBlend`, LoRAs
folded into the weights), :mod:`.batching` (severity → adapters, pipeline calls),
:mod:`.loading` (diffusers' loading and speed-ups), :mod:`.persample` (per-photo adapter weights
in one call), :mod:`.patient` (a patient's inputs) and
:mod:`.renderer` (:class:`SDXLRenderer`).
"""

from .batching import grade_blend, plan_batches, quantise_severity
from .blend import LoraBlend
from .options import SEED_PROMPT, SDXLOptions
from .renderer import SDXLRenderer
from .resolve import LORA_WEIGHT_NAME, LoraSource, parse_lora_specs, resolve_lora


def load_renderer(protocol, **options) -> SDXLRenderer:
    """``SDXLRenderer.from_options(protocol, **options)``: a loaded renderer from keyword options."""
    return SDXLRenderer.from_options(protocol, **options)


__all__ = [
    "LORA_WEIGHT_NAME",
    "SEED_PROMPT",
    "LoraBlend",
    "LoraSource",
    "SDXLOptions",
    "SDXLRenderer",
    "grade_blend",
    "load_renderer",
    "parse_lora_specs",
    "plan_batches",
    "quantise_severity",
    "resolve_lora",
]
