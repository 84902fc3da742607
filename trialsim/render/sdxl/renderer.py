"""The SDXL renderer: a cheap constructor, :meth:`SDXLRenderer.from_options` to load, batched pipeline calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BadInput, validated
from ..base import PatientJob, RenderedImage, Renderer
from . import patient
from .batching import grade_blend, plan_batches, plan_mixed
from .blend import LoraBlend
from .loading import load_pipeline, place, speed_up
from .options import SDXLOptions
from .persample import SampleLora, peft_exact, peft_sample_scaling
from .resolve import LoraSource, check_base_model, parse_lora_specs, quiet_libraries, resolve_lora

# prompt embeddings kept per severity; adapter weights likewise (the most recent ones when severities are exact)
_CACHE_SIZE = 128


def _given(array: np.ndarray | None) -> np.ndarray:
    """``array``, which the caller knows is there (a wanted photo's input)."""
    if array is None:
        raise RuntimeError("a photo in a batch has no input image")
    return array


class SDXLRenderer(Renderer):
    """SDXL img2img renderer; see :mod:`trialsim.render.sdxl` for the method and :class:`SDXLOptions`.

    ``SDXLRenderer(protocol, options)`` only stores the options; :meth:`from_options` checks
    them, loads the pipeline and returns a renderer ready to render. After loading:
    ``pipe`` (diffusers' img2img pipeline), ``device``, ``dtype``, ``batch_size``, ``loras``,
    ``lora_blend_`` (:class:`~trialsim.render.sdxl.blend.LoraBlend`, or None when the LoRAs run
    through peft's layers), ``fuse_qkv_``, ``size_multiple_`` (px), ``batching_`` (``"mixed"``
    or ``"by-weight"``), ``severity_step_`` and ``adapter_weights_``: quantised severity → the
    adapter weights used for it.
    """

    name = "sdxl"
    extension = ".jpg"

    def __init__(self, protocol, options: SDXLOptions | None = None):
        super().__init__(protocol)
        self.options = options if options is not None else SDXLOptions()
        self.pipe: Any = None  # diffusers' StableDiffusionXLImg2ImgPipeline once loaded
        self.loras: list[LoraSource] = []
        self.lora_blend_: LoraBlend | None = None
        self.fuse_qkv_ = False
        self.adapter_weights_: dict[float, dict[str, float]] = {}
        self._embeds: dict[float, dict] = {}
        self._inpaint: Any = None
        self._procedural_renderer = None
        self._photo_files: list[Path] = []
        self._active: tuple | None = None
        self.batching_ = "by-weight"
        self.severity_step_ = 0.05
        self._sample_lora: SampleLora | None = None
        self._grade_embeds: dict | None = None
        self._text_loras = False

    @classmethod
    def from_options(cls, protocol, options: SDXLOptions | None = None, **overrides) -> SDXLRenderer:
        """A loaded renderer for ``options`` (fields in ``overrides`` replace its own).

        Every input (base model, LoRAs, base photos) is checked before the slow load; bad input
        raises :class:`~trialsim.errors.BadInput` naming the option.
        """
        if overrides or options is None:
            given = options.model_dump(exclude_unset=True) if options is not None else {}
            options = validated(SDXLOptions, {**given, **overrides})
        renderer = cls(protocol, options)
        renderer._load()
        return renderer

    def _load(self) -> None:
        import warnings

        import torch

        o = self.options
        # 1. every input checked before the (slow) load
        if o.base_photos:
            self._photo_files = patient.list_photos(Path(o.base_photos).expanduser())
        base_model, is_local = check_base_model(o.base_model)
        self.loras = [resolve_lora(g, s) for g, s in parse_lora_specs(o.lora)]
        if not self.loras:
            warnings.warn(
                "trialsim sdxl: no --lora given; the base model alone renders and severity acts only through the prompt",
                RuntimeWarning,
                stacklevel=3,
            )
        # 2. device, precision and batch size
        where = place(o)
        self.device, self.dtype, self.batch_size = where.device, where.dtype, where.batch_size
        # 3. the pipeline and every LoRA, with diffusers' own loading
        self.pipe = load_pipeline(o, base_model, is_local, self.loras, where)
        # 4. LoRAs folded into the weights, memory format, fused projections, compile
        self.lora_blend_, self.fuse_qkv_ = speed_up(self.pipe, o, bool(self.loras), self.device)
        # 5. UNet levels halve the latent; the VAE divides by 8: sizes must divide both
        unet_levels = len(self.pipe.unet.config.block_out_channels) - 1
        self.size_multiple_ = int(self.pipe.vae_scale_factor * 2**unet_levels)
        self._torch = torch
        # 6. mixed batches (each photo its own adapter weights) where that is exact
        self.batching_ = self._resolve_batching()
        self._text_loras = self._has_text_loras()
        step = o.severity_step
        self.severity_step_ = float(step if step is not None else (0.0 if self.batching_ == "mixed" else 0.05))
        if self._per_sample and self.lora_blend_ is not None:
            guided = 2 if o.guidance > 1 else 1
            self._sample_lora = SampleLora(self.lora_blend_, self.pipe.unet, rows=guided * self.batch_size)

    def _resolve_batching(self) -> str:
        """``options.batching`` with ``auto`` resolved; BadInput when mixed batches are asked for but inexact."""
        exact = len(self.lora_grades) < 2 or self.lora_blend_ is not None or peft_exact(self.pipe.unet)
        asked = self.options.batching
        if asked == "mixed" and not exact:
            raise BadInput(
                "mixed batches need LoRAs whose weights can be set per photo (plain LoRA layers; not DoRA)",
                field="--sdxl-batching",
                allowed="by-weight, or LoRAs without DoRA",
            )
        return "by-weight" if asked == "by-weight" or not exact else "mixed"

    @property
    def _per_sample(self) -> bool:
        """Whether photos of one batch may need different adapter weights (mixed batches, two or more grade LoRAs)."""
        return self.batching_ == "mixed" and len(self.lora_grades) >= 2

    def _has_text_loras(self) -> bool:
        """Whether a LoRA acts on the text encoders (then a prompt embedding depends on the blend)."""
        if self.lora_blend_ is not None:
            return any(c != "unet" for c in self.lora_blend_.components)
        from peft.tuners.lora import LoraLayer

        encoders = (getattr(self.pipe, c, None) for c in ("text_encoder", "text_encoder_2"))
        return any(isinstance(m, LoraLayer) for e in encoders if e is not None for m in e.modules())

    # -- continuous severity ----------------------------------------------------

    @property
    def lora_grades(self) -> list[int]:
        return sorted(s.grade for s in self.loras if s.grade is not None)

    def adapter_weights(self, severity: float) -> dict[str, float]:
        """Adapter name → weight for one (already quantised) severity."""
        if not self.loras:
            return {}
        if self.loras[0].grade is None:
            return {self.loras[0].adapter_name: 1.0}
        return {f"acne{g}": w for g, w in grade_blend(severity, self.lora_grades).items()}

    def _set_adapters(self, weights: dict[str, float], text_only: bool = False) -> None:
        """Set one adapter blend on every network (``text_only``: on the text encoders alone)."""
        key = (text_only, *sorted(weights.items()))
        if not weights or key == self._active:
            return
        if self.lora_blend_ is not None:
            self.lora_blend_.apply(weights, ("text_encoder", "text_encoder_2") if text_only else LoraBlend.COMPONENTS)
        else:
            self.pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
        self._active = key

    def _prompt_embeds(self, severities: Sequence[float]) -> dict:
        """Prompt embeddings for photos of these severities, each blended between the two grades around it.

        Computed once per severity; with text-encoder LoRAs, with the severity's blend set on the
        text encoders.
        """
        ones = []
        for severity in severities:
            one = self._embeds.get(severity)
            if one is None:
                if self._text_loras:
                    self._set_adapters(self.adapter_weights(severity), text_only=self._per_sample)
                one = self._embeds[severity] = self._encode_blend(severity)
                if len(self._embeds) > _CACHE_SIZE:
                    self._embeds.pop(next(iter(self._embeds)))
            ones.append(one)
        return {k: self._torch.cat([one[k] for one in ones]) for k in ones[0]}

    def _encode(self, grades: list[int]):
        """diffusers' ``encode_prompt`` for the grades' prompts: (embeds, negative, pooled, negative pooled)."""
        with self._torch.no_grad():
            return self.pipe.encode_prompt(
                prompt=[self.options.prompt.format(grade=g) for g in grades],
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.options.guidance > 1,
            )

    def _encode_blend(self, severity: float) -> dict:
        blend = grade_blend(severity, [0, 1, 2, 3])
        grades, weights = list(blend), list(blend.values())
        guided = self.options.guidance > 1
        if self._text_loras:
            pe, npe, pp, npp = self._encode(grades)
        else:  # the text encoders do not change with severity: the four grades' prompts once for all
            if self._grade_embeds is None:
                self._grade_embeds = dict(zip(("pe", "npe", "pp", "npp"), self._encode([0, 1, 2, 3])))
            pe, npe, pp, npp = (
                None if t is None else t[grades] for t in (self._grade_embeds[k] for k in ("pe", "npe", "pp", "npp"))
            )
        w = self._torch.tensor(weights, device=pe.device, dtype=pe.dtype)

        def mix(t):
            return (t * w.view(-1, *([1] * (t.dim() - 1)))).sum(0, keepdim=True)

        out = dict(prompt_embeds=mix(pe), pooled_prompt_embeds=mix(pp))
        if guided:
            out.update(negative_prompt_embeds=npe[:1], negative_pooled_prompt_embeds=npp[:1])
        return out

    # -- one pipeline call ----------------------------------------------------

    def _unet_weights(self, severities: list[float]):
        """Set the adapters for photos of these severities; a context for the pipeline call.

        One blend for all photos is set on the networks; photos that need different blends (mixed
        batches) get per-sample weights inside the returned context.
        """
        weights = [self.adapter_weights(s) for s in severities]
        if not self._per_sample:
            if any(w != weights[0] for w in weights):
                raise ValueError("by-weight batching renders photos of one severity per call")
            self._set_adapters(weights[0])
            return nullcontext()
        if self._sample_lora is not None:
            return self._sample_lora.batch(weights, guided=self.options.guidance > 1)
        self._active = None  # peft's scalings and active adapters are set again after the call
        return peft_sample_scaling(self.pipe.unet, weights, [f"acne{g}" for g in self.lora_grades])

    def render_batch(
        self,
        pixels: np.ndarray,
        severity: float | Sequence[float],
        generator_seeds: list[int],
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """SDXL on a batch: ``pixels`` B×H×W×3 uint8 → B×H×W×3 uint8.

        ``severity``: one for the batch, or one per photo (mixed batches; by-weight batching
        takes one). Sizes that are not a multiple of :attr:`size_multiple_` are resized for
        SDXL and back. ``masks`` (B×H×W bool) switches to inpainting inside the masks.
        """
        torch = self._torch
        n, h, w = pixels.shape[:3]
        m = self.size_multiple_
        wh, ww = max(m, round(h / m) * m), max(m, round(w / m) * m)
        # 1. pixels → a float batch at a size SDXL takes
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = self._resize(x, (wh, ww), "bicubic")
        # 2. the prompt embeddings and the adapter weights, per photo
        if isinstance(severity, (int, float, np.number)):
            severities = [float(severity)] * n
        else:
            severities = [float(s) for s in severity]
        if len(severities) != n:
            raise ValueError(f"{len(severities)} severities for {n} photos")
        embeds = self._prompt_embeds(severities)
        unet_weights = self._unet_weights(severities)
        args = dict(
            image=x.to(self.dtype),
            strength=self.options.strength_or_default,
            guidance_scale=self.options.guidance,
            num_inference_steps=self.options.steps,
            generator=[torch.Generator("cpu").manual_seed(int(s)) for s in generator_seeds],
            output_type="pt",
            height=wh,
            width=ww,
            **embeds,
        )
        # 3. the pipeline call (inpainting inside the masks when given)
        with torch.inference_mode(), quiet_libraries(), unet_weights:
            if masks is not None:
                mk = self._resize(torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None], (wh, ww), "nearest")
                out = self._inpaint_pipe()(mask_image=mk.to(self.device), **args).images
            else:
                out = self.pipe(**args).images
            # 4. back to the input size as uint8
            out = self._resize(out.float().clamp(0, 1), (h, w), "bicubic")
            out = out.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        if masks is not None:
            # diffusers decodes the whole frame; paste SDXL back only inside the (feathered) masks so
            # every pixel away from a lesion stays the procedural one
            alpha = np.stack([patient.feather(mk, self.options.mask_dilation_px) for mk in masks])[..., None]
            out = np.clip(alpha * out + (1.0 - alpha) * pixels + 0.5, 0, 255).astype(np.uint8)
        return out

    def _resize(self, x, size: tuple[int, int], mode: str):
        if tuple(x.shape[-2:]) == size:
            return x
        if mode == "nearest":
            return self._torch.nn.functional.interpolate(x, size=size, mode="nearest")
        return self._torch.nn.functional.interpolate(x, size=size, mode=mode, align_corners=False).clamp_(0, 1)

    def _inpaint_pipe(self):
        if self._inpaint is None:
            from diffusers import StableDiffusionXLInpaintPipeline

            self._inpaint = StableDiffusionXLInpaintPipeline(**self.pipe.components)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    # -- a patient ------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        from ...lesions import canonical_size

        r = self.protocol.rendering
        return canonical_size(r.image_size, r.aspect)

    def _procedural(self):
        if self._procedural_renderer is None:
            from ..procedural import ProceduralRenderer

            self._procedural_renderer = ProceduralRenderer(self.protocol)
        return self._procedural_renderer

    def _base_photo(self, job: PatientJob) -> np.ndarray:
        """Anchor mode's one base portrait for the patient, H×W×3 uint8."""
        h, w = self._size()
        if not self._photo_files:
            return patient.fit_image(
                np.asarray(self._procedural().identity_image(job.patient_index, job.patient_id)), h, w
            )
        return patient.read_photo(patient.pick_photo(self._photo_files, job), h, w)

    def _dilate(self, mask: np.ndarray) -> np.ndarray:
        return patient.dilate(mask, self.options.mask_dilation_px)

    def _inpaints(self) -> bool:
        return self.options.mode == "refine" and self.options.refine_method == "inpaint"

    def _items(self, job: PatientJob, wanted: Callable[[str], bool]) -> list[patient.Item]:
        step = self.severity_step_
        if self.options.mode == "anchor":
            return patient.anchor_items(job, step, lambda: self._base_photo(job), wanted)
        clean = self._procedural().clean_images(job)
        return patient.refine_items(job, step, clean, self._dilate if self._inpaints() else None, wanted)

    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        """Render the patient's wanted photos in batches (mixed, or of equal severity), yield all in order."""
        from ..nuisance import apply_nuisance

        # 1. per photo: quantised severity, seeds, the input image (and mask) and the lesion truth
        items = self._items(job, wanted)
        todo = [i for i, it in enumerate(items) if it.source is not None]
        # 2. pipeline calls of batch_size photos: any severities (mixed), or equal ones (by-weight)
        if self.batching_ == "mixed":
            batches = plan_mixed(len(todo), self.batch_size)
        else:
            batches = [pos for _, pos in plan_batches([items[i].severity for i in todo], self.batch_size)]
        data: dict[int, bytes] = {}
        nuisance = float(self.protocol.rendering.nuisance)
        for pos in batches:
            chunk = [todo[p] for p in pos]
            # 3. SDXL on the batch, each photo at its own severity
            pixels = np.stack([_given(items[i].source) for i in chunk])
            masks = np.stack([_given(items[i].mask) for i in chunk]) if self._inpaints() else None
            severities = [items[i].severity for i in chunk]
            out = self.render_batch(pixels, severities, [items[i].generator_seed for i in chunk], masks)
            for severity in severities:
                self._remember(severity)
            # 4. the photo's own light, framing, blur, noise and JPEG
            for i, px in zip(chunk, out):
                data[i] = apply_nuisance(px, items[i].seed, nuisance, items[i].hour)
                items[i].source = None  # free the input as we go
        # 5. every photo in order, with its truth (no pixels for the ones not wanted)
        for i, it in enumerate(items):
            yield RenderedImage(
                image=it.image, data=data.pop(i, None), lesions=it.lesions, lesion_count=it.lesion_count
            )

    def _remember(self, severity: float) -> None:
        """Record the adapter weights used at ``severity`` (one entry per severity, bounded)."""
        if severity not in self.adapter_weights_:
            self.adapter_weights_[severity] = self.adapter_weights(severity)
            if len(self.adapter_weights_) > _CACHE_SIZE:
                self.adapter_weights_.pop(next(iter(self.adapter_weights_)))

    def finish_patient(self, job: PatientJob, out: Path) -> None:
        """Write the patient's contact sheet (built from the files as written)."""
        from ..contact import write_contact_sheet

        write_contact_sheet(job, out)
