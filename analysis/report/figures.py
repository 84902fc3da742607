"""The report's figures, as pure functions of tables: each returns a PNG data URI.

Matplotlib ``Figure`` objects (no pyplot state), the seaborn theme for all of them and
seaborn for the scatter of PC1 against the truth. Colours come in as arguments,
so the same treatment has the same colour in every figure.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd

from ..contract import ALPHA
from .format import fmt
from .inputs import natural_key

DPI = 96
MAX_PATIENT_PANELS = 30  # small multiples per patient beyond this are left out (with a note)
TEST_NAMES = {
    "welch": "Welch t-test",
    "gls": "GLS, stated correlation",
    "ar1": "AR(1) regression",
    "permutation": "permutation test",
    "randomization": "randomisation test",
    "lmm": "mixed model (population)",
}


def _style():
    import matplotlib
    import seaborn as sns

    rc = {
        **sns.axes_style("ticks"),
        **sns.plotting_context("notebook", font_scale=0.82),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titleweight": "bold",
        "axes.titlesize": 10,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "axes.edgecolor": "#666666",
        "svg.hashsalt": "trialsim",
        "path.simplify": True,
    }
    return matplotlib.rc_context(rc)


def _figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"optimize": True})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _runs(days: np.ndarray, treatments: np.ndarray) -> list[tuple[float, float, str]]:
    """Contiguous treatment runs of one patient as ``(first day − ½, last day + ½, label)``."""
    order = np.argsort(days, kind="stable")
    days, treatments = days[order], treatments[order]
    runs, start = [], 0
    for i in range(1, len(days) + 1):
        if i == len(days) or treatments[i] != treatments[start]:
            runs.append((float(days[start]) - 0.5, float(days[i - 1]) + 0.5, str(treatments[start])))
            start = i
    return runs


def _shade(ax, runs, colors: dict[str, str], alpha: float = 0.22):
    for lo, hi, lab in runs:
        ax.axvspan(lo, hi, color=colors.get(lab, "#eeeeee"), alpha=alpha, lw=0, zorder=0)


def _legend_handles(colors: dict[str, str], present: set[str], alpha: float = 1.0):
    from matplotlib.patches import Patch

    return [Patch(facecolor=c, alpha=alpha, label=t) for t, c in colors.items() if t in present]


def _grid_shape(n: int, max_cols: int = 5) -> tuple[int, int]:
    ncols = min(max_cols, n) if n > 4 else min(n, 3 if n > 2 else n)
    if n in (5, 6):
        ncols = 3
    return math.ceil(n / ncols), ncols


def fig_schedule(sched: pd.DataFrame, colors: dict[str, str]) -> str:
    """Days × patients, each cell coloured by that day's treatment."""
    from matplotlib.colors import ListedColormap

    patients = sorted(sched["patient_id"].unique(), key=natural_key)
    labels = [t for t in colors if t in set(sched["treatment"])]
    code = {t: i for i, t in enumerate(labels)}
    n_days = int(sched["day"].max())
    grid = np.full((len(patients), n_days), np.nan)
    row = {p: i for i, p in enumerate(patients)}
    first = sched.drop_duplicates(["patient_id", "day"])
    grid[first["patient_id"].map(row).to_numpy(), first["day"].to_numpy(int) - 1] = (
        first["treatment"].map(code).to_numpy(float)
    )
    cmap = ListedColormap([colors[t] for t in labels]).with_extremes(bad="white")
    with _style():
        fig, axes = _figure(11.2, 0.9 + 0.22 * len(patients))
        ax = axes[0, 0]
        ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            cmap=cmap,
            vmin=-0.5,
            vmax=len(labels) - 0.5,
            interpolation="nearest",
            extent=(0.5, n_days + 0.5, len(patients) - 0.5, -0.5),
        )
        for i in range(1, len(patients)):
            ax.axhline(i - 0.5, color="white", lw=1.2)
        ax.set_yticks(range(len(patients)), patients)
        ax.set_ylabel("patient")
        ax.set_xlabel("study day")
        ax.spines[["left", "bottom"]].set_visible(False)
        ax.tick_params(left=False)
        ax.legend(
            handles=_legend_handles(colors, set(labels)),
            loc="lower left",
            bbox_to_anchor=(0, 1.0),
            ncols=len(labels),
            frameon=False,
            fontsize=8.5,
            handlelength=1.2,
        )
        return _png(fig)


def _patient_panels(n: int, height_each: float = 1.55, width: float = 11.2):
    nrows, ncols = _grid_shape(n)
    return _figure(width, 0.5 + height_each * nrows, nrows, ncols, sharex=True, sharey=True)


def fig_latent(man: pd.DataFrame, colors: dict[str, str]) -> str:
    """Per patient: latent severity (and its noise-free part) over days, treatment shaded."""
    patients = sorted(man["patient_id"].unique(), key=natural_key)[:MAX_PATIENT_PANELS]
    daily = man.groupby(["patient_id", "day"], as_index=False).agg(
        treatment=("treatment", "first"),
        latent=("severity_latent", "mean"),
        **({"noisefree": ("severity_noisefree", "mean")} if "severity_noisefree" in man.columns else {}),
    )
    with _style():
        fig, axes = _patient_panels(len(patients))
        for ax, pid in zip(axes.flat, patients):
            d = daily[daily["patient_id"] == pid].sort_values("day")
            _shade(ax, _runs(d["day"].to_numpy(), d["treatment"].to_numpy()), colors)
            if "noisefree" in d.columns:
                ax.plot(d["day"], d["noisefree"], color="#555555", lw=1.1, ls="--")
            ax.plot(d["day"], d["latent"], color="#111111", lw=1.4)
            ax.set_title(f"patient {pid}", loc="left", fontsize=9)
            lo, hi = float(daily["latent"].min()), float(daily["latent"].max())
            if lo >= 0 and hi <= 3:  # the photo scale, 0–3; an unbounded outcome gets the axis it needs
                ax.set_ylim(-0.1, 3.1)
                ax.set_yticks([0, 1, 2, 3])
        for ax in axes.flat[len(patients) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("severity")
        for ax in axes[-1, :]:
            ax.set_xlabel("study day")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="#111111", lw=1.4, label="latent severity (truth)")]
        if "noisefree" in daily.columns:
            handles.append(Line2D([], [], color="#555555", lw=1.1, ls="--", label="noise-free trajectory"))
        handles += _legend_handles(colors, set(daily["treatment"]), alpha=0.35)
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)


def fig_pc1_time(emb: pd.DataFrame, methods: list[str], mcolors: dict, colors: dict) -> str:
    """Per patient: PC1 of each method (÷ its SD, so methods share an axis) over days, treatment shaded."""
    patients = sorted(emb["patient_id"].unique(), key=natural_key)[:MAX_PATIENT_PANELS]
    scale = {m: float(np.nanstd(emb.loc[emb["method"] == m, "PC1"])) or 1.0 for m in methods}
    daily = emb.groupby(["method", "patient_id", "day"], as_index=False).agg(
        treatment=("treatment", "first"), PC1=("PC1", "mean")
    )
    lo = hi = 0.0
    with _style():
        fig, axes = _patient_panels(len(patients))
        for ax, pid in zip(axes.flat, patients):
            d0 = daily[daily["patient_id"] == pid]
            first = d0[d0["method"] == d0["method"].iloc[0]]
            _shade(ax, _runs(first["day"].to_numpy(), first["treatment"].to_numpy()), colors)
            for m in methods:
                d = d0[d0["method"] == m].sort_values("day")
                if len(d):
                    y = d["PC1"] / scale[m]
                    lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
                    ax.plot(d["day"], y, color=mcolors[m], lw=1.2, ls="--" if m == "oracle" else "-")
            ax.axhline(0, color="#999999", lw=0.6)
            ax.set_title(f"patient {pid}", loc="left", fontsize=9)
        for ax in axes.flat[len(patients) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("PC1 / SD")
        for ax in axes[-1, :]:
            ax.set_xlabel("study day")
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=mcolors[m], lw=1.4, ls="--" if m == "oracle" else "-", label=m) for m in methods
        ]
        handles += _legend_handles(colors, set(daily["treatment"]), alpha=0.35)
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)


def fig_pc1_vs_latent(emb: pd.DataFrame, man: pd.DataFrame, methods: list[str], rho: dict, colors: dict) -> str:
    """PC1 against latent severity, both centred per patient, one panel per method."""
    import seaborn as sns

    latent = man.drop_duplicates("image").set_index("image")["severity_latent"]
    n = len(methods)
    with _style():
        fig, axes = _figure(min(11.2, 0.4 + 3.4 * n), 3.1, 1, n)
        for ax, m in zip(axes.flat, methods):
            d = emb[emb["method"] == m].assign(latent=lambda x: x["image"].map(latent)).dropna(subset=["latent", "PC1"])
            x = d["latent"] - d.groupby("patient_id")["latent"].transform("mean")
            y = d["PC1"] - d.groupby("patient_id")["PC1"].transform("mean")
            size = 9 if len(d) < 600 else 4
            palette = {t: colors.get(t, "#999999") for t in d["treatment"].dropna().unique()}
            sns.scatterplot(
                x=x.to_numpy(),
                y=y.to_numpy(),
                hue=d["treatment"].to_numpy(),
                palette=palette,
                s=size,
                alpha=0.65,
                linewidth=0,
                legend=False,
                rasterized=True,
                ax=ax,
            )
            r = rho.get(m)
            ax.set_title(
                f"{m}   (Spearman ρ = {fmt(r, 2, signed=False)})" if r is not None else m, loc="left", fontsize=9.5
            )
            ax.set_xlabel("latent severity − patient mean")
        axes[0, 0].set_ylabel("PC1 − patient mean")
        fig.legend(
            handles=_legend_handles(colors, set(emb["treatment"])),
            loc="outside upper left",
            ncols=len(colors),
            frameon=False,
            fontsize=8.5,
        )
        return _png(fig)


def fig_headline(
    rows: list[dict], contrasts: list[str], methods: list[str], mcolors: dict, has_truth: bool, alpha: float = ALPHA
) -> str:
    """Recovered standardised effect ± 95% CI, one row per contrast × method; the known effect as a red line."""
    ys, labels, y = [], [], 0.0
    groups = []
    for c in contrasts:
        sub = [r for r in rows if r["contrast"] == c]
        start = y
        for m in methods:
            r = next((r for r in sub if r["method"] == m), None)
            if r is not None:
                ys.append((y, r))
                labels.append(m)
                y += 1
        groups.append((c, start, y - 1, sub[0]["known_std"] if sub else None))
        y += 0.9  # room for the next contrast's title
    with _style():
        fig, axes = _figure(4.9, 0.8 + 0.4 * len(ys) + 0.3 * len(groups))
        ax = axes[0, 0]
        for yy, r in ys:
            col = mcolors.get(r["method"], "#333333")
            if r["lo"] is not None and r["hi"] is not None:
                ax.plot([r["lo"], r["hi"]], [yy, yy], color=col, lw=2.2, solid_capstyle="butt")
            if r["est"] is not None:
                filled = r["p"] is not None and r["p"] < alpha
                ax.plot(r["est"], yy, "o", ms=7, color=col, mfc=col if filled else "white", mew=1.6)
        for c, lo, hi, known in groups:
            if has_truth and known is not None:
                ax.plot([known, known], [lo - 0.4, hi + 0.4], color="#c0392b", lw=1.6, ls="--")
            if len(groups) > 1:
                ax.text(
                    0.015,
                    lo - 0.62,
                    c,
                    transform=ax.get_yaxis_transform(),
                    fontsize=9,
                    fontweight="bold",
                    va="bottom",
                    ha="left",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                )
        ax.axvline(0, color="#999999", lw=0.8)
        ax.set_yticks([yy for yy, _ in ys], labels)
        ax.set_ylim(y - 0.9 + 0.5, -1.0 if len(groups) > 1 else -0.5)
        if len(groups) == 1:
            ax.set_title(contrasts[0], loc="left", fontsize=9.5)
        ax.set_xlabel("standardised effect (÷ residual SD)")
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color="#444444", label=f"p < {alpha:g}"),
            Line2D([], [], marker="o", ls="", color="#444444", mfc="white", label=f"p ≥ {alpha:g}"),
        ]
        if has_truth:
            handles.append(Line2D([], [], color="#c0392b", ls="--", lw=1.6, label="known (realised)"))
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)


def fig_forest(rows: pd.DataFrame, methods: list[str], tests: list[str], has_truth: bool, alpha: float = ALPHA) -> str:
    """One contrast: per method (rows) and test (columns), per-patient effects ± 95% CI, known marked."""
    patients = sorted(rows["patient_id"].unique(), key=natural_key)
    ypos = {p: i for i, p in enumerate(patients)}
    with _style():
        fig, axes = _figure(
            11.2, 0.7 + (0.55 + 0.2 * len(patients)) * len(methods), len(methods), len(tests), sharey=True
        )
        for i, m in enumerate(methods):
            for j, t in enumerate(tests):
                ax = axes[i, j]
                d = rows[(rows["method"] == m) & (rows["test"] == t)]
                y = d["patient_id"].map(ypos).to_numpy(float)
                ok = d["lo_std"].notna() & d["hi_std"].notna()
                ax.hlines(y[ok.to_numpy()], d.loc[ok, "lo_std"], d.loc[ok, "hi_std"], color="#333333", lw=1.3)
                hit = (d["p_value"] < alpha).to_numpy()
                ax.plot(d["est_std"][hit], y[hit], "o", color="#333333", ms=5.5, ls="")
                ax.plot(d["est_std"][~hit], y[~hit], "o", color="#333333", mfc="white", ms=5.5, ls="")
                if has_truth and d["known_std"].notna().any():
                    ax.plot(d["known_std"], y, "D", color="#c0392b", ms=5, ls="", alpha=0.9)
                ax.axvline(0, color="#999999", lw=0.8)
                if i == 0:
                    ax.set_title(TEST_NAMES.get(t, t), fontsize=9.5)
                if j == 0:
                    ax.set_ylabel(m, fontsize=10, fontweight="bold")
                ax.set_yticks(range(len(patients)), patients)
                ax.set_ylim(len(patients) - 0.5, -0.5)
            for ax in axes[i, 1:]:
                ax.sharex(axes[i, 0])
        for ax in axes[-1, :]:
            ax.set_xlabel("effect (÷ residual SD)")
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", ls="", color="#333333", label=f"recovered, p < {alpha:g}"),
            Line2D([], [], marker="o", ls="", color="#333333", mfc="white", label=f"recovered, p ≥ {alpha:g}"),
        ]
        if has_truth:
            handles.append(Line2D([], [], marker="D", ls="", color="#c0392b", label="known (realised, per patient)"))
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)
