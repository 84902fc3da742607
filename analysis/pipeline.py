"""The analysis, top to bottom: load → embed → PC1 → models → known vs recovered → files.

:func:`analyze` reads a dataset folder (Contract 1) and writes an analysis
folder (Contract 2): ``results.json``, ``embeddings.csv``, ``reconstructions.npz``
(when the autoencoder ran) and, when :mod:`analysis.report` exists, ``report.html``.
Several methods (``ae``, ``pixel-pca``, ``oracle``) run on the same loaded data.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate as ev
from .dataset import BASELINE_LABEL, TrialData, load_dataset, load_images
from .embed import PRESETS, AutoencoderEmbedder, OracleEmbedder, PixelPCAEmbedder
from .errors import AnalysisInputError
from .models import contrast_name, contrasts, fit_population, patient_tests, population_formulas
from .reduce import PC1Reducer, normalize_photometric

METHODS = ("ae", "pixel-pca", "oracle")
IMAGE_METHODS = ("ae", "pixel-pca")
# measured on the demo protocol (bench/bench_recovery.py): the within-patient PC1 of the autoencoder
# tracks severity with Spearman 0.96 on spot maps, 0.90 on redness-contrast maps and 0.06 on grey-world
# photos; only spot maps give a standardised effect near the truth (0.82 of it; redness maps 0.52)
DEFAULT_REDUCTION = "within"
DEFAULT_NORMALIZATION = "spots"


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

    def methods(self) -> list[str]:
        raw = [m.strip() for m in str(self.method).split(",") if m.strip()]
        if raw == ["all"]:
            return list(METHODS)
        bad = [m for m in raw if m not in METHODS]
        if bad or not raw:
            raise AnalysisInputError(
                f"unknown method(s) {bad or raw}",
                field="--method",
                allowed="ae, pixel-pca, oracle, a comma list of them, or all",
            )
        return list(dict.fromkeys(raw))


def _clean(x):
    """JSON-safe: NaN/inf → null, numpy scalars → Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _versions() -> dict:
    import scipy
    import sklearn
    import statsmodels
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
    }


def _embed(method: str, data: TrialData, images, cfg: AnalysisConfig, timings: dict):
    """Embeddings (N, d) for one method; returns (embeddings, fitted embedder)."""
    t0 = time.perf_counter()
    if method == "oracle":
        if not data.has_truth:
            raise AnalysisInputError(
                "method 'oracle' needs the severity_latent column (simulated data only)",
                file=str(data.root / "manifest.csv"),
                field="severity_latent",
                allowed="methods ae or pixel-pca for real photos",
            )
        emb = OracleEmbedder().fit_transform(data.manifest)
        timings["embed"] += time.perf_counter() - t0
        return emb, None
    if method == "pixel-pca":
        est = PixelPCAEmbedder(random_state=cfg.seed).fit(images)
        timings["train"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        emb = est.transform(images)
        timings["embed"] += time.perf_counter() - t1
        return emb, est
    est = AutoencoderEmbedder.from_preset(
        cfg.preset,
        image_size=cfg.image_size,
        epochs=cfg.epochs,
        code_size=cfg.code_size,
        random_state=cfg.seed,
        progress=cfg.progress,
    )
    est.fit(images)
    timings["train"] += time.perf_counter() - t0
    t1 = time.perf_counter()
    emb = est.transform(images)
    timings["embed"] += time.perf_counter() - t1
    return emb, est


def _embedding_summary(pc1, reducer, data: TrialData, aligned: bool, reduction: str) -> dict:
    m = data.manifest
    rho = ev.within_spearman(pc1, m["severity_latent"], m["patient_id"]) if data.has_truth else None
    return {
        "explained_variance_ratio_pc1": reducer.explained_variance_ratio_pc1_,
        "spearman_pc1_latent": rho,
        "reduction": reduction,
        "sign_aligned": aligned,
        "sign_note": (
            "PC1 sign aligned with severity_latent (truth)"
            if aligned
            else "PC1 sign arbitrary (no truth): the largest loading is positive"
        ),
    }


def analyze(dataset, out, cfg: AnalysisConfig | None = None) -> dict:
    """Analyse the dataset folder ``dataset`` into the folder ``out``; returns the results dict."""
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    timings = {k: 0.0 for k in ("load", "train", "embed", "reduce", "models")}
    methods = cfg.methods()
    reduction = cfg.reduction or DEFAULT_REDUCTION
    normalization = cfg.normalize or DEFAULT_NORMALIZATION
    out = Path(out)

    data = load_dataset(dataset)
    images = None
    image_size = cfg.image_size or PRESETS.get(cfg.preset, PRESETS["default"])["image_size"]
    if any(m in IMAGE_METHODS for m in methods):
        data, images = load_images(data, image_size, skip_bad=cfg.skip_bad, progress=cfg.progress)
        images = normalize_photometric(images, normalization)
    timings["load"] = time.perf_counter() - t_start
    m = data.manifest
    if m["patient_id"].nunique() < 2:
        raise AnalysisInputError(
            f"the population model needs at least two patients, found {m['patient_id'].nunique()}",
            file=str(data.root / "manifest.csv"),
            field="patient_id",
        )
    pairs = contrasts(data.treatments)
    groups = m["patient_id"].to_numpy()

    population, patients, embedding_by_method, emb_frames = [], [], {}, []
    reconstructions = None
    latent_fits = {}
    for mi, method in enumerate(methods):
        emb, est = _embed(method, data, images, cfg, timings)
        t0 = time.perf_counter()
        reducer = PC1Reducer(reduction)
        pc1 = reducer.fit_transform(emb, groups)
        pc1, aligned = ev.align_sign(pc1, m)
        timings["reduce"] += time.perf_counter() - t0
        embedding_by_method[method] = _embedding_summary(pc1, reducer, data, aligned, reduction)
        frame = m[["image", "patient_id", "day", "treatment"]].copy()
        frame["method"] = method
        frame["PC1"] = pc1
        dims = pd.DataFrame(emb, columns=[f"e{j}" for j in range(emb.shape[1])])
        emb_frames.append(pd.concat([frame.reset_index(drop=True), dims], axis=1))
        if method == "ae" and reconstructions is None:
            pick = np.linspace(0, len(images) - 1, min(8, len(images))).round().astype(int)
            orig, rec = est.reconstruct(images[pick])
            reconstructions = {
                "originals": orig,
                "reconstructions": rec,
                "images": m["image"].to_numpy()[pick].astype(str),
                "loss_history": np.array(est.loss_history_),
            }

        t0 = time.perf_counter()
        scored = m.assign(PC1=pc1)
        calib = ev.oracle_calibration(pc1, m) if data.has_truth else None
        for ci, (a, b) in enumerate(pairs):
            name = contrast_name(a, b)
            fit = fit_population(scored, "PC1", a, b, cfg.time_terms)
            entry = {
                "method": method,
                "contrast": name,
                **{k: fit[k] for k in ("estimate", "se", "ci_low", "ci_high", "p_value", "df")},
                **ev.standardise(fit),
                "se_lmm": fit["se_lmm"],
                "se_summary": fit["se_summary"],
                "resid_sd": fit["resid_sd"],
                "model": fit["model"],
                "warnings": fit["warnings"],
            }
            if calib is not None:
                entry.update(
                    {
                        "estimate_severity": fit["estimate"] * calib,
                        "ci_low_severity": min(fit["ci_low"] * calib, fit["ci_high"] * calib),
                        "ci_high_severity": max(fit["ci_low"] * calib, fit["ci_high"] * calib),
                        "severity_per_pc1": calib,
                        "severity_note": "oracle calibration (reads the truth)",
                    }
                )
            population.append(entry)
            realised_pp = ev.realised_by_patient(m, a, b) if data.has_noisefree else pd.Series(dtype=float)
            for pi, (pid, p) in enumerate(scored.groupby("patient_id", sort=True)):
                rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, mi, ci, pi]))
                for t in patient_tests(
                    p.sort_values("day", kind="stable"), "PC1", a, b, rng, cfg.time_terms, cfg.n_perm
                ):
                    row = {"method": method, "patient_id": pid, "contrast": name, **t}
                    if data.has_noisefree:
                        row["known_realised"] = float(realised_pp.get(pid, np.nan))
                    row["detected"] = ev.detected(t)
                    patients.append(row)
            if data.has_truth and name not in latent_fits:
                latent_fits[name] = fit_population(m, "severity_latent", a, b, cfg.time_terms)
        timings["models"] += time.perf_counter() - t0

    truth = None
    if data.has_truth:
        truth = []
        for a, b in pairs:
            name = contrast_name(a, b)
            lf = latent_fits[name]
            realised = ev.realised_effect(m, a, b) if data.has_noisefree else None
            nominal = (
                data.nominal_effects[b] - data.nominal_effects[a]
                if a in data.nominal_effects and b in data.nominal_effects
                else None
            )
            truth.append(
                {
                    "contrast": name,
                    "nominal": nominal,
                    "realised": realised,
                    "realised_std": (realised / lf["resid_sd"] if realised is not None else None),
                    "nominal_std": (nominal / lf["resid_sd"] if nominal is not None else None),
                    "latent_model": {
                        k: lf[k]
                        for k in (
                            "estimate",
                            "se",
                            "ci_low",
                            "ci_high",
                            "p_value",
                            "df",
                            "resid_sd",
                            "model",
                            "warnings",
                        )
                    },
                    "latent_model_std": lf["estimate"] / lf["resid_sd"],
                }
            )
        # recovered vs known side by side, in standardised units
        known = {t["contrast"]: t for t in truth}
        for e in population:
            k = known[e["contrast"]]
            e["known_realised_std"] = k["realised_std"]
            e["known_realised"] = k["realised"]
            if k["realised_std"]:
                e["relative_error_std"] = (e["estimate_std"] - k["realised_std"]) / abs(k["realised_std"])

    first = methods[0]
    embedding = dict(embedding_by_method[first], method=first, by_method=embedding_by_method)
    formulas = {contrast_name(a, b): population_formulas(a, cfg.time_terms) for a, b in pairs}
    for e in population:  # the re_formula actually used
        formulas[e["contrast"]].setdefault("re_formula_used", {})[e["method"]] = (
            "~contrast_arm" if e["model"] == "random slope" else "~1"
        )
    formulas["per_patient"] = {
        "welch": "scipy.stats.ttest_ind(PC1[b], PC1[a], equal_var=False) on the patient's photos",
        "ar1": "statsmodels GLSAR(daily mean PC1 ~ 1 + one indicator per level other than a"
        + (" + day" if cfg.time_terms else "")
        + ", rho=1).iterative_fit(maxiter=10)",
        "permutation": f"{cfg.n_perm} free permutations of the two arms' photo labels (published pipeline)",
        "randomization": "period labels permuted within blocks (as the protocol randomises); exact p and min_p",
        "population_se": "max(LMM SE, SD of per-patient contrasts / sqrt(G)); t with G-1 df",
    }

    results = {
        "population": population,
        "patients": patients,
        "embedding": embedding,
        "truth": truth,
        "formulas": formulas,
        "config": dict(
            asdict(cfg),
            reduction=reduction,
            normalize=normalization,
            image_size=image_size if images is not None else None,
            methods=methods,
        ),
        "versions": _versions(),
        "seed": cfg.seed,
        "protocol": data.protocol,
        "treatments": data.treatments,
        "baseline_label": BASELINE_LABEL,
        "n_images": int(len(m)),
        "n_patients": int(m["patient_id"].nunique()),
        "skipped_images": len(data.skipped_images),
        "skipped_image_paths": data.skipped_images,
        "dataset": str(Path(dataset).resolve()),
    }
    out.mkdir(parents=True, exist_ok=True)
    _atomic_text(out / "embeddings.csv", pd.concat(emb_frames, ignore_index=True).to_csv(index=False))
    if reconstructions is not None:
        tmp = out / ".reconstructions.tmp.npz"
        np.savez_compressed(tmp, **reconstructions)
        os.replace(tmp, out / "reconstructions.npz")
    timings["total"] = time.perf_counter() - t_start
    results["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    results = _clean(results)
    _atomic_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False))
    if cfg.report:
        from .report import write_report

        write_report(out)
    return results


def _atomic_text(path: Path, text: str) -> None:
    """Write through a temporary name and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
