"""The options of one analysis (:class:`AnalysisConfig`), shared by the command line, power studies and benches.

``analysis.pipeline.AnalysisConfig`` is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import embedding as emb_step
from .contract import METHODS, NEEDS_READER
from .embed import PRESETS
from .errors import AnalysisInputError
from .primary import DEFAULT_PRIMARY_TEST


@dataclass
class AnalysisConfig:
    """Options of one analysis (``None`` = the default of the preset/module)."""

    method: str = "ae"  # ae, pixel-pca, oracle, a comma list, or "all"
    seed: int = 0
    preset: str = "default"  # autoencoder preset: default | schneider2023
    image_size: int | None = None  # px the images are loaded (and embedded) at
    epochs: int | None = None
    reduction: str | None = None  # within | global | per-patient
    time_terms: bool = False  # add a linear day term to the models
    skip_bad: bool = False
    progress: bool = False
    normalize: str | None = None  # photometric normalisation: grey-world | none
    code_size: int | None = None
    n_perm: int = 2000  # permutation-test draws per patient and contrast
    report: bool = True  # write report.html (power studies switch it off)
    primary_test: str = DEFAULT_PRIMARY_TEST  # the per-patient test the verdicts come from
    reader: str | None = None  # reader folder of --method sim-reader (trialsim train-reader)
    assume_rho: float | None = None  # stated AR(1) correlation of daily errors (gls test); None: the protocol's
    model: str = "lmm"  # lmm, or bayes: the Bayesian model too (analysis.bayes)
    priors: tuple[str, ...] = ()  # --prior KEY=VALUE or YAML paths (bayes)
    mid: float = 0.5  # δ, the minimal important difference in units of s (bayes)
    bayes_draws: int | None = None  # NUTS draws per chain (bayes; None: 1000 after 500 warm-up)

    def methods(self) -> list[str]:
        raw = [m.strip() for m in str(self.method).split(",") if m.strip()]
        if raw == ["all"]:
            return [m for m in METHODS if m != NEEDS_READER or self.reader]
        bad = [m for m in raw if m not in METHODS]
        if bad or not raw:
            raise AnalysisInputError(
                f"unknown method(s) {bad or raw}",
                field="--method",
                allowed=", ".join(METHODS) + ", a comma list of them, or all",
            )
        if NEEDS_READER in raw and not self.reader:
            raise AnalysisInputError(
                "method 'sim-reader' needs --reader, a folder made by trialsim train-reader", field="--reader"
            )
        return list(dict.fromkeys(raw))

    def resolved_image_size(self) -> int:
        if emb_step.normalisation(self) == emb_step.SKIN:
            return int(self.image_size or emb_step.PATCH_IMAGE_SIZE)
        return int(self.image_size or PRESETS.get(self.preset, PRESETS["default"])["image_size"])  # type: ignore[call-overload]
