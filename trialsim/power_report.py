"""``power.html``: the power study's summary table and curves in one self-contained file.

Rendered through the analysis report's autoescaped Jinja environment
(``analysis/templates/power.html.j2``), so a protocol name cannot inject markup.
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


def _curve_png(summary: pd.DataFrame, grid: list[str], alpha: float = ALPHA) -> bytes | None:
    """Rejection rate of the mixed model against the effect, one line per method (and other grid keys)."""
    lmm = summary[summary["test"] == "lmm"]
    if "effect" not in lmm.columns or lmm["effect"].nunique() < 2:
        return None
    import seaborn as sns
    from matplotlib.figure import Figure

    other = [c for c in lmm.columns if c != "effect" and c in grid]
    d = lmm.assign(
        effect=lmm["effect"].astype(float),
        line=lmm[["method", *other]].astype(str).agg(" ".join, axis=1),
    ).sort_values(["line", "effect"])
    with sns.axes_style("ticks"):
        fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="tight")
        ax = fig.subplots()
        sns.lineplot(data=d, x="effect", y="rejection_rate", hue="line", marker="o", ax=ax, errorbar=None)
        for _, g in d.groupby("line", sort=True):
            ax.errorbar(
                g["effect"],
                g["rejection_rate"],
                yerr=1.96 * g["rejection_mcse"],
                fmt="none",
                ecolor="#555555",
                capsize=3,
            )
    ax.axhline(alpha, color="grey", ls=":", lw=1)
    ax.axhline(0.8, color="grey", ls="--", lw=1)
    ax.set_xlabel("effect (severity units, last − first treatment)")
    ax.set_ylabel(f"rejection rate (LMM, α = {alpha:g})")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, title=None)
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


def write_power_report(out: Path, summary: pd.DataFrame, replicates: pd.DataFrame, spec: dict) -> Path:
    """Write ``power.html`` (and ``power_curve.png`` when the grid varies the effect) into ``out``."""
    curve = _curve_png(summary, list(spec.get("grid", {})))
    if curve is not None:
        atomic_write_bytes(Path(out) / "power_curve.png", curve)
    html = render(
        TEMPLATE,
        name=spec["base"].get("name", "study"),
        replicates=spec["replicates"],
        methods=spec["methods"],
        seed=spec["seed"],
        alpha=ALPHA,
        curve="data:image/png;base64," + base64.b64encode(curve).decode("ascii") if curve else None,
        columns=list(summary.columns),
        rows=_cells(summary),
        spec=yaml.safe_dump({k: spec[k] for k in ("grid", "methods", "replicates", "seed")}),
    )
    path = Path(out) / "power.html"
    atomic_write_text(path, html)
    return path
