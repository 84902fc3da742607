"""The report's tables as lists of plain rows: headline verdicts, tests, per-patient results, truth."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..contract import ALPHA
from ..results import DESIGN_CANNOT_SHOW, finite, truth_is_null, verdict
from .figures import TEST_NAMES
from .inputs import ReportInputs, natural_key

VERDICT_CLASS = {
    "recovered": "good",
    "correctly null": "good",
    "missed": "bad",
    "false positive": "bad",
    "wrong sign": "bad",
    "detected": "neutral",
    "not detected": "neutral",
    "not estimable": "neutral",
    DESIGN_CANNOT_SHOW: "bad",
}


def headline_rows(inputs: ReportInputs, methods: list[str], alpha: float = ALPHA) -> list[dict]:
    """One row per population model, with its verdict against the truth (where known)."""
    truth = inputs.results.truth_by_contrast()
    by_method = inputs.results.embedding.per_method()
    rows: list[dict[str, Any]] = []
    for e in inputs.results.population:
        t = truth.get(e.contrast)
        aligned = by_method[e.method].sign_aligned if e.method in by_method else bool(t)
        v = verdict(e, t, aligned, alpha)
        rows.append(
            {
                "method": e.method,
                "contrast": e.contrast,
                "verdict": v,
                "verdict_class": VERDICT_CLASS.get(v, "neutral"),
                "est": e.estimate_std,
                "lo": e.ci_low_std,
                "hi": e.ci_high_std,
                "p": e.p_value,
                "raw_est": e.estimate,
                "raw_lo": e.ci_low,
                "raw_hi": e.ci_high,
                "se": e.se,
                "model": e.model,
                "warnings": [w for w in e.warnings if w],
                "sev": e.estimate_severity,
                "sev_lo": e.ci_low_severity,
                "sev_hi": e.ci_high_severity,
                "known": t.realised if t else None,
                "known_std": t.realised_std if t else None,
                "nominal": t.nominal if t else None,
            }
        )
    if not inputs.results.population:
        rows = _one_patient_rows(inputs, alpha)
    order = {m: i for i, m in enumerate(methods)}
    contrasts = list(dict.fromkeys(r["contrast"] for r in rows))
    rows.sort(key=lambda r: (contrasts.index(r["contrast"]), order.get(r["method"], 99)))
    return rows


def _one_patient_rows(inputs: ReportInputs, alpha: float) -> list[dict]:
    """Headline rows from the primary per-patient test when there is no population model (one patient).

    Estimates stay in PC1 units (no population model gives a residual SD to standardise by);
    the known effect beside them is the realised one in severity units.
    """
    truth = inputs.results.truth_by_contrast()
    by_method = inputs.results.embedding.per_method()
    rows = []
    for v in inputs.results.verdicts:
        t = truth.get(v["contrast"])
        aligned = by_method[v["method"]].sign_aligned if v["method"] in by_method else bool(t)
        verdict_text = verdict(v, t, aligned, alpha)
        rows.append(
            {
                "method": v["method"],
                "contrast": v["contrast"],
                "verdict": verdict_text,
                "verdict_class": VERDICT_CLASS.get(verdict_text, "neutral"),
                **dict(zip(("est", "lo", "hi"), (v.get("estimate"), v.get("ci_low"), v.get("ci_high")))),
                **dict(zip(("raw_est", "raw_lo", "raw_hi"), (v.get("estimate"), v.get("ci_low"), v.get("ci_high")))),
                "p": v.get("p_value"),
                "se": None,
                "model": f"per-patient {v.get('primary_test')} test (patient {v['patient_id']})",
                "population": False,  # the primary per-patient test stands in: no mixed-model line
                "warnings": [],
                **dict.fromkeys(("sev", "sev_lo", "sev_hi"), None),
                "known": t.realised if t else None,
                "known_std": t.realised if t else None,
                "nominal": t.nominal if t else None,
            }
        )
    return rows


def summaries(headline: list[dict], contrasts: list[str], has_truth: bool) -> list[dict]:
    """One plain sentence per contrast: which method got which verdict."""
    out = []
    for c in contrasts:
        rows = [r for r in headline if r["contrast"] == c]
        by_verdict: dict[str, list[str]] = {}
        for r in rows:
            by_verdict.setdefault(r["verdict"], []).append(r["method"])
        parts = [
            f"{v} by {' and '.join(ms) if len(ms) < 3 else ', '.join(ms[:-1]) + ' and ' + ms[-1]}"
            for v, ms in by_verdict.items()
        ]
        out.append(
            {
                "contrast": c,
                "text": "; ".join(parts) + ".",
                "known": rows[0]["known"] if rows and has_truth else None,
                "nominal": rows[0]["nominal"] if rows else None,
            }
        )
    return out


def patient_rows(inputs: ReportInputs) -> pd.DataFrame:
    """Per-patient tests with effects standardised like the headline (÷ the population model's residual SD)."""
    res = inputs.results
    rows = pd.DataFrame([p.model_dump() for p in res.patients])
    if rows.empty:
        return rows
    for c in ("estimate", "ci_low", "ci_high", "p_value", "known_realised", "min_p"):
        rows[c] = pd.to_numeric(rows[c], errors="coerce")
    rows["patient_id"] = rows["patient_id"].astype(str)
    sd = {(e.method, e.contrast): e.resid_sd for e in res.population}
    scale = pd.Series([sd.get(k) or np.nan for k in zip(rows["method"], rows["contrast"])], index=rows.index)
    rows["est_std"] = rows["estimate"] / scale
    rows["lo_std"] = rows["ci_low"] / scale
    rows["hi_std"] = rows["ci_high"] / scale
    latent_sd = {t.contrast: t.latent_model.resid_sd for t in inputs.truth}
    rows["known_std"] = rows["known_realised"] / rows["contrast"].map(lambda c: latent_sd.get(c) or np.nan).astype(
        float
    )
    return rows


def _population_line(h: dict, alpha: float) -> dict:
    return {
        "method": h["method"],
        "contrast": h["contrast"],
        "test": TEST_NAMES["lmm"],
        "level": "population",
        "est": h["raw_est"],
        "lo": h["raw_lo"],
        "hi": h["raw_hi"],
        "p": h["p"],
        "est_std": h["est"],
        "detected": None if h["p"] is None else h["p"] < alpha,
        "n": None,
    }


def _unreachable(g: pd.DataFrame, alpha: float) -> str:
    """The randomisation test's "cannot reach α" note when no patient's design lets it reject."""
    if "min_p" not in g.columns or g["min_p"].isna().all() or g["min_p"].min() <= alpha:
        return ""
    n = int(pd.to_numeric(g["n_assignments"], errors="coerce").min()) if "n_assignments" in g.columns else 0
    return f"cannot reach α = {alpha:g} with {n} assignments (smallest p = {g['min_p'].max():.3g})"


def test_summary(rows: pd.DataFrame, headline: list[dict], methods: list[str], alpha: float = ALPHA) -> list[dict]:
    """Every test, one line per method × contrast × test: the population model, then the per-patient tests."""
    out = [_population_line(h, alpha) for h in headline if h.get("population", True)]
    groups: Iterable = [] if rows.empty else rows.groupby(["method", "contrast", "test"], sort=False)
    for (m, c, t), g in groups:
        p = g["p_value"].dropna()
        out.append(
            {
                "method": m,
                "contrast": c,
                "test": TEST_NAMES.get(t, t),
                "level": "per patient",
                "est": finite(g["estimate"].mean()),
                "lo": None,
                "hi": None,
                "p": finite(p.median()) if len(p) else None,
                "est_std": finite(g["est_std"].mean()),
                "detected": int((p < alpha).sum()),
                "n": int(len(g)),
                "note": _unreachable(g, alpha),
            }
        )
    order = {m: i for i, m in enumerate(methods)}
    contrasts = list(dict.fromkeys(h["contrast"] for h in headline))
    out.sort(
        key=lambda r: (
            contrasts.index(r["contrast"]) if r["contrast"] in contrasts else 99,
            order.get(r["method"], 99),
            r["level"] != "population",
        )
    )
    return out


def patient_table(prows: pd.DataFrame, methods: list[str]) -> list[dict]:
    """Every per-patient test, sorted by contrast, method and patient."""
    if prows.empty:
        return []
    order = {k: i for i, k in enumerate(methods)}
    srt = prows.assign(_m=prows["method"].map(order), _p=prows["patient_id"].map(natural_key))
    srt = srt.sort_values(["contrast", "_m", "_p"], kind="stable")
    return [
        {
            "method": r["method"],
            "contrast": r["contrast"],
            "patient_id": r["patient_id"],
            "test": TEST_NAMES.get(r["test"], r["test"]),
            "est": finite(r["estimate"]),
            "lo": finite(r["ci_low"]),
            "hi": finite(r["ci_high"]),
            "p": finite(r["p_value"]),
            "known": finite(r["known_realised"]),
            "min_p": finite(r["min_p"]),
        }
        for _, r in srt.iterrows()
    ]


def truth_rows(inputs: ReportInputs) -> list[dict]:
    return [
        {
            "contrast": t.contrast,
            "nominal": t.nominal,
            "realised": t.realised,
            "realised_std": t.realised_std,
            "latent": t.latent_model.estimate,
            "latent_std": t.latent_model_std,
            "null": truth_is_null(t),
        }
        for t in inputs.truth
    ]


def formula_text(f: dict) -> str:
    """One population model as the lines a user would type into statsmodels."""
    lines = [str(f.get("formula", "?")), f"groups       = {f.get('groups', 'patient_id')}"]
    if f.get("re_formula"):
        fallback = (
            f"   (fallback {f['re_formula_fallback']} when it does not converge)"
            if f.get("re_formula_fallback")
            else ""
        )
        lines.append(f"re_formula   = {f['re_formula']}{fallback}")
    if isinstance(f.get("re_formula_used"), dict):
        lines.append("used         = " + ", ".join(f"{m}: {r}" for m, r in f["re_formula_used"].items()))
    if f.get("contrast_arm"):
        lines.append(f"contrast_arm = {f['contrast_arm']}")
    return "\n".join(lines)


def config_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def p_text(p) -> str:
    """A p-value for running text: 3 significant digits, "<0.001" below that, "—" when missing."""
    v = finite(p)
    if v is None:
        return "—"
    return "<0.001" if v < 0.001 else f"{v:.3g}"
