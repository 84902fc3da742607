"""The report's Bayesian section (``--model bayes``): posterior per patient, shrinkage, decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import _figure, _png, _style
from .inputs import ReportInputs

DRAWS_FILE = "bayes_draws.npz"


def _draws(inputs: ReportInputs) -> dict:
    path = inputs.results_dir / DRAWS_FILE
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return {}


def fig_posteriors(fit: dict, draws: dict, i: int) -> str:
    """One row per patient: the posterior of its effect (violin), its own estimate → the pooled one.

    Open circle: the patient's own difference of arm means (no pooling); arrow to the
    posterior mean (partial pooling); dashed lines at ±δ.
    """
    import seaborn as sns

    pats = [p["patient_id"] for p in fit["patients"]]
    n = len(pats)
    with _style():
        fig, axes = _figure(7.6, 0.9 + 0.42 * (n + 1))
        ax = axes[0, 0]
        theta = draws.get(f"fit{i}_theta")
        names = [str(x) for x in draws.get(f"fit{i}_patients", [])]
        if theta is not None and names == pats:
            frame = pd.DataFrame(
                {"patient": np.repeat(pats, theta.shape[1]), "effect": np.asarray(theta, float).ravel()}
            )
            sns.violinplot(
                data=frame,
                x="effect",
                y="patient",
                order=pats,
                ax=ax,
                color="#9ecae1",
                inner=None,
                cut=0,
                linewidth=0.6,
            )
        for k, p in enumerate(fit["patients"]):
            ax.plot([p["ci_low"], p["ci_high"]], [k, k], color="#08306b", lw=1.4)
            raw = p.get("raw_estimate")
            if raw is not None and np.isfinite(raw):
                ax.annotate(
                    "", xy=(p["estimate"], k), xytext=(raw, k), arrowprops={"arrowstyle": "->", "color": "#d95f02"}
                )
                ax.plot(raw, k, "o", mfc="white", mec="#d95f02", ms=5)
            ax.plot(p["estimate"], k, "o", color="#08306b", ms=4)
        pop = fit["population"]
        if fit["n_patients"] > 1:
            ax.plot([pop["ci_low"], pop["ci_high"]], [n, n], color="black", lw=2)
            ax.plot(pop["estimate"], n, "D", color="black", ms=5)
        labels = [*pats, "population"] if fit["n_patients"] > 1 else pats
        ax.set_yticks(range(len(labels)), labels)
        for x in (-fit["delta"], fit["delta"]):
            ax.axvline(x, color="#999999", ls="--", lw=0.8)
        ax.axvline(0, color="#444444", lw=0.8)
        ax.set_xlabel(f"effect {fit['contrast']} (outcome units)")
        ax.set_ylabel("")
        ax.set_title(f"{fit['method']}: {fit['contrast']}")
        return _png(fig)


def bayes_context(inputs: ReportInputs) -> dict | None:
    """The template's ``bayes``: priors, δ, and per fit its figure, rows, statements and diagnostics."""
    section = inputs.results.bayes
    if not section:
        return None
    draws = _draws(inputs)
    fits = []
    for i, fit in enumerate(section.get("fits", [])):
        fits.append({**fit, "uri": fig_posteriors(fit, draws, i)})
    return {**section, "fits": fits}
