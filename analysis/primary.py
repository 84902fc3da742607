"""One primary per-patient test, declared before the analysis; the others are sensitivity analyses.

Several per-patient tests of a contrast run on every patient. Reading "any of them" as
the answer inflates false positives, so one is declared primary (``--primary-test``) and
the verdicts come from it alone; the others are reported as sensitivity analyses.

- ``cycles`` (default): the classical N-of-1 analysis of treatment cycles. Daily means
  are averaged per period (a run of days on one treatment); each period is paired with
  the next period on the other treatment, and the cycles' differences get a one-sample
  t-test (:func:`cycle_test`). Daily photos are serially correlated (skin changes slowly;
  a day's photos share that day's state), so every photo or every day is not a new
  replicate; a cycle is, nearly: cycles lie apart in time, and slow drift cancels within
  one. Measured on simulated trials with no effect for any patient (latent severity, alpha
  0.05, ``bench/bench_primary_null.py``): 0.038 on the HIA pilot design (4 cycles of 2+2
  days, 2000 patient tests), 0.029 on ``null_effect.yaml`` (2 cycles, 1000 patient tests).
  It needs two cycles or more.
- ``ar1``: regression of daily means on treatment with AR(1) errors (Prais–Winsten GLS), its
  p from a parametric bootstrap of the AR(1) model under the null (:mod:`analysis.ar1`): the
  plain t of a GLS fit rejected a true null 0.21 of the time at 10 days with ρ = 0.5. It holds
  its level (ρ = 0 and 0.5) from :data:`~analysis.ar1.AR1_MIN_DAYS` daily means on (measured in
  ``bench/bench_single_patient.py``); with fewer it may not be primary. Slow drift is not
  AR(1): on the HIA pilot design its rate rises, so ``cycles`` stays the default.
- ``gls``: the same regression with the error correlation the design states (a simulated
  folder's protocol, or ``--assume-rho``), an exact t at any length when the statement is
  right (:mod:`analysis.stated_noise`). It exists only where the noise is stated.
- ``welch``, ``permutation``: photos as independent, as published (0.24 and 0.31 in the
  same checks). Exact when days are independent (white noise, one photo a day), the case of
  the classical single-patient power calculation; declare one primary only for such data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .ar1 import AR1_MIN_DAYS
from .contract import ALPHA
from .errors import AnalysisInputError

PER_PATIENT_TESTS = ("cycles", "gls", "ar1", "welch", "permutation", "randomization")
AUTO = "auto"  # chosen from the design before any outcome is read: see resolve_primary
DEFAULT_PRIMARY_TEST = AUTO


def cycle_test(p: pd.DataFrame, outcome: str, a: str, b: str, alpha: float = ALPHA) -> dict:
    """Paired test over treatment cycles of one patient: daily means → period means → cycle differences.

    Periods are runs of consecutive days on one treatment (days in order), split where the
    manifest's ``period`` changes when it has one (randomised blocks may put two periods on
    one treatment in a row: A B | B A is two cycles, not one); each period on
    ``a`` or ``b`` is paired with the next period on the other of the two, and each pair (a
    cycle) gives one difference of period means, ``b − a``. The cycles' differences are
    tested against 0 with a one-sample t-test (df = cycles − 1). Returns ``test``
    ("cycles"), ``estimate``, ``ci_low``, ``ci_high``, ``p_value``, ``n_cycles``; NaN
    with fewer than two cycles.
    """
    nan = float("nan")
    q = p[p["treatment"].isin([a, b])]
    by_period = "period" in q.columns and len(q) > 0 and bool(q["period"].notna().all())
    agg = {"y": (outcome, "mean"), "arm": ("treatment", "first")}
    daily = q.groupby("day", sort=True).agg(**agg, **({"period": ("period", "first")} if by_period else {}))
    run = daily["arm"] != daily["arm"].shift()
    if by_period:  # two periods on one treatment in a row (A B | B A) stay two periods
        run |= daily["period"] != daily["period"].shift()
    run = run.cumsum()
    periods = daily.groupby(run, sort=True).agg(y=("y", "mean"), arm=("arm", "first"))
    diffs, i, rows = [], 0, periods.to_numpy()
    while i + 1 < len(rows):
        (y0, arm0), (y1, arm1) = rows[i], rows[i + 1]
        if arm0 != arm1:
            diffs.append(y1 - y0 if arm1 == b else y0 - y1)
            i += 2
        else:
            i += 1
    out = {"test": "cycles", "estimate": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "n_cycles": len(diffs)}
    if len(diffs) < 2:
        return out
    d = np.asarray(diffs, float)
    est, se, df = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1
    q = float(stats.t.ppf(1 - alpha / 2, df))
    pv = float(2 * stats.t.sf(abs(est / se), df)) if se > 0 else nan
    return out | {"estimate": est, "ci_low": est - q * se, "ci_high": est + q * se, "p_value": pv}


def check_primary_test(name: str) -> str:
    """The validated name of the primary test, ``auto`` included (exit 2 on an unknown one)."""
    if name != AUTO and name not in PER_PATIENT_TESTS:
        raise AnalysisInputError(
            f"unknown primary test {name!r}", field="--primary-test", allowed=", ".join((AUTO, *PER_PATIENT_TESTS))
        )
    return name


def resolve_primary(rows: list[dict], declared: str) -> str:
    """The primary test in effect. ``auto`` reads only the design (never an outcome): ``cycles`` when
    every patient has two cycles or more (it holds its level under serial correlation), else ``gls``
    when the design states its noise (exact at any length), else ``ar1`` when every patient has
    ``AR1_MIN_DAYS`` daily means or more, else ``welch`` (its assumption, independent days, is then
    stated beside every verdict)."""
    if declared != AUTO:
        return declared
    cycles = [int(r.get("n_cycles") or 0) for r in rows if r.get("test") == "cycles"]
    if cycles and min(cycles) >= 2:
        return "cycles"
    if any(r.get("test") == "gls" for r in rows):
        return "gls"
    days = [int(r["n_days"]) for r in rows if r.get("test") == "ar1" and r.get("n_days") is not None]
    if days and min(days) >= AR1_MIN_DAYS:
        return "ar1"
    return "welch"


# what each per-patient test assumes; shown beside its results wherever they appear
TEST_ASSUMPTIONS = {
    "cycles": "cycles (pairs of adjacent periods) independent; needs two cycles or more",
    "gls": "daily errors correlated as stated (protocol.yaml dynamics or --assume-rho); exact if so",
    "ar1": f"daily means follow a regression with AR(1) errors; holds its level from {AR1_MIN_DAYS} days",
    "welch": "every photo independent (white noise, no serial correlation)",
    "permutation": "photos exchangeable between the two arms (no serial correlation)",
    "randomization": "exact under any correlation; reaches alpha only with enough assignments",
}


def check_can_be_primary(rows: list[dict], primary: str, alpha: float = ALPHA) -> None:
    """Stop when the declared primary test cannot give a verdict of the stated level on this design.

    ``randomization``: the design's smallest attainable p is above ``alpha``; ``cycles``: no
    patient has two cycles; ``ar1``: a patient has fewer than ``AR1_MIN_DAYS`` daily means.
    """
    mine = [r for r in rows if r.get("test") == primary]
    others = "auto (default), cycles, gls, ar1, welch, permutation or randomization"
    if primary == "gls" and not mine:
        raise AnalysisInputError(
            "the gls test needs the correlation of the daily errors stated: --assume-rho, or a simulated "
            "folder whose protocol.yaml states its noise (dynamics)",
            field="--primary-test",
            allowed=others,
        )
    if primary == "cycles" and mine and all(int(r.get("n_cycles") or 0) < 2 for r in mine):
        raise AnalysisInputError(
            "the cycles test cannot be primary here: it needs two cycles (two blocks) or more, and "
            f"this design has {max(int(r.get('n_cycles') or 0) for r in mine)}",
            field="--primary-test",
            allowed=f"{others} (welch assumes independent days; ar1 needs {AR1_MIN_DAYS} days or more)",
        )
    if primary == "ar1":
        short = [int(r["n_days"]) for r in mine if r.get("n_days") is not None and int(r["n_days"]) < AR1_MIN_DAYS]
        if short:
            raise AnalysisInputError(
                f"the ar1 test cannot be primary here: it holds its level from {AR1_MIN_DAYS} daily means, "
                f"and a patient has {min(short)}",
                field="--primary-test",
                allowed=others,
            )
    if primary != "randomization":
        return
    mins = [float(r["min_p"]) for r in mine if r.get("min_p") is not None]
    worst = max((m for m in mins if np.isfinite(m)), default=None)
    if worst is not None and worst > alpha:
        n = min(int(r.get("n_assignments") or 0) for r in mine)
        raise AnalysisInputError(
            f"the randomisation test cannot be primary here: it cannot reach alpha {alpha} with {n} "
            f"assignments (smallest p = {worst:.3g})",
            field="--primary-test",
            allowed="auto (default), cycles, gls, ar1, welch or permutation",
        )


def patient_verdicts(rows: list[dict], primary: str, alpha: float = ALPHA) -> list[dict]:
    """Per (method, contrast, patient): the primary test's verdict and the others' p-values.

    ``rows`` are per-patient test rows (``method, contrast, patient_id, test, estimate,
    ci_low, ci_high, p_value``). Each verdict: ``primary_test``, ``estimate``, ``ci_low``,
    ``ci_high``, ``p_value``, ``detected`` (p < ``alpha``), ``n_patients_tested`` (in that
    method and contrast) and ``sensitivity`` (test → p-value of the other tests).
    """
    keyed: dict[tuple, dict] = {}
    for r in rows:
        keyed.setdefault((r["method"], r["contrast"], r["patient_id"]), {})[r["test"]] = r
    n_tested: dict[tuple, int] = {}
    for method, contrast, _ in keyed:
        n_tested[(method, contrast)] = n_tested.get((method, contrast), 0) + 1
    out = []
    for (method, contrast, pid), tests in keyed.items():
        p = tests.get(primary, {})
        pv = p.get("p_value", float("nan"))
        out.append(
            {
                "method": method,
                "contrast": contrast,
                "patient_id": pid,
                "primary_test": primary,
                **{k: p.get(k, float("nan")) for k in ("estimate", "ci_low", "ci_high")},
                "p_value": pv,
                "detected": bool(pv is not None and np.isfinite(pv) and pv < alpha),
                "n_patients_tested": n_tested[(method, contrast)],
                "sensitivity": {t: r.get("p_value") for t, r in tests.items() if t != primary},
            }
        )
    return out
