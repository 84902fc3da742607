"""Priors of the Bayesian N-of-1 model, weakly informative and scaled to the outcome.

Every scale is a multiple of one of two outcome SDs measured on the data being analysed
(so the priors mean the same on PC1, the oracle's severity or any other score):

- ``s``: the within-patient residual SD (photos of the two contrasted arms, each
  patient × arm mean removed), the unit of effects and noise;
- ``s_total``: the SD of all those photos, the unit of patient intercepts.

Defaults (in those units)::

    mean effect        μ_θ ~ Normal(effect_mean · s, effect_sd · s)      effect_mean 0, effect_sd 2.5
    heterogeneity      τ   ~ HalfNormal(heterogeneity_sd · s)            heterogeneity_sd 1
    mean intercept     μ_α ~ Normal(ȳ, intercept_sd · s_total)           intercept_sd 2.5
    intercept spread   σ_α ~ HalfNormal(intercept_sd · s_total)
    noise SD           σ   ~ HalfNormal(noise_sd · s)                     noise_sd 1
    AR(1) share        w   ~ Beta(share_a, share_b)                       share_a = share_b = 1 (uniform)
    day correlation    ρ   ~ Beta(rho_a, rho_b) on (0, 1)                 rho_a = rho_b = 1 (uniform)

with the day-level AR(1) SD σ_u = σ·√w and the photo-level SD σ_e = σ·√(1 − w) (the total
within-patient noise and the share of its variance that is correlated over days: what a
short trial pins down, where σ_u, σ_e and ρ alone trade off).

2.5 SDs is the scale of rstanarm's default coefficient priors: it lets the data decide
any effect a trial can plausibly show while ruling out absurd ones. Override with
``--prior KEY=VALUE`` (repeatable) or ``--prior FILE.yaml`` (a mapping of these keys).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import AnalysisInputError

POSITIVE = ("effect_sd", "heterogeneity_sd", "intercept_sd", "noise_sd", "share_a", "share_b", "rho_a", "rho_b")


class Priors(BaseModel):
    """Prior hyper-parameters, in units of the outcome's SDs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effect_mean: float = 0.0
    effect_sd: float = 2.5
    heterogeneity_sd: float = 1.0
    intercept_sd: float = 2.5
    noise_sd: float = 1.0
    share_a: float = 1.0
    share_b: float = 1.0
    rho_a: float = 1.0
    rho_b: float = 1.0

    @field_validator("*")
    @classmethod
    def _finite(cls, v, info):
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        if info.field_name in POSITIVE and v <= 0:
            raise ValueError("must be > 0")
        return v

    def describe(self) -> dict[str, str]:
        """Each prior in words, units of ``s`` (within-patient SD) and ``s_total`` (all photos' SD)."""
        return {
            "mean_effect": f"Normal({self.effect_mean:g}·s, {self.effect_sd:g}·s)",
            "effect_heterogeneity": f"HalfNormal({self.heterogeneity_sd:g}·s)",
            "mean_intercept": f"Normal(mean(y), {self.intercept_sd:g}·s_total)",
            "intercept_spread": f"HalfNormal({self.intercept_sd:g}·s_total)",
            "noise_sd": f"HalfNormal({self.noise_sd:g}·s); day-level SD σ·√w, photo-level SD σ·√(1 − w)",
            "ar_share": f"w ~ Beta({self.share_a:g}, {self.share_b:g}): the AR(1) part's share of the noise variance",
            "rho": f"Beta({self.rho_a:g}, {self.rho_b:g}) on (0, 1)",
        }


def parse_priors(items: list[str] | tuple[str, ...] | None) -> Priors:
    """``--prior`` values: ``KEY=VALUE`` pairs and/or paths of YAML files with a mapping of keys.

    Raises :class:`~analysis.errors.AnalysisInputError` (exit 2) naming the file or key.
    """
    values: dict[str, object] = {}
    source = "--prior"
    for item in items or ():
        if "=" in item:
            key, _, raw = item.partition("=")
            try:
                values[key.strip()] = float(raw)
            except ValueError:
                raise AnalysisInputError(
                    f"{key.strip()} = {raw!r} is not a number", field=f"--prior {key.strip()}"
                ) from None
            continue
        path = Path(item)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise AnalysisInputError(
                f"cannot read the priors ({e.__class__.__name__})", file=str(path), field="--prior"
            ) from None
        if not isinstance(loaded, dict):
            raise AnalysisInputError("expected a mapping of prior keys to numbers", file=str(path), field="--prior")
        values.update(loaded)
        source = str(path)
    try:
        return Priors.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "?"
        raise AnalysisInputError(
            f"{key}: {err['msg']}",
            file=source if source != "--prior" else None,
            field=f"--prior {key}",
            allowed=", ".join(Priors.model_fields) + " (numbers; scales > 0)",
        ) from None


def check_mid(mid: float) -> float:
    """The minimal important difference δ (units of ``s``): finite and ≥ 0, else exit 2."""
    try:
        v = float(mid)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"{mid!r} is not a number", field="--mid") from None
    if not math.isfinite(v) or v < 0:
        raise AnalysisInputError(f"{mid!r} is not allowed", field="--mid", allowed="a number ≥ 0 (units of s)")
    return v
