"""Design diagnostics: what a protocol's schedule lets an analysis see, before anything is simulated.

For the contrast last − first treatment (the one ``--grid effect`` sets):

- ``realised_share``: the noise-free difference of the two arms' mean severity over the
  days on each arm, as a share of the nominal contrast. First-order onset and washout
  (``onset_days``, ``washout_days``) against ``period_days`` decide it: a period shorter
  than the time constants realises only part of the effect, and carry-over from the
  previous period eats into the rest.
- ``n_assignments`` and ``min_p``: how many assignments the randomisation test can redraw
  (period labels permuted within each block) and the smallest two-sided p they allow; one
  AB block gives 2 assignments and a smallest p of 1.
- ``power_t``: the two-sample t-test's power for the realised effect with the days on each
  arm as independent observations and the day-level noise SD √(ar1_sd² + sd_obs²) (the
  basis of the classical single-patient power calculation); ``power_t_nominal`` for the
  nominal effect.
- ``power_gls`` / ``power_gls_nominal``: the same for the ``gls`` test on the first
  patient's days, with the protocol's noise (AR(1), white, drift) as it is: exact for that
  test, and below ``power_t`` when the days are correlated.
- ``verdict``: "the design cannot show this effect" when the realised share is below
  :data:`CANNOT_SHOW_SHARE`, else "ok".

:func:`design_diagnostics` returns these as a dict; ``simulate`` prints them and writes them
to the dataset folder as ``design.json``; the analysis copies that file into ``results.json``
(``design``) and the power study into its summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from analysis.atomic import atomic_write_bytes
from analysis.contract import ALPHA
from analysis.results import json_safe

from .dynamics import exposure_levels
from .errors import BadInput
from .protocol import Protocol

CANNOT_SHOW_SHARE = 0.5  # below half the nominal effect realised, a "no effect" result says nothing


def t_power(effect_sd: float, n1: int, n2: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test (pooled, n1 + n2 − 2 df) for a standardised effect."""
    if n1 < 2 or n2 < 2 or not math.isfinite(effect_sd):
        return float("nan")
    df = n1 + n2 - 2
    nc = effect_sd / math.sqrt(1 / n1 + 1 / n2)
    q = stats.t.ppf(1 - alpha / 2, df)
    # the far tail as sf at −nc: scipy's nct.cdf gives NaN there for large |nc|
    near, far = stats.nct.sf(q, df, abs(nc)), stats.nct.sf(q, df, -abs(nc))
    return float(np.nan_to_num(near, nan=1.0) + np.nan_to_num(far, nan=0.0))


def _first_schedule(protocol: Protocol):
    from .schedule import patient_schedule
    from .seeding import patient_rng

    pid = protocol.patients.patient_ids[0]
    return patient_schedule(protocol, pid, patient_rng(protocol.seed, 0, "schedule"))


def _assignments(sched, a: str, b: str) -> tuple[int, float]:
    """Number of assignments the randomisation test redraws and its smallest p, on the first patient's days."""
    from analysis.models import randomization_test

    both = sched[sched["treatment"].isin([a, b])]
    if both["treatment"].nunique() < 2:
        return 0, float("nan")
    y = np.random.default_rng(0).normal(size=len(both))
    r = randomization_test(
        y,
        (both["treatment"] == b).to_numpy(),
        both["period"].to_numpy(),
        both["block"].to_numpy(),
        np.random.default_rng(0),
    )
    return int(r["n_assignments"]), float(r["min_p"])


def _gls_power(protocol: Protocol, sched, pair: tuple[str, str], effects: tuple[float, float], alpha: float) -> dict:
    """Power of the gls test for the realised and the nominal effect (NaN when the protocol states no noise)."""
    from analysis.models import daily_design
    from analysis.stated_noise import gls_power, noise_from_protocol

    noise = noise_from_protocol(protocol.resolved())
    a, b = pair
    # the very design matrix the analysis's gls test fits, on the schedule's days
    days, X, j = daily_design(sched.assign(y=0.0), "y", a, b, time_terms=False)
    if noise is None or j is None:
        return {"power_gls": float("nan"), "power_gls_nominal": float("nan")}
    d = days["day"].to_numpy(float)
    return {f"power_gls{s}": gls_power(e, noise, d, X, j, alpha) for s, e in zip(("", "_nominal"), effects)}


def design_diagnostics(protocol: Protocol, alpha: float = ALPHA) -> dict:
    """The design's diagnostics for last − first treatment (see the module docstring); units: severity, days."""
    tr = protocol.treatments
    a, b = tr[0].label, tr[-1].label
    sched = _first_schedule(protocol)
    labels = [t.label for t in tr]
    levels = exposure_levels(
        sched["treatment"].to_numpy(), labels, [t.onset_days for t in tr], [t.washout_days for t in tr]
    )
    effect = levels @ np.array([t.effect for t in tr])
    on_a, on_b = (sched["treatment"] == a).to_numpy(), (sched["treatment"] == b).to_numpy()
    nominal = float(tr[-1].effect - tr[0].effect)
    realised = float(effect[on_b].mean() - effect[on_a].mean()) if on_a.any() and on_b.any() else float("nan")
    share = realised / nominal if nominal != 0 else float("nan")
    dyn = protocol.dynamics
    sd = math.sqrt(dyn.ar1_sd**2 + dyn.sd_obs**2)
    n_a, n_b = int(on_a.sum()), int(on_b.sum())
    n_assign, min_p = _assignments(sched, a, b) if len(tr) > 1 else (0, float("nan"))
    cannot = nominal != 0 and math.isfinite(share) and share < CANNOT_SHOW_SHARE
    return {
        "contrast": f"{b} − {a}",
        "nominal_effect": nominal,
        "realised_effect": realised,
        "realised_share": share,
        "period_days": protocol.schedule.period_days,
        "blocks": protocol.schedule.blocks,
        "days_per_arm": [n_a, n_b],
        "noise_sd": sd,
        "n_assignments": n_assign,
        "min_p": min_p,
        "randomization_can_reach_alpha": bool(math.isfinite(min_p) and min_p <= alpha),
        "power_t": t_power(realised / sd, n_a, n_b, alpha) if sd > 0 else float("nan"),
        "power_t_nominal": t_power(nominal / sd, n_a, n_b, alpha) if sd > 0 else float("nan"),
        **_gls_power(protocol, sched, (a, b), (realised, nominal), alpha),
        "alpha": alpha,
        "verdict": "the design cannot show this effect" if cannot else "ok",
    }


def describe(diag: dict) -> list[str]:
    """The diagnostics as lines of plain text (``simulate`` prints them)."""
    pct = diag["realised_share"] * 100 if math.isfinite(diag["realised_share"]) else float("nan")
    lines = [
        f"design: {diag['contrast']} nominal {diag['nominal_effect']:+.2f}, realised {diag['realised_effect']:+.2f} "
        f"({pct:.0f}% of nominal: onset/washout against {diag['period_days']}-day periods)",
        f"design: {diag['days_per_arm'][0]} + {diag['days_per_arm'][1]} days on the two arms; "
        f"randomisation test: {diag['n_assignments']} assignments, smallest p = {diag['min_p']:.3g}"
        + ("" if diag["randomization_can_reach_alpha"] else f" (cannot reach α = {diag['alpha']:g})"),
        f"design: two-sample t power {diag['power_t']:.2f} for the realised effect, "
        f"{diag['power_t_nominal']:.2f} for the nominal (day-level SD {diag['noise_sd']:.2f}, days independent)",
    ]
    if math.isfinite(diag.get("power_gls", float("nan"))):
        lines.append(
            f"design: gls test power {diag['power_gls']:.2f} for the realised effect, "
            f"{diag['power_gls_nominal']:.2f} for the nominal (the protocol's noise, correlation included)"
        )
    if diag["verdict"] != "ok":
        lines.append(f"design: WARNING {diag['verdict']}: a null result of this trial says nothing about the effect")
    return lines


def check_bounds(protocol: Protocol, renderer: str) -> None:
    """A switched-off floor or ceiling needs ``renderer: none``: photos draw severities on the 0–3 scale."""
    dyn = protocol.dynamics
    if dyn.unbounded and renderer != "none":
        raise BadInput(
            f"dynamics.floor/ceiling null (no bound) only works without photos; the renderer is {renderer}",
            field="dynamics.floor" if dyn.floor is None else "dynamics.ceiling",
            allowed="rendering.renderer: none (or --renderer none), or bounds within 0–3",
        )


def write_design(protocol: Protocol, out: Path) -> dict:
    """The design diagnostics (:mod:`trialsim.design`) into ``out/design.json``; returns them."""
    design = design_diagnostics(protocol)
    atomic_write_bytes(Path(out) / "design.json", (json.dumps(json_safe(design), indent=2) + "\n").encode())
    return design
