"""``power.html``: the power study's summary table and curves in one self-contained file.

Rendered through the analysis report's autoescaped Jinja environment
(``analysis/templates/power.html.j2``), so a protocol name cannot inject markup.
The curves are the population model's rejection rate (``lmm``, per trial) and the
primary per-patient test's (per patient-trial: per-patient power), against the effect;
with one patient only the latter exists. Dashed: the analytic power for the grid point's
realised effect: the two-sample t-test's with days independent (``design_power_t``), or,
for the ``gls`` test, its own with the protocol's noise, correlation included
(``design_power_gls``).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import yaml

from analysis.atomic import atomic_write_bytes, atomic_write_text
from analysis.contract import ALPHA
from analysis.report import render

TEMPLATE = "power.html.j2"


def _is_curve_test(test: str) -> bool:
    return test == "lmm" or test.startswith("primary:")


def _curve_png(summary: pd.DataFrame, grid: list[str], alpha: float = ALPHA) -> bytes | None:
    """Rejection rate against the effect, one line per method, test (and other grid keys); analytic t dashed."""
    rows = summary[summary["test"].astype(str).map(_is_curve_test)]
    if "effect" not in rows.columns or rows["effect"].nunique() < 2:
        return None
    import seaborn as sns
    from matplotlib.figure import Figure

    other = [c for c in rows.columns if c != "effect" and c in grid]
    label = rows[["method", "test"]].astype(str).agg(" ".join, axis=1).str.replace(" (per patient)", "", regex=False)
    extra = rows[other].astype(str).agg(lambda r: " ".join(f"{k}={v}" for k, v in r.items()), axis=1) if other else ""
    d = rows.assign(effect=rows["effect"].astype(float), line=label + (" " + extra if other else ""))
    d = d.sort_values(["method", "test", *other, "effect"], key=lambda c: pd.to_numeric(c, errors="coerce").fillna(0))
    d = d.sort_values(["method", "test"], kind="stable")  # numbers in order within each test's lines
    with sns.axes_style("ticks"):
        fig = Figure(figsize=(6.8, 4.2), dpi=100, layout="tight")
        ax = fig.subplots()
        sns.lineplot(
            data=d,
            x="effect",
            y="rejection_rate",
            hue="line",
            hue_order=list(dict.fromkeys(d["line"])),
            marker="o",
            ax=ax,
            errorbar=None,
        )
        handles, names = ax.get_legend_handles_labels()
        colors = {n: getattr(h, "get_color", lambda: "grey")() for h, n in zip(handles, names)}
        for name, g in d.groupby("line", sort=True):
            ax.errorbar(
                g["effect"],
                g["rejection_rate"],
                yerr=1.96 * g["rejection_mcse"],
                fmt="none",
                ecolor="#555555",
                capsize=3,
            )
            test = str(name).split(" ")[1]
            col = "design_power_gls" if test == "primary:gls" else "design_power_t"
            if col in g.columns and test.startswith("primary:"):
                ax.plot(g["effect"], g[col].astype(float), ls="--", lw=1, color=colors.get(name, "grey"))
    ax.axhline(alpha, color="grey", ls=":", lw=1)
    ax.axhline(0.8, color="grey", ls="--", lw=0.6)
    ax.set_xlabel("effect (last − first treatment)")
    ax.set_ylabel(f"rejection rate (α = {alpha:g})")
    ax.set_title("solid: simulated (± 1.96 MC SE); dashed: analytic (two-sample t; gls: its own)", fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, title=None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _cells(summary: pd.DataFrame) -> list[list[str]]:
    """The summary's rows as text: floats with 3 decimals, missing values empty."""
    fmt = summary.copy()
    for c in fmt.columns:
        if fmt[c].dtype.kind == "f":
            fmt[c] = fmt[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return fmt.astype(str).replace({"nan": "", "None": ""}).values.tolist()


def _notes(summary: pd.DataFrame) -> list[str]:
    """One line per test that cannot reject on its design, and per design that cannot show its effect."""
    out = []
    if "note" in summary.columns:
        for (test, note), g in summary.groupby(["test", "note"], sort=True):
            if str(note) and str(note) != "nan":
                out.append(f"{test}: {note} ({', '.join(map(str, g['grid_point'].unique()[:6]))})")
    if "design_verdict" in summary.columns:
        bad = summary.loc[summary["design_verdict"].astype(str).ne("ok") & summary["design_verdict"].notna()]
        for gp in bad["grid_point"].unique():
            out.append(f"{gp}: the design cannot show this effect (under half the nominal effect is realised)")
    return out


def write_power_report(out: Path, summary: pd.DataFrame, replicates: pd.DataFrame, spec: dict) -> Path:
    """Write ``power.html`` (and ``power_curve.png`` when the grid varies the effect) into ``out``."""
    curve = _curve_png(summary, list(spec.get("grid", {})))
    if curve is not None:
        atomic_write_bytes(Path(out) / "power_curve.png", curve)
    n_patients = int(spec["base"].get("patients", {}).get("n") or 0)
    html = render(
        TEMPLATE,
        name=spec["base"].get("name", "study"),
        replicates=spec["replicates"],
        methods=spec["methods"],
        seed=spec["seed"],
        alpha=ALPHA,
        primary_test=spec.get("primary_test", "auto"),
        one_patient=n_patients == 1 and "patients" not in spec.get("grid", {}),
        photos=spec["methods"] != ["oracle"],
        notes=_notes(summary),
        curve="data:image/png;base64," + base64.b64encode(curve).decode("ascii") if curve else None,
        columns=list(summary.columns),
        rows=_cells(summary),
        spec=yaml.safe_dump({k: spec[k] for k in ("grid", "methods", "replicates", "seed") if k in spec}),
    )
    path = Path(out) / "power.html"
    atomic_write_text(path, html)
    return path
