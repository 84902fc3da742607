"""``--renderer sdxl``: images through SDXL img2img with per-grade LoRAs (the seed project, improved).

The seed project (Hettich 2024) renders each day with SDXL base 1.0 img2img from one
base photo per patient, using one DreamBooth-LoRA per acne grade 0–3, the severity
rounded to a grade and the pipeline reloaded per grade. Here:

* the base model and every LoRA are loaded **once** into one pipeline (diffusers'
  ``from_pretrained``, ``load_lora_weights(adapter_name="acne{g}")``);
* severity stays **continuous**: severity ``s`` between grades ``g`` and ``g+1`` uses the
  adapters ``acne{g}`` and ``acne{g+1}`` with weights ``(1-f, f)``, ``f = s - g``, and the
  prompt embedding is the same blend of the two grades' prompts (so a single LoRA, or
  none, is continuous too). The blend is folded into the weights (:class:`LoraBlend`:
  ``W0 + Σ w·B·A``, rewritten from the kept ``W0`` for each new severity), so the UNet runs
  without peft's per-layer LoRA products and a compiled UNet does not recompile; LoRAs that
  cannot be folded go through diffusers' ``set_adapters`` instead;
* images are **batched**. One blend holds for a whole pipeline call, so a batch holds
  images that share a severity: severities are quantised to ``severity_step`` (default
  0.05 on the 0–3 scale, 1/20 of a grade; the seed project's step is 1) and a patient's
  photos with the same quantised severity are rendered together, ``batch_size`` at a time
  (:func:`plan_batches`). A coarser step gives fuller batches;
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
The adapter weights used for each written image are kept in ``adapter_weights_``.

A patient's input frames are held in memory while its batches are formed (140 days at
1024 px ≈ 440 MB); run SDXL with ``--workers 1`` on one GPU (each worker loads its own
pipeline).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import BadInput
from ..protocol import SEVERITY_MAX, SEVERITY_MIN, Protocol
from ..seeding import seed_sequence
from .base import LESION_COLUMNS, PatientJob, RenderedImage, Renderer

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SEED_PROMPT = "photo of a person with acne{grade}, portrait, close-up, cheek, detailed, HQ, photo, 4k"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
_GRADE_SPEC = re.compile(r"^\s*(?:acne)?([0-9]+)\s*=(.+)$")
_DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


# ---------------------------------------------------------------- severity → adapters


def quantise_severity(severity: float, step: float) -> float:
    """``severity`` clipped to 0–3 and rounded to a multiple of ``step`` (6 decimals)."""
    s = min(max(float(severity), SEVERITY_MIN), SEVERITY_MAX)
    if step > 0:
        s = round(s / step) * step
    return round(min(max(s, SEVERITY_MIN), SEVERITY_MAX), 6)


def grade_blend(severity: float, grades: list[int]) -> dict[int, float]:
    """Weights of the two grades around ``severity`` (continuous, no rounding).

    ``grade_blend(1.5, [0, 1, 2, 3]) == {1: 0.5, 2: 0.5}``; an exact grade gets weight 1;
    outside the available grades the nearest one gets weight 1.
    """
    gs = sorted(grades)
    s = min(max(float(severity), gs[0]), gs[-1])
    lower = max(g for g in gs if g <= s)
    upper = min(g for g in gs if g >= s)
    if lower == upper:
        return {lower: 1.0}
    f = round((s - lower) / (upper - lower), 6)
    out = {lower: round(1.0 - f, 6), upper: f}
    return {g: w for g, w in out.items() if w > 0}


def plan_batches(severities, batch_size: int) -> list[tuple[float, list[int]]]:
    """Pipeline calls for photos with these (quantised) severities: ``[(severity, [indices])]``.

    Photos of equal severity share a call, at most ``batch_size`` at a time, in order of
    severity then position.
    """
    groups: dict[float, list[int]] = {}
    for i, s in enumerate(severities):
        groups.setdefault(float(s), []).append(i)
    return [
        (s, idx[k : k + batch_size])
        for s in sorted(groups)
        for idx in [groups[s]]
        for k in range(0, len(idx), batch_size)
    ]


# ---------------------------------------------------------------- resolving user input


@dataclass
class LoraSource:
    grade: int | None  # None: one LoRA for every grade
    spec: str  # as the user gave it
    folder: str  # local folder holding LORA_WEIGHT_NAME (resolved)
    weight_name: str

    @property
    def adapter_name(self) -> str:
        return "acne" if self.grade is None else f"acne{self.grade}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hub's host answers a TCP connection (a proxy in the environment counts as yes).

    Asked before any download so that a machine with no network fails in seconds instead of
    waiting through huggingface_hub's retries.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s
        ).close()
        return True
    except OSError:
        return False


def _from_hub(load, spec: str, what: str, field: str, local_path: Path):
    """``load(local_files_only)`` from the Hugging Face cache, else from the Hub when it is reachable.

    Any failure becomes :class:`BadInput` naming the local path checked, the cache and the Hub.
    """
    try:
        return load(True)
    except Exception as err:
        cache_err = err
    online = not _offline() and _hub_reachable()
    err = cache_err
    if online:
        try:
            return load(False)
        except Exception as e:
            err = e
    # the library's own text only adds information when the Hub itself answered
    detail = f": {str(err).splitlines()[0][:200]}" if online and str(err) else ""
    hub = (
        "and on the Hub"
        if online
        else "(HF_HUB_OFFLINE is set, so not on the Hub)"
        if _offline()
        else "and not on the Hub: no network (could not reach it)"
    )
    raise BadInput(
        f"{what} not found: looked for a local folder {local_path.resolve()} (none), then for "
        f"hub repo '{spec}' in the Hugging Face cache {_hf_cache()} {hub} "
        f"({err.__class__.__name__}{detail})",
        field=field,
        allowed="a local folder, or a hub id already in the cache (or with network access)",
    ) from None


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _looks_like_path(spec: str) -> bool:
    """True when ``spec`` cannot be a hub id (``name`` or ``org/name``)."""
    return (
        spec.startswith(("/", "./", "../", "~", "\\"))
        or spec.count("/") > 1
        or "\\" in spec
        or bool(re.match(r"^[A-Za-z]:", spec))
        or spec.endswith("/")
    )


def parse_lora_specs(lora) -> list[tuple[int | None, str]]:
    """``["0=PATH", …]`` (grades 0–3) or ``["PATH"]`` (one LoRA) → ``[(grade or None, PATH)]``."""
    if lora is None:
        return []
    if isinstance(lora, dict):
        items = [f"{g}={p}" for g, p in lora.items()]
    elif isinstance(lora, (str, os.PathLike)):
        items = [str(lora)]
    else:
        items = [str(x) for x in lora]
    out: list[tuple[int | None, str]] = []
    for item in items:
        m = _GRADE_SPEC.match(item)
        if m:
            grade = int(m.group(1))
            if not 0 <= grade <= 3:
                raise BadInput(
                    f"LoRA grade {grade} in {item!r} is out of range",
                    field="--lora",
                    allowed="GRADE=PATH with GRADE 0, 1, 2 or 3, or a single PATH",
                )
            out.append((grade, m.group(2).strip()))
        else:
            out.append((None, item.strip()))
    if any(g is None for g, _ in out) and len(out) > 1:
        raise BadInput(
            f"got {len(out)} LoRAs but not all as GRADE=PATH: {items}",
            field="--lora",
            allowed="one PATH (a LoRA for all grades) or GRADE=PATH for each grade 0–3",
        )
    grades = [g for g, _ in out if g is not None]
    dup = sorted({g for g in grades if grades.count(g) > 1})
    if dup:
        raise BadInput(f"grade(s) {dup} given more than once", field="--lora", allowed="one GRADE=PATH per grade 0–3")
    return out


def resolve_lora(grade: int | None, spec: str) -> LoraSource:
    """Find a LoRA in the seed project's layout: a folder (or hub repo) holding
    ``pytorch_lora_weights.safetensors``, or that ``.safetensors`` file itself."""
    where = f"--lora {'' if grade is None else f'{grade}='}{spec}"
    p = Path(spec).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise BadInput(
                f"{p} is not a .safetensors LoRA file",
                field=where,
                allowed=f"a folder holding {LORA_WEIGHT_NAME}, that file, or a hub id",
            )
        return LoraSource(grade, spec, str(p.parent), p.name)
    if p.is_dir():
        if not (p / LORA_WEIGHT_NAME).is_file():
            found = sorted(x.name for x in p.iterdir())[:8]
            raise BadInput(
                f"wrong LoRA layout: looked for {LORA_WEIGHT_NAME} in the folder {p.resolve()} "
                f"and found {found or 'nothing'}",
                field=where,
                allowed=f"a folder with {LORA_WEIGHT_NAME} (the seed project's layout, as "
                "diffusers' save_lora_weights writes it)",
            )
        return LoraSource(grade, spec, str(p), LORA_WEIGHT_NAME)
    if _looks_like_path(spec):
        raise BadInput(
            f"LoRA not found: no file or folder at {p.resolve()}",
            field=where,
            allowed=f"a folder holding {LORA_WEIGHT_NAME}, that file, or a hub id",
        )
    from huggingface_hub import hf_hub_download

    file = _from_hub(
        lambda local_only: hf_hub_download(repo_id=spec, filename=LORA_WEIGHT_NAME, local_files_only=local_only),
        spec,
        f"LoRA (file {LORA_WEIGHT_NAME})",
        where,
        p,
    )
    return LoraSource(grade, spec, str(Path(file).parent), LORA_WEIGHT_NAME)


def _check_base_model(spec: str | None) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is it a local folder)."""
    if not spec:
        raise BadInput(
            "the SDXL renderer needs a base model",
            field="--base-model",
            allowed="a local diffusers folder (with model_index.json) or a hub id such as "
            "stabilityai/stable-diffusion-xl-base-1.0",
        )
    p = Path(spec).expanduser()
    if p.exists():
        if not (p.is_dir() and (p / "model_index.json").is_file()):
            raise BadInput(
                f"not a diffusers pipeline folder: looked for model_index.json in {p.resolve()}",
                field="--base-model",
                allowed="a folder written by save_pretrained, or a hub id",
            )
        return str(p), True
    if _looks_like_path(spec):
        raise BadInput(
            f"base model not found: no folder at {p.resolve()}",
            field="--base-model",
            allowed="a local diffusers folder (with model_index.json) or a hub id",
        )
    return spec, False


def _torch_dtype(dtype: str, cuda: bool):
    import torch

    if dtype == "auto":
        return torch.float16 if cuda else torch.float32
    if dtype not in _DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}", field="dtype", allowed="auto, fp16, bf16, fp32")
    return getattr(torch, _DTYPES[dtype])


@contextlib.contextmanager
def _quiet_libraries():
    """Silence diffusers/transformers info lines and loading bars (restored afterwards)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = (dlog.get_verbosity(), tlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # one "multiple adapters" warning per LoRA loaded; deprecation notices of the libraries
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        dlog.set_verbosity(saved[0])
        tlog.set_verbosity(saved[1])
        if saved[2]:
            dlog.enable_progress_bar()
        if saved[3]:
            tlog.enable_progress_bar()


# ---------------------------------------------------------------- LoRAs folded into the weights


class LoraBlend:
    """Every loaded LoRA folded into the base weights, one blend of adapters at a time.

    diffusers loads the adapters (its own loading and validation path); this keeps each
    adapted layer's low-rank factors and its original weight ``W0``, then removes peft's
    wrappers so the networks run as plain layers. :meth:`apply` writes
    ``W = W0 + Σ_a w_a · s_a · B_a A_a`` (``s_a`` peft's alpha/rank scaling; fp32 arithmetic,
    cast to the model's dtype) into each adapted weight, in place:

    * **history-free**: a blend always gives the same weights, whatever was applied before,
      so pixels do not depend on render order, batching or resume;
    * **no LoRA work in the forward pass**: two active adapters under peft add four small
      matrix products to every adapted layer of every UNet call;
    * **in place**: compiled modules and CUDA graphs see the new weights without recompiling.

    Linear LoRAs and 1×1-convolution LoRAs without bias or DoRA (what diffusers' DreamBooth
    scripts train) are supported; :meth:`supports` says whether a pipeline's are.
    """

    COMPONENTS = ("unet", "text_encoder", "text_encoder_2")

    def __init__(self, pipe):
        import torch

        self._torch = torch
        self.layers: list[tuple] = []  # (weight parameter, W0, {adapter: (B, A, scaling)})
        for m in self._lora_layers(pipe):
            base = m.get_base_layer()
            factors = {}
            for a in m.lora_A:
                A, B = m.lora_A[a].weight.detach(), m.lora_B[a].weight.detach()
                factors[a] = (B.reshape(B.shape[0], -1).clone(), A.reshape(A.shape[0], -1).clone(), float(m.scaling[a]))
            self.layers.append((base.weight, base.weight.detach().clone(), factors))
        self.adapters = sorted({a for _, _, f in self.layers for a in f})
        with _quiet_libraries():
            pipe.unload_lora_weights()
        if any(True for _ in self._lora_layers(pipe)):
            raise RuntimeError("LoRA layers remained after unloading")
        self.active: dict[str, float] | None = None

    @classmethod
    def _lora_layers(cls, pipe):
        from peft.tuners.lora import LoraLayer

        for comp in cls.COMPONENTS:
            model = getattr(pipe, comp, None)
            if model is None:
                continue
            yield from (m for m in model.modules() if isinstance(m, LoraLayer))

    @classmethod
    def supports(cls, pipe) -> bool:
        """Whether every LoRA layer of ``pipe`` is one this class can fold in."""
        import torch

        found = False
        for m in cls._lora_layers(pipe):
            found = True
            base = m.get_base_layer()
            if getattr(m, "fan_in_fan_out", False) or any(getattr(m, "use_dora", {}).values()):
                return False
            for a in m.lora_A:
                A, B = m.lora_A[a], m.lora_B[a]
                if getattr(B, "bias", None) is not None:
                    return False
                if isinstance(base, torch.nn.Linear) and isinstance(A, torch.nn.Linear):
                    continue
                if (
                    isinstance(base, torch.nn.Conv2d)
                    and isinstance(A, torch.nn.Conv2d)
                    and tuple(A.kernel_size) == (1, 1)
                    and tuple(base.kernel_size) == (1, 1)
                    and A.groups == 1
                    and base.groups == 1
                ):
                    continue
                return False
        return found

    def follow_fused_projections(self, model) -> int:
        """After ``model.fuse_qkv_projections()``: write the q/k/v blends into the fused weights.

        diffusers copies ``to_q``, ``to_k`` and ``to_v`` into one ``to_qkv`` (``to_kv`` for
        cross-attention) and computes with that; each adapted projection's target becomes its
        rows of the fused weight (a view, so :meth:`apply` writes in place). Returns how many
        targets moved.
        """
        from diffusers.models.attention_processor import Attention

        rows: dict[int, object] = {}
        for m in model.modules():
            if not (isinstance(m, Attention) and getattr(m, "fused_projections", False)):
                continue
            fused, parts = (
                (m.to_qkv, (m.to_q, m.to_k, m.to_v))
                if hasattr(m, "to_qkv") and not m.is_cross_attention
                else (m.to_kv, (m.to_k, m.to_v))
            )
            start = 0
            for part in parts:
                n = part.weight.shape[0]
                rows[id(part.weight)] = fused.weight.detach()[start : start + n]
                start += n
        moved = 0
        for i, (weight, w0, factors) in enumerate(self.layers):
            target = rows.get(id(weight))
            if target is not None:
                self.layers[i] = (target, w0, factors)
                moved += 1
        self.active = None  # the fused copies hold W0 until the next apply
        return moved

    def apply(self, weights: dict[str, float]) -> None:
        """Fold ``weights`` (adapter name → weight; adapters not named get 0) into the layers."""
        weights = {a: float(w) for a, w in weights.items() if float(w) != 0.0}
        if weights == self.active:
            return
        unknown = set(weights) - set(self.adapters)
        if unknown:
            raise KeyError(f"no LoRA loaded as {sorted(unknown)}; loaded: {self.adapters}")
        torch = self._torch
        with torch.no_grad():
            for weight, w0, factors in self.layers:
                acc = None
                for a, w in weights.items():
                    if a not in factors:
                        continue
                    B, A, s = factors[a]
                    d = (B.float() @ A.float()).mul_(s * w)
                    acc = d if acc is None else acc.add_(d)
                if acc is None:
                    weight.copy_(w0)
                else:
                    weight.copy_(acc.view(w0.shape).add_(w0.float()).to(weight.dtype))
        self.active = weights


# ---------------------------------------------------------------- the renderer


@dataclass
class _Item:
    """One photo to render: where it comes from and its truth."""

    image: str
    severity: float  # quantised
    seed: int  # the manifest's per-photo seed (nuisance)
    generator_seed: int  # SDXL noise
    hour: float
    source: np.ndarray | None  # H×W×3 uint8 input to SDXL (None: not wanted)
    mask: np.ndarray | None  # H×W bool lesion mask (refine/inpaint)
    lesions: pd.DataFrame
    lesion_count: int


class SDXLRenderer(Renderer):
    """SDXL img2img renderer; see the module docstring for what each option means.

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
    ``merge_loras``: fold the blended adapters into the weights (:class:`LoraBlend`; default,
    where the LoRAs allow it) instead of running them through peft's layers.
    ``fuse_qkv``: one matrix product for q, k and v in every attention (diffusers'
    ``fuse_qkv_projections``; default on CUDA when the LoRAs are folded or absent).
    ``compile``: ``torch.compile`` the UNet and the VAE's encoder and decoder (CUDA); ``True``
    for the default mode or a mode name such as ``"max-autotune-no-cudagraphs"``. With folded
    LoRAs a new severity does not recompile; the first new batch size compiles once more.
    """

    name = "sdxl"
    extension = ".jpg"

    def __init__(
        self,
        protocol: Protocol,
        base_model: str | None = None,
        lora=(),
        mode: str = "refine",
        base_photos: str | None = None,
        steps: int = 30,
        strength: float | None = None,
        guidance: float = 12.0,
        batch_size: int | None = None,
        dtype: str = "auto",
        device: str | None = None,
        severity_step: float = 0.05,
        refine_method: str = "img2img",
        mask_dilation_px: int | None = None,
        prompt: str = SEED_PROMPT,
        vae: str | None = None,
        vae_upcast: bool | None = None,
        channels_last: bool | None = None,
        compile: bool | str = False,
        scheduler: str = "unipc",
        merge_loras: bool = True,
        fuse_qkv: bool | None = None,
    ):
        super().__init__(protocol)
        if mode not in ("anchor", "refine"):
            raise BadInput(f"unknown SDXL mode {mode!r}", field="--sdxl-mode", allowed="anchor, refine")
        if refine_method not in ("img2img", "inpaint"):
            raise BadInput(
                f"unknown refine method {refine_method!r}", field="refine_method", allowed="img2img, inpaint"
            )
        for field, value, ok, allowed in (
            ("steps", steps, int(steps) >= 1, "an integer ≥ 1"),
            ("strength", strength, strength is None or 0 < float(strength) <= 1, "0 < strength ≤ 1"),
            ("guidance", guidance, float(guidance) >= 0, "≥ 0 (1 or less: no classifier-free guidance)"),
            ("batch_size", batch_size, batch_size is None or int(batch_size) >= 1, "an integer ≥ 1"),
            ("severity_step", severity_step, 0 <= float(severity_step) <= 1, "0 (exact) to 1 (grades)"),
        ):
            if not ok:
                raise BadInput(f"{field} = {value!r} is out of range", field=field, allowed=allowed)
        if "{grade}" not in prompt:
            raise BadInput("the prompt must contain {grade}", field="prompt", allowed=SEED_PROMPT)
        self.mode = mode
        self.refine_method = refine_method
        self.steps = int(steps)
        self.strength = float(strength if strength is not None else (0.1 if mode == "anchor" else 0.2))
        self.guidance = float(guidance)
        self.severity_step = float(severity_step)
        self.prompt = prompt
        self.mask_dilation_px = mask_dilation_px
        self.base_photos = Path(base_photos).expanduser() if base_photos else None
        if self.base_photos is not None:
            self._photo_files = self._list_photos(self.base_photos)

        # validate every input before the (slow) load
        self.base_model, self._base_is_local = _check_base_model(base_model)
        self.loras = [resolve_lora(g, s) for g, s in parse_lora_specs(lora)]
        if not self.loras:
            warnings.warn(
                "trialsim sdxl: no --lora given; the base model alone renders and severity acts "
                "only through the prompt",
                RuntimeWarning,
                stacklevel=2,
            )

        import torch

        cuda = torch.cuda.is_available()
        self.device = torch.device(device or ("cuda" if cuda else "cpu"))
        if self.device.type == "cpu":
            warnings.warn(
                "trialsim sdxl: no CUDA GPU found; SDXL runs on the CPU in float32, which is very "
                "slow (minutes per 1024 px image). Running anyway.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.dtype = _torch_dtype(dtype, self.device.type == "cuda")
        if self.device.type == "cpu" and self.dtype == torch.float16:
            warnings.warn("fp16 is not supported on the CPU; using float32", RuntimeWarning, stacklevel=2)
            self.dtype = torch.float32
        self.batch_size = int(batch_size or (8 if self.device.type == "cuda" else 2))

        self.pipe = self._load_pipeline(vae, vae_upcast, scheduler)
        self.lora_blend_ = (
            LoraBlend(self.pipe) if self.loras and merge_loras and LoraBlend.supports(self.pipe) else None
        )
        if channels_last if channels_last is not None else self.device.type == "cuda":
            self.pipe.unet.to(memory_format=torch.channels_last)
            self.pipe.vae.to(memory_format=torch.channels_last)
        if fuse_qkv is None:
            fuse_qkv = self.device.type == "cuda" and (not self.loras or self.lora_blend_ is not None)
        if fuse_qkv:  # after the memory-format change: the LoRA targets become views of the fused weights
            if self.loras and self.lora_blend_ is None:
                raise BadInput(
                    "fused q/k/v projections need the LoRAs folded into the weights",
                    field="fuse_qkv",
                    allowed="merge_loras=True, or fuse_qkv=False",
                )
            self.pipe.unet.fuse_qkv_projections()
            self.pipe.vae.fuse_qkv_projections()
            if self.lora_blend_ is not None:
                self.lora_blend_.follow_fused_projections(self.pipe.unet)
        self.fuse_qkv_ = bool(fuse_qkv)
        if compile:
            mode = compile if isinstance(compile, str) else None
            for module in (self.pipe.unet, self.pipe.vae.encoder, self.pipe.vae.decoder):
                module.compile(mode=mode, fullgraph=False)
        self._embeds: dict[float, dict] = {}
        self._inpaint = None
        self._procedural_renderer = None
        self._active: tuple | None = None
        self.adapter_weights_: dict[str, dict[str, float]] = {}
        # UNet levels halve the latent; the VAE divides by 8: sizes must divide both
        unet_levels = len(self.pipe.unet.config.block_out_channels) - 1
        self.size_multiple_ = int(self.pipe.vae_scale_factor * 2**unet_levels)

    # -- loading --------------------------------------------------------------

    def _load_pipeline(self, vae_spec: str | None, vae_upcast: bool | None, scheduler: str):
        import torch

        with _quiet_libraries():  # transformers prints notes about optional packages on first import
            from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UniPCMultistepScheduler

        kwargs = dict(torch_dtype=self.dtype, add_watermarker=False)
        if vae_spec:
            vp = Path(vae_spec).expanduser()
            if vp.exists():
                try:
                    kwargs["vae"] = AutoencoderKL.from_pretrained(str(vp), torch_dtype=self.dtype)
                except (OSError, ValueError) as err:
                    raise BadInput(
                        f"cannot load the VAE from {vp.resolve()} ({err.__class__.__name__})", field="vae"
                    ) from None
            else:
                kwargs["vae"] = _from_hub(
                    lambda local_only: AutoencoderKL.from_pretrained(
                        vae_spec, torch_dtype=self.dtype, local_files_only=local_only
                    ),
                    vae_spec,
                    "VAE",
                    "vae",
                    vp,
                )
        with _quiet_libraries():
            if self._base_is_local:
                try:
                    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(self.base_model, **kwargs)
                except (OSError, ValueError) as err:
                    raise BadInput(
                        f"cannot load the SDXL pipeline from {Path(self.base_model).resolve()}: "
                        f"{err.__class__.__name__}: {str(err).splitlines()[0][:300]}",
                        field="--base-model",
                    ) from None
            else:
                pipe = _from_hub(
                    lambda local_only: StableDiffusionXLImg2ImgPipeline.from_pretrained(
                        self.base_model, local_files_only=local_only, **kwargs
                    ),
                    self.base_model,
                    "base model",
                    "--base-model",
                    Path(self.base_model),
                )
            for src in self.loras:
                self._load_lora(pipe, src)
            pipe.to(self.device)
        if scheduler == "unipc":
            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
        if vae_upcast is None and (vae_spec or self.dtype == torch.bfloat16):
            vae_upcast = False  # an fp16-safe VAE, or bfloat16 (fp32's range): no fp32 round trip
        if vae_upcast is not None:
            pipe.vae.register_to_config(force_upcast=bool(vae_upcast))
        pipe.set_progress_bar_config(disable=True)
        self._torch = torch
        return pipe

    def _load_lora(self, pipe, src: LoraSource) -> None:
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

    @staticmethod
    def _list_photos(folder: Path) -> list[Path]:
        if not folder.is_dir():
            raise BadInput(f"base photo folder not found: {folder.resolve()}", field="--base-photos")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
        if not files:
            raise BadInput(
                f"no photos in {folder.resolve()}", field="--base-photos", allowed=", ".join(sorted(PHOTO_SUFFIXES))
            )
        return files

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

    def _set_adapters(self, weights: dict[str, float]) -> None:
        key = tuple(sorted(weights.items()))
        if not weights or key == self._active:
            return
        if self.lora_blend_ is not None:
            self.lora_blend_.apply(weights)
        else:
            self.pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
        self._active = key

    def _prompt_embeds(self, severity: float, n: int):
        """Prompt embeddings blended between the two grades around ``severity``, repeated ``n`` times.

        Computed once per severity (the adapters for ``severity`` must be set: text-encoder
        LoRAs act here too).
        """
        one = self._embeds.get(severity)
        if one is None:
            one = self._embeds[severity] = self._encode_blend(severity)
            if len(self._embeds) > 128:
                self._embeds.pop(next(iter(self._embeds)))
        return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in one.items()}

    def _encode_blend(self, severity: float) -> dict:
        blend = grade_blend(severity, [0, 1, 2, 3])
        grades, weights = list(blend), list(blend.values())
        with self._torch.no_grad():
            pe, npe, pp, npp = self.pipe.encode_prompt(
                prompt=[self.prompt.format(grade=g) for g in grades],
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.guidance > 1,
            )
        w = self._torch.tensor(weights, device=pe.device, dtype=pe.dtype)

        def mix(t):
            return (t * w.view(-1, *([1] * (t.dim() - 1)))).sum(0, keepdim=True)

        out = dict(prompt_embeds=mix(pe), pooled_prompt_embeds=mix(pp))
        if self.guidance > 1:
            out.update(negative_prompt_embeds=npe[:1], negative_pooled_prompt_embeds=npp[:1])
        return out

    # -- one pipeline call ----------------------------------------------------

    def render_batch(
        self, pixels: np.ndarray, severity: float, generator_seeds: list[int], masks: np.ndarray | None = None
    ) -> np.ndarray:
        """SDXL on a batch: ``pixels`` B×H×W×3 uint8 → B×H×W×3 uint8, one severity for the batch.

        Sizes that are not a multiple of :attr:`size_multiple_` are resized for SDXL and back.
        ``masks`` (B×H×W bool) switches to inpainting inside the masks.
        """
        torch = self._torch
        n, h, w = pixels.shape[:3]
        m = self.size_multiple_
        wh, ww = max(m, round(h / m) * m), max(m, round(w / m) * m)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if (wh, ww) != (h, w):
            x = torch.nn.functional.interpolate(x, size=(wh, ww), mode="bicubic", align_corners=False).clamp_(0, 1)
        weights = self.adapter_weights(severity)
        self._set_adapters(weights)
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in generator_seeds]
        args = dict(
            image=x.to(self.dtype),
            strength=self.strength,
            guidance_scale=self.guidance,
            num_inference_steps=self.steps,
            generator=gens,
            output_type="pt",
            height=wh,
            width=ww,
            **self._prompt_embeds(severity, n),
        )
        with torch.inference_mode(), _quiet_libraries():
            if masks is not None:
                mk = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
                if (wh, ww) != (h, w):
                    mk = torch.nn.functional.interpolate(mk, size=(wh, ww), mode="nearest")
                out = self._inpaint_pipe()(mask_image=mk.to(self.device), **args).images
            else:
                out = self.pipe(**args).images
            out = out.float().clamp(0, 1)
            if (wh, ww) != (h, w):
                out = torch.nn.functional.interpolate(out, size=(h, w), mode="bicubic", align_corners=False)
            out = out.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        if masks is not None:
            # diffusers decodes the whole frame; paste SDXL back only inside the (feathered) masks so
            # every pixel away from a lesion stays the procedural one
            alpha = np.stack([self._feather(mk) for mk in masks])[..., None]
            out = np.clip(alpha * out + (1.0 - alpha) * pixels + 0.5, 0, 255).astype(np.uint8)
        return out

    def _inpaint_pipe(self):
        if self._inpaint is None:
            from diffusers import StableDiffusionXLInpaintPipeline

            self._inpaint = StableDiffusionXLInpaintPipeline(**self.pipe.components)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    # -- a patient ------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        from ..lesions import canonical_size

        r = self.protocol.rendering
        return canonical_size(r.image_size, r.aspect)

    def _procedural(self):
        if self._procedural_renderer is None:
            from .procedural import ProceduralRenderer

            self._procedural_renderer = ProceduralRenderer(self.protocol)
        return self._procedural_renderer

    def _base_photo(self, job: PatientJob) -> np.ndarray:
        """Anchor mode's one base portrait for the patient, H×W×3 uint8."""
        h, w = self._size()
        if self.base_photos is None:
            img = np.asarray(self._procedural().identity_image(job.patient_index, job.patient_id))
            if img.shape[:2] == (h, w):
                return img.astype(np.uint8)
            from PIL import Image

            return np.asarray(Image.fromarray(img.astype(np.uint8)).resize((w, h), Image.LANCZOS))
        from PIL import Image, ImageOps

        named = [p for p in self._photo_files if p.stem == str(job.patient_id)]
        if named:
            path = named[0]
        else:  # the seed project drew one level-0 photo per patient
            rng = np.random.default_rng(seed_sequence(self.protocol.seed, job.patient_index, "sdxl"))
            path = self._photo_files[int(rng.integers(len(self._photo_files)))]
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                return np.asarray(ImageOps.fit(im, (w, h), Image.LANCZOS))
        except OSError as err:
            raise BadInput(
                f"cannot read the photo ({err.__class__.__name__})", file=str(path), field="--base-photos"
            ) from None

    def _feather(self, mask: np.ndarray) -> np.ndarray:
        """Soft 0–1 weights from a boolean mask (a Gaussian edge of about half the dilation)."""
        import cv2

        px = self.mask_dilation_px if self.mask_dilation_px is not None else max(2, mask.shape[0] // 64)
        sigma = max(0.5, px / 2.0)
        return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)

    def _dilate(self, mask: np.ndarray) -> np.ndarray:
        import cv2

        px = self.mask_dilation_px if self.mask_dilation_px is not None else max(2, mask.shape[0] // 64)
        if px <= 0:
            return mask.astype(bool)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        return cv2.dilate(mask.astype(np.uint8), k).astype(bool)

    def _items(self, job: PatientJob, wanted: Callable[[str], bool]) -> list[_Item]:
        days = job.days.set_index("day")
        seed = self.protocol.seed
        empty = pd.DataFrame(columns=LESION_COLUMNS)

        def gen_seed(day, photo) -> int:
            return int(seed_sequence(seed, job.patient_index, "sdxl", int(day), int(photo)).generate_state(1)[0])

        items = []
        if self.mode == "anchor":
            rows = list(job.images.itertuples(index=False))
            base = self._base_photo(job) if any(wanted(r.image) for r in rows) else None
            for r in rows:
                d = days.loc[r.day]
                items.append(
                    _Item(
                        r.image,
                        quantise_severity(d["severity_latent"], self.severity_step),
                        int(r.seed),
                        gen_seed(r.day, r.photo),
                        float(r.hour),
                        base if wanted(r.image) else None,
                        None,
                        empty,
                        int(d["lesion_target"]),
                    )
                )
            return items
        clean = self._procedural().clean_images(job)
        for r, c in zip(job.images.itertuples(index=False), clean):
            if c.image != r.image:
                raise RuntimeError(f"procedural renderer returned {c.image} for {r.image}")
            want = wanted(r.image)
            mask = self._dilate(np.asarray(c.lesion_mask)) if want and self.refine_method == "inpaint" else None
            d = days.loc[r.day]
            items.append(
                _Item(
                    r.image,
                    quantise_severity(d["severity_latent"], self.severity_step),
                    int(r.seed),
                    gen_seed(r.day, r.photo),
                    float(r.hour),
                    np.asarray(c.pixels, dtype=np.uint8) if want else None,
                    mask,
                    c.lesions,
                    int(c.lesion_count),
                )
            )
        return items

    def render_patient(
        self, job: PatientJob, wanted: Callable[[str], bool] = lambda image: True
    ) -> Iterator[RenderedImage]:
        """Render the patient's wanted photos in batches of equal severity, yield all in order."""
        from .nuisance import apply_nuisance

        items = self._items(job, wanted)
        todo = [i for i, it in enumerate(items) if it.source is not None]
        data: dict[int, bytes] = {}
        nuisance = float(self.protocol.rendering.nuisance)
        for severity, pos in plan_batches([items[i].severity for i in todo], self.batch_size):
            chunk = [todo[p] for p in pos]
            pixels = np.stack([items[i].source for i in chunk])
            masks = (
                np.stack([items[i].mask for i in chunk])
                if self.mode == "refine" and self.refine_method == "inpaint"
                else None
            )
            out = self.render_batch(pixels, severity, [items[i].generator_seed for i in chunk], masks)
            for i, px in zip(chunk, out):
                it = items[i]
                data[i] = apply_nuisance(px, it.seed, nuisance, it.hour)
                self.adapter_weights_[it.image] = self.adapter_weights(severity)
                it.source = None  # free the input as we go
        for i, it in enumerate(items):
            yield RenderedImage(
                image=it.image, data=data.pop(i, None), lesions=it.lesions, lesion_count=it.lesion_count
            )

    def finish_patient(self, job: PatientJob, out: Path) -> None:
        """Write the patient's contact sheet (built from the files as written)."""
        from .contact import write_contact_sheet

        write_contact_sheet(job, out)
