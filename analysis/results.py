"""The typed form of ``results.json`` (docs/contracts.md, Contract 2) and the verdict rule.

:class:`Results` is what :func:`analysis.pipeline.run` returns, what
:func:`analysis.pipeline.write` writes, and what the report and the power study
read. Its JSON keys are the contract other tools read; ``schema_version`` was
added later, so a file without it loads as version 1. Keys an entry does not
have (``known_realised`` without truth, ``min_p`` outside the randomisation
test) stay absent in the JSON, as before. Unknown keys are kept, so a newer file
still loads. Non-finite numbers are written as ``null``.

The verdict rule (:func:`detected`, :func:`verdict`) lives here, with the
significance level ``alpha`` a parameter whose default is
:data:`analysis.contract.ALPHA`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from .contract import ALPHA, BASELINE_LABEL

SCHEMA_VERSION = 1
NULL_TOLERANCE = 0.05  # |realised effect| below this (severity units, 0–3 scale) counts as no effect


def json_safe(x):
    """JSON-safe: NaN/inf → ``None``, numpy scalars and arrays → Python, paths → str."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def finite(x) -> float | None:
    """``x`` as a finite float, or ``None`` (missing, NaN, not a number)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class _Model(BaseModel):
    """Keys not named here are kept (extra="allow"); NaN and numpy values are cleaned on the way in."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data):
        return json_safe(data) if isinstance(data, dict) else data

    def get(self, key: str, default=None):
        """Dict-style read of a field or kept extra key (``default`` when absent or ``None``)."""
        value = getattr(self, key, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(key)
        return default if value is None else value


class PopulationEntry(_Model):
    """One population model: one method × one contrast (PC1 units; ``*_std`` ÷ residual SD)."""

    method: str
    contrast: str
    estimate: float | None = None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    df: int | float | None = None
    estimate_std: float | None = None
    ci_low_std: float | None = None
    ci_high_std: float | None = None
    se_lmm: float | None = None
    se_summary: float | None = None
    resid_sd: float | None = None
    model: str | None = None
    warnings: list[str] = []
    # oracle calibration into severity units (truth only)
    estimate_severity: float | None = None
    ci_low_severity: float | None = None
    ci_high_severity: float | None = None
    severity_per_pc1: float | None = None
    severity_note: str | None = None
    # the effect on these patients: the mean of each patient's arm difference (analysis.sample_average)
    sample_estimate: float | None = None
    sample_se: float | None = None
    sample_df: float | None = None
    sample_ci_low: float | None = None
    sample_ci_high: float | None = None
    sample_p_value: float | None = None
    sample_n_patients: int | None = None
    sample_estimate_severity: float | None = None
    sample_se_severity: float | None = None
    sample_ci_low_severity: float | None = None
    sample_ci_high_severity: float | None = None
    # the known effect beside it (truth only)
    known_realised_std: float | None = None
    known_realised: float | None = None
    relative_error_std: float | None = None


class PatientEntry(_Model):
    """One per-patient test of one contrast (PC1 units)."""

    method: str
    patient_id: str
    contrast: str
    test: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    min_p: float | None = None  # randomisation test: the smallest p the design allows
    n_assignments: int | None = None
    known_realised: float | None = None
    detected: bool = False


class MethodEmbedding(_Model):
    """How one method's PC1 came about."""

    explained_variance_ratio_pc1: float | None = None
    spearman_pc1_latent: float | None = None
    reduction: str | None = None
    sign_aligned: bool = False
    sign_note: str | None = None


class Embedding(MethodEmbedding):
    """The first method's summary at the top level, every method's under ``by_method``."""

    method: str | None = None
    by_method: dict[str, MethodEmbedding] = {}

    def per_method(self) -> dict[str, MethodEmbedding]:
        """``by_method``, or the top-level summary alone for a file that has no ``by_method``."""
        return self.by_method or ({self.method: self} if self.method else {})


class LatentModel(_Model):
    """The population model fitted to ``severity_latent`` (severity units)."""

    estimate: float | None = None
    se: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    df: int | float | None = None
    resid_sd: float | None = None
    model: str | None = None
    warnings: list[str] = []


class TruthEntry(_Model):
    """Known effects of one contrast (simulated data only; severity units, ``*_std`` standardised)."""

    contrast: str
    nominal: float | None = None
    realised: float | None = None
    realised_std: float | None = None
    nominal_std: float | None = None
    latent_model: LatentModel = LatentModel()
    latent_model_std: float | None = None


class Results(_Model):
    """The whole of ``results.json``."""

    schema_version: int = SCHEMA_VERSION
    population: list[PopulationEntry] = []
    population_skipped: str | None = None  # why there is no population model (one patient)
    design: dict[str, Any] | None = None  # the dataset's design.json (design diagnostics), when present
    patients: list[PatientEntry] = []
    primary_test: str | None = None  # the per-patient test the verdicts come from
    verdicts: list[dict[str, Any]] = []  # per method × contrast × patient, from the primary test
    skin: dict[str, Any] | None = None  # share of each photo used as skin (the skin path)
    reader: dict[str, Any] | None = None  # the sim-reader used (--method sim-reader): what it was trained on
    embedding: Embedding = Embedding()
    truth: list[TruthEntry] | None = None
    formulas: dict[str, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    versions: dict[str, str] = {}
    seed: int | None = None
    protocol: dict[str, Any] | None = None
    treatments: list[str] = []
    baseline_label: str = BASELINE_LABEL
    n_images: int = 0
    n_patients: int = 0
    skipped_images: int = 0
    skipped_image_paths: list[str] = []
    dataset: str | None = None
    timings_s: dict[str, float] = {}
    bayes: dict[str, Any] | None = None  # --model bayes: priors, δ, per-fit posteriors and diagnostics
    # not part of results.json: the per-photo tables ``write`` puts beside it
    _embeddings: Any = PrivateAttr(default=None)  # pandas DataFrame (embeddings.csv)
    _reconstructions: Any = PrivateAttr(default=None)  # dict of arrays (reconstructions.npz)
    _bayes_draws: Any = PrivateAttr(default=None)  # dict of arrays (bayes_draws.npz)
    _reader_views: Any = PrivateAttr(default=None)  # dict of arrays (reader_views.npz)

    def to_dict(self) -> dict:
        """The JSON object: today's keys in today's order, ``schema_version`` first."""
        d = self.model_dump(mode="json", exclude_unset=True)
        d.pop("schema_version", None)
        return {"schema_version": self.schema_version, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, source: str | Path) -> Results:
        """From a ``results.json`` path or its text (a str that starts with ``{``)."""
        text = (
            source if isinstance(source, str) and source.lstrip().startswith("{") else Path(source).read_text("utf-8")
        )
        return cls.model_validate(json.loads(text))

    def truth_by_contrast(self) -> dict[str, TruthEntry]:
        return {t.contrast: t for t in self.truth or []}


# ---------------------------------------------------------------- the verdict rule


def _field(entry, key: str):
    return entry.get(key) if isinstance(entry, (dict, _Model)) else None


def detected(p_value, alpha: float = ALPHA) -> bool:
    """``p < alpha`` for a finite p (a missing p detects nothing)."""
    p = finite(p_value)
    return p is not None and p < alpha


def truth_is_null(truth) -> bool:
    """No effect to find: |realised| < ``NULL_TOLERANCE`` severity units (nominal 0 when nothing was realised).

    The realised effect decides when it exists: with carry-over, equal nominal
    effects can still differ on the days observed, and finding that is no false positive.
    """
    realised, nominal = finite(_field(truth, "realised")), finite(_field(truth, "nominal"))
    if realised is not None:
        return abs(realised) < NULL_TOLERANCE
    return nominal is not None and abs(nominal) < NULL_TOLERANCE


DESIGN_CANNOT_SHOW = "the design cannot show this effect"


def _design_hid_effect(truth) -> bool:
    """A nominal effect to find that the schedule did not let happen (realised ≈ 0, nominal not)."""
    nominal = finite(_field(truth, "nominal"))
    return nominal is not None and abs(nominal) >= NULL_TOLERANCE


def verdict(entry, truth=None, sign_aligned: bool = True, alpha: float = ALPHA) -> str:
    """Plain verdict on one population estimate (a :class:`PopulationEntry` or a dict with its keys).

    With truth: "recovered" (p < α with the sign of the realised effect), "wrong sign"
    (p < α against it), "missed" (an effect to find, p ≥ α), "false positive" (no
    effect, p < α), "correctly null" (no effect, p ≥ α), "the design cannot show this effect"
    (a nominal effect the schedule did not realise, p ≥ α: onset or washout too slow for
    the periods, never a success). Without truth: "detected" or
    "not detected". "not estimable" when p is missing.
    """
    if finite(_field(entry, "p_value")) is None:
        return "not estimable"
    hit = detected(_field(entry, "p_value"), alpha)
    if not truth:
        return "detected" if hit else "not detected"
    if truth_is_null(truth):
        if not hit and _design_hid_effect(truth):
            return DESIGN_CANNOT_SHOW
        return "false positive" if hit else "correctly null"
    if not hit:
        return "missed"
    known = finite(_field(truth, "realised"))
    if known is None:
        known = finite(_field(truth, "nominal"))
    est = finite(_field(entry, "estimate_std"))
    if est is None:
        est = finite(_field(entry, "estimate"))
    if not sign_aligned or known is None or est is None or np.sign(est) == np.sign(known):
        return "recovered"
    return "wrong sign"
