"""Statistical models of one outcome per photo: population (mixed model) and per-patient tests.

Population (:func:`fit_population`), for the contrast ``b − a``::

    y ~ C(treatment, Treatment(reference=a)) [+ day],  groups = patient_id,
    re_formula = "~contrast_arm"   (contrast_arm = 1 on arm b's photos)

a statsmodels MixedLM (REML) with a random intercept and a random slope for the
contrasted arm. Baseline (run-in) is its own level and never pooled with an arm.
With few patients and autocorrelated residuals (AR(1) noise, random-walk drift)
the model's own interval is too narrow: its SE assumes independent residuals,
and REML often puts the slope variance on 0, so the excess within-patient
variance of each patient's contrast is lost. The contrast's SE is therefore the
larger of the LMM SE and the summary-measures SE (SD of the per-patient
contrasts / √G, valid for any within-patient correlation), and its interval and
p use a t distribution with G − 1 df (G patients). Measured in
bench/bench_lmm_validity.py: LMM SE alone with t(G−1) rejects a true null 9% of
the time at α = 0.05; this rule ≈ 5%. If the random-slope model does not
converge it falls back to a random intercept, with a recorded warning.

Per patient (:func:`patient_tests`): Welch t-test, regression with AR(1) errors
(Prais–Winsten GLS on daily means, bootstrap p: :mod:`.ar1`), the published pipeline's permutation test (labels of
the two arms' photos shuffled freely) and a randomisation test that redraws
assignments as the protocol does (period labels permuted within each block),
with its exact p and the smallest p the design can give.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from .ar1 import ar1_test
from .errors import AnalysisInputError
from .stated_noise import StatedNoise, gls_test


def contrasts(treatments: list[str]) -> list[tuple[str, str]]:
    """All pairs ``(a, b)`` in protocol order; the contrast is ``b − a``."""
    return [(treatments[i], treatments[j]) for i in range(len(treatments)) for j in range(i + 1, len(treatments))]


def contrast_name(a: str, b: str) -> str:
    return f"{b} − {a}"


def _t_inference(est: float, se: float, df: float, level: float = 0.95) -> tuple[float, float, float]:
    if not (np.isfinite(est) and np.isfinite(se) and se > 0 and df > 0):
        return float("nan"), float("nan"), float("nan")
    q = stats.t.ppf(0.5 + level / 2, df)
    p = 2 * stats.t.sf(abs(est / se), df)
    return est - q * se, est + q * se, float(p)


def population_formulas(a: str, time_terms: bool = False) -> dict:
    fixed = f"y ~ C(treatment, Treatment(reference={a!r}))" + (" + day" if time_terms else "")
    return {
        "formula": fixed,
        "groups": "patient_id",
        "re_formula": "~contrast_arm",
        "re_formula_fallback": "~1",
        "contrast_arm": "1 on the photos of the contrast's second arm",
    }


def arm_difference(df: pd.DataFrame, outcome: str, a: str, b: str) -> pd.Series:
    """Per patient: mean of ``outcome`` over arm b's rows minus arm a's (patients with both arms).

    The one definition of a patient's contrast: on photos it is the summary-measures
    contrast; on daily means (:func:`analysis.evaluate.realised_by_patient`) the realised effect.
    """
    arm = df[df["treatment"].isin([a, b])].groupby(["patient_id", "treatment"])[outcome].mean().unstack()
    if a not in arm.columns or b not in arm.columns:
        return pd.Series(dtype=float)
    return (arm[b] - arm[a]).dropna()


def _model_frame(df: pd.DataFrame, outcome: str, a: str, b: str) -> pd.DataFrame:
    """The model's columns (y, patient_id, treatment, day, contrast_arm), finite y only; checks both arms and 2+ patients."""
    d = pd.DataFrame(
        {
            "y": pd.to_numeric(df[outcome], errors="coerce").to_numpy(dtype=float),
            "patient_id": df["patient_id"].astype(str).to_numpy(),
            "treatment": df["treatment"].astype(str).to_numpy(),
            "day": df["day"].to_numpy(dtype=float),
        }
    )
    d = d[np.isfinite(d["y"])].reset_index(drop=True)
    for arm in (a, b):
        if not (d["treatment"] == arm).any():
            raise AnalysisInputError(f"no photos of treatment {arm!r} to contrast", field="treatment")
    n_patients = d["patient_id"].nunique()
    if n_patients < 2:
        raise AnalysisInputError(
            f"the population model needs at least two patients, found {n_patients}",
            field="patient_id",
            allowed="two or more patients (use the per-patient tests)",
        )
    d["contrast_arm"] = (d["treatment"] == b).astype(float)
    return d


def _fit_mixed(d: pd.DataFrame, f: dict, name: str) -> tuple:
    """Random slope, else random intercept, else OLS with fixed patient intercepts: ``(fit, model, notes)``."""
    from statsmodels.regression.mixed_linear_model import MixedLM
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    notes: list[str] = []
    fit, model = None, None
    for re_formula, label in ((f["re_formula"], "random slope"), ("~1", "random intercept")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                m = MixedLM.from_formula(f["formula"], d, groups="patient_id", re_formula=re_formula)
                r = m.fit(reml=True, method=["lbfgs", "powell"])
            except (np.linalg.LinAlgError, ValueError) as e:
                notes.append(f"{label} model failed: {e.__class__.__name__}: {e}")
                continue
        msgs = sorted({str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)})
        # a variance on the boundary (0) is a valid REML fit; non-convergence is not
        bad = [w for w in msgs if "boundary" not in w]
        boundary = [w for w in msgs if "boundary" in w]
        ok = bool(getattr(r, "converged", True)) and np.isfinite(r.bse.get(name, np.nan))
        if label == "random slope" and (not ok or bad):
            notes.append(
                "random-slope model did not converge ("
                + ("; ".join(sorted(set(bad)))[:200] or "non-finite SE")
                + "); fell back to a random intercept"
            )
            continue
        fit, model = r, label
        if bad:
            notes.append(f"{label} model: " + "; ".join(bad)[:200])
        if boundary:
            notes.append(f"{label} model: a variance estimate is on the boundary (0)")
        break
    if fit is None:  # last resort: fixed patient intercepts (OLS); still t with G − 1 df below
        import statsmodels.formula.api as smf

        fit = smf.ols(f["formula"] + " + C(patient_id)", d).fit()
        model = "fixed patient intercepts (OLS)"
        notes.append("mixed models failed; used OLS with fixed patient intercepts")
    return fit, model, notes


def fit_population(df: pd.DataFrame, outcome: str, a: str, b: str, time_terms: bool = False) -> dict:
    """Mixed model for the contrast ``b − a`` of ``df[outcome]``.

    ``df`` needs ``patient_id``, ``treatment``, ``day`` and ``outcome``. Returns a dict:
    ``estimate`` (LMM), ``se`` (max of ``se_lmm`` and ``se_summary``), ``ci_low, ci_high,
    p_value, df`` (t with patients − 1 df),
    ``resid_sd`` (residual SD on the contrasted arms, for standardising; ``resid_sd_all`` over all photos), ``model`` ("random slope" or
    "random intercept"), ``warnings`` (list of str), ``formulas``.
    """
    d = _model_frame(df, outcome, a, b)
    n_patients = d["patient_id"].nunique()
    f = population_formulas(a, time_terms)
    name = f"C(treatment, Treatment(reference={a!r}))[T.{b}]"
    fit, model, notes = _fit_mixed(d, f, name)
    est, se_lmm = float(fit.params[name]), float(fit.bse[name])
    per = arm_difference(d, "y", a, b)
    se_summary = float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) >= 2 else float("nan")
    # the larger of the two: the LMM's SE assumes independent residuals (too small under
    # autocorrelation when the slope variance sits at 0); the summary-measures SE is valid
    # for any within-patient correlation
    se = float(np.nanmax([se_lmm, se_summary]))
    dof = n_patients - 1
    lo, hi, p = _t_inference(est, se, dof)
    # residual SD on the two contrasted arms only: the unit of the standardised effect. A
    # run-in at another severity can have a different residual spread (an image measure
    # need not be linear in severity over the whole 0–3 range), and the contrast is about
    # these two arms.
    in_arms = d["treatment"].isin([a, b]).to_numpy()
    try:
        resid_all = np.asarray(fit.resid, dtype=float)
    except (ValueError, np.linalg.LinAlgError):
        # random effects cannot be predicted from a singular covariance: take the
        # fixed-effect residuals minus each patient's mean residual (its intercept)
        r0 = d["y"].to_numpy() - np.asarray(fit.predict(), dtype=float)
        resid_all = r0 - pd.Series(r0).groupby(d["patient_id"].to_numpy()).transform("mean").to_numpy()
    resid = resid_all[in_arms]
    resid_sd = float(np.sqrt(np.mean((resid - resid.mean()) ** 2))) if len(resid) > 1 else float("nan")
    return {
        "estimate": est,
        "se": se,
        "se_lmm": se_lmm,
        "se_summary": se_summary,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "df": dof,
        "resid_sd": resid_sd,
        "resid_sd_all": float(np.sqrt(fit.scale)),
        "model": model,
        "warnings": notes,
        "formulas": dict(f, re_formula=f["re_formula"] if model == "random slope" else "~1"),
        "n_patients": n_patients,
        "n_obs": int(len(d)),
    }


# ---------------------------------------------------------------- per patient


def _periods_and_blocks(p: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Period and block per photo: the manifest's columns, or derived from runs of one treatment."""
    if "period" in p.columns and p["period"].notna().all():
        period = p["period"].to_numpy()
    else:
        period = (p["treatment"] != p["treatment"].shift()).cumsum().to_numpy()
    if "block" in p.columns and p["block"].notna().all():
        return period, p["block"].to_numpy()
    # blocks: consecutive groups of k periods, k = number of arms the patient has
    k = max(p["treatment"].nunique(), 1)
    rank = pd.Series(period).rank(method="dense").astype(int).to_numpy() - 1
    return period, rank // k


def _assignments(arm_b, period, block, rng, max_enumerate: int, n_draws: int) -> tuple[np.ndarray, int, bool]:
    """Every assignment the design allows (or ``n_draws`` random ones when more than ``max_enumerate``).

    Returns a bool array (assignments × photos, True = arm b), the number of
    assignments the design allows, and whether all were enumerated.
    """
    periods = pd.unique(period)
    p_label = np.array([arm_b[period == q][0] for q in periods])
    p_block = np.array([block[period == q][0] for q in periods])
    idx = (
        np.searchsorted(periods, period)
        if np.all(np.diff(periods) > 0)
        else np.array([np.flatnonzero(periods == q)[0] for q in period])
    )
    per_block = [np.flatnonzero(p_block == bl) for bl in pd.unique(p_block)]
    options: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for members in per_block:
        labs = p_label[members]
        perms = sorted(set(itertools.permutations(labs.tolist())))
        options.append((members, [np.array(x) for x in perms]))
    total = math.prod(len(o[1]) for o in options)
    exact = total <= max_enumerate
    combos: Iterable[tuple[int, ...]]
    if exact:
        combos = itertools.product(*[range(len(o[1])) for o in options])
    else:
        combos = (tuple(int(rng.integers(len(o[1]))) for o in options) for _ in range(n_draws))
    assignments = []
    for combo in combos:
        lab = p_label.copy()
        for (members, choices), c in zip(options, combo):
            lab[members] = choices[c]
        assignments.append(lab[idx])
    return np.array(assignments, dtype=bool), total, exact  # (n_assign, n_photos)


def randomization_test(
    y: np.ndarray,
    arm_b: np.ndarray,
    period: np.ndarray,
    block: np.ndarray,
    rng: np.random.Generator,
    max_enumerate: int = 20000,
    n_draws: int = 5000,
) -> dict:
    """Redraw assignments by permuting period labels within blocks; statistic = mean(b) − mean(a).

    Returns ``estimate`` (observed statistic), ``p_value`` (two-sided, exact when the
    assignments are enumerated), ``min_p`` (smallest p this design can give),
    ``n_assignments``, ``exact``.
    """
    A, total, exact = _assignments(arm_b, period, block, rng, max_enumerate, n_draws)

    def stat(v):
        nb = A.sum(1)
        na = A.shape[1] - nb
        with np.errstate(invalid="ignore", divide="ignore"):
            return (A @ v) / nb - ((~A) @ v) / na

    obs = float(y[arm_b].mean() - y[~arm_b].mean())
    s = np.abs(stat(y))
    tol = 1e-9 * max(1.0, abs(obs))
    if exact:
        p = float(np.mean(s >= abs(obs) - tol))
    else:
        p = float((1 + np.sum(s >= abs(obs) - tol)) / (1 + len(s)))
    # the design's floor: assignments indistinguishable from the observed one for generic data
    g = np.random.default_rng(12345).normal(size=len(y))
    sg = np.abs(stat(g))
    og = abs(g[arm_b].mean() - g[~arm_b].mean())
    min_p = float(np.mean(np.abs(sg - og) <= 1e-9 * max(1.0, og)))
    if not exact:
        min_p = 1.0 / (1 + len(s))
    return {"estimate": obs, "p_value": p, "min_p": min_p, "n_assignments": int(total), "exact": exact}


def permutation_test(y: np.ndarray, arm_b: np.ndarray, rng: np.random.Generator, n_perm: int = 2000) -> float:
    """The published pipeline's test: shuffle the two arms' labels over photos freely."""
    obs = abs(y[arm_b].mean() - y[~arm_b].mean())
    nb = int(arm_b.sum())
    perm = np.argsort(rng.random((n_perm, len(y))), axis=1)
    yp = y[perm]
    diffs = np.abs(yp[:, :nb].mean(1) - yp[:, nb:].mean(1))
    return float((1 + np.sum(diffs >= obs - 1e-12)) / (1 + n_perm))


def daily_design(p: pd.DataFrame, outcome: str, a: str, b: str, time_terms: bool):
    """Daily means in day order, their design (const, one indicator per arm other than ``a``, + day) and b's column."""
    daily = p.groupby(["day", "treatment"], as_index=False)[outcome].mean().sort_values("day")
    levels = [lv for lv in pd.unique(daily["treatment"]) if lv != a]
    X = pd.DataFrame({f"is_{lv}": (daily["treatment"] == lv).astype(float) for lv in levels})
    if time_terms:
        X["day"] = daily["day"].astype(float)
    X.insert(0, "const", 1.0)
    ok = len(daily) >= X.shape[1] + 3 and np.linalg.matrix_rank(X.to_numpy(float)) == X.shape[1]
    return daily, X.to_numpy(float), (list(X.columns).index(f"is_{b}") if ok else None)


def _ar1_regression(p: pd.DataFrame, outcome: str, a: str, b: str, time_terms: bool, rng: np.random.Generator) -> dict:
    """Daily means on one indicator per arm other than ``a`` (+ day), AR(1) errors, bootstrap p (:mod:`.ar1`)."""
    daily, X, j = daily_design(p, outcome, a, b, time_terms)
    if j is None:
        nan = float("nan")
        return {"estimate": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n_days": int(len(daily))}
    return ar1_test(daily[outcome].to_numpy(float), X, j, rng)


def _stated_regression(p: pd.DataFrame, outcome: str, a: str, b: str, time_terms: bool, noise: StatedNoise) -> dict:
    """The same regression with the error correlation the design states: exact t (:mod:`.stated_noise`)."""
    daily, X, j = daily_design(p, outcome, a, b, time_terms)
    if j is None:
        nan = float("nan")
        return {"estimate": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n_days": int(len(daily))}
    return gls_test(daily[outcome].to_numpy(float), daily["day"].to_numpy(float), X, j, noise)


def patient_tests(
    p: pd.DataFrame,
    outcome: str,
    a: str,
    b: str,
    rng: np.random.Generator,
    time_terms: bool = False,
    n_perm: int = 2000,
    noise: StatedNoise | None = None,
) -> list[dict]:
    """The per-patient tests of ``b − a`` on one patient's photos (rows sorted by day).

    welch, ar1, permutation and randomization, and gls when the design states its noise
    (``noise``). Each entry: ``test, estimate, ci_low, ci_high, p_value`` (+ ``min_p``
    and ``n_assignments`` for the randomisation test). Tests that cannot run give NaN.
    """
    nan = float("nan")
    both = p[p["treatment"].isin([a, b])]
    y = both[outcome].to_numpy(float)
    arm_b = (both["treatment"] == b).to_numpy()
    if arm_b.sum() < 2 or (~arm_b).sum() < 2:
        return [
            {"test": t, "estimate": nan, "ci_low": nan, "ci_high": nan, "p_value": nan}
            for t in ("welch", "ar1", "permutation", "randomization", *(["gls"] if noise else []))
        ]
    diff = float(y[arm_b].mean() - y[~arm_b].mean())
    w = stats.ttest_ind(y[arm_b], y[~arm_b], equal_var=False)
    ci = w.confidence_interval(0.95)
    welch = dict(test="welch", estimate=diff, ci_low=float(ci.low), ci_high=float(ci.high), p_value=float(w.pvalue))
    perm = dict(test="permutation", estimate=diff, ci_low=nan, ci_high=nan)
    out = [welch, dict(perm, p_value=permutation_test(y, arm_b, rng, n_perm))]
    period, block = _periods_and_blocks(both)
    r = randomization_test(y, arm_b, period, block, rng)
    # drawn last: the permutation and randomisation draws stay those of the same seed before
    ar = _ar1_regression(p, outcome, a, b, time_terms, rng)
    out.insert(1, {"test": "ar1", **ar})
    out.append(
        {
            "test": "randomization",
            "estimate": r["estimate"],
            "ci_low": nan,
            "ci_high": nan,
            "p_value": r["p_value"],
            "min_p": r["min_p"],
            "n_assignments": r["n_assignments"],
        }
    )
    if noise is not None:
        out.append({"test": "gls", **_stated_regression(p, outcome, a, b, time_terms, noise)})
    return out
