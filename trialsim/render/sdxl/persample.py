"""Per-sample LoRA weights: photos of different severities in one UNet call, each with its own blend.

A LoRA adds ``w · s · B A x`` to an adapted layer's output (``w`` the adapter's weight in the
blend, ``s`` peft's alpha/rank scaling). That sum is linear in ``w``, so a batch can give every
sample its own weights: the delta is computed per layer as ``B (S ⊙ A x)`` with ``S`` one row of
per-rank scales per sample. Two ways, one per LoRA path of the renderer:

* :class:`SampleLora` — the LoRAs folded by :class:`~.blend.LoraBlend` (the default path): the
  UNet's adapted weights are reset to ``W0`` and one forward hook per adapted layer (the fused
  q/k/v projection too) adds the per-sample delta from the kept factors, all adapters of a layer
  stacked into two matrix products. The hooks stay installed; between batches they read new
  scales copied into the same tensors, so a compiled UNet sees the same graph.
* :func:`peft_sample_scaling` — peft's ``LoraLayer``s (``merge_loras=False``): for the duration
  of a batch each layer's ``scaling[adapter]`` becomes a per-sample tensor (shaped to broadcast
  against the layer's output) set by a forward pre-hook, and is restored afterwards.

Classifier-free guidance runs the UNet on ``[unconditional; conditional]``, twice the photos:
rows are tiled (row ``i`` is photo ``i mod B``), so both halves of a photo get its weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .blend import LoraBlend, Target


def tiled_rows(weights: Sequence[dict[str, float]], adapters: list[str], n_rows: int, like) -> Any:
    """``n_rows`` × len(adapters) tensor: row ``i`` holds photo ``i mod len(weights)``'s adapter weights."""
    import torch

    per_photo = torch.tensor([[float(w.get(a, 0.0)) for a in adapters] for w in weights], dtype=torch.float64)
    index = torch.arange(n_rows) % len(weights)
    return per_photo[index].to(device=like.device, dtype=like.dtype)


@dataclass
class _Layer:
    """One hooked layer: all its targets' factors stacked (``A`` R×in, ``B`` out×R) and their per-rank scales."""

    A: Any
    B: Any
    group: _Scales
    conv: dict | None  # stride/padding/dilation of a 1×1 convolution; None: a linear layer


@dataclass
class _Scales:
    """Per-rank scales shared by layers with the same rank layout: ``S[row, r] = w[row, adapter(r)] · s(r)``."""

    adapter_index: Any  # R (long)
    scaling: Any  # R
    S: Any = None  # rows × R, rewritten in place for each batch


class SampleLora:
    """Per-sample adapter weights for the UNet of a pipeline whose LoRAs :class:`LoraBlend` folded.

    ``SampleLora(blend, unet, rows)`` installs the hooks (``rows``: the most UNet rows a call
    will have, e.g. twice the batch size under guidance; more are made room for when needed).
    ``with sample_lora.batch(weights):`` renders with ``weights[i]`` (adapter → weight) for
    photo ``i``; inside it the UNet's adapted weights are ``W0``. Outside a batch the hooks add
    nothing.
    """

    def __init__(self, blend: LoraBlend, unet, rows: int) -> None:
        import torch

        self.blend = blend
        self.adapters = blend.adapters
        self._photos = 0  # photos in the current batch; 0: no batch
        self._rows = max(1, int(rows))
        groups: dict[tuple, _Scales] = {}
        by_module: dict[int, list[Target]] = {}
        for t in blend.layers:
            if t.component == "unet":
                by_module.setdefault(id(t.module), []).append(t)
        self.layers: list[tuple[Any, _Layer]] = []
        for targets in by_module.values():
            module = targets[0].module
            layer = self._stack(module, targets, groups, torch)
            self.layers.append((module, layer))
        self.groups = list(groups.values())
        self._handles = [m.register_forward_hook(self._hook(layer)) for m, layer in self.layers]

    def _stack(self, module, targets: list[Target], groups: dict, torch) -> _Layer:
        """The layer's LoRA factors as one A (R × in) and one B (out × R), B zero outside each target's rows."""
        weight = module.weight
        out_rows = weight.shape[0]
        As, Bs, index, scaling = [], [], [], []
        for t in targets:
            first, end = t.rows if t.rows is not None else (0, out_rows)
            for a, (B, A, s) in sorted(t.factors.items()):
                full = torch.zeros(out_rows, B.shape[1], dtype=B.dtype, device=B.device)
                full[first:end] = B
                As.append(A)
                Bs.append(full)
                index += [self.adapters.index(a)] * A.shape[0]
                scaling += [s] * A.shape[0]
        key = (tuple(index), tuple(scaling))
        if key not in groups:
            groups[key] = _Scales(torch.tensor(index, device=weight.device), torch.tensor(scaling, dtype=torch.float64))
        A = torch.cat(As).to(weight.dtype)
        B = torch.cat(Bs, dim=1).to(weight.dtype)
        conv = None
        if isinstance(module, torch.nn.Conv2d):
            conv = dict(stride=module.stride, padding=module.padding, dilation=module.dilation)
            A, B = A[:, :, None, None], B[:, :, None, None]
        return _Layer(A.contiguous(), B.contiguous(), groups[key], conv)

    def _hook(self, layer: _Layer):
        import torch.nn.functional as F

        def hook(module, args, output):
            n = self._photos
            if n == 0:
                return None
            x = args[0]
            rows = x.shape[0]
            if rows % n or rows > self._rows:
                raise RuntimeError(f"a UNet layer got {rows} rows for a batch of {n} photos")
            S = layer.group.S[:rows]
            if layer.conv is not None:
                h = F.conv2d(x, layer.A, **layer.conv) * S.view(rows, -1, 1, 1)
                return output + F.conv2d(h, layer.B)
            h = F.linear(x, layer.A)
            h = h * S.view(rows, *([1] * (h.dim() - 2)), -1)
            return output + F.linear(h, layer.B)

        return hook

    @contextmanager
    def batch(self, weights: Sequence[dict[str, float]], guided: bool = True) -> Iterator[None]:
        """Photo ``i`` of the next UNet calls uses ``weights[i]``; the UNet holds ``W0`` meanwhile.

        ``guided``: the UNet sees twice the photos (classifier-free guidance), so room is made
        for ``2 × len(weights)`` rows.
        """
        if not weights:
            raise ValueError("a batch needs at least one photo")
        self.blend.apply({}, components=("unet",))
        self._rows = max(self._rows, len(weights) * (2 if guided else 1))
        for g in self.groups:
            rows = tiled_rows(weights, self.adapters, self._rows, g.scaling)
            scales = rows[:, g.adapter_index.cpu()] * g.scaling
            dtype = self.layers[0][1].A.dtype
            device = g.adapter_index.device
            if g.S is None or g.S.shape != scales.shape:
                g.S = scales.to(device=device, dtype=dtype)
            else:
                g.S.copy_(scales)
        self._photos = len(weights)
        try:
            yield
        finally:
            self._photos = 0

    def remove(self) -> None:
        """Take the hooks out."""
        for h in self._handles:
            h.remove()
        self._handles = []


def peft_exact(unet) -> bool:
    """Whether every peft LoRA layer of ``unet`` is plain LoRA (no DoRA or other variant), so per-sample scales are exact."""
    from peft.tuners.lora import Conv2d, Linear, LoraLayer

    return not any(
        isinstance(m, LoraLayer) and (not isinstance(m, (Linear, Conv2d)) or getattr(m, "lora_variant", {}) or m.merged)
        for m in unet.modules()
    )


def _base_scaling(m, adapter: str) -> float:
    """peft's scaling of ``adapter`` at weight 1: alpha / rank (alpha / √rank with rsLoRA)."""
    r = m.r[adapter]
    return m.lora_alpha[adapter] / (math.sqrt(r) if m.use_rslora.get(adapter, False) else r)


@contextmanager
def peft_sample_scaling(unet, weights: Sequence[dict[str, float]], adapters: list[str]) -> Iterator[None]:
    """Inside: every peft LoRA layer of ``unet`` scales adapter ``a`` by ``weights[i][a]`` for photo ``i``.

    All ``adapters`` are made active; a forward pre-hook sets each layer's ``scaling[a]`` to a
    tensor of one value per row, shaped ``(rows, 1, …)`` to broadcast against the output of
    ``lora_B(lora_A(x))``. The scalings and active adapters are the caller's to set again after.
    """
    from peft.tuners.lora import LoraLayer

    layers: list[Any] = [m for m in unet.modules() if isinstance(m, LoraLayer)]
    saved = [dict(m.scaling) for m in layers]
    unet.set_adapters(adapters, [1.0] * len(adapters))
    cache: dict = {}

    def pre_hook(m, args):
        x = args[0]
        rows = tiled_rows(weights, adapters, x.shape[0], x) if x.shape[0] not in cache else cache[x.shape[0]]
        if x.shape[0] % len(weights):
            raise RuntimeError(f"a UNet layer got {x.shape[0]} rows for a batch of {len(weights)} photos")
        cache[x.shape[0]] = rows
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        for a in m.lora_A:
            if a in adapters:
                m.scaling[a] = (
                    (rows[:, adapters.index(a)] * _base_scaling(m, a)).to(m.lora_A[a].weight.dtype).view(shape)
                )

    handles = [m.register_forward_pre_hook(pre_hook) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m, s in zip(layers, saved):
            m.scaling.clear()
            m.scaling.update(s)
