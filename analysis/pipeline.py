"""The analysis, top to bottom: load → embed → PC1 → models → known vs recovered → files.

:func:`run` reads a dataset folder (Contract 1) and returns a typed
:class:`~analysis.results.Results` without writing anything; :func:`write` puts
it in an analysis folder (Contract 2): ``embeddings.csv``, ``reconstructions.npz``
(when the autoencoder ran), ``results.json`` and ``report.html``.
:func:`analyze` is the two in a row. Several methods (``ae``, ``pixel-pca``,
``oracle``) run on the same loaded data.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from . import embedding as emb_step
from . import evaluate as ev
from .atomic import atomic_write_bytes, atomic_write_npz, atomic_write_text
from .bayes.steps import bayes_draws, bayes_fits, bayes_section, check_bayes
from .config import AnalysisConfig
from .contract import BASELINE_LABEL, IMAGE_METHODS, NEEDS_READER
from .dataset import TrialData, load_dataset, load_images
from .errors import AnalysisInputError
from .models import contrast_name, contrasts, fit_population, patient_tests, population_formulas
from .primary import check_can_be_primary, check_primary_test, cycle_test, patient_verdicts, resolve_primary
from .reduce import PC1Reducer, centre_by, normalize_photometric
from .results import Results, detected
from .sample_average import add_sample_average
from .severity import add_relative_efficiency, effect_on_severity, measurement_model
from .stated_noise import StatedNoise, stated_noise

# the default normalisation is "skin" (the patch autoencoder; analysis.embedding): on the HIA trial's
# photos (bench/bench_real_photos.py) its PC1 ranks each participant's photos as the experts do far
# better than the whole-photo autoencoder on spot maps, which counts pink domes on simulated skin well
DEFAULT_REDUCTION = "within"
DEFAULT_NORMALIZATION = emb_step.SKIN
TIMED_STEPS = ("load", "train", "embed", "reduce", "models")


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


# ---------------------------------------------------------------- steps of one method


SIGN_NOTES = {
    "truth": "PC1 sign aligned with severity_latent (truth)",
    "redness": "PC1 rises with the skin's red contrast (no truth; no score read)",
    "read severity": "PC1 rises with the sim-reader's first output (its inflammatory count; no truth; no score read)",
    "loading": "PC1 sign arbitrary (no truth): the largest loading is positive",
}


def _embedding_summary(pc1, emb, reducer, data: TrialData, sign: str, reduction: str) -> dict:
    m = data.manifest
    rho = ev.within_spearman(pc1, m["severity_latent"], m["patient_id"]) if data.has_truth else None
    return {
        "explained_variance_ratio_pc1": reducer.explained_variance_ratio_pc1_,
        "effective_rank": emb_step.effective_rank(centre_by(emb, m["patient_id"].to_numpy())),
        "spearman_pc1_latent": rho,
        "reduction": reduction,
        "sign_aligned": sign == "truth",
        "sign_note": SIGN_NOTES[sign],
    }


def _embedding_frame(m: pd.DataFrame, method: str, pc1: np.ndarray, emb: np.ndarray) -> pd.DataFrame:
    """Rows of ``embeddings.csv`` for one method: the photo, its PC1 and every embedding dimension."""
    frame = m[["image", "patient_id", "day", "treatment"]].copy()
    frame["method"] = method
    frame["PC1"] = pc1
    dims = pd.DataFrame(emb, columns=[f"e{j}" for j in range(emb.shape[1])])
    return pd.concat([frame.reset_index(drop=True), dims], axis=1)


def _population_entry(method: str, name: str, fit: dict, mm: dict | None) -> dict:
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
    if mm is not None:
        entry.update(
            effect_on_severity(fit["estimate"], fit["se"], fit["df"], mm),
            measurement_slope=mm["slope"],
            measurement_slope_se=mm["slope_se"],
            severity_note="measurement model PC1 = a_patient + b·severity_latent fitted on the truth; "
            "effect ÷ b, SE with b's uncertainty (delta method)",
        )
    return entry


def _patient_entries(
    scored, data: TrialData, method: str, pair, seed_key: tuple, cfg: AnalysisConfig, noise: StatedNoise | None
) -> list:
    """The per-patient tests of one contrast, each patient with its own seeded generator."""
    a, b = pair
    name = contrast_name(a, b)
    realised_pp = ev.realised_by_patient(scored, a, b) if data.has_noisefree else pd.Series(dtype=float)
    rows = []
    for pi, (pid, p) in enumerate(scored.groupby("patient_id", sort=True)):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, *seed_key, pi]))
        p = p.sort_values("day", kind="stable")
        tests = [cycle_test(p, "PC1", a, b), *patient_tests(p, "PC1", a, b, rng, cfg.time_terms, cfg.n_perm, noise)]
        for t in tests:
            row = {"method": method, "patient_id": pid, "contrast": name, **t}
            if data.has_noisefree:
                row["known_realised"] = float(realised_pp.get(pid, np.nan))
            row["detected"] = detected(t["p_value"])
            rows.append(row)
    return rows


def _models(pc1, data: TrialData, method: str, mi: int, pairs, cfg: AnalysisConfig) -> tuple[list, list]:
    """Population model and per-patient tests of every contrast on one method's PC1."""
    m = data.manifest
    scored = m.assign(PC1=pc1)
    mm = measurement_model(pc1, m["severity_latent"], m["patient_id"]) if data.has_truth else None
    noise = stated_noise(cfg.assume_rho, data.protocol)  # per-patient gls and the sample-average effect
    population, patients = [], []
    one_patient = m["patient_id"].nunique() < 2
    for ci, (a, b) in enumerate(pairs):
        if not one_patient:  # one patient: per-patient tests only (see population_skipped)
            fit = fit_population(scored, "PC1", a, b, cfg.time_terms)
            population.append(_population_entry(method, contrast_name(a, b), fit, mm))
        patients += _patient_entries(scored, data, method, (a, b), (mi, ci), cfg, noise)
    add_sample_average(population, scored, pairs, noise, mm)
    return population, patients


def _one_method(
    method: str, mi: int, data: TrialData, loaded: tuple, pairs, cfg: AnalysisConfig, timings: dict
) -> dict:
    """Embed → PC1 (sign from the truth, else from the skin's redness) → models, for one method."""
    images, photos = loaded
    # 1. embed
    emb, est = emb_step.embed(method, data, images, cfg, timings)
    # 2. reduce to PC1
    t0 = time.perf_counter()
    reduction = cfg.reduction or DEFAULT_REDUCTION
    reducer = PC1Reducer(reduction)
    pc1 = reducer.fit_transform(emb, data.manifest["patient_id"].to_numpy())
    pc1, aligned = ev.align_sign(pc1, data.manifest)
    sign = "truth" if aligned else "loading"
    if not aligned and method == "ae":
        pc1, oriented = emb_step.orient_by_redness(pc1, photos)
        sign = "redness" if oriented else sign
    if not aligned and method == NEEDS_READER:
        pc1, sign = emb_step.orient_by_read_severity(pc1, emb), "read severity"
    timings["reduce"] += time.perf_counter() - t0
    # 3. models
    t0 = time.perf_counter()
    population, patients = _models(pc1, data, method, mi, pairs, cfg)
    timings["models"] += time.perf_counter() - t0
    return {
        "summary": _embedding_summary(pc1, emb, reducer, data, sign, reduction),
        "frame": _embedding_frame(data.manifest, method, pc1, emb),
        "reconstructions": (
            emb_step.reconstructions(est, images, data.manifest["image"].to_numpy()) if method == "ae" else None
        ),
        "population": population,
        "patients": patients,
        "bayes": bayes_fits(pc1, data, method, mi, pairs, cfg, sign, timings),
        "reader": _reader_outputs(est, images, data) if method == NEEDS_READER else None,
    }


def _reader_outputs(est, images, data: TrialData) -> tuple[dict, dict]:
    from .reader.views import reader_summary, reader_views

    return reader_summary(est), reader_views(est, images, data.manifest["image"].to_numpy())


# ---------------------------------------------------------------- truth and provenance


def _formulas(pairs, population: list[dict], cfg: AnalysisConfig, data: TrialData) -> dict:
    formulas = {contrast_name(a, b): population_formulas(a, cfg.time_terms) for a, b in pairs}
    for e in population:  # the re_formula actually used
        formulas[e["contrast"]].setdefault("re_formula_used", {})[e["method"]] = (
            "~contrast_arm" if e["model"] == "random slope" else "~1"
        )
    formulas["per_patient"] = {
        "cycles": "periods (runs of days on one arm) paired with the next period on the other arm; "
        "one-sample t-test of the cycles' differences of period means of daily mean PC1, df = cycles - 1",
        "primary": cfg.primary_test,
        "welch": "scipy.stats.ttest_ind(PC1[b], PC1[a], equal_var=False) on the patient's photos",
        "ar1": "Prais-Winsten GLS(daily mean PC1 ~ 1 + one indicator per level other than a"
        + (" + day" if cfg.time_terms else "")
        + "), AR(1) errors with rho estimated; p from a parametric bootstrap under the null",
        "permutation": f"{cfg.n_perm} free permutations of the two arms' photo labels (published pipeline)",
        "randomization": "period labels permuted within blocks (as the protocol randomises); exact p and min_p",
        "population_se": "max(LMM SE, SD of per-patient contrasts / sqrt(G)); t with G-1 df",
    }
    noise = stated_noise(cfg.assume_rho, data.protocol)
    if noise is not None:
        formulas["per_patient"]["gls"] = (
            "GLS(daily mean PC1 ~ 1 + one indicator per level other than a"
            + (" + day" if cfg.time_terms else "")
            + f"), error covariance as stated: {noise.describe()}; t with n - k df"
        )
        formulas["per_patient"]["stated_noise"] = noise.as_dict()
    return formulas


def _check_options(cfg: AnalysisConfig) -> None:
    """Options that need no data, refused (exit 2) before anything is read."""
    check_primary_test(cfg.primary_test)
    stated_noise(cfg.assume_rho, None)


def _load(dataset, cfg: AnalysisConfig, methods: list[str]) -> tuple[TrialData, tuple]:
    """The dataset, and when a method reads photos the (normalised) photos (uint8 N×3×H×W) and,
    on the skin path, the per-photo skin table."""
    _check_options(cfg)
    check_bayes(cfg)
    if "ae" in methods:  # a size the network cannot take fails before any photo is read
        emb_step.embedder("ae", None, cfg).check_params()
    if NEEDS_READER in methods:  # a bad reader folder fails before any photo is read
        emb_step.embedder(NEEDS_READER, None, cfg).fit()
    data = load_dataset(dataset)
    images, photos = None, None
    if any(m in IMAGE_METHODS for m in methods):
        data, images = load_images(data, cfg.resolved_image_size(), skip_bad=cfg.skip_bad, progress=cfg.progress)
        if emb_step.normalisation(cfg) != emb_step.SKIN:
            images = normalize_photometric(images, emb_step.normalisation(cfg))
        elif "ae" in methods:
            data, images, photos = emb_step.check_usable(data, images, cfg)
    return data, (images, photos)


def _load_or_given(dataset, cfg: AnalysisConfig, methods: list[str], data: TrialData | None) -> tuple:
    """:func:`_load`, or ``data`` as given when no method reads photos."""
    if data is not None and not any(m in IMAGE_METHODS for m in methods):
        _check_options(cfg)
        return data, (None, None)
    return _load(dataset, cfg, methods)


def _population_skipped(data: TrialData) -> dict:
    """``population_skipped`` (why there is no population model) for a one-patient trial, else nothing."""
    n = int(data.manifest["patient_id"].nunique())
    if n >= 2:
        return {}
    return {
        "population_skipped": f"one patient ({n}): a population model needs two or more patients; "
        "the per-patient tests are the analysis"
    }


def _design(data: TrialData) -> dict:
    """``design``: the dataset's design diagnostics (``design.json``, written by the simulator), when present."""
    import json

    path = Path(data.root) / "design.json"
    if not path.is_file():
        return {}
    try:
        return {"design": json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError) as e:
        raise AnalysisInputError(f"unreadable design diagnostics ({e.__class__.__name__})", file=str(path)) from None


def _provenance(cfg: AnalysisConfig, methods: list[str], read_photos: bool, data: TrialData, dataset) -> dict:
    """The options in effect, versions, seed and what was analysed (keys of results.json)."""
    m = data.manifest
    return {
        "config": dict(
            asdict(cfg),
            reduction=cfg.reduction or DEFAULT_REDUCTION,
            normalize=emb_step.normalisation(cfg),
            image_size=cfg.resolved_image_size() if read_photos else None,
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


# ---------------------------------------------------------------- run, write, analyze


def run(dataset, cfg: AnalysisConfig | None = None, data: TrialData | None = None) -> Results:
    """Analyse ``dataset`` (a folder; or ``data``, in memory, when no method reads photos); writes nothing."""
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    timings = dict.fromkeys(TIMED_STEPS, 0.0)
    methods = cfg.methods()
    # 1. load
    data, loaded = _load_or_given(dataset, cfg, methods, data)
    images, photos = loaded
    timings["load"] = time.perf_counter() - t_start
    pairs = contrasts(data.treatments)
    # 2. per method: embed → PC1 → models; verdicts from the primary per-patient test alone
    per = {m: _one_method(m, mi, data, loaded, pairs, cfg, timings) for mi, m in enumerate(methods)}
    population = [e for r in per.values() for e in r["population"]]
    patients = [e for r in per.values() for e in r["patients"]]
    primary = resolve_primary(patients, cfg.primary_test)
    for row in patients:
        row["primary"] = row["test"] == primary
    check_can_be_primary(patients, primary)
    # 3. known vs recovered (simulated data only)
    truth = ev.truth_entries(data, pairs, cfg.time_terms) if data.has_truth else None
    if truth is not None:
        ev.add_known(population, truth)
        add_relative_efficiency(population, truth)
    # 4. assemble
    by_method = {m: r["summary"] for m, r in per.items()}
    results = Results.model_validate(
        {
            "population": population,
            **_population_skipped(data),
            **_design(data),
            "patients": patients,
            **({"bayes": bayes} if (bayes := bayes_section(per, cfg)) is not None else {}),
            "primary_test": primary,
            "verdicts": patient_verdicts(patients, primary),
            "skin": emb_step.skin_summary(photos) if photos is not None else None,
            "embedding": dict(by_method[methods[0]], method=methods[0], by_method=by_method),
            "truth": truth,
            "formulas": _formulas(pairs, population, cfg, data),
            **_provenance(cfg, methods, images is not None, data, dataset),
            "timings_s": {k: round(v, 3) for k, v in dict(timings, total=time.perf_counter() - t_start).items()},
        }
    )
    results._embeddings = pd.concat([r["frame"] for r in per.values()], ignore_index=True)
    results._reconstructions = next((r["reconstructions"] for r in per.values() if r["reconstructions"]), None)
    results._bayes_draws = bayes_draws(results)
    if per.get(NEEDS_READER):
        results.reader, results._reader_views = per[NEEDS_READER]["reader"]
    return results


def write(results: Results, out, report: bool = True) -> Path:
    """Write ``results`` into the folder ``out``; returns the path of ``results.json``.

    ``embeddings.csv`` and ``reconstructions.npz`` are written when ``results`` came
    from :func:`run` (they are not part of results.json); ``report.html`` when ``report``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if results._embeddings is not None:
        # full precision: the report redraws PC1 from this file
        atomic_write_text(out / "embeddings.csv", results._embeddings.to_csv(index=False, lineterminator="\n"))
    if results._reconstructions is not None:
        atomic_write_npz(out / "reconstructions.npz", results._reconstructions)
    if results._bayes_draws:
        atomic_write_npz(out / "bayes_draws.npz", results._bayes_draws)
    if results._reader_views is not None:
        atomic_write_npz(out / "reader_views.npz", results._reader_views)
    path = out / "results.json"
    atomic_write_bytes(path, results.to_json().encode("utf-8"))
    if report:
        from .report import write_report

        write_report(out)
    return path


def analyze(dataset, out, cfg: AnalysisConfig | None = None) -> dict:
    """:func:`run` then :func:`write`; returns the results as the plain dict of ``results.json``."""
    cfg = cfg or AnalysisConfig()
    results = run(dataset, cfg)
    write(results, out, report=cfg.report)
    return results.to_dict()
