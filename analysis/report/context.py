"""Everything the report's template needs, from the typed inputs: numbers, verdicts, figures, thumbnails, notes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..contract import ALPHA, BASELINE_LABEL
from ..results import NULL_TOLERANCE
from . import figures as fg
from . import tables
from .bayes import bayes_context
from .inputs import ReportInputs
from .reader import reader_context
from .thumbnails import array_uri, filmstrip

BASELINE_COLOR = "#c8c8c8"
TREATMENT_COLORS = ["#0173B2", "#DE8F05", "#029E73", "#CC78BC", "#CA9161", "#56B4E9", "#D55E00", "#949494"]
METHOD_COLORS = {"ae": "#3b3b98", "pixel-pca": "#b35806", "oracle": "#1a9850"}
OTHER_METHOD_COLORS = ["#762a83", "#8c510a", "#01665e", "#c51b7d"]
PATIENT_TESTS = ("welch", "gls", "ar1", "permutation", "randomization")


@dataclass(frozen=True)
class _Look:
    """The methods in report order and the colours of methods and treatments, shared by every figure."""

    methods: list[str]
    method_colors: dict[str, str]
    colors: dict[str, str]


def _methods(inputs: ReportInputs) -> list[str]:
    listed = [m for m in (inputs.results.config.get("methods") or []) if isinstance(m, str)]
    seen = listed + [e.method for e in inputs.results.population] + list(inputs.embeddings["method"].dropna().unique())
    return list(dict.fromkeys(m for m in seen if isinstance(m, str) and m))


def _method_colors(methods: list[str]) -> dict[str, str]:
    out, spare = {}, iter(OTHER_METHOD_COLORS * 4)
    for m in methods:
        out[m] = METHOD_COLORS.get(m) or next(spare)
    return out


def _treatment_colors(inputs: ReportInputs) -> dict[str, str]:
    baseline = inputs.results.baseline_label or BASELINE_LABEL
    labels = [t for t in inputs.results.treatments if t != baseline]
    labels += sorted(set(inputs.embeddings["treatment"].dropna()) - set(labels) - {baseline})
    colors = {baseline: BASELINE_COLOR}
    for i, t in enumerate(labels):
        colors[t] = TREATMENT_COLORS[i % len(TREATMENT_COLORS)]
    return colors


def _protocol_yaml(protocol) -> str | None:
    if not protocol:
        return None
    try:
        import yaml

        return yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True, width=100)
    except Exception:
        return json.dumps(protocol, indent=2, ensure_ascii=False)


def _title(inputs: ReportInputs) -> str:
    proto = inputs.results.protocol or {}
    if proto.get("name"):
        return str(proto["name"])
    raw = inputs.results.dataset
    return Path(str(raw)).name if raw else inputs.results_dir.resolve().name


def _draw(inputs: ReportInputs, what: str, fn, *args):
    """A figure, or ``None`` with a visible note: one odd panel must not cost the whole report."""
    try:
        return fn(*args)
    except Exception as e:
        inputs.notes.append(f"The {what} could not be drawn ({e.__class__.__name__}: {e}).")
        return None


def _embeddings(inputs: ReportInputs) -> pd.DataFrame:
    emb = inputs.embeddings.dropna(subset=["patient_id", "day"]).copy()
    emb["day"] = emb["day"].astype(int)
    emb["patient_id"] = emb["patient_id"].astype(str)
    return emb


def _figures(inputs: ReportInputs, emb: pd.DataFrame, headline: list[dict], look: _Look) -> dict:
    """Headline, schedule, latent, PC1-against-latent and PC1-over-time figures (``None`` where not drawn)."""
    methods, mcolors, colors = look.methods, look.method_colors, look.colors
    figs = dict.fromkeys(("headline", "schedule", "latent", "pc1_vs_latent", "pc1_time"))
    first = emb[emb["method"] == emb["method"].iloc[0]] if len(emb) and emb["method"].notna().any() else emb
    if len(first):
        figs["schedule"] = _draw(
            inputs, "treatment schedule", fg.fig_schedule, first[["patient_id", "day", "treatment"]], colors
        )
    if headline:
        contrasts = list(dict.fromkeys(r["contrast"] for r in headline))
        figs["headline"] = _draw(
            inputs, "headline figure", fg.fig_headline, headline, contrasts, methods, mcolors, inputs.has_truth
        )
    present = [k for k in methods if k in set(emb["method"])]
    man = inputs.manifest
    if inputs.has_latent and man is not None:
        m = man.dropna(subset=["severity_latent"]).copy()
        m["patient_id"], m["day"] = m["patient_id"].astype(str), m["day"].astype(int)
        figs["latent"] = _draw(inputs, "latent trajectories", fg.fig_latent, m, colors)
        if len(emb):
            by_method = inputs.results.embedding.per_method()
            rho = {k: by_method[k].spearman_pc1_latent if k in by_method else None for k in methods}
            figs["pc1_vs_latent"] = _draw(
                inputs, "PC1-against-latent figure", fg.fig_pc1_vs_latent, emb, m, present, rho, colors
            )
    if len(emb) and emb["PC1"].notna().any():
        figs["pc1_time"] = _draw(inputs, "PC1-over-time figure", fg.fig_pc1_time, emb, present, mcolors, colors)
    return figs


def _forests(inputs: ReportInputs, prows: pd.DataFrame, contrasts: list[str], methods: list[str]) -> list[dict]:
    """One forest plot of per-patient effects per contrast."""
    if prows.empty:
        return []
    tests = [t for t in PATIENT_TESTS if t in set(prows["test"])]
    tests += sorted(set(prows["test"]) - set(tests))
    forests = []
    for c in contrasts or list(dict.fromkeys(prows["contrast"])):
        sub = prows[prows["contrast"] == c]
        ms = [k for k in methods if k in set(sub["method"])]
        uri = _draw(inputs, f"forest plot of {c}", fg.fig_forest, sub, ms, tests, inputs.has_truth) if ms else None
        if uri:
            forests.append({"contrast": c, "uri": uri})
    return forests


def _reconstructions(inputs: ReportInputs) -> tuple[list[dict] | None, float | None]:
    """The autoencoder's originals beside its reconstructions, and its last training loss."""
    r = inputs.reconstructions
    if r is None:
        return None, None
    names = [str(x) for x in r.get("images", [])]
    recon = [
        {"original": array_uri(o), "reconstruction": array_uri(rc), "name": names[i] if i < len(names) else ""}
        for i, (o, rc) in enumerate(zip(r["originals"], r["reconstructions"]))
    ]
    loss = r.get("loss_history")
    return recon, (float(loss[-1]) if loss is not None and len(loss) else None)


def _variance(inputs: ReportInputs, methods: list[str]) -> list[dict]:
    emb = inputs.results.embedding
    return [
        {
            "method": k,
            "evr": s.explained_variance_ratio_pc1,
            "rho": s.spearman_pc1_latent,
            "reduction": s.reduction or emb.reduction,
            "aligned": s.sign_aligned,
            "note": s.sign_note,
            "rank": s.get("effective_rank"),
        }
        for k in methods
        if (s := emb.per_method().get(k)) is not None
    ]


def _provenance(inputs: ReportInputs, emb: pd.DataFrame) -> dict:
    """Formulas, settings, versions, timings and the dataset: the report's last section."""
    res = inputs.results
    formulas, cfg = res.formulas, res.config
    per_patient = formulas.get("per_patient")
    if not isinstance(per_patient, dict):
        per_patient = {}
    return {
        "contrast_formulas": {k: tables.formula_text(v) for k, v in formulas.items() if k != "per_patient"},
        "per_patient_formulas": {k: v for k, v in per_patient.items() if not isinstance(v, dict)},
        "versions": res.versions,
        "seed": res.seed if res.seed is not None else cfg.get("seed"),
        # seed has its own row
        "config": {
            k: tables.config_value(v)
            for k, v in cfg.items()
            if v is not None and k not in ("progress", "seed", "method")
        },
        "timings": res.timings_s,
        "protocol_yaml": _protocol_yaml(res.protocol),
        "dataset": res.dataset,
        "dataset_found": str(inputs.dataset_root) if inputs.dataset_root else None,
        "normalize": cfg.get("normalize"),
        "skipped": res.skipped_images,
        "skipped_paths": res.skipped_image_paths[:50],
    }


def _primary_and_severity(inputs: ReportInputs) -> dict:
    """The primary test's per-patient verdicts, effects on the severity scale, and the skin used."""
    res = inputs.results
    verdicts = [
        dict(v, sensitivity_text=", ".join(f"{t} {tables.p_text(p)}" for t, p in (v.get("sensitivity") or {}).items()))
        for v in res.verdicts
    ]
    severity = [
        {
            "method": e.method,
            "contrast": e.contrast,
            "est": e.get("estimate_severity"),
            "lo": e.get("ci_low_severity"),
            "hi": e.get("ci_high_severity"),
            "known": e.get("known_realised"),
            "efficiency": e.get("relative_efficiency"),
            **{
                k: e.get(f"sample_{f}_severity")
                for k, f in (("s_est", "estimate"), ("s_lo", "ci_low"), ("s_hi", "ci_high"))
            },
        }
        for e in res.population
        if e.get("estimate_severity") is not None
    ]
    rec = inputs.reconstructions or {}
    mse = [float(x) for x in rec["mse"]] if "mse" in rec else None  # the autoencoder's, the mean patch's
    from ..primary import TEST_ASSUMPTIONS

    return {
        "population_skipped": res.population_skipped,
        "design_diag": res.design,
        "test_assumptions": _assumptions(res, TEST_ASSUMPTIONS),
        "primary_test": res.primary_test,
        "verdicts": verdicts,
        "severity": severity,
        "skin": res.skin,
        "recon_mse": mse,
    }


def _assumptions(res, general: dict) -> dict:
    """Each test's assumption; the gls test's with the noise this analysis stated (or "not run")."""
    noise = (res.formulas.get("per_patient") or {}).get("stated_noise")
    text = f"daily errors correlated as stated: {noise['text']}; exact if so" if noise else "not run (no noise stated)"
    return dict(general, gls=text)


def _design(inputs: ReportInputs, emb: pd.DataFrame) -> dict:
    res = inputs.results
    return {
        "treatments_present": sorted(set(emb["treatment"].dropna().astype(str))),
        "n_images": res.n_images
        if "n_images" in res.model_fields_set
        else len(inputs.embeddings.drop_duplicates("image")),
        "n_patients": res.n_patients
        if "n_patients" in res.model_fields_set
        else (emb["patient_id"].nunique() if len(emb) else None),
        "n_days": int(emb["day"].max()) if len(emb) else None,
        "baseline_label": res.baseline_label or BASELINE_LABEL,
    }


def build_context(inputs: ReportInputs, alpha: float = ALPHA) -> dict:
    """All the template needs: numbers, verdicts, figure and thumbnail data URIs, notes."""
    # 1. who is who: methods, colours, the photos' table
    methods = _methods(inputs)
    look = _Look(methods, _method_colors(methods), _treatment_colors(inputs))
    emb = _embeddings(inputs)
    by_method = inputs.results.embedding.per_method()
    aligned = {m: by_method[m].sign_aligned if m in by_method else False for m in methods}
    # 2. tables
    headline = tables.headline_rows(inputs, methods, alpha)
    contrasts = list(dict.fromkeys(r["contrast"] for r in headline))
    prows = tables.patient_rows(inputs)
    # 3. figures and thumbnails
    figs = _figures(inputs, emb, headline, look)
    forests = _forests(inputs, prows, contrasts, methods)
    strips, strip_note = filmstrip(inputs, look.colors)
    recon, recon_loss = _reconstructions(inputs)
    # 4. the context
    return {
        "title": _title(inputs),
        "has_truth": inputs.has_truth,
        "methods": methods,
        "method_colors": look.method_colors,
        "treatment_colors": look.colors,
        "contrasts": contrasts,
        "headline": headline,
        "truth_rows": tables.truth_rows(inputs),
        "summaries": tables.summaries(headline, contrasts, inputs.has_truth),
        "figs": figs,
        "forests": forests,
        "strips": strips,
        "strip_note": strip_note,
        "recon": recon,
        "recon_loss": recon_loss,
        "reader": reader_context(inputs.results_dir, inputs.results.reader),
        "variance": _variance(inputs, methods),
        **_primary_and_severity(inputs),
        "tests_summary": tables.test_summary(prows, headline, methods, alpha),
        "patient_table": tables.patient_table(prows, methods),
        "warnings": [
            {"method": h["method"], "contrast": h["contrast"], "text": w} for h in headline for w in h["warnings"]
        ],
        **_provenance(inputs, emb),
        **_design(inputs, emb),
        "notes": inputs.notes,
        "bayes": bayes_context(inputs),
        "alpha": alpha,
        "null_tolerance": NULL_TOLERANCE,
        "reduction": inputs.results.embedding.reduction or inputs.results.config.get("reduction"),
        "aligned_any": any(aligned.values()),
        "any_aligned_all": bool(aligned) and all(aligned.values()),
    }
