"""The Bayesian model's steps inside the analysis (:mod:`analysis.pipeline`, ``--model bayes``).

Options are checked before any photo is read; each method's PC1 is fitted per contrast; the
fits become the ``bayes`` section of results.json and their thinned draws ``bayes_draws.npz``.
Nothing here imports NumPyro until a model is fitted.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from .. import evaluate as ev
from ..errors import AnalysisInputError
from ..severity import measurement_model


def check_bayes(cfg) -> None:
    """Bad ``--model``, priors or δ fail before any photo is read."""
    if cfg.model not in ("lmm", "bayes"):
        raise AnalysisInputError(f"unknown model {cfg.model!r}", field="--model", allowed="lmm, bayes")
    if cfg.model == "bayes" or cfg.priors:
        from . import check_mid, parse_priors

        parse_priors(cfg.priors)
        check_mid(cfg.mid)
        if cfg.bayes_draws is not None and int(cfg.bayes_draws) < 50:
            raise AnalysisInputError(f"{cfg.bayes_draws} draws is too few", field="bayes_draws", allowed="≥ 50")


def sampler_settings(cfg):
    """NUTS settings of ``cfg``: the defaults, or ``bayes_draws`` draws per chain (warm-up: as many, at most 500)."""
    from . import SamplerSettings

    if cfg.bayes_draws is None:
        return SamplerSettings()
    return SamplerSettings(warmup=min(500, int(cfg.bayes_draws)), draws=int(cfg.bayes_draws))


def bayes_fits(pc1, data, method: str, mi: int, pairs, cfg, sign: str, timings) -> list:
    """The Bayesian model of every contrast on one method's PC1 (``--model bayes``; else none)."""
    if cfg.model != "bayes":
        return []
    from . import analyse_contrast, parse_priors

    t0 = time.perf_counter()
    m = data.manifest
    scored = m.assign(PC1=pc1)
    mm = measurement_model(pc1, m["severity_latent"], m["patient_id"]) if data.has_truth else None
    fits = []
    for ci, pair in enumerate(pairs):
        fit = analyse_contrast(
            scored,
            "PC1",
            pair,
            seed=(cfg.seed, mi, ci),
            priors=parse_priors(cfg.priors),
            mid=cfg.mid,
            settings=sampler_settings(cfg),
            slope=mm["slope"] if mm is not None else None,
            direction_known=sign in ("truth", "redness"),
        )
        if data.has_noisefree:
            realised = ev.realised_by_patient(scored, *pair)
            for p in fit["patients"]:
                p["known_realised"] = float(realised.get(p["patient_id"], np.nan))
        fits.append({"method": method, **fit})
    timings["bayes"] = timings.get("bayes", 0.0) + time.perf_counter() - t0
    return fits


def bayes_section(per: dict, cfg) -> dict | None:
    """The ``bayes`` section of results.json (None unless ``--model bayes``)."""
    if cfg.model != "bayes":
        return None
    from . import INFERENCE, MODEL_TEXT, parse_priors

    priors = parse_priors(cfg.priors)
    return {
        "model": MODEL_TEXT,
        "inference": INFERENCE,
        "sampler": asdict(sampler_settings(cfg)),
        "priors": priors.model_dump(),
        "priors_text": priors.describe(),
        "mid": cfg.mid,
        "mid_note": "δ = mid × s, s the within-patient residual SD of the outcome (half an SD by default: "
        "Norman, Sloan & Wyrwich 2003); on the severity scale δ ÷ the calibration slope",
        "confident": 0.9,
        "fits": [f for r in per.values() for f in r["bayes"]],
    }


def bayes_draws(results) -> dict | None:
    """Each Bayesian fit's thinned effect draws (``bayes_draws.npz``), taken out of results.json."""
    if results.bayes is None:
        return None
    arrays = {}
    for i, fit in enumerate(results.bayes["fits"]):
        d = fit.pop("_draws", None)
        if d is not None:
            arrays[f"fit{i}_patients"] = np.asarray(d["patients"], dtype=str)
            arrays[f"fit{i}_theta"] = np.asarray(d["theta"], dtype=np.float32)
    return arrays
