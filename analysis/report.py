"""``report.html``: the result of one analysis, known against recovered, in one self-contained file.

:func:`write_report` rebuilds the report from an analysis folder alone
(DESIGN.md, Contract 2): ``results.json``, ``embeddings.csv``,
``reconstructions.npz`` (when the autoencoder ran) and the dataset folder that
``results.json`` records (``manifest.csv`` and the photos, for the filmstrip and
the latent trajectories; left out with a note when the folder has moved).
Figures are PNG data URIs, thumbnails JPEG data URIs, styles inline: the file
opens offline and asks the network for nothing.

Sections, in order: headline (known vs recovered, verdicts), design, images,
embedding, effects, model and provenance. Without truth (real photos) the
truth parts are left out; every element that shows truth carries ``data-truth``.
Nothing here imports ``trialsim``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnalysisInputError

ALPHA = 0.05
NULL_TOLERANCE = 0.05  # |realised effect| below this (severity units, 0–3 scale) counts as no effect
DPI = 96
THUMB_PX = 64  # filmstrip thumbnail side (px)
THUMB_QUALITY = 72  # JPEG quality of thumbnails
FILMSTRIP_MAX_PER_PATIENT = 16
FILMSTRIP_MAX_TOTAL = 480  # keeps a many-patient report small
MAX_PATIENT_PANELS = 30  # small multiples per patient beyond this are left out (with a note)
BASELINE_COLOR = "#c8c8c8"
TREATMENT_COLORS = ["#0173B2", "#DE8F05", "#029E73", "#CC78BC", "#CA9161", "#56B4E9", "#D55E00", "#949494"]
METHOD_COLORS = {"ae": "#3b3b98", "pixel-pca": "#b35806", "oracle": "#1a9850"}
OTHER_METHOD_COLORS = ["#762a83", "#8c510a", "#01665e", "#c51b7d"]
TEST_NAMES = {
    "welch": "Welch t-test",
    "ar1": "AR(1) regression",
    "permutation": "permutation test",
    "randomization": "randomisation test",
    "lmm": "mixed model (population)",
}
VERDICT_CLASS = {
    "recovered": "good",
    "correctly null": "good",
    "missed": "bad",
    "false positive": "bad",
    "wrong sign": "bad",
    "detected": "neutral",
    "not detected": "neutral",
    "not estimable": "neutral",
}
TEMPLATE = "report.html.j2"


# ---------------------------------------------------------------- reading the analysis folder


@dataclass
class ReportInputs:
    """Everything the report reads. ``manifest`` and ``dataset_root`` are ``None`` when the dataset has moved."""

    results_dir: Path
    results: dict
    embeddings: pd.DataFrame  # image, patient_id, day, treatment, method, PC1 (may be empty)
    reconstructions: dict | None = None
    manifest: pd.DataFrame | None = None
    dataset_root: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def truth(self) -> list[dict]:
        t = self.results.get("truth")
        return [x for x in t if isinstance(x, dict)] if isinstance(t, list) else []

    @property
    def has_truth(self) -> bool:
        return bool(self.truth)

    @property
    def has_latent(self) -> bool:
        return (
            self.has_truth
            and self.manifest is not None
            and "severity_latent" in self.manifest.columns
            and self.manifest["severity_latent"].notna().any()
        )


def _read_embeddings(path: Path) -> pd.DataFrame:
    cols = ["image", "patient_id", "day", "treatment", "method", "PC1"]
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    df = pd.read_csv(
        path, usecols=lambda c: c in cols, dtype={"image": str, "patient_id": str, "treatment": str, "method": str}
    )
    for c in cols:
        if c not in df.columns:
            df[c] = np.nan
    return df[cols]


def _read_reconstructions(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            rec = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    ok = (
        "originals" in rec
        and "reconstructions" in rec
        and rec["originals"].ndim == 4
        and rec["originals"].shape == rec["reconstructions"].shape
        and len(rec["originals"]) > 0
    )
    return rec if ok else None


def _dataset_candidates(raw, results_dir: Path) -> list[Path]:
    out = []
    if raw:
        p = Path(raw)
        out += [p] if p.is_absolute() else [Path.cwd() / p, results_dir / p, results_dir.parent / p.name]
    out.append(results_dir.parent / "dataset")  # the layout of `trialsim demo`: OUT/dataset, OUT/analysis
    seen, unique = set(), []
    for c in out:
        key = str(c.resolve()) if c.exists() else str(c)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


def _find_dataset(results: dict, results_dir: Path, images: set[str]) -> tuple[Path | None, pd.DataFrame | None]:
    """The dataset folder whose manifest lists this analysis' images (or ``None``)."""
    for cand in _dataset_candidates(results.get("dataset"), results_dir):
        path = cand / "manifest.csv"
        if not path.is_file():
            continue
        try:
            man = pd.read_csv(path, dtype={"image": str, "patient_id": str, "treatment": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
            continue
        if "image" not in man.columns:
            continue
        # the same trial: (nearly) every analysed image is listed
        if images and len(images & set(man["image"])) < 0.9 * len(images):
            continue
        return cand, man
    return None, None


def load_inputs(results_dir: str | Path) -> ReportInputs:
    """Read an analysis folder; raises :class:`AnalysisInputError` when ``results.json`` is missing or unreadable."""
    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise AnalysisInputError(
            "no results.json here: not an analysis folder",
            file=str(results_dir),
            allowed=f"a folder written by `trialsim analyze DATASET --out {results_dir}`",
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnalysisInputError(f"unreadable results.json ({e.__class__.__name__})", file=str(path)) from None
    if not isinstance(results, dict):
        raise AnalysisInputError("results.json must hold a JSON object", file=str(path))
    emb = _read_embeddings(results_dir / "embeddings.csv")
    inputs = ReportInputs(results_dir, results, emb, _read_reconstructions(results_dir / "reconstructions.npz"))
    root, manifest = _find_dataset(results, results_dir, set(emb["image"].dropna()))
    inputs.dataset_root, inputs.manifest = root, manifest
    if root is None:
        inputs.notes.append(
            f"The dataset folder recorded in results.json ({results.get('dataset') or 'none'}) "
            "was not found from here, so the filmstrip"
            + (" and the latent trajectories are" if inputs.has_truth else " is")
            + " left out. Rebuild the report where the dataset is to see them."
        )
    if len(emb) == 0 and manifest is not None:
        inputs.embeddings = manifest.reindex(columns=emb.columns)
    return inputs


# ---------------------------------------------------------------- numbers and verdicts


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(x, digits: int = 2, signed: bool = True) -> str:
    v = _num(x)
    if v is None:
        return "—"
    s = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return s.replace("-", "−")


def fmt_p(p) -> str:
    v = _num(p)
    if v is None:
        return "—"
    if v < 0.001:
        return "< 0.001"
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def truth_is_null(truth: dict) -> bool:
    """No effect to find: |realised| < ``NULL_TOLERANCE`` severity units (nominal 0 when nothing was realised).

    The realised effect decides when it exists: with carry-over, equal nominal
    effects can still differ on the days observed, and finding that is no false positive.
    """
    realised, nominal = _num(truth.get("realised")), _num(truth.get("nominal"))
    if realised is not None:
        return abs(realised) < NULL_TOLERANCE
    return nominal is not None and abs(nominal) < NULL_TOLERANCE


def verdict(entry: dict, truth: dict | None, sign_aligned: bool = True) -> str:
    """Plain verdict on one population estimate.

    With truth: "recovered" (p < α with the sign of the realised effect), "wrong sign"
    (p < α against it), "missed" (an effect to find, p ≥ α), "false positive" (no
    effect, p < α), "correctly null" (no effect, p ≥ α). Without truth: "detected" or
    "not detected". "not estimable" when p is missing.
    """
    p = _num(entry.get("p_value"))
    if p is None:
        return "not estimable"
    hit = p < ALPHA
    if not truth:
        return "detected" if hit else "not detected"
    if truth_is_null(truth):
        return "false positive" if hit else "correctly null"
    if not hit:
        return "missed"
    known = _num(truth.get("realised"))
    if known is None:
        known = _num(truth.get("nominal"))
    est = _num(entry.get("estimate_std"))
    if est is None:
        est = _num(entry.get("estimate"))
    if not sign_aligned or known is None or est is None or np.sign(est) == np.sign(known):
        return "recovered"
    return "wrong sign"


def _natural_key(s) -> tuple:
    s = str(s)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _methods(inputs: ReportInputs) -> list[str]:
    cfg = inputs.results.get("config") or {}
    listed = [m for m in (cfg.get("methods") or []) if isinstance(m, str)]
    seen = (
        listed
        + [e.get("method") for e in inputs.results.get("population") or []]
        + list(inputs.embeddings["method"].dropna().unique())
    )
    return list(dict.fromkeys(m for m in seen if isinstance(m, str) and m))


def _method_colors(methods: list[str]) -> dict[str, str]:
    out, spare = {}, iter(OTHER_METHOD_COLORS * 4)
    for m in methods:
        out[m] = METHOD_COLORS.get(m) or next(spare)
    return out


def _treatment_colors(inputs: ReportInputs) -> dict[str, str]:
    baseline = inputs.results.get("baseline_label") or "Baseline"
    labels = [t for t in inputs.results.get("treatments") or [] if t != baseline]
    labels += sorted(set(inputs.embeddings["treatment"].dropna()) - set(labels) - {baseline})
    colors = {baseline: BASELINE_COLOR}
    for i, t in enumerate(labels):
        colors[t] = TREATMENT_COLORS[i % len(TREATMENT_COLORS)]
    return colors


# ---------------------------------------------------------------- figures


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

    patients = sorted(sched["patient_id"].unique(), key=_natural_key)
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
    patients = sorted(man["patient_id"].unique(), key=_natural_key)[:MAX_PATIENT_PANELS]
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
    patients = sorted(emb["patient_id"].unique(), key=_natural_key)[:MAX_PATIENT_PANELS]
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
    latent = man.drop_duplicates("image").set_index("image")["severity_latent"]
    n = len(methods)
    with _style():
        fig, axes = _figure(min(11.2, 0.4 + 3.4 * n), 3.1, 1, n)
        for ax, m in zip(axes.flat, methods):
            d = emb[emb["method"] == m].assign(latent=lambda x: x["image"].map(latent)).dropna(subset=["latent", "PC1"])
            x = d["latent"] - d.groupby("patient_id")["latent"].transform("mean")
            y = d["PC1"] - d.groupby("patient_id")["PC1"].transform("mean")
            size = 9 if len(d) < 600 else 4
            ax.scatter(x, y, c=d["treatment"].map(colors).fillna("#999999"), s=size, alpha=0.65, lw=0, rasterized=True)
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


def fig_headline(rows: list[dict], contrasts: list[str], methods: list[str], mcolors: dict, has_truth: bool) -> str:
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
                filled = r["p"] is not None and r["p"] < ALPHA
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
            Line2D([], [], marker="o", ls="", color="#444444", label="p < 0.05"),
            Line2D([], [], marker="o", ls="", color="#444444", mfc="white", label="p ≥ 0.05"),
        ]
        if has_truth:
            handles.append(Line2D([], [], color="#c0392b", ls="--", lw=1.6, label="known (realised)"))
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)


def fig_forest(rows: pd.DataFrame, methods: list[str], tests: list[str], has_truth: bool) -> str:
    """One contrast: per method (rows) and test (columns), per-patient effects ± 95% CI, known marked."""
    patients = sorted(rows["patient_id"].unique(), key=_natural_key)
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
                hit = (d["p_value"] < ALPHA).to_numpy()
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
            Line2D([], [], marker="o", ls="", color="#333333", label="recovered, p < 0.05"),
            Line2D([], [], marker="o", ls="", color="#333333", mfc="white", label="recovered, p ≥ 0.05"),
        ]
        if has_truth:
            handles.append(Line2D([], [], marker="D", ls="", color="#c0392b", label="known (realised, per patient)"))
        fig.legend(handles=handles, loc="outside upper left", ncols=len(handles), frameon=False, fontsize=8.5)
        return _png(fig)


# ---------------------------------------------------------------- thumbnails


def _jpeg_uri(im, quality: int = THUMB_QUALITY) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path: Path, px: int = THUMB_PX) -> str | None:
    """A square centre-cropped JPEG data URI of the photo at ``path`` (``None`` if unreadable)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (px * 2, px * 2))  # JPEG: decode at a reduced scale, much faster for big photos
            im = ImageOps.exif_transpose(im).convert("RGB")
            return _jpeg_uri(ImageOps.fit(im, (px, px), Image.LANCZOS))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def _array_uri(a: np.ndarray, px: int = 96) -> str:
    from PIL import Image

    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a * (255 if a.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    im = Image.fromarray(a.squeeze()).convert("RGB")
    return _jpeg_uri(im.resize((px, px), Image.LANCZOS), quality=82)


def filmstrip(inputs: ReportInputs, colors: dict[str, str]) -> tuple[list[dict], str | None]:
    """Per patient: thumbnails of evenly spaced days, each under its treatment's colour."""
    man, root = inputs.manifest, inputs.dataset_root
    if man is None or root is None or not {"image", "patient_id", "day", "treatment"} <= set(man.columns):
        return [], None
    man = man.dropna(subset=["image", "patient_id", "day"])
    patients = sorted(man["patient_id"].astype(str).unique(), key=_natural_key)
    per = max(4, min(FILMSTRIP_MAX_PER_PATIENT, FILMSTRIP_MAX_TOTAL // max(1, len(patients))))
    shown = patients[: max(1, FILMSTRIP_MAX_TOTAL // per)]
    strips, missing = [], 0
    for pid in shown:
        d = man[man["patient_id"].astype(str) == pid].sort_values(["day", "image"], kind="stable")
        d = d.drop_duplicates("day")  # first photo of each day
        pick = np.unique(np.linspace(0, len(d) - 1, min(per, len(d))).round().astype(int))
        cells = []
        for _, r in d.iloc[pick].iterrows():
            uri = thumbnail(root / str(r["image"]))
            missing += uri is None
            cells.append(
                {
                    "uri": uri,
                    "day": int(r["day"]),
                    "treatment": str(r["treatment"]),
                    "color": colors.get(str(r["treatment"]), "#999999"),
                }
            )
        strips.append({"patient_id": pid, "cells": cells})
    if strips and all(c["uri"] is None for s in strips for c in s["cells"]):
        return [], "None of the photos listed in manifest.csv could be read from the dataset folder."
    note = []
    if len(shown) < len(patients):
        note.append(f"the first {len(shown)} of {len(patients)} patients are shown")
    if missing:
        note.append(f"{missing} photo(s) could not be read and are shown blank")
    return strips, ("; ".join(note).capitalize() + ".") if note else None


# ---------------------------------------------------------------- the context


def _headline_rows(inputs: ReportInputs, methods: list[str]) -> list[dict]:
    truth = {t.get("contrast"): t for t in inputs.truth}
    by_method = (inputs.results.get("embedding") or {}).get("by_method") or {}
    rows = []
    for e in inputs.results.get("population") or []:
        m, c = e.get("method"), e.get("contrast")
        t = truth.get(c)
        aligned = bool((by_method.get(m) or {}).get("sign_aligned", bool(t)))
        v = verdict(e, t, aligned)
        rows.append(
            {
                "method": m,
                "contrast": c,
                "verdict": v,
                "verdict_class": VERDICT_CLASS.get(v, "neutral"),
                "est": _num(e.get("estimate_std")),
                "lo": _num(e.get("ci_low_std")),
                "hi": _num(e.get("ci_high_std")),
                "p": _num(e.get("p_value")),
                "raw_est": _num(e.get("estimate")),
                "raw_lo": _num(e.get("ci_low")),
                "raw_hi": _num(e.get("ci_high")),
                "se": _num(e.get("se")),
                "model": e.get("model"),
                "warnings": [w for w in e.get("warnings") or [] if w],
                "sev": _num(e.get("estimate_severity")),
                "sev_lo": _num(e.get("ci_low_severity")),
                "sev_hi": _num(e.get("ci_high_severity")),
                "known": _num(t.get("realised")) if t else None,
                "known_std": _num(t.get("realised_std")) if t else None,
                "nominal": _num(t.get("nominal")) if t else None,
            }
        )
    order = {m: i for i, m in enumerate(methods)}
    contrasts = list(dict.fromkeys(r["contrast"] for r in rows))
    rows.sort(key=lambda r: (contrasts.index(r["contrast"]), order.get(r["method"], 99)))
    return rows


def _summaries(headline: list[dict], contrasts: list[str], has_truth: bool) -> list[dict]:
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
        known = rows[0]["known"] if rows else None
        out.append(
            {
                "contrast": c,
                "text": "; ".join(parts) + ".",
                "known": known if has_truth else None,
                "nominal": rows[0]["nominal"] if rows else None,
            }
        )
    return out


def _patient_rows(inputs: ReportInputs) -> pd.DataFrame:
    """Per-patient tests with effects standardised like the headline (÷ the population model's residual SD)."""
    rows = pd.DataFrame(inputs.results.get("patients") or [])
    if rows.empty:
        return rows
    for c in ("estimate", "ci_low", "ci_high", "p_value", "known_realised"):
        rows[c] = pd.to_numeric(rows[c], errors="coerce") if c in rows.columns else np.nan
    rows["patient_id"] = rows["patient_id"].astype(str)
    sd = {(e.get("method"), e.get("contrast")): _num(e.get("resid_sd")) for e in inputs.results.get("population") or []}
    scale = rows.apply(lambda r: sd.get((r["method"], r["contrast"])) or np.nan, axis=1).astype(float)
    rows["est_std"], rows["lo_std"], rows["hi_std"] = (
        rows["estimate"] / scale,
        rows["ci_low"] / scale,
        rows["ci_high"] / scale,
    )
    latent_sd = {t.get("contrast"): _num((t.get("latent_model") or {}).get("resid_sd")) for t in inputs.truth}
    ksd = rows["contrast"].map(lambda c: latent_sd.get(c) or np.nan).astype(float)
    rows["known_std"] = rows["known_realised"] / ksd
    return rows


def _test_summary(rows: pd.DataFrame, headline: list[dict], methods: list[str]) -> list[dict]:
    """Every test, one line per method × contrast × test: the population model, then the per-patient tests."""
    out = []
    for h in headline:
        out.append(
            {
                "method": h["method"],
                "contrast": h["contrast"],
                "test": TEST_NAMES["lmm"],
                "level": "population",
                "est": h["raw_est"],
                "lo": h["raw_lo"],
                "hi": h["raw_hi"],
                "p": h["p"],
                "est_std": h["est"],
                "detected": None if h["p"] is None else h["p"] < ALPHA,
                "n": None,
            }
        )
    if rows.empty:
        return out
    for (m, c, t), g in rows.groupby(["method", "contrast", "test"], sort=False):
        p = g["p_value"].dropna()
        out.append(
            {
                "method": m,
                "contrast": c,
                "test": TEST_NAMES.get(t, t),
                "level": "per patient",
                "est": _num(g["estimate"].mean()),
                "lo": None,
                "hi": None,
                "p": _num(p.median()) if len(p) else None,
                "est_std": _num(g["est_std"].mean()),
                "detected": int((p < ALPHA).sum()),
                "n": int(len(g)),
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


def _formula_text(f: dict) -> str:
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


def _config_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _protocol_yaml(protocol) -> str | None:
    if not protocol:
        return None
    try:
        import yaml

        return yaml.safe_dump(protocol, sort_keys=False, allow_unicode=True, width=100)
    except Exception:
        return json.dumps(protocol, indent=2, ensure_ascii=False)


def _title(inputs: ReportInputs) -> str:
    proto = inputs.results.get("protocol") or {}
    if isinstance(proto, dict) and proto.get("name"):
        return str(proto["name"])
    raw = inputs.results.get("dataset")
    return Path(str(raw)).name if raw else inputs.results_dir.resolve().name


def _draw(inputs: ReportInputs, what: str, fn, *args):
    """A figure, or ``None`` with a visible note: one odd panel must not cost the whole report."""
    try:
        return fn(*args)
    except Exception as e:
        inputs.notes.append(f"The {what} could not be drawn ({e.__class__.__name__}: {e}).")
        return None


def build_context(inputs: ReportInputs) -> dict:
    """All the template needs: numbers, verdicts, figure and thumbnail data URIs, notes."""
    res = inputs.results
    methods = _methods(inputs)
    mcolors = _method_colors(methods)
    colors = _treatment_colors(inputs)
    emb = inputs.embeddings.dropna(subset=["patient_id", "day"]).copy()
    emb["day"] = emb["day"].astype(int)
    emb["patient_id"] = emb["patient_id"].astype(str)
    embedding = res.get("embedding") or {}
    by_method = embedding.get("by_method") or ({embedding.get("method"): embedding} if embedding.get("method") else {})
    has_truth = inputs.has_truth
    aligned = {m: bool((by_method.get(m) or {}).get("sign_aligned")) for m in methods}

    headline = _headline_rows(inputs, methods)
    contrasts = list(dict.fromkeys(r["contrast"] for r in headline))
    prows = _patient_rows(inputs)
    tests = [t for t in ("welch", "ar1", "permutation", "randomization") if not prows.empty and t in set(prows["test"])]
    tests += sorted(set(prows["test"]) - set(tests)) if not prows.empty else []

    figs = dict.fromkeys(("headline", "schedule", "latent", "pc1_vs_latent", "pc1_time"))
    first = emb[emb["method"] == emb["method"].iloc[0]] if len(emb) and emb["method"].notna().any() else emb
    if len(first):
        figs["schedule"] = _draw(
            inputs, "treatment schedule", fig_schedule, first[["patient_id", "day", "treatment"]], colors
        )
    if headline:
        figs["headline"] = _draw(
            inputs, "headline figure", fig_headline, headline, contrasts, methods, mcolors, has_truth
        )
    man = inputs.manifest
    if inputs.has_latent:
        m = man.dropna(subset=["severity_latent"]).copy()
        m["patient_id"], m["day"] = m["patient_id"].astype(str), m["day"].astype(int)
        figs["latent"] = _draw(inputs, "latent trajectories", fig_latent, m, colors)
        if len(emb):
            rho = {k: _num((by_method.get(k) or {}).get("spearman_pc1_latent")) for k in methods}
            figs["pc1_vs_latent"] = _draw(
                inputs,
                "PC1-against-latent figure",
                fig_pc1_vs_latent,
                emb,
                m,
                [k for k in methods if k in set(emb["method"])],
                rho,
                colors,
            )
    if len(emb) and emb["PC1"].notna().any():
        figs["pc1_time"] = _draw(
            inputs,
            "PC1-over-time figure",
            fig_pc1_time,
            emb,
            [k for k in methods if k in set(emb["method"])],
            mcolors,
            colors,
        )
    forests = []
    if not prows.empty:
        for c in contrasts or list(dict.fromkeys(prows["contrast"])):
            sub = prows[prows["contrast"] == c]
            ms = [k for k in methods if k in set(sub["method"])]
            uri = _draw(inputs, f"forest plot of {c}", fig_forest, sub, ms, tests, has_truth) if ms else None
            if uri:
                forests.append({"contrast": c, "uri": uri})

    strips, strip_note = filmstrip(inputs, colors)
    recon = None
    if inputs.reconstructions is not None:
        r = inputs.reconstructions
        names = [str(x) for x in r.get("images", [])]
        recon = [
            {"original": _array_uri(o), "reconstruction": _array_uri(rc), "name": names[i] if i < len(names) else ""}
            for i, (o, rc) in enumerate(zip(r["originals"], r["reconstructions"]))
        ]
        loss = r.get("loss_history")
        recon_loss = _num(loss[-1]) if loss is not None and len(loss) else None
    else:
        recon_loss = None

    variance = [
        {
            "method": k,
            "evr": _num((by_method.get(k) or {}).get("explained_variance_ratio_pc1")),
            "rho": _num((by_method.get(k) or {}).get("spearman_pc1_latent")),
            "reduction": (by_method.get(k) or {}).get("reduction") or embedding.get("reduction"),
            "aligned": aligned.get(k),
            "note": (by_method.get(k) or {}).get("sign_note"),
        }
        for k in methods
        if k in by_method
    ]
    patient_table = []
    if not prows.empty:
        order = {k: i for i, k in enumerate(methods)}
        srt = prows.assign(_m=prows["method"].map(order), _p=prows["patient_id"].map(_natural_key))
        srt = srt.sort_values(["contrast", "_m", "_p"], kind="stable")
        for _, r in srt.iterrows():
            patient_table.append(
                {
                    "method": r["method"],
                    "contrast": r["contrast"],
                    "patient_id": r["patient_id"],
                    "test": TEST_NAMES.get(r["test"], r["test"]),
                    "est": _num(r["estimate"]),
                    "lo": _num(r["ci_low"]),
                    "hi": _num(r["ci_high"]),
                    "p": _num(r["p_value"]),
                    "known": _num(r.get("known_realised")),
                    "min_p": _num(r.get("min_p")) if "min_p" in r else None,
                }
            )

    formulas = res.get("formulas") or {}
    per_patient_formulas = formulas.get("per_patient") if isinstance(formulas.get("per_patient"), dict) else {}
    contrast_formulas = {k: _formula_text(v) for k, v in formulas.items() if k != "per_patient" and isinstance(v, dict)}
    warnings = [{"method": h["method"], "contrast": h["contrast"], "text": w} for h in headline for w in h["warnings"]]
    cfg = res.get("config") or {}
    truth_rows = [
        {
            "contrast": t.get("contrast"),
            "nominal": _num(t.get("nominal")),
            "realised": _num(t.get("realised")),
            "realised_std": _num(t.get("realised_std")),
            "latent": _num((t.get("latent_model") or {}).get("estimate")),
            "latent_std": _num(t.get("latent_model_std")),
            "null": truth_is_null(t),
        }
        for t in inputs.truth
    ]
    return {
        "title": _title(inputs),
        "has_truth": has_truth,
        "methods": methods,
        "method_colors": mcolors,
        "treatment_colors": colors,
        "contrasts": contrasts,
        "headline": headline,
        "truth_rows": truth_rows,
        "summaries": _summaries(headline, contrasts, has_truth),
        "figs": figs,
        "forests": forests,
        "strips": strips,
        "strip_note": strip_note,
        "recon": recon,
        "recon_loss": recon_loss,
        "normalize": cfg.get("normalize"),
        "variance": variance,
        "tests_summary": _test_summary(prows, headline, methods),
        "patient_table": patient_table,
        "contrast_formulas": contrast_formulas,
        "per_patient_formulas": per_patient_formulas,
        "warnings": warnings,
        "versions": res.get("versions") or {},
        "seed": res.get("seed", cfg.get("seed")),
        "config": {
            k: _config_value(v) for k, v in cfg.items() if v is not None and k not in ("progress", "seed", "method")
        },  # seed has its own row
        "treatments_present": sorted(set(emb["treatment"].dropna().astype(str))),
        "timings": res.get("timings_s") or {},
        "protocol_yaml": _protocol_yaml(res.get("protocol")),
        "dataset": res.get("dataset"),
        "dataset_found": str(inputs.dataset_root) if inputs.dataset_root else None,
        "n_images": res.get("n_images", len(inputs.embeddings.drop_duplicates("image"))),
        "n_patients": res.get("n_patients", emb["patient_id"].nunique() if len(emb) else None),
        "n_days": int(emb["day"].max()) if len(emb) else None,
        "skipped": res.get("skipped_images") or 0,
        "skipped_paths": (res.get("skipped_image_paths") or [])[:50],
        "notes": inputs.notes,
        "alpha": ALPHA,
        "null_tolerance": NULL_TOLERANCE,
        "reduction": embedding.get("reduction") or cfg.get("reduction"),
        "aligned_any": any(aligned.values()),
        "any_aligned_all": bool(aligned) and all(aligned.values()),
        "baseline_label": res.get("baseline_label") or "Baseline",
    }


# ---------------------------------------------------------------- rendering


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("analysis", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt
    env.filters["p"] = fmt_p
    env.filters["pct"] = lambda x: "—" if _num(x) is None else f"{100 * _num(x):.0f}%"
    return env


def build_report(results_dir: str | Path) -> str:
    """The report of the analysis folder ``results_dir`` as one HTML string."""
    ctx = build_context(load_inputs(results_dir))
    return _environment().get_template(TEMPLATE).render(**ctx)


def write_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (default: into ``results_dir``) and return its path."""
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "report.html"
    html = build_report(results_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
