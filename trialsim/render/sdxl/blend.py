"""LoRAs folded into the base weights: ``W = W0 + Σ w·s·B·A`` for one blend of adapters at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .resolve import quiet_libraries


@dataclass
class Target:
    """One adapted weight: where it is written and the LoRA factors that act on it.

    ``module`` is the layer that computes with ``weight`` (the fused q/k/v projection once
    :meth:`LoraBlend.follow_fused_projections` ran) and ``rows`` the output rows that are this
    weight's (``None``: all of them). ``factors``: adapter → ``(B (out×r), A (r×in), scaling)``.
    """

    component: str
    module: Any
    rows: tuple[int, int] | None
    weight: Any
    w0: Any
    factors: dict[str, tuple]


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

    def __init__(self, pipe) -> None:
        import torch

        self._torch = torch
        self.layers: list[Target] = []
        for comp, m in self._lora_layers(pipe):
            base = m.get_base_layer()
            factors = {}
            for a in m.lora_A:
                A, B = m.lora_A[a].weight.detach(), m.lora_B[a].weight.detach()
                factors[a] = (B.reshape(B.shape[0], -1).clone(), A.reshape(A.shape[0], -1).clone(), float(m.scaling[a]))
            self.layers.append(Target(comp, base, None, base.weight, base.weight.detach().clone(), factors))
        self.adapters = sorted({a for t in self.layers for a in t.factors})
        with quiet_libraries():
            pipe.unload_lora_weights()
        if any(True for _ in self._lora_layers(pipe)):
            raise RuntimeError("LoRA layers remained after unloading")
        self._state: dict[str, dict[str, float] | None] = dict.fromkeys(self.COMPONENTS)

    @property
    def active(self) -> dict[str, float] | None:
        """The blend every component holds (None: none applied yet, or components differ)."""
        held = [self._state[c] for c in {t.component for t in self.layers}]
        return held[0] if held and all(h == held[0] for h in held) else None

    @property
    def components(self) -> list[str]:
        """The components (``unet``, ``text_encoder``, ``text_encoder_2``) that carry a LoRA."""
        return [c for c in self.COMPONENTS if any(t.component == c for t in self.layers)]

    @classmethod
    def _lora_layers(cls, pipe):
        from peft.tuners.lora import LoraLayer

        for comp in cls.COMPONENTS:
            model = getattr(pipe, comp, None)
            if model is None:
                continue
            yield from ((comp, m) for m in model.modules() if isinstance(m, LoraLayer))

    @classmethod
    def supports(cls, pipe) -> bool:
        """Whether every LoRA layer of ``pipe`` is one this class can fold in."""
        import torch

        found = False
        for _, m in cls._lora_layers(pipe):
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

        rows: dict[int, tuple] = {}  # id(part weight) → (fused layer, first row, end row)
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
                rows[id(part.weight)] = (fused, start, start + n)
                start += n
        moved = 0
        for t in self.layers:
            found = rows.get(id(t.weight))
            if found is not None:
                fused, start, end = found
                t.module, t.rows, t.weight = fused, (start, end), fused.weight.detach()[start:end]
                moved += 1
        self._state = dict.fromkeys(self.COMPONENTS)  # the fused copies hold W0 until the next apply
        return moved

    def apply(self, weights: dict[str, float], components: tuple[str, ...] = COMPONENTS) -> None:
        """Fold ``weights`` (adapter name → weight; adapters not named get 0) into the layers.

        ``components``: which networks get the blend (the others keep theirs); ``{}`` restores W0.
        """
        weights = {a: float(w) for a, w in weights.items() if float(w) != 0.0}
        todo = {c for c in components if self._state.get(c) != weights}
        if not todo:
            return
        unknown = set(weights) - set(self.adapters)
        if unknown:
            raise KeyError(f"no LoRA loaded as {sorted(unknown)}; loaded: {self.adapters}")
        torch = self._torch
        with torch.no_grad():
            for t in self.layers:
                if t.component not in todo:
                    continue
                acc = None
                for a, w in weights.items():
                    if a not in t.factors:
                        continue
                    B, A, s = t.factors[a]
                    d = (B.float() @ A.float()).mul_(s * w)
                    acc = d if acc is None else acc.add_(d)
                if acc is None:
                    t.weight.copy_(t.w0)
                else:
                    t.weight.copy_(acc.view(t.w0.shape).add_(t.w0.float()).to(t.weight.dtype))
        for c in todo:
            self._state[c] = weights
